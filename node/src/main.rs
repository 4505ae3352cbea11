//! `tandem-node`: flags → config, logging, run until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tandem_node::config::{Args, Command, Config};

/// Fixes glibc's mmap and trim thresholds. Left dynamic, freeing one big
/// mmapped buffer (the start-up scan's path list, a hash table) raises the
/// trim threshold to twice its size, and every thread's arena then keeps
/// that much free memory resident for good: 17 MB more after a cold start
/// of 100,000 files. An mmap threshold of 4 MiB keeps transfer buffers
/// (128 KiB blocks, 2 MiB segments, batched frames) in the heap, as the
/// dynamic thresholds would. A trim threshold of 1 MiB instead of 4 lets
/// each arena keep less free memory at its top: the 20,000-file row's
/// peak for both nodes 1-3 MiB lower, a node of 100,000 files 7 MiB
/// smaller after a listing (and at its peak), their times and the 1 GiB
/// row's unchanged within noise; the small-file receiver faults about a
/// fifth more pages in (`bench/SYNC.md`, session 31, where session 28's
/// 4-5 % slower small-file row, the reason it was not taken then, did not
/// show again).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // openraft reports every election step at info and every unanswered
    // heartbeat to a node that is down at error, twice a second; the node
    // says what matters in its own words (who is down, when the cluster
    // formed). RUST_LOG naming openraft brings its lines back.
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,notify=warn".into());
    let spec = if spec.contains("openraft") {
        spec
    } else {
        format!("{spec},openraft=off")
    };
    // Colours only for a person at a terminal: a log file, a pipe or a
    // journal gets plain text (and NO_COLOR turns them off anywhere).
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(spec))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    let args = Args::parse();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem-node: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let cfg = Config::from_args(&args)?;
    if let Some(cmd) = &args.command {
        return command(&cfg, cmd);
    }
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another node running there? pick another --listen)",
                    args.listen
                )
            })?;
        tandem_node::run(cfg, listener, shutdown_signal()).await
    })
}

/// `id`, `trust`, `untrust`, `trusted`: work on the state folder and exit
/// (safe while the node runs: the trust list is replaced atomically and
/// read again at each handshake).
fn command(cfg: &Config, cmd: &Command) -> anyhow::Result<()> {
    use tandem_node::trust::TrustList;
    match cmd {
        Command::Id => {
            let key = tandem_node::node_key(&cfg.state_dir)?;
            println!("{}", tandem_common::NodeId(key.id()));
        }
        Command::Trust { id, name } => {
            let id: tandem_common::NodeId = id.parse()?;
            let mut list = TrustList::load(&cfg.state_dir)?;
            let me = tandem_node::node_key(&cfg.state_dir)?.id();
            if id.0 == me {
                anyhow::bail!(
                    "{id} is this node's own id; trust the other node's id (run `tandem-node --dir DIR id` there)"
                );
            }
            if list.add(id, name.clone()) {
                list.save()?;
                println!("trusted {id}: that node is accepted as a peer from its next connection");
            } else {
                println!("{id} was already trusted");
            }
        }
        Command::Untrust { id } => {
            let id: tandem_common::NodeId = id.parse()?;
            let mut list = TrustList::load(&cfg.state_dir)?;
            if list.remove(id) {
                list.save()?;
                println!("{id} is no longer trusted: it is refused from its next connection");
            } else {
                anyhow::bail!(
                    "{id} is not on the trust list (see `tandem-node --dir DIR trusted`)"
                );
            }
        }
        Command::Trusted => {
            let list = TrustList::load(&cfg.state_dir)?;
            let mut any = false;
            for (id, name) in list.nodes() {
                any = true;
                println!("{id}  {}", name.unwrap_or(""));
            }
            for p in cfg.peers.iter().filter(|p| p.id.is_some()) {
                any = true;
                println!("{p}  (from --peer)");
            }
            if !any {
                println!("(no trusted nodes; add one with `tandem-node --dir DIR trust ID`)");
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
