//! One chaos run: start the cluster behind proxies, execute the plan,
//! heal, settle, check, and report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use filetime::FileTime;
use tempfile::TempDir;

use super::fsops::Ctx;
use super::oracle::{self, Finding, HashCache};
use super::plan::{NAMES, Op, Rng, Topology, plan};
use super::proxy::Proxy;
use super::record::Record;
use crate::harness::{Node, free_addr, scaled, start_all, temp_files, wait_linked};

/// The cluster: nodes on folders of one temp dir, every link through a
/// pair of proxies (one per direction).
pub struct Cluster {
    pub nodes: Vec<Node>,
    proxies: BTreeMap<(usize, usize), Proxy>,
    pub scratch: PathBuf,
    _root: TempDir,
}

impl Cluster {
    pub fn start(topo: Topology, seed: u64) -> Cluster {
        let root = tempfile::Builder::new()
            .prefix(&format!("tandem-chaos-{topo}-{seed}-"))
            .tempdir()
            .expect("cannot create a temp dir");
        let scratch = root.path().join("scratch");
        fs::create_dir(&scratch).expect("cannot create the scratch folder");
        let n = topo.node_count();
        let addrs: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        let mut proxies = BTreeMap::new();
        for (a, b) in topo.links() {
            proxies.insert((a, b), Proxy::start(addrs[b]));
            proxies.insert((b, a), Proxy::start(addrs[a]));
        }
        let builders = (0..n)
            .map(|i| {
                let dir = root.path().join(NAMES[i]);
                fs::create_dir(&dir).expect("cannot create a node folder");
                let mut b = Node::builder(NAMES[i]).listen(addrs[i]).dir(dir);
                // Proxies that forward to node i stand for it.
                for (_, p) in proxies.iter().filter(|((_, to), _)| *to == i) {
                    b = b.alias(p.addr());
                }
                // Node i dials each peer through the proxy of link i→peer.
                for (_, p) in proxies.iter().filter(|((from, _), _)| *from == i) {
                    b = b.peer(p.addr());
                }
                b
            })
            .collect();
        let nodes = start_all(builders);
        for (a, b) in topo.links() {
            wait_linked(&nodes[a], &nodes[b]);
        }
        Cluster {
            nodes,
            proxies,
            scratch,
            _root: root,
        }
    }

    fn links(&self, links: &[(usize, usize)], cut: bool) -> String {
        let mut counts = Vec::new();
        for &(a, b) in links {
            for key in [(a, b), (b, a)] {
                if let Some(p) = self.proxies.get(&key) {
                    if cut {
                        p.cut();
                    } else {
                        p.heal();
                    }
                    let (acc, refused) = p.counts();
                    counts.push(format!(
                        "{}→{} {acc} forwarded/{refused} refused",
                        NAMES[key.0], NAMES[key.1]
                    ));
                }
            }
        }
        counts.join(", ")
    }

    fn heal_all(&self) {
        for p in self.proxies.values() {
            p.heal();
        }
    }
}

/// The parameters of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Spec {
    pub topo: Topology,
    pub seed: u64,
    pub ops: usize,
}

impl Spec {
    pub fn replay(&self) -> String {
        let ops = if self.ops == crate::DEFAULT_OPS {
            String::new()
        } else {
            format!(" CHAOS_OPS={}", self.ops)
        };
        let ops_flag = if self.ops == crate::DEFAULT_OPS {
            String::new()
        } else {
            format!(" --ops {}", self.ops)
        };
        format!(
            "CHAOS_SEEDS={} CHAOS_TOPOLOGY={}{ops} cargo test -p tandem-node --test chaos -- --nocapture\n    or: scripts/chaos.sh --seed {} --topology {}{ops_flag}",
            self.seed, self.topo, self.seed, self.topo
        )
    }
}

/// How a run ended.
pub struct Outcome {
    pub spec: Spec,
    pub secs: f64,
    /// `None` when every invariant held.
    pub failure: Option<Failure>,
}

