//! Tandem node: owns a directory, keeps a persistent index of it, watches it,
//! and answers clients. [`run`] is the composition root: it takes an
//! already-bound listener and a shutdown future, so tests and benchmarks can
//! choose ports and stop nodes cleanly.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod api;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod core;
pub mod engine;
pub mod events;
pub mod index;
pub mod links;
pub mod locks;
pub mod metrics;
pub mod peer;
pub mod scan;
pub mod statelock;
pub mod store;
pub mod transfer;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::core::{Core, CoreHandle, CoreMsg};
use crate::store::Store;

/// Runs a node until `shutdown` completes, then flushes the index and stops.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state folder {}", cfg.state_dir.display()))?;
    let _lock = statelock::StateLock::acquire(&cfg.state_dir)?;
    let db = cfg.state_dir.join("index.db");
    let store = Store::open(&db).with_context(|| format!("cannot open {}", db.display()))?;
    let node_id = store.node_id()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Watch before the first scan, so nothing that happens during it is missed.
    let (watcher, unwatched) = watch::start(&cfg.dir, &cfg.state_dir, tx.clone(), CoreMsg::Watch)
        .with_context(|| {
            format!(
                "cannot watch {} (if the error mentions a limit, raise fs.inotify.max_user_watches / max_user_instances)",
                cfg.dir.display()
            )
        })?;
    let links = links::Links::new(node_id);
    let (seq_tx, seq_rx) = tokio::sync::watch::channel(0);
    let events = std::sync::Arc::new(events::EventBus::new(&cfg.name, core::now_ns() as u64));
    let metrics = Arc::new(metrics::Metrics::default());
    let io = core::CoreIo {
        rt: tokio::runtime::Handle::current(),
        links: links.clone(),
        tx: tx.clone(),
        seq_tx,
        events: events.clone(),
        metrics: metrics.clone(),
    };
    let core = Core::new(
        cfg.dir.clone(),
        cfg.state_dir.clone(),
        cfg.name.clone(),
        store,
        io,
    )?
    .verify_every(cfg.verify_every)
    .unwatched(unwatched);
    let core_thread = std::thread::Builder::new()
        .name("tandem-core".into())
        .spawn(move || core.run(rx))
        .context("cannot start the core thread")?;
    let handle = CoreHandle::new(tx);
    let stop = tokio_util::sync::CancellationToken::new();
    let local = listener.local_addr()?;
    let cache = Arc::new(cache::FileCache::new(cfg.cache_size, cfg.cache_policy));
    let answerer = Arc::new(cluster::NodeAnswerer {
        core: handle.clone(),
        metrics: metrics.clone(),
        name: cfg.name.clone(),
        addr: local.to_string(),
        cache: cache.clone(),
    });
    let peer_ctx = peer::PeerCtx {
        core: handle.clone(),
        links,
        me: node_id,
        name: cfg.name.clone(),
        seq: seq_rx,
        shutdown: stop.clone(),
        answerer: answerer.clone(),
        answerer_metrics: metrics.clone(),
        events: events.clone(),
    };
    let ctx = api::Ctx {
        core: handle.clone(),
        node_id,
        name: cfg.name.clone(),
        peer: peer_ctx.clone(),
        configured: cfg.peers.clone(),
        clients: api::Clients::default(),
        events,
        metrics: metrics.clone(),
        cache,
        answerer,
        tmp_dir: cfg.state_dir.join("tmp"),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    {
        let (m, s) = (metrics.clone(), stop.clone());
        tasks.spawn(async move { m.sample_loop(s).await });
    }
    if let Some(addr) = cfg.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
        tasks.spawn(api::serve_metrics(l, ctx.clone(), stop.clone()));
    }
    for addr in &cfg.peers {
        tasks.spawn(peer::dial_loop(*addr, peer_ctx.clone()));
    }
    tracing::info!(
        "node {:?} ({node_id}) serving {} on {local}",
        cfg.name,
        cfg.dir.display()
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(api::serve_connection(stream, addr, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::info!("shutting down");
    stop.cancel();
    drop(watcher);
    tasks.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), tasks.wait()).await;
    handle.shutdown();
    let _ = tokio::task::spawn_blocking(move || core_thread.join()).await;
    Ok(())
}
