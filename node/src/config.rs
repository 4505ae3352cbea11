//! Command-line flags and the validated configuration they become.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;

/// Default address a node listens on.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";

/// Tandem node: owns a directory, keeps an index of it, and syncs it with peers.
#[derive(Debug, Parser)]
#[command(
    name = "tandem-node",
    version,
    about = "Tandem node: watch a directory and keep it identical with peer nodes",
    after_help = "Example:\n  tandem-node --dir ~/shared --listen 127.0.0.1:7001 --peer 127.0.0.1:7002"
)]
pub struct Args {
    /// Directory to own and sync (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Address to listen on for peers and clients.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A peer node to connect to (repeat for several).
    #[arg(long = "peer", value_name = "ADDR")]
    pub peers: Vec<SocketAddr>,
    /// This node's display name [default: the directory's base name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where the index and temp files live [default: DIR/.tandem].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
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
    pub peers: Vec<SocketAddr>,
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
        })
    }
}
