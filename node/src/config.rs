//! Command-line flags and the validated configuration they become.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tandem_common::NodeId;

/// Default address a node listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

/// Tandem node: owns a directory, keeps an index of it, and syncs it with peers.
#[derive(Debug, Parser)]
#[command(
    name = "tandem-node",
    version,
    about = "Tandem node: watch a directory and keep it identical with peer nodes",
    after_help = "Example:\n  tandem-node --dir ~/shared id        # prints this node's id\n  tandem-node --dir ~/shared --listen 0.0.0.0:7001 --peer ID@host-b:7001"
)]
pub struct Args {
    /// Directory to own and sync (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Address to listen on for peers and clients, HOST:PORT (a host name
    /// listens on its first IPv4 address), e.g. 0.0.0.0:7001, localhost:7001.
    #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN, value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// A peer node to connect to, as ID@HOST:PORT (its id from
    /// `tandem-node --dir DIR id`; naming it trusts it). HOST:PORT alone
    /// connects only if that node's id is on the trust list. Repeat for
    /// several.
    #[arg(long = "peer", value_name = "ID@HOST:PORT", value_parser = parse_peer)]
    pub peers: Vec<PeerSpec>,
    /// This node's display name [default: the directory's base name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where the index and temp files live [default: DIR/.tandem].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Memory for caching files served to clients, e.g. 64MiB, 512KiB, 1GiB.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Cache eviction policy.
    #[arg(long, value_enum, default_value = "moka")]
    pub cache_policy: crate::cache::Policy,
    /// Serve Prometheus metrics over HTTP on this address (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often to compare the whole folder with the index (a stat walk;
    /// only changed files are read), to catch what the watcher missed,
    /// e.g. 1h, 10m, 30s.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_interval)]
    pub verify_every: std::time::Duration,
    /// Close a client connection that sends nothing for this long (a
    /// connection following the feed is never idle), e.g. 5m, 30s.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_interval)]
    pub idle_timeout: std::time::Duration,
    /// How often the lock cluster's leader tells the others it is there
    /// (a few hundred bytes each time). A leader that goes quiet is
    /// replaced after 2 to 3 of these; every node should use the same
    /// value. e.g. 500ms, 2s.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_heartbeat)]
    pub lock_heartbeat: std::time::Duration,
    /// Keep what a peer's change deletes or overwrites here (in
    /// STATE/versions/) this long, e.g. 30d, 12h.
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = parse_interval)]
    pub keep_versions: std::time::Duration,
    /// Let the kept versions take at most this much room (the oldest go
    /// first), e.g. 1GiB, 200MiB; 0B keeps none.
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub versions_size: u64,
    /// Do not sync paths matching this gitignore-style pattern (repeatable;
    /// added to those of DIR/.tandemignore, which syncs to every node),
    /// e.g. --ignore '*.tmp' --ignore build/
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// How this node takes part: send-receive (the default), send-only
    /// (its changes go out, the others' are not taken: `tandem override`
    /// pushes its version over them) or receive-only (the others' changes
    /// come in, its own are not sent: `tandem revert` throws them away).
    #[arg(long, value_name = "MODE", default_value = "send-receive")]
    pub mode: crate::engine::Mode,
    /// For tests, and for file systems the start-up probe misjudges: how
    /// DIR's file system compares names, instead of what the probe finds.
    /// On one that takes two spellings for one name, a peer's file whose
    /// name is another spelling of one here is not written (shown as an
    /// error until one is renamed).
    #[arg(long, value_enum, value_name = "KIND")]
    pub assume_fs: Option<crate::fsprobe::AssumeFs>,
    /// Instead of running: print the id, or edit the trust list.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `tandem-node --dir DIR <command>` does instead of running.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print this node's id (makes its key on first use).
    #[command(after_help = "Example:\n  tandem-node --dir ~/shared id")]
    Id,
    /// Accept the node with this id as a peer (takes effect at its next connection).
    #[command(
        after_help = "Example:\n  tandem-node --dir ~/shared trust ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23 --name laptop"
    )]
    Trust {
        /// The node's id, as `tandem-node --dir DIR id` prints it there.
        id: String,
        /// A name to recognise it by in the list.
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop accepting the node with this id (takes effect at its next connection).
    #[command(
        after_help = "Example:\n  tandem-node --dir ~/shared untrust ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23"
    )]
    Untrust {
        /// The node's id.
        id: String,
    },
    /// Show the trust list.
    Trusted,
}

