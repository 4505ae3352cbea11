//! Tandem node: owns a directory, keeps a persistent index of it, watches it,
//! and answers clients. [`run`] is the composition root: it takes an
//! already-bound listener and a shutdown future, so tests and benchmarks can
//! choose ports and stop nodes cleanly.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::panic))]

pub mod access;
pub mod api;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conflicts;
pub mod core;
pub mod crashpoint;
pub mod engine;
pub mod events;
pub mod fsprobe;
pub mod held;
pub mod ignores;
pub mod index;
pub mod links;
pub mod lock_service;
pub mod mesh;
pub mod metrics;
pub mod names;
pub mod pace;
pub mod peer;
pub mod raft;
pub mod scan;
pub mod statelock;
pub mod store;
pub mod transfer;
pub mod trust;
pub mod versions;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::core::{Core, CoreHandle, CoreMsg};
use crate::store::Store;

/// File name of the node's private key in its state folder.
pub const KEY_FILE: &str = "node.key";

/// How often versions past `--keep-versions` / `--versions-size` go.
const VERSIONS_CLEANUP: std::time::Duration = std::time::Duration::from_secs(60);

/// The node's key pair (made on first use, mode 0600): its id is the
/// node's id.
pub fn node_key(state_dir: &std::path::Path) -> anyhow::Result<tandem_common::identity::KeyPair> {
    let path = state_dir.join(KEY_FILE);
    let (key, made) = tandem_common::identity::KeyPair::load_or_create(&path)?;
    if made {
        tracing::info!(
            "made this node's key in {}; its id is {}",
            path.display(),
            tandem_common::NodeId(key.id())
        );
    }
    Ok(key)
}

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
    let key = node_key(&cfg.state_dir)?;
    let node_id = tandem_common::NodeId(key.id());
    store.adopt_node_id(node_id)?;
    let tls = tandem_common::tls::Tls::node(&key)?;
    let trust = trust::Trust::new(
        &cfg.state_dir,
        cfg.peers.iter().filter_map(|p| p.id).collect(),
    );
    // SAFETY: geteuid only reads the process's effective user id.
    if unsafe { libc::geteuid() } == 0 {
        tracing::warn!(
            "RUNNING AS ROOT: every file this node writes into {} is owned by root; run it as the user who owns the folder",
            cfg.dir.display()
        );
    }
    // An ignore file that cannot be read is not "nothing ignored".
    let ignored = ignores::Ignores::load(&cfg.dir, &cfg.ignore).with_context(|| {
        format!(
            "cannot read the ignore patterns in {}; fix or remove it",
            cfg.dir.join(ignores::IGNORE_FILE).display()
        )
    })?;
    for p in ignored.problems() {
        tracing::warn!("{p}");
    }
    if !ignored.is_empty() {
        tracing::info!(
            "ignoring what {} pattern(s) match (`tandem ignored` lists them)",
            ignored.rules().len()
        );
    }
    let shared_ignores = ignores::SharedIgnores::default();
    shared_ignores.set(Arc::new(ignored));
    let (tx, rx) = std::sync::mpsc::channel();
    // Watch before the first scan, so nothing that happens during it is
    // missed: each folder is watched, then listed with a stat of what is in
    // it, in one pass that is the first scan's listing. It runs beside
    // loading the index (below) and is waited for before the core starts.
    let watching = {
        let (dir, state, ignores, tx) = (
            cfg.dir.clone(),
            cfg.state_dir.clone(),
            shared_ignores.clone(),
            tx.clone(),
        );
        std::thread::Builder::new()
            .name("tandem-watch-start".into())
            .spawn(move || watch::start(&dir, &state, ignores, tx, CoreMsg::Watch))
            .context("cannot start the thread that sets up the watches")?
    };
    let links = links::Links::new(node_id);
    let (seq_tx, seq_rx) = tokio::sync::watch::channel(0);
    let events = std::sync::Arc::new(events::EventBus::new(&cfg.name, core::now_ns() as u64));
    let metrics = Arc::new(metrics::Metrics::default());
    let identities = access::Identities::default();
    let pace = Arc::new(pace::Pace::default());
    let io = core::CoreIo {
        pace: pace.clone(),
        identities: identities.clone(),
        rt: tokio::runtime::Handle::current(),
        links: links.clone(),
        tx: tx.clone(),
        seq_tx,
        events: events.clone(),
        metrics: metrics.clone(),
    };
    // The lock service starts before the core, so the core's first scan
    // already knows which paths are locked (a change made to one while the
    // node was down is held, not indexed).
    let handle = CoreHandle::new(tx.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let mesh = mesh::Mesh::new(node_id, cfg.name.clone(), links.clone(), trust.clone());
    let locks = lock_service::LockService::start(
        &cfg.state_dir,
        raft::RaftSettings::with_heartbeat(cfg.lock_heartbeat),
        mesh.clone(),
        handle.clone(),
        stop.clone(),
    )
    .await?;
    let (folds, fs_folds) = fsprobe::settle(&cfg.dir, &cfg.state_dir, cfg.assume_fs);
    let core = Core::new(
        cfg.dir.clone(),
        cfg.state_dir.clone(),
        cfg.name.clone(),
        store,
        io,
    )?;
    let (watcher, unwatched, walked) = watching
        .join()
        .map_err(|_| anyhow::anyhow!("setting up the watches of {} failed", cfg.dir.display()))?
        .with_context(|| {
            format!(
                "cannot watch {} (if the error mentions a limit, raise fs.inotify.max_user_watches / max_user_instances)",
                cfg.dir.display()
            )
        })?;
    let core = core
        .verify_every(cfg.verify_every)
        .ignores(
            shared_ignores.clone(),
            cfg.ignore.clone(),
            watcher.control(),
        )
        .versions(cfg.versions)
        .mode(cfg.mode)
        .names(folds, fs_folds)
        .unwatched(unwatched)
        .walked(walked)
        .locks(
            locks
                .mirror()
                .context("cannot read the lock table in the state folder")?,
        );
    let core_thread = std::thread::Builder::new()
        .name("tandem-core".into())
        .spawn(move || core.run(rx))
        .context("cannot start the core thread")?;
    let local = listener.local_addr()?;
    let cache = Arc::new(cache::FileCache::new(cfg.cache_size, cfg.cache_policy));
    let answerer = Arc::new(cluster::NodeAnswerer {
        id: node_id,
        core: handle.clone(),
        metrics: metrics.clone(),
        name: cfg.name.clone(),
        addr: local.to_string(),
        cache: cache.clone(),
        conflicts: conflicts::folder(&cfg.state_dir),
        versions: versions::folder(&cfg.state_dir),
    });
    mesh.attach_answerer(answerer.clone());
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
        tls,
        trust,
        dir: cfg.dir.clone(),
        mesh,
        pace,
    };
    let ctx = api::Ctx {
        identities,
        invites: Arc::new(access::Invites::default()),
        idle_timeout: cfg.idle_timeout,
        conns: api::Conns::default(),
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
        locks: locks.clone(),
        root: cfg.dir.clone(),
        state_dir: cfg.state_dir.clone(),
        ignores: shared_ignores.clone(),
    };
    let tasks = tokio_util::task::TaskTracker::new();
    {
        // Old versions go in the background, once a minute.
        let (dir, r, s) = (versions::folder(&cfg.state_dir), cfg.versions, stop.clone());
        tasks.spawn(async move {
            loop {
                let d = dir.clone();
                let n = tokio::task::spawn_blocking(move || versions::clean(&d, r, core::now_ns()))
                    .await
                    .unwrap_or(0);
                if n > 0 {
                    tracing::info!("removed {n} old version(s) (--keep-versions, --versions-size)");
                }
                tokio::select! {
                    () = tokio::time::sleep(VERSIONS_CLEANUP) => {}
                    () = s.cancelled() => return,
                }
            }
        });
    }
    {
        let (m, s, c) = (metrics.clone(), stop.clone(), ctx.cache.clone());
        let totals = move || {
            let (hits, misses, _) = c.totals();
            (hits, misses)
        };
        tasks.spawn(async move { m.sample_loop(totals, s).await });
    }
    if let Some(addr) = cfg.metrics_listen {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        tracing::info!("serving Prometheus metrics on http://{addr}/metrics");
        tasks.spawn(api::serve_metrics(l, ctx.clone(), stop.clone()));
    }
    for spec in &cfg.peers {
        tasks.spawn(peer::dial_loop(spec.clone(), peer_ctx.clone()));
    }
    tasks.spawn(peer::drop_untrusted(peer_ctx.clone()));
    tracing::info!(
        "node {:?} with id {node_id} serving {} on {local} (TLS 1.3; trusted peers and approved clients only)",
        cfg.name,
        cfg.dir.display()
    );
    if cfg.peers.iter().all(|p| p.id.is_none()) {
        tracing::info!(
            "to link another node with this one, run there: tandem-node --dir DIR --peer {node_id}@{local}  (and trust its id here: tandem-node --dir {} trust ID)",
            cfg.dir.display()
        );
    }
    tokio::pin!(shutdown);
    let mut refused = 0u64;
    let mut last_refusal_log = std::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(2))
        .unwrap_or_else(std::time::Instant::now);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => match ctx.conns.any() {
                    Some(slot) => {
                        let _ = stream.set_nodelay(true);
                        tasks.spawn(api::serve_connection(stream, addr, ctx.clone(), slot));
                    }
                    None => {
                        // Closed unread: nothing is spent on it, and a
                        // flood is logged once a second, not per attempt.
                        refused += 1;
                        if last_refusal_log.elapsed() >= std::time::Duration::from_secs(1) {
                            tracing::warn!(
                                "refused {refused} connection(s), the last from {addr}: {} connections are open already",
                                api::MAX_CONNECTIONS
                            );
                            refused = 0;
                            last_refusal_log = std::time::Instant::now();
                        }
                        drop(stream);
                    }
                },
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
    locks.shutdown().await;
    handle.shutdown();
    let _ = tokio::task::spawn_blocking(move || core_thread.join()).await;
    Ok(())
}
