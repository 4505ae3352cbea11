//! `tandem`: the Tandem client. A subcommand does one thing and exits (for
//! scripts); with no subcommand it opens the terminal UI.

use tandem_common::display::human_size;
use tandem_tui::{cli, client, conflicts, transfer, versions};

use std::process::ExitCode;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tandem_common::RelPath;
use tandem_common::proto::{
    Access, ClientRequest, ClientResponse, ConflictAction, FeedCursor, LockInfo,
};

/// Tandem client: look at and steer a Tandem cluster through any node.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem client: list the cluster's files, lock them, and steer its nodes",
    after_help = "Example:\n  tandem --node 127.0.0.1:7001 list\n  TANDEM_NODE=127.0.0.1:7002 tandem lock 3"
)]
struct Cli {
    /// Node to talk to (HOST:PORT, or ID@HOST:PORT to insist on its id),
    /// before or after the subcommand.
    #[arg(
        long,
        global = true,
        env = "TANDEM_NODE",
        default_value = "127.0.0.1:7001",
        value_name = "ADDR"
    )]
    node: String,
    /// Your key file, made on first use [default: ~/.config/tandem/client.key].
    #[arg(long, global = true, env = "TANDEM_IDENTITY", value_name = "FILE")]
    identity: Option<PathBuf>,
    /// How long to wait for each answer, e.g. 10s, 1m.
    #[arg(long, global = true, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout)]
    timeout: std::time::Duration,
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
    #[command(
        after_help = "Example:\n  tandem lock 3\n  tandem lock --path docs/plan.md\n  tandem lock --wait --path docs/plan.md   # queue until it is yours"
    )]
    Lock {
        #[command(flatten)]
        target: Target,
        /// If someone holds it, wait in its queue until it is yours
        /// (Ctrl-C leaves the queue).
        #[arg(long)]
        wait: bool,
    },
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
    /// Follow the live feed of events of every node (Ctrl-C to stop); reconnects and resumes.
    #[command(after_help = "Example:\n  tandem feed\n  tandem feed --json | jq -r .text")]
    Feed {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Download a file from the cluster (newest version) into a directory.
    #[command(
        after_help = "Example:\n  tandem fetch docs/plan.md --to /tmp\n  tandem fetch big.iso --from B\n  tandem fetch docs/plan.md --force   # replace ./plan.md"
    )]
    Fetch {
        /// The file's path in the cluster.
        path: String,
        /// Directory to save it in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        to: PathBuf,
        /// Download from this node (by name) instead of the best one.
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
        /// Replace a file of the same name already in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Upload a local file into the cluster (sync carries it to every node).
    #[command(
        after_help = "Example:\n  tandem put report.pdf\n  tandem put ./build/app --as releases/app-1.2\n  tandem put report.pdf --force   # replace the cluster's report.pdf"
    )]
    Put {
        /// The local file.
        file: PathBuf,
        /// Its path in the cluster [default: the file's name].
        #[arg(long = "as", value_name = "PATH")]
        as_path: Option<String>,
        /// Replace a file already at that path in the cluster (not needed
        /// for a file you have locked).
        #[arg(long)]
        force: bool,
    },
    /// Show a node's file cache: entries and hit ratio.
    #[command(after_help = "Example:\n  tandem cache\n  tandem cache --of B --json")]
    Cache {
        /// The node whose cache to show, by name [default: the one
        /// connected to].
        #[arg(long, value_name = "NODE")]
        of: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every node: up/down, round-trip time, files, CPU, memory, clock offset.
    #[command(after_help = "Example:\n  tandem nodes\n  tandem nodes --json")]
    Nodes {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the round-trip time to a node.
    #[command(after_help = "Example:\n  tandem ping B")]
    Ping {
        /// The node's name.
        #[arg(value_name = "NODE")]
        target: String,
    },
    /// List one node's own files.
    #[command(after_help = "Example:\n  tandem discover B")]
    Discover {
        /// The node's name.
        #[arg(value_name = "NODE")]
        target: String,
        /// Print JSON.
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
    /// Show the versions nodes kept of a file (or of the files in a folder)
    /// when a peer's change deleted or overwrote them.
    #[command(
        after_help = "Examples:\n  tandem versions docs/plan.md\n  tandem versions docs --json"
    )]
    Versions {
        /// The file or folder, as in `tandem list`.
        path: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a kept version current again: a new change on the node that
    /// keeps it, which syncs everywhere (what it replaces is kept in turn).
    /// A folder brings back the newest kept version of each file in it.
    #[command(
        after_help = "Examples:\n  tandem restore docs/plan.md                  # the newest kept version\n  tandem restore docs/plan.md --version 3f2a9c1\n  tandem restore docs --from B                 # a deleted folder, as B kept it"
    )]
    Restore {
        /// The file or folder.
        path: String,
        /// Which version (its ID from `tandem versions`; the first
        /// characters do).
        #[arg(long, value_name = "ID")]
        version: Option<String>,
        /// Only versions kept on this node.
        #[arg(long, value_name = "NODE")]
        from: Option<String>,
    },
    /// On a send-only node (`tandem-node --mode send-only`): push its
    /// version over every change of the others it did not take (state
    /// "differs" in `tandem list`): its files win everywhere, files it does
    /// not have are deleted everywhere (kept as versions there).
    #[command(
        after_help = "Examples:\n  tandem --node 127.0.0.1:7001 override\n  tandem --node 127.0.0.1:7001 override docs/"
    )]
    Override {
        /// Only this file or folder.
        path: Option<String>,
    },
    /// On a receive-only node (`tandem-node --mode receive-only`): throw
    /// away the changes made there (state "differs" in `tandem list`),
    /// keeping them in its versions folder, and take the cluster's version
    /// again.
    #[command(
        after_help = "Examples:\n  tandem --node 127.0.0.1:7002 revert\n  tandem --node 127.0.0.1:7002 revert notes.txt"
    )]
    Revert {
        /// Only this file or folder.
        path: Option<String>,
    },
    /// Show what the node ignores: its patterns (DIR/.tandemignore and
    /// --ignore) and the paths on its disk they match.
    #[command(
        after_help = "Example:\n  tandem ignored\n  tandem --node 127.0.0.1:7002 ignored --json"
    )]
    Ignored {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show this client's id and role on the node.
    #[command(after_help = "Example:\n  tandem whoami")]
    Whoami,
    /// Admin: give a client a role (its id is in its `tandem whoami`).
    #[command(
        after_help = "Example:\n  tandem approve ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23 --role write\n  tandem approve ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23 --revoke"
    )]
    Approve {
        /// The client's id.
        id: String,
        /// read, write or admin.
        #[arg(long, required_unless_present = "revoke", value_parser = parse_role)]
        role: Option<Access>,
        /// Take every right away instead.
        #[arg(long, conflicts_with = "role")]
        revoke: bool,
    },
    /// Admin: print a one-time code that gives a new client a role (24 hours, this node).
    #[command(after_help = "Example:\n  tandem invite --role write")]
    Invite {
        /// read, write or admin.
        #[arg(long, default_value = "read", value_parser = parse_role)]
        role: Access,
    },
    /// Use an invite code: this client gets its role.
    #[command(after_help = "Example:\n  tandem --node 192.168.1.20:7001 register K7DXQ2AB-...")]
    Register {
        /// The code `tandem invite` printed.
        code: String,
    },
    /// Show every client identity of the cluster with its role.
    #[command(after_help = "Example:\n  tandem identities --json")]
    Identities {
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
    /// Show the losing versions kept on every node (`.tandem/conflicts/`);
    /// restore one as the current version, delete it, or download it.
    #[command(
        after_help = "Examples:\n  tandem conflicts\n  tandem conflicts restore 3f2a9c1\n  tandem conflicts discard 3f2a9c1\n  tandem conflicts fetch 3f2a9c1 --to /tmp\n\nRestoring keeps the version it replaces as a conflict copy in its turn."
    )]
    Conflicts {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// What to do with one copy (none: list them).
        #[command(subcommand)]
        action: Option<ConflictCommand>,
    },
}