pub struct Failure {
    /// One line for summary tables.
    pub first: String,
    /// The whole report (also saved in `dir`).
    pub report: String,
    pub dir: PathBuf,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// A harness message without the node logs it embeds (they are saved
/// beside the report instead).
fn without_logs(msg: &str) -> String {
    let head = msg.split("\n----- log of node").next().unwrap_or(msg);
    let mut s: String = head.chars().take(4000).collect();
    if s.len() < head.len() {
        s.push_str(" […]");
    }
    s
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Executes one operation; returns what happened.
fn execute(
    cl: &mut Cluster,
    rec: &mut Record,
    seed: u64,
    i: usize,
    op: &Op,
    rng: &mut Rng,
) -> String {
    let label = format!("w{i}");
    let scratch = cl.scratch.clone();
    macro_rules! with_ctx {
        ($node:expr, |$c:ident| $body:expr) => {{
            let root = cl.nodes[$node].dir().to_path_buf();
            let mut $c = Ctx {
                root: &root,
                scratch: &scratch,
                rec: &mut *rec,
                op: i,
                node: $node,
                seed,
            };
            $body
        }};
    }
    match op {
        Op::Write {
            node,
            path,
            size,
            old_mtime,
        } => {
            let mtime = old_mtime.map(|ago| {
                FileTime::from_unix_time(now_secs() - ago as i64, rng.below(1_000_000_000) as u32)
            });
            with_ctx!(*node, |c| c.write(&label, path, *size, mtime))
        }
        Op::Append { node, path, size } => with_ctx!(*node, |c| c.append(&label, path, *size)),
        Op::Truncate {
            node,
            path,
            keep_permille,
        } => with_ctx!(*node, |c| c.truncate(&label, path, *keep_permille)),
        Op::Delete { node, path } | Op::DeleteDir { node, path } => {
            with_ctx!(*node, |c| c.delete(path))
        }
        Op::Rename { node, from, to } => with_ctx!(*node, |c| c.rename(from, to)),
        Op::RenameDir { node, from, to } => with_ctx!(*node, |c| c.rename_dir(from, to)),
        Op::Mkdir { node, path } => with_ctx!(*node, |c| c.mkdir(path)),
        Op::Burst { node, writes } => {
            let mut out = Vec::new();
            for (k, (path, size)) in writes.iter().enumerate() {
                let l = format!("w{i}.{k}");
                out.push(with_ctx!(*node, |c| c.write(&l, path, *size, None)));
            }
            out.join("; ")
        }
        Op::Restart { node } => {
            cl.nodes[*node].stop();
            cl.nodes[*node].restart();
            "stopped and started".into()
        }
        Op::Stop { node } => {
            cl.nodes[*node].stop();
            "stopped".into()
        }
        Op::Start { node } => {
            cl.nodes[*node].restart();
            "started".into()
        }
        Op::Cut { links } => cl.links(links, true),
        Op::Heal { links } => cl.links(links, false),
        Op::KillMidTransfer {
            sender,
            receiver,
            path,
            size,
        } => {
            let wrote = with_ctx!(*sender, |c| c.write(&label, path, *size, None));
            let r = &cl.nodes[*receiver];
            let tmp = r.path(".tandem/tmp");
            let target = r.path(path);
            let deadline = Instant::now() + scaled(Duration::from_secs(30));
            let seen = loop {
                if !temp_files(&tmp).is_empty() {
                    break "download seen in .tandem/tmp";
                }
                if fs::metadata(&target).is_ok_and(|m| m.len() == *size as u64) {
                    break "missed: the file arrived before a temp file was seen";
                }
                if Instant::now() >= deadline {
                    break "no download started within 30 s";
                }
                // Polling the receiver's temp folder for the download.
                thread::sleep(Duration::from_millis(1));
            };
            let r = &mut cl.nodes[*receiver];
            r.kill9();
            let left = temp_files(&tmp);
            r.restart();
            format!(
                "{wrote}; {seen}; killed {} with {} temp file(s); restarted",
                NAMES[*receiver],
                left.len()
            )
        }
    }
}

/// Where a failed run's report and node logs are saved.
fn out_dir(spec: &Spec) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos")
        .join(format!("{}-seed{}", spec.topo, spec.seed))
}

/// Lines of `log` mentioning one of `needles` or an error (the last `max`).
fn log_excerpt(log: &str, needles: &[String], max: usize) -> Vec<String> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("ERROR")
                || l.contains("panicked")
                || needles.iter().any(|n| l.contains(n.as_str()))
        })
        .collect();
    lines[lines.len().saturating_sub(max)..]
        .iter()
        .map(|l| {
            let mut s: String = l.chars().take(300).collect();
            if s.len() < l.len() {
                s.push('…');
            }
            s
        })
        .collect()
}

