//! Times lock + unlock round trips through one node over one client
//! connection (the `tandem` CLI would add a process start and a TLS
//! handshake to every call). Used by `bench/locks.sh`.
//!
//! ```text
//! cargo run --release -p tandem-tui --example lock_bench -- \
//!     --node 127.0.0.1:7001 --path some/file --rounds 1000 [--identity F]
//! ```
//!
//! Prints every figure on one line: rounds, total seconds, and the
//! median, p90, p99 and max of one lock + unlock, in milliseconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tandem_common::RelPath;
use tandem_common::proto::{ClientRequest, ClientResponse};
use tandem_tui::client::{self, Client};

struct Args {
    node: String,
    path: RelPath,
    rounds: usize,
    identity: Option<PathBuf>,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let (mut node, mut path, mut rounds, mut identity) = (None, None, 1000, None);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--node" => node = Some(value()?),
            "--path" => path = Some(RelPath::new(value()?.as_str())?),
            "--rounds" => rounds = value()?.parse()?,
            "--identity" => identity = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(Args {
        node: node.context("--node HOST:PORT is needed")?,
        path: path.context("--path FILE is needed")?,
        rounds,
        identity,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    client::set_defaults(a.identity.clone(), Duration::from_secs(10));
    let c = Client::connect_as(&a.node, "lock-bench").await?;
    let mut times = Vec::with_capacity(a.rounds);
    let start = Instant::now();
    for i in 0..a.rounds {
        let t = Instant::now();
        match c
            .call(ClientRequest::Lock {
                path: a.path.clone(),
                wait: false,
            })
            .await
            .with_context(|| format!("lock, round {i}"))?
        {
            ClientResponse::Locked(_) => {}
            other => bail!("round {i}: lock answered {other:?}"),
        }
        match c
            .call(ClientRequest::Unlock {
                path: a.path.clone(),
                force: false,
            })
            .await
            .with_context(|| format!("unlock, round {i}"))?
        {
            ClientResponse::Unlocked { .. } => {}
            other => bail!("round {i}: unlock answered {other:?}"),
        }
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    println!(
        "rounds {} total_s {:.3} median_ms {:.2} p90_ms {:.2} p99_ms {:.2} max_ms {:.2}",
        a.rounds,
        total.as_secs_f64(),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 0.99),
        percentile(&times, 1.0)
    );
    Ok(())
}