#[derive(Subcommand)]
enum ConflictCommand {
    /// Make a kept copy the current version of its file, on every node.
    Restore {
        /// The copy's ID from `tandem conflicts` (its first characters do).
        id: String,
    },
    /// Delete a kept copy.
    Discard {
        /// The copy's ID from `tandem conflicts` (its first characters do).
        id: String,
    },
    /// Download a kept copy (from whichever node keeps it) into a directory,
    /// under its name in the conflicts folder.
    Fetch {
        /// The copy's ID from `tandem conflicts` (its first characters do).
        id: String,
        /// Directory to save it in.
        #[arg(long, value_name = "DIR", default_value = ".")]
        to: PathBuf,
        /// Replace a file of the same name already in DIR.
        #[arg(long)]
        force: bool,
    },
}

/// Fetches `what` into `to` with a progress bar and says where it went.
async fn fetch_and_say(
    c: &client::Client,
    what: &transfer::Wanted,
    to: &Path,
    force: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let done = match transfer::fetch_with_bar(c, what, to, force).await {
        Err(e) if e.is::<transfer::WouldOverwrite>() => {
            bail!("{e}. Add --force to replace it, or --to another folder")
        }
        r => r?,
    };
    writeln!(
        out,
        "{} saved to {} ({}, {:.2?}, from {})",
        what,
        done.dest.display(),
        human_size(done.file.size),
        t0.elapsed(),
        done.from
    )?;
    Ok(())
}