/// Runs one seed on one topology and checks it.
pub fn run(spec: Spec) -> Outcome {
    let started = Instant::now();
    let ops = plan(spec.seed, spec.topo, spec.ops);
    eprintln!(
        "chaos: topology {} seed {} ({} operations); replay with:\n    {}",
        spec.topo,
        spec.seed,
        ops.len(),
        spec.replay()
    );
    let mut rec = Record::default();
    let mut log: Vec<String> = Vec::new();
    let mut findings: Vec<Finding> = Vec::new();
    let mut settle_note = String::new();
    let mut views = None;

    // A port picked free can be taken (by another test's connection)
    // before its node binds it: start again on new ports, a bounded number
    // of times; anything else is a failure at once.
    let mut cluster = catch_unwind(|| Cluster::start(spec.topo, spec.seed));
    for _ in 0..2 {
        match &cluster {
            Err(p) if panic_text(&**p).contains("Address already in use") => {
                eprintln!(
                    "chaos: a chosen port was taken before its node bound it; starting again"
                );
                cluster = catch_unwind(|| Cluster::start(spec.topo, spec.seed));
            }
            _ => break,
        }
    }
    let mut cl = match cluster {
        Ok(c) => c,
        Err(p) => {
            let first = format!("cluster did not start: {}", without_logs(&panic_text(&*p)));
            return Outcome {
                spec,
                secs: started.elapsed().as_secs_f64(),
                failure: Some(Failure {
                    report: first.clone(),
                    first: first.lines().next().unwrap_or("").to_string(),
                    dir: out_dir(&spec),
                }),
            };
        }
    };
    let mut pacing = Rng::stream(spec.seed, 2);
    let verbose = std::env::var_os("CHAOS_VERBOSE").is_some();
    let ran = catch_unwind(AssertUnwindSafe(|| {
        for (i, op) in ops.iter().enumerate() {
            let t = started.elapsed().as_secs_f64();
            // The wall clock to the millisecond, as the nodes' logs show it
            // (UTC), so an operation lines up with what each node did.
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let wall = crate::harness::rfc3339_utc(now.as_secs() as i64, now.subsec_nanos());
            let clock = wall.get(11..23).unwrap_or(&wall).to_string();
            let what = execute(&mut cl, &mut rec, spec.seed, i, op, &mut pacing);
            log.push(format!("#{i:03} {t:6.1}s {clock} {op} → {what}"));
            if verbose {
                eprintln!("{}", log[i]);
            }
            // Workload pacing: how much the nodes get done between two
            // operations varies (mostly little, sometimes a lot); nothing
            // waits for a condition here.
            let pause = if pacing.chance(10) {
                pacing.range(100, 300)
            } else {
                pacing.range(0, 30)
            };
            thread::sleep(Duration::from_millis(pause));
        }
    }));
    match ran {
        Err(p) => {
            let i = log.len();
            let msg = without_logs(&panic_text(&*p));
            log.push(format!("#{i:03} {} → FAILED: {msg}", ops[i]));
            findings.push(Finding {
                kind: "harness",
                paths: vec![],
                text: format!("op #{i} failed: {msg}"),
            });
        }
        Ok(()) => {
            // Everything is healed and running by the plan's end; make sure.
            cl.heal_all();
            for n in &mut cl.nodes {
                if !n.is_running() && n.unexpected_exit().is_none() {
                    n.restart();
                }
            }
            if verbose {
                eprintln!(
                    "{:6.1}s: plan done; settling",
                    started.elapsed().as_secs_f64()
                );
            }
            let mut cache = HashCache::default();
            let s = oracle::settle(
                &cl.nodes,
                &mut cache,
                scaled(Duration::from_secs(120)),
                Duration::from_millis(1500),
                scaled(Duration::from_secs(45)),
            );
            settle_note = s.how.clone();
            for (i, n) in cl.nodes.iter().enumerate() {
                if let Some(st) = n.unexpected_exit() {
                    findings.push(Finding {
                        kind: "harness",
                        paths: vec![],
                        text: format!("node {} exited on its own with {st}", NAMES[i]),
                    });
                }
            }
            if verbose {
                eprintln!(
                    "{:6.1}s: {}; checking",
                    started.elapsed().as_secs_f64(),
                    s.how
                );
            }
            let dirs: Vec<&Path> = cl.nodes.iter().map(Node::dir).collect();
            findings.extend(oracle::check(&dirs, &s.views, &rec));
            if verbose {
                eprintln!("{:6.1}s: checked", started.elapsed().as_secs_f64());
            }
            views = Some(s.views);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if findings.is_empty() {
        let conflicts: usize = views.iter().flatten().map(|v| v.conflicts.len()).sum();
        let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
        eprintln!(
            "chaos: topology {} seed {}: ok in {secs:.1} s ({settle_note}; {} contents written, \
             {conflicts} conflict copies kept, {} downloads killed mid-way, {} ops found their path \
             missing, {} raced with the node)",
            spec.topo,
            spec.seed,
            rec.contents.len(),
            count("download seen"),
            count("not here"),
            count("raced"),
        );
        return Outcome {
            spec,
            secs,
            failure: None,
        };
    }

    // The report.
    let dir = out_dir(&spec);
    let _ = fs::remove_dir_all(&dir);
    let _ = fs::create_dir_all(&dir);
    let mut r = String::new();
    let _ = writeln!(
        r,
        "CHAOS FAILURE: topology {} seed {} ({} operations, {secs:.1} s)\nreplay: {}",
        spec.topo,
        spec.seed,
        ops.len(),
        spec.replay()
    );
    if !settle_note.is_empty() {
        let _ = writeln!(r, "cluster: {settle_note}");
    }
    let _ = writeln!(r, "\n== findings ==");
    for f in &findings {
        let _ = writeln!(r, "[{}] {}", f.kind, f.text);
    }
    let paths: BTreeSet<String> = findings.iter().flat_map(|f| f.paths.clone()).collect();
    if let Some(v) = &views
        && !paths.is_empty()
    {
        let _ = writeln!(
            r,
            "\n== each node's disk at those paths ==\n{}",
            oracle::disk_views(v, &rec, &paths)
        );
    }
    let _ = writeln!(r, "\n== operations ==");
    for l in &log {
        let _ = writeln!(r, "{l}");
    }
    let _ = writeln!(r, "\n== node logs (lines naming those paths, or errors) ==");
    let needles: Vec<String> = paths.iter().cloned().collect();
    for n in &cl.nodes {
        let saved = dir.join(format!("{}.log", n.name()));
        let _ = fs::copy(n.log_path(), &saved);
        let _ = writeln!(r, "--- {} (whole log: {})", n.name(), saved.display());
        for l in log_excerpt(&n.log(), &needles, 25) {
            let _ = writeln!(r, "  {l}");
        }
    }
    let _ = fs::write(dir.join("report.txt"), &r);
    let first = first_line(&findings);
    Outcome {
        spec,
        secs,
        failure: Some(Failure {
            first,
            report: r,
            dir,
        }),
    }
}

/// The most telling finding, in one line, with a count of the others.
fn first_line(findings: &[Finding]) -> String {
    const PRIORITY: [&str; 14] = [
        "harness",
        "lost",
        "diverged",
        "believe-agree",
        "edit-lost-to-delete",
        "resurrected-folder",
        "resurrected",
        "replaced-without-conflict",
        "older-won-conflict",
        "lost-from-path",
        "misplaced",
        "temp-file",
        "unknown-content",
        "list-vs-disk",
    ];
    let rank = |k: &str| {
        PRIORITY
            .iter()
            .position(|p| *p == k)
            .unwrap_or(PRIORITY.len())
    };
    let Some(f) = findings.iter().min_by_key(|f| rank(f.kind)) else {
        return String::new();
    };
    let mut kinds: Vec<&str> = findings.iter().map(|f| f.kind).collect();
    kinds.sort_by_key(|k| rank(k));
    kinds.dedup();
    let line: String = f
        .text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    format!(
        "{}: {line} ({} findings: {})",
        f.kind,
        findings.len(),
        kinds.join(", ")
    )
}