/// A peer to dial: its id when given (which also trusts it) and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The id it must prove.
    pub id: Option<NodeId>,
    /// HOST:PORT, resolved at every dial.
    pub addr: String,
}

impl std::fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}@{}", self.addr),
            None => f.write_str(&self.addr),
        }
    }
}

/// Whether `s` has the shape HOST:PORT (a name or an IP address, `[…]`
/// around IPv6, and a port number).
fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(h, p)| {
        !h.is_empty() && !h.contains(char::is_whitespace) && p.parse::<u16>().is_ok()
    })
}

/// Parses a listening address, `HOST:PORT`: an IP address or a host name
/// (`localhost:7001`), resolved now. Of several addresses the first IPv4
/// one is taken, so `localhost` listens where `127.0.0.1` is dialled.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if !is_host_port(s) {
        return Err(format!(
            "{s:?} is not HOST:PORT; give an address and a port, e.g. 127.0.0.1:7001, 0.0.0.0:7001 or localhost:7001"
        ));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| {
            format!("cannot resolve {s:?} ({e}); give an IP address instead, e.g. 127.0.0.1:7001")
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| {
            format!("{s:?} resolves to no address; give an IP address instead, e.g. 127.0.0.1:7001")
        })
}

/// Parses `ID@HOST:PORT` or `HOST:PORT`.
pub fn parse_peer(s: &str) -> Result<PeerSpec, String> {
    let (id, addr) = match s.rsplit_once('@') {
        Some((id, addr)) => (
            Some(id.parse::<NodeId>().map_err(|e| {
                format!("{e}; give a peer as ID@HOST:PORT, e.g. ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23@localhost:7002")
            })?),
            addr,
        ),
        None => (None, s),
    };
    if !is_host_port(addr) {
        return Err(format!(
            "{addr:?} is not HOST:PORT; give a peer as ID@HOST:PORT (HOST a name or an IP address), e.g. ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23@192.168.1.20:7001 or ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23@localhost:7002"
        ));
    }
    Ok(PeerSpec {
        id,
        addr: addr.to_string(),
    })
}

/// Parses an interval such as `1h`, `10m`, `30s` (at least one second).
pub fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 1h, 10m or 30s"))?;
    if d < std::time::Duration::from_secs(1) {
        return Err(format!("{s:?} is too short; use at least 1s"));
    }
    Ok(d)
}

/// Parses the lock cluster's heartbeat: 50ms to 1h.
pub fn parse_heartbeat(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 500ms or 2s"))?;
    if d < std::time::Duration::from_millis(50) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s:?} is out of range; use 50ms to 1h"));
    }
    Ok(d)
}

/// Parses a size with its unit: `64MiB`, `512KiB`, `1.5GiB`, `100MB`,
/// `4096B` (through `byte-unit`, case-insensitive: `mib` is MiB, `b` a
/// byte, never a bit). A bare number is refused: `--cache-size 64` once
/// silently meant 64 bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the size is empty; give a number with a unit, e.g. 64MiB".into());
    }
    if t.ends_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "{t:?} has no unit; write e.g. {t}MiB (or {t}B for bytes, {t}KiB, {t}GiB)"
        ));
    }
    let b = byte_unit::Byte::parse_str(t, true)
        .map_err(|e| format!("{t:?} is not a size ({e}); write e.g. 64MiB, 512KiB or 1GiB"))?;
    Ok(b.as_u64())
}

/// Validated configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    /// The synced directory, absolute.
    pub dir: PathBuf,
    /// The state folder, absolute.
    pub state_dir: PathBuf,
    /// Display name.
    pub name: String,
    /// Peers to dial.
    pub peers: Vec<PeerSpec>,
    /// Cache capacity in bytes.
    pub cache_size: u64,
    /// Cache policy.
    pub cache_policy: crate::cache::Policy,
    /// Prometheus endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the tree is compared with the index.
    pub verify_every: std::time::Duration,
    /// Idle client connections are closed after this long.
    pub idle_timeout: std::time::Duration,
    /// The lock cluster's heartbeat.
    pub lock_heartbeat: std::time::Duration,
    /// Ignore patterns from the command line (`--ignore`).
    pub ignore: Vec<String>,
    /// How this node takes part (`--mode`).
    pub mode: crate::engine::Mode,
    /// How long and how much of what peers replace is kept.
    pub versions: crate::versions::Retention,
    /// `--assume-fs`: how DIR's file system compares names, if not probed.
    pub assume_fs: Option<crate::fsprobe::AssumeFs>,
}

