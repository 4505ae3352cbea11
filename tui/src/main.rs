//! `tandem`: the Tandem client. A subcommand does one thing and exits (for
//! scripts); the terminal UI comes with a later release.

use tandem_tui::{cli, client};

use std::process::ExitCode;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tandem_common::RelPath;
use tandem_common::proto::{ApiError, ClientRequest, ClientResponse, FeedCursor};

/// Tandem client: look at and steer a Tandem cluster through any node.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem client: list the cluster's files, lock them, and steer its nodes",
    after_help = "Example:\n  tandem --node 127.0.0.1:7001 list\n  TANDEM_NODE=127.0.0.1:7002 tandem lock 3"
)]
struct Cli {
    /// Node to talk to (host:port).
    #[arg(
        long,
        global = true,
        env = "TANDEM_NODE",
        default_value = "127.0.0.1:7001"
    )]
    node: String,
    /// Identity file [default: ~/.config/tandem/identity.toml].
    #[arg(long, global = true, env = "TANDEM_IDENTITY", value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Your display name [default: user@host].
    #[arg(long, global = true, value_name = "NAME")]
    name: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A file named by its `#` in `tandem list` or by its path.
#[derive(clap::Args)]
struct Target {
    /// The file's `#` in `tandem list`.
    #[arg(required_unless_present = "path", conflicts_with = "path")]
    index: Option<usize>,
    /// The file's path instead of its index.
    #[arg(long)]
    path: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// List the files, sorted by name, with size and modification time.
    #[command(after_help = "Example:\n  tandem list\n  tandem list --json | jq '.[0].path'")]
    List {
        /// Print JSON (index, path, size, mtime, hash, nodes, locked_by, held).
        #[arg(long)]
        json: bool,
    },
    /// Lock a file: no node applies changes to it until you unlock it.
    #[command(after_help = "Example:\n  tandem lock 3\n  tandem lock --path docs/plan.md")]
    Lock(Target),
    /// Unlock a file; the changes held meanwhile are reconciled.
    #[command(
        after_help = "Example:\n  tandem unlock 3\n  tandem unlock --path docs/plan.md --force"
    )]
    Unlock {
        #[command(flatten)]
        target: Target,
        /// Unlock someone else's lock (logged with your name).
        #[arg(long)]
        force: bool,
    },
    /// Show every lock: path, owner, since, and the node it was taken through.
    #[command(after_help = "Example:\n  tandem locks --json")]
    Locks {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow the live feed of events (Ctrl-C to stop); reconnects and resumes.
    #[command(after_help = "Example:\n  tandem feed\n  tandem feed --json | jq -r .text")]
    Feed {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the clients connected to the node now.
    #[command(after_help = "Example:\n  tandem clients --json")]
    Clients {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every change held back by a lock.
    #[command(after_help = "Example:\n  tandem held")]
    Held {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tandem: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn identity_file(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(f) = &cli.identity {
        return Ok(f.clone());
    }
    let home = std::env::var_os("HOME").ok_or_else(|| {
        anyhow::anyhow!("HOME is not set; pass --identity FILE or set TANDEM_IDENTITY")
    })?;
    Ok(PathBuf::from(home).join(".config/tandem/identity.toml"))
}

/// Turns an index or `--path` into a path, using the node's list.
async fn resolve(c: &client::Client, t: &Target) -> anyhow::Result<RelPath> {
    if let Some(p) = &t.path {
        return RelPath::new(p.as_str()).with_context(|| format!("invalid path {p:?}"));
    }
    let i = t.index.unwrap_or(0);
    let files = c.list().await?;
    match i.checked_sub(1).and_then(|i| files.get(i)) {
        Some(f) => Ok(f.path.clone()),
        None => bail!(
            "there is no file #{i}: the list has {} files (see `tandem list`)",
            files.len()
        ),
    }
}

/// Locks `path`, retrying after a short random pause while another
/// client's proposal for the same file is in flight (both can lose a race;
/// never both win).
async fn lock_with_retry(c: &client::Client, path: RelPath) -> anyhow::Result<ClientResponse> {
    let mut last = None;
    for _ in 0..30 {
        match c.call(ClientRequest::Lock { path: path.clone() }).await {
            Err(client::ClientError::Api(e @ ApiError::LockBusy { .. })) => {
                last = Some(e);
                let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
                tokio::time::sleep(std::time::Duration::from_millis(20 + jitter)).await;
            }
            r => return Ok(r?),
        }
    }
    Err(last.map_or_else(
        || anyhow::anyhow!("cannot lock {path}"),
        anyhow::Error::from,
    ))
}

/// Follows the feed, reconnecting (and resuming after the last event seen)
/// when the node goes away.
async fn feed(node: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut cursor: Option<FeedCursor> = None;
    let mut first = true;
    loop {
        let c = match client::Client::connect(node).await {
            Ok(c) => c,
            Err(e) if first => return Err(e.into()),
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        first = false;
        let Some(mut events) = c.events() else {
            bail!("feed already taken");
        };
        let epoch = c.subscribe(cursor).await?;
        if cursor.is_some_and(|k| k.epoch != epoch) {
            eprintln!("(the node restarted; events from its previous run may be missing)");
        }
        while let Some(item) = events.recv().await {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match item {
                client::FeedItem::Event(e) => {
                    cursor = Some(FeedCursor {
                        epoch: e.epoch,
                        seq: e.seq,
                    });
                    cli::print_event(&e, json, &mut out)?;
                }
                client::FeedItem::Missed { epoch, from, to } => {
                    cursor = Some(FeedCursor {
                        epoch,
                        seq: to.saturating_sub(1),
                    });
                    eprintln!("(missed events {from}..{to}: the feed fell behind)");
                }
                client::FeedItem::Closed(why) => {
                    eprintln!("({why}; reconnecting…)");
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = &cli.command else {
        bail!("the terminal UI is not available in this build yet; try `tandem list`");
    };
    if let Command::Feed { json } = command {
        return feed(&cli.node, *json).await;
    }
    let c = client::Client::connect(&cli.node).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let needs_identity = matches!(command, Command::Lock(_) | Command::Unlock { .. });
    if needs_identity {
        let name = cli.name.clone().unwrap_or_else(client::default_name);
        c.authenticate(&identity_file(&cli)?, &name).await?;
    }
    match command {
        Command::List { json } => {
            let files = c.list().await?;
            cli::print_list(&files, *json, &mut out).context("cannot write the list")?;
        }
        Command::Lock(t) => {
            let path = resolve(&c, t).await?;
            match lock_with_retry(&c, path).await? {
                ClientResponse::Locked(l) => writeln!(
                    out,
                    "locked {} (owner {}, through node {})",
                    l.path, l.owner_name, l.via
                )?,
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Unlock { target, force } => {
            let path = resolve(&c, target).await?;
            match c
                .call(ClientRequest::Unlock {
                    path,
                    force: *force,
                })
                .await?
            {
                ClientResponse::Unlocked { lock, released } => {
                    writeln!(
                        out,
                        "unlocked {} (was locked by {}); {} held change(s) released",
                        lock.path,
                        lock.owner_name,
                        released.len()
                    )?;
                    for line in cli::describe_released(&released) {
                        writeln!(out, "{line}")?;
                    }
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Locks { json } => match c.call(ClientRequest::Locks).await? {
            ClientResponse::LockList(v) => cli::print_locks(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Feed { .. } => unreachable!("handled above"),
        Command::Clients { json } => match c.call(ClientRequest::Clients).await? {
            ClientResponse::ClientList(v) => cli::print_clients(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Held { json } => match c.call(ClientRequest::Held).await? {
            ClientResponse::HeldList(v) => cli::print_held(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
    }
    Ok(ExitCode::SUCCESS)
}