/// `--node` must be an address. A node's name there is most likely the
/// old `cache --node NAME`, now `cache --of NAME` (`--node` is global and
/// taken after the subcommand too): say so instead of failing to resolve.
fn check_node_arg(cli: &Cli) -> Result<(), clap::Error> {
    use clap::CommandFactory;
    let addr = cli
        .node
        .rsplit_once('@')
        .map_or(cli.node.as_str(), |(_, a)| a);
    let is_addr = addr
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if is_addr {
        return Ok(());
    }
    let v = &cli.node;
    let msg = match &cli.command {
        Some(Command::Cache { .. }) => format!(
            "--node takes the address of the node to talk to (HOST:PORT), not a node's name; to see the cache of node {v}, use `tandem cache --of {v}`"
        ),
        _ => format!(
            "--node {v:?} is not an address; give HOST:PORT or ID@HOST:PORT, e.g. --node 127.0.0.1:7001 (set by --node or TANDEM_NODE)"
        ),
    };
    Err(Cli::command().error(clap::error::ErrorKind::InvalidValue, msg))
}

fn main() -> ExitCode {
    tandem_tui::memory::tune_allocator();
    let cli = Cli::parse();
    if let Err(e) = check_node_arg(&cli) {
        e.exit();
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tandem: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        // The reader went away (`tandem list | head`): not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// True when `e` comes from writing to a pipe whose reader is gone.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn parse_role(s: &str) -> Result<Access, String> {
    s.parse()
}

fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 10s or 1m"))?;
    if d.is_zero() {
        return Err("the timeout must be more than 0".into());
    }
    Ok(d)
}

/// Turns an index or `--path` into a path, using the node's list.
async fn resolve(c: &client::Client, t: &Target) -> anyhow::Result<RelPath> {
    if let Some(p) = &t.path {
        return RelPath::new(p.as_str()).with_context(|| format!("invalid path {p:?}"));
    }
    let i = t.index.unwrap_or(0);
    // Read page by page, keeping only the row wanted (a million-row table
    // is never held).
    let (mut rows, mut found) = (0usize, None);
    c.list_each(|page| {
        for f in page {
            rows += 1;
            if rows == i {
                found = Some(f.path);
            }
        }
        Ok(())
    })
    .await?;
    match found {
        Some(p) => Ok(p),
        None => bail!("there is no file #{i}: the list has {rows} files (see `tandem list`)"),
    }
}