impl Config {
    /// Checks and normalises the flags: creates a missing DIR (and says so),
    /// refuses a DIR that is not a directory.
    pub fn from_args(args: &Args) -> anyhow::Result<Config> {
        let dir = &args.dir;
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a directory; give --dir a directory to sync",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create directory {}", dir.display()))?;
                tracing::info!("created directory {}", dir.display());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read directory {}", dir.display()));
            }
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let state_dir = match &args.state_dir {
            Some(s) => {
                std::fs::create_dir_all(s)
                    .with_context(|| format!("cannot create state folder {}", s.display()))?;
                s.canonicalize()
                    .with_context(|| format!("cannot resolve {}", s.display()))?
            }
            None => dir.join(tandem_common::path::STATE_DIR_NAME),
        };
        // Only DIR/.tandem is kept out of sync; a state folder anywhere else
        // inside DIR would be scanned and served to every peer and client.
        if state_dir.starts_with(&dir) && state_dir != dir.join(tandem_common::path::STATE_DIR_NAME)
        {
            bail!(
                "--state-dir {} is inside the synced folder {}: its keys and index would be synced; put it outside DIR (or leave --state-dir out to use DIR/.tandem)",
                state_dir.display(),
                dir.display()
            );
        }
        let name = match &args.name {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            Some(_) => bail!("--name must not be empty"),
            None => dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("node")
                .to_string(),
        };
        Ok(Config {
            dir,
            state_dir,
            name,
            peers: args.peers.clone(),
            cache_size: args.cache_size,
            cache_policy: args.cache_policy,
            metrics_listen: args.metrics_listen,
            verify_every: args.verify_every,
            idle_timeout: args.idle_timeout,
            lock_heartbeat: args.lock_heartbeat,
            ignore: args.ignore.clone(),
            mode: args.mode,
            versions: crate::versions::Retention {
                max_age: args.keep_versions,
                max_bytes: args.versions_size,
            },
            assume_fs: args.assume_fs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("4096b"), Ok(4096), "b is a byte here, not a bit");
        assert_eq!(parse_size("0B"), Ok(0));
        assert_eq!(
            parse_size("64"),
            Err("\"64\" has no unit; write e.g. 64MiB (or 64B for bytes, 64KiB, 64GiB)".into())
        );
        assert!(parse_size("lots").unwrap_err().contains("e.g. 64MiB"));
        assert!(parse_size("5XB").unwrap_err().contains("is not a size"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:7001"),
            Ok("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(
            parse_listen("[::1]:7001"),
            Ok("[::1]:7001".parse().unwrap())
        );
        assert_eq!(
            parse_listen("localhost:7002"),
            Ok("127.0.0.1:7002".parse().unwrap()),
            "a host name, its IPv4 address first"
        );
        for bad in [
            "7002",
            "localhost",
            ":7002",
            "localhost:99999",
            "local host:1",
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("is not HOST:PORT"), "{bad}: {e}");
            assert!(e.contains("localhost:7001"), "{bad}: {e}");
        }
        assert!(
            parse_listen("no-such-host.invalid:7001")
                .unwrap_err()
                .contains("cannot resolve")
        );
    }

    #[test]
    fn peers() {
        let id = NodeId::random();
        let p = parse_peer(&format!("{id}@example.org:7001")).unwrap();
        assert_eq!(p.id, Some(id));
        assert_eq!(p.addr, "example.org:7001");
        assert_eq!(p.to_string(), format!("{id}@example.org:7001"));
        let p = parse_peer("127.0.0.1:7002").unwrap();
        assert_eq!(p.id, None);
        assert!(
            parse_peer("nope@127.0.0.1:7002")
                .unwrap_err()
                .contains("not a Tandem id")
        );
        assert!(parse_peer("127.0.0.1").unwrap_err().contains("HOST:PORT"));
        let p = parse_peer(&format!("{id}@localhost:7002")).unwrap();
        assert_eq!(p.addr, "localhost:7002");
        assert!(
            parse_peer("nope@localhost:7002")
                .unwrap_err()
                .contains("give a peer as ID@HOST:PORT")
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(
            parse_interval("1h"),
            Ok(std::time::Duration::from_secs(3600))
        );
        assert_eq!(
            parse_interval("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        assert!(parse_interval("10ms").unwrap_err().contains("too short"));
        assert!(
            parse_interval("often")
                .unwrap_err()
                .contains("not a duration")
        );
    }
}
