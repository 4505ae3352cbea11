//! `tandem`: the Tandem client. A subcommand does one thing and exits (for
//! scripts); the terminal UI comes with a later release.

use tandem_tui::{cli, client};

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Tandem client: look at and steer a Tandem cluster through any node.
#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Tandem client: list the cluster's files and steer its nodes",
    after_help = "Example:\n  tandem --node 127.0.0.1:7001 list\n  TANDEM_NODE=127.0.0.1:7002 tandem list --json"
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// List the files, sorted by name, with size and modification time.
    #[command(after_help = "Example:\n  tandem list\n  tandem list --json | jq '.[0].path'")]
    List {
        /// Print JSON (index, path, size, mtime, hash, nodes, locked_by).
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Some(command) = cli.command else {
        anyhow::bail!("the terminal UI is not available in this build yet; try `tandem list`");
    };
    match command {
        Command::List { json } => {
            let mut c = client::Client::connect(&cli.node).await?;
            let files = c.list().await?;
            let stdout = std::io::stdout();
            cli::print_list(&files, json, &mut stdout.lock()).context("cannot write the list")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