/// Locks `path`; with `wait`, queues behind the holder and returns once
/// the lock is this client's (saying so on stderr meanwhile).
async fn lock(c: &client::Client, path: RelPath, wait: bool) -> anyhow::Result<LockInfo> {
    match c
        .call(ClientRequest::Lock {
            path: path.clone(),
            wait,
        })
        .await?
    {
        ClientResponse::Locked(l) => Ok(l),
        ClientResponse::Queued { lock, position } => {
            eprintln!(
                "{} is locked by {} (through {}); waiting as number {position} in its queue (Ctrl-C to give up)…",
                lock.path, lock.owner_name, lock.via
            );
            match c
                .start(ClientRequest::AwaitLock { path })?
                .next_untimed()
                .await?
            {
                ClientResponse::Locked(l) => Ok(l),
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        other => bail!("unexpected answer: {other:?}"),
    }
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
    client::set_defaults(cli.identity.clone(), cli.timeout);
    let Some(command) = &cli.command else {
        let name = cli.name.clone().unwrap_or_else(client::default_name);
        tandem_tui::ui_main::run_ui(cli.node.clone(), name).await?;
        return Ok(ExitCode::SUCCESS);
    };
    if let Command::Feed { json } = command {
        return feed(&cli.node, *json).await;
    }
    let display_name = cli.name.clone().unwrap_or_else(client::default_name);
    let c = client::Client::connect_as(&cli.node, &display_name).await?;
    let stdout = std::io::stdout();
    // Buffered: a 100,000-row listing is one write, not a million.
    let mut out = std::io::BufWriter::new(stdout.lock());
    match command {
        // Rows are written as they arrive (the table for people sizes its
        // columns from its first rows; see `cli::TextList`).
        Command::List { json: true } => {
            let mut list = cli::JsonList::new(&mut out);
            c.list_each(|page| list.rows(&page)).await?;
            list.finish().context("cannot write the list")?;
        }
        Command::List { json: false } => {
            let mut list = cli::TextList::new(&mut out);
            c.list_each(|page| list.rows(page)).await?;
            list.finish().context("cannot write the list")?;
        }
        Command::Lock { target, wait } => {
            let path = resolve(&c, target).await?;
            let l = lock(&c, path, *wait).await?;
            writeln!(
                out,
                "locked {} (owner {}, through node {})",
                l.path, l.owner_name, l.via
            )?;
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
                ClientResponse::Unlocked {
                    lock,
                    released,
                    outcomes,
                } => {
                    writeln!(
                        out,
                        "unlocked {} (was locked by {}); {} held change(s) released",
                        lock.path,
                        lock.owner_name,
                        released.len()
                    )?;
                    for line in cli::describe_released(&released, &outcomes) {
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
        Command::Fetch {
            path,
            to,
            from,
            force,
        } => {
            let rel =
                RelPath::new(path.as_str()).with_context(|| format!("invalid path {path:?}"))?;
            let what = transfer::Wanted::File {
                path: rel,
                from: from.clone(),
            };
            fetch_and_say(&c, &what, to, *force, &mut out).await?;
        }
        Command::Put {
            file,
            as_path,
            force,
        } => {
            let name = match as_path {
                Some(p) => p.clone(),
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{} has no usable file name; give --as PATH",
                            file.display()
                        )
                    })?
                    .to_string(),
            };
            let rel = RelPath::new(name.as_str())
                .with_context(|| format!("invalid cluster path {name:?}"))?;
            let t0 = std::time::Instant::now();
            let size = transfer::put(&c, file, &rel, *force).await?;
            writeln!(
                out,
                "{} stored as {} on {} ({}, {:.2?})",
                file.display(),
                rel,
                c.node_name,
                human_size(size),
                t0.elapsed()
            )?;
        }
        Command::Cache { of, json } => {
            match c.call(ClientRequest::Cache { node: of.clone() }).await? {
                ClientResponse::CacheReport(r) => cli::print_cache(&r, *json, &mut out)?,
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Nodes { json } => match c.call(ClientRequest::Nodes).await? {
            ClientResponse::NodeList(v) => cli::print_nodes(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Ping { target } => match c
            .call(ClientRequest::Ping {
                node: target.clone(),
            })
            .await?
        {
            ClientResponse::Pong { rtt_us } => writeln!(
                out,
                "{target}: round trip {}",
                tandem_common::display::rtt(rtt_us)
            )?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Discover { target, json: true } => {
            let mut list = cli::JsonList::new(&mut out);
            c.discover_each(target, |page| list.rows(&page)).await?;
            list.finish().context("cannot write the list")?;
        }
        Command::Discover {
            target,
            json: false,
        } => {
            let mut list = cli::TextList::new(&mut out);
            c.discover_each(target, |page| list.rows(page)).await?;
            list.finish().context("cannot write the list")?;
        }
        Command::Clients { json } => match c.call(ClientRequest::Clients).await? {
            ClientResponse::ClientList(v) => cli::print_clients(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Versions { path, json } => {
            let rel = RelPath::new(path.trim_end_matches('/'))
                .with_context(|| format!("invalid path {path:?}"))?;
            let (found, unanswered) = versions::kept_versions(&c, &rel).await?;
            versions::print_versions(&rel, &found, &unanswered, *json, &mut out)?;
        }
        Command::Restore {
            path,
            version,
            from,
        } => {
            let rel = RelPath::new(path.trim_end_matches('/'))
                .with_context(|| format!("invalid path {path:?}"))?;
            let (found, unanswered) = versions::kept_versions(&c, &rel).await?;
            let chosen = match versions::pick(&rel, &found, version.as_deref(), from.as_deref()) {
                Ok(c) => c,
                Err(e) if unanswered.is_empty() => bail!("{e}"),
                Err(e) => bail!("{e} (not asked: {})", unanswered.join("; ")),
            };
            let mut failed = 0;
            for v in chosen {
                let req = ClientRequest::RestoreVersion {
                    node: v.node.clone(),
                    id: v.id.clone(),
                };
                match c.call(req).await {
                    Ok(ClientResponse::VersionRestored(r)) => {
                        writeln!(out, "{}", versions::describe_restoration(&r))?
                    }
                    Ok(other) => bail!("unexpected answer: {other:?}"),
                    Err(e) => {
                        failed += 1;
                        eprintln!("tandem: cannot restore {} from {}: {e}", v.path, v.node);
                    }
                }
            }
            if failed > 0 {
                out.flush()?;
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Override { path } | Command::Revert { path } => {
            let path = path
                .as_deref()
                .map(|p| {
                    RelPath::new(p.trim_end_matches('/'))
                        .with_context(|| format!("invalid path {p:?}"))
                })
                .transpose()?;
            let (req, did) = match command {
                Command::Override { .. } => (
                    ClientRequest::Override { path },
                    "pushed over the others' version",
                ),
                _ => (
                    ClientRequest::Revert { path },
                    "thrown away here (kept as versions); the cluster's version comes back",
                ),
            };
            match c.call(req).await? {
                ClientResponse::Mirrored(r) => {
                    for p in &r.paths {
                        writeln!(out, "{p}")?;
                    }
                    if r.count > r.paths.len() as u64 {
                        writeln!(out, "… and {} more", r.count - r.paths.len() as u64)?;
                    }
                    writeln!(out, "{} path(s) on {} {did}", r.count, r.node)?;
                    if !r.not_done.is_empty() {
                        out.flush()?;
                        for why in &r.not_done {
                            eprintln!("tandem: left as it was: {why}");
                        }
                        return Ok(ExitCode::FAILURE);
                    }
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Ignored { json } => match c.call(ClientRequest::Ignored).await? {
            ClientResponse::IgnoredList(r) => cli::print_ignored(&r, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Whoami => {
            let id = tandem_common::identity::format_id(&c.my_id);
            match c.role {
                Some(r) => writeln!(out, "{id}  role {r} on node {}", c.node_name)?,
                None => writeln!(
                    out,
                    "{id}  no role on node {} yet: ask an admin to run `tandem approve {id} --role write` (or use `tandem register CODE`)",
                    c.node_name
                )?,
            }
            writeln!(out, "key: {}", client::Creds::get()?.key_file().display())?;
        }
        Command::Approve { id, role, revoke } => {
            let uid = tandem_common::identity::parse_id(id)?;
            let role = if *revoke { None } else { *role };
            match c.call(ClientRequest::Approve { id: uid, role }).await? {
                ClientResponse::Approved(r) => writeln!(
                    out,
                    "{} ({}) now has {}",
                    tandem_common::identity::format_id(&r.id),
                    r.name,
                    r.role
                        .map_or("no role".to_string(), |x| format!("the {x} role"))
                )?,
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Invite { role } => match c.call(ClientRequest::Invite { role: *role }).await? {
            ClientResponse::Invited { code, .. } => {
                writeln!(out, "{code}")?;
                eprintln!(
                    "one-time code for the {role} role, valid 24 hours on node {}: the new client runs `tandem --node ADDR register {code}` against this node",
                    c.node_name
                );
            }
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Register { code } => {
            match c
                .call(ClientRequest::Register { code: code.clone() })
                .await?
            {
                ClientResponse::Registered { role } => writeln!(
                    out,
                    "registered: this client ({}) has the {role} role",
                    tandem_common::identity::format_id(&c.my_id)
                )?,
                other => bail!("unexpected answer: {other:?}"),
            }
        }
        Command::Identities { json } => match c.call(ClientRequest::Identities).await? {
            ClientResponse::IdentityList(v) => cli::print_identities(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Held { json } => match c.call(ClientRequest::Held).await? {
            ClientResponse::HeldList(v) => cli::print_held(&v, *json, &mut out)?,
            other => bail!("unexpected answer: {other:?}"),
        },
        Command::Conflicts { json, action } => {
            let (copies, unanswered, not_listed) = match c.call(ClientRequest::Conflicts).await? {
                ClientResponse::ConflictList {
                    copies,
                    unanswered,
                    not_listed,
                } => (copies, unanswered, not_listed),
                other => bail!("unexpected answer: {other:?}"),
            };
            let (typed, action) = match action {
                None => {
                    conflicts::print_conflicts(&copies, &unanswered, not_listed, *json, &mut out)?;
                    out.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
                Some(ConflictCommand::Restore { id }) => (id, Ok(ConflictAction::Restore)),
                Some(ConflictCommand::Discard { id }) => (id, Ok(ConflictAction::Discard)),
                Some(ConflictCommand::Fetch { id, to, force }) => (id, Err((to, *force))),
            };
            let copy = match conflicts::pick(&copies, typed) {
                Ok(c) => c.clone(),
                Err(e) if unanswered.is_empty() => bail!("{e}"),
                Err(e) => bail!("{e} (not asked: {})", unanswered.join("; ")),
            };
            // Not a change to the copy: a download of it.
            let action = match action {
                Ok(action) => action,
                Err((to, force)) => {
                    let Some(what) = transfer::Wanted::copy(&copy) else {
                        bail!(
                            "{} named the copy {:?}, which is not a path",
                            copy.node,
                            copy.id
                        );
                    };
                    fetch_and_say(&c, &what, to, force, &mut out).await?;
                    out.flush()?;
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let req = ClientRequest::ResolveConflict {
                node: copy.node,
                id: copy.id,
                action,
            };
            match c.call(req).await? {
                ClientResponse::ConflictResolved(r) => {
                    writeln!(out, "{}", conflicts::describe_resolution(&r))?
                }
                other => bail!("unexpected answer: {other:?}"),
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_closed_pipe_while_rows_stream_is_not_an_error() {
        use std::io::{Error, ErrorKind};
        let pipe = || Error::from(ErrorKind::BrokenPipe);
        let streamed = anyhow::Error::from(client::ClientError::Output(pipe()));
        assert!(super::is_broken_pipe(&streamed));
        let finished = anyhow::Error::from(pipe()).context("cannot write the list");
        assert!(super::is_broken_pipe(&finished));
        let other = anyhow::Error::from(client::ClientError::Output(Error::from(
            ErrorKind::StorageFull,
        )));
        assert!(!super::is_broken_pipe(&other));
    }

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn node_is_global_and_cache_names_its_node_with_of() {
        for args in [
            &["tandem", "--node", "127.0.0.1:9", "cache", "--of", "B"][..],
            &["tandem", "cache", "--of", "B", "--node", "127.0.0.1:9"],
            &["tandem", "cache", "--node", "127.0.0.1:9", "--of", "B"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.node, "127.0.0.1:9", "{args:?}");
            assert!(
                matches!(cli.command, Some(Command::Cache { of: Some(ref n), .. }) if n == "B"),
                "{args:?}"
            );
            assert!(check_node_arg(&cli).is_ok());
        }
        let cli = Cli::try_parse_from(["tandem", "list", "--node", "h:7001"]).unwrap();
        assert_eq!(cli.node, "h:7001");
        // The old spelling: a name where an address goes, with the way out.
        let cli = Cli::try_parse_from(["tandem", "--node", "127.0.0.1:9", "cache", "--node", "B"])
            .unwrap();
        let e = check_node_arg(&cli).unwrap_err().to_string();
        assert!(e.contains("use `tandem cache --of B`"), "{e}");
        let cli = Cli::try_parse_from(["tandem", "list", "--node", "B"]).unwrap();
        let e = check_node_arg(&cli).unwrap_err().to_string();
        assert!(e.contains("--node \"B\" is not an address"), "{e}");
        let cli = Cli::try_parse_from(["tandem", "--node", "ABC@[::1]:7001", "list"]).unwrap();
        assert!(check_node_arg(&cli).is_ok());
        assert!(
            Cli::try_parse_from(["tandem", "lock"]).is_err(),
            "lock needs an index or --path"
        );
        assert!(Cli::try_parse_from(["tandem", "lock", "3", "--path", "x"]).is_err());
    }
}
