//! The chaos suite: seeded, replayable random runs against real
//! `tandem-node` processes, with the suite's own link proxy between every
//! pair of nodes, and invariants checked from the file system.
//!
//! A run (`chaos/run.rs`) starts a topology — `pair` (A–B), `mesh3` (A, B, C
//! all linked) or `chain3` (A–B–C) — on folders of one temp dir. Every node
//! dials its peers through a [`Proxy`](chaos::proxy::Proxy) of its own (one
//! per direction of each link), so a link can be cut and healed. The plan
//! (`chaos/plan.rs`), derived from the seed alone, is about 150 operations
//! spread over the nodes: create, overwrite, append, truncate, delete,
//! rename and move of files and folders (names with spaces and non-ASCII),
//! writes with old mtimes, bursts of writes; and faults: SIGTERM + restart,
//! `kill -9` of a receiver in the middle of a 6–12 MiB download, a node
//! stopped while its own folder and the others are edited, link cuts of 1–8
//! operations with a delete on one side and an edit on the other.
//!
//! Every operation records exactly what it put in place and what it took
//! away (`chaos/fsops.rs`: writes are swapped in with `renameat2`, deletes
//! rename out first), so the oracle (`chaos/oracle.rs`) can judge the final
//! trees without a model of the sync rules: identical trees, lists that
//! match disks, no temp files, nothing lost, no resurrection, an edit
//! survives a concurrent delete, and a conflict loser lost to something
//! at least as new. After the plan every link is healed and every node
//! runs; the oracle polls (at most 120 s) until the trees are identical and
//! quiet. Nothing sleeps to synchronise; the short pauses between
//! operations are workload pacing.
//!
//! ```sh
//! cargo test -p tandem-node --test chaos                        # the CI set + regressions.txt
//! CHAOS_SEEDS=1..20 CHAOS_TOPOLOGY=mesh3 cargo test -p tandem-node --test chaos -- --nocapture
//! scripts/chaos.sh --seeds 1..50 --topology pair                # release build, summary table
//! ```
//!
//! `CHAOS_SEEDS`: `7`, `1..50` (inclusive) or `1,5,9`; `CHAOS_TOPOLOGY`:
//! `pair`, `mesh3`, `chain3` or `all` (the default when only seeds are
//! given); `CHAOS_OPS`: operations per run (150). A failure prints the
//! seed, the replay command, the findings, each node's disk at the paths
//! concerned, the numbered operations and excerpts of the node logs; the
//! report and the whole logs are saved in `target/tmp/chaos/<topology>-seed<N>/`.
//! Seeds that found a bug go in `chaos/regressions.txt`, run by default.
//!
//! The default set is not `#[ignore]`d: `cargo test -p tandem-node --test
//! chaos` must run it, the README's `cargo test --workspace` is the whole
//! suite, and it takes about two minutes on two cores in a debug build
//! (about 8 s per run; a run that does not converge gives up after 45 s
//! without any change). A seed replays the same operations, not the same
//! timing: a debug build and a release build (`scripts/chaos.sh`) hit
//! different interleavings, which is why both are worth running.

mod harness;

mod chaos {
    pub mod fsops;
    pub mod oracle;
    pub mod plan;
    pub mod proxy;
    pub mod record;
    pub mod run;
}

use std::sync::Once;

use chaos::plan::Topology;
use chaos::run::{Outcome, Spec, run};

/// Operations per run unless `CHAOS_OPS` says otherwise.
pub const DEFAULT_OPS: usize = 150;

/// The set `cargo test` runs by default (besides the regressions).
const DEFAULT_SET: [(Topology, u64); 4] = [
    (Topology::Pair, 1),
    (Topology::Pair, 2),
    (Topology::Mesh3, 1),
    (Topology::Chain3, 1),
];

fn parse_seeds(s: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = part
            .split_once("..=")
            .or_else(|| part.split_once(".."))
            .or_else(|| part.split_once('-'));
        match range {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (
                    a.trim().parse().unwrap_or_else(|_| bad_seeds(s)),
                    b.trim().parse().unwrap_or_else(|_| bad_seeds(s)),
                );
                out.extend(a..=b);
            }
            None => out.push(part.parse().unwrap_or_else(|_| bad_seeds(s))),
        }
    }
    out
}

fn bad_seeds(s: &str) -> ! {
    panic!("CHAOS_SEEDS={s:?}: expected a seed (7), a range (1..50, inclusive) or a list (1,5,9)")
}

fn parse_topologies(s: &str) -> Vec<Topology> {
    if s == "all" {
        return Topology::ALL.to_vec();
    }
    s.split(',')
        .map(|t| {
            Topology::parse(t.trim()).unwrap_or_else(|| {
                panic!("CHAOS_TOPOLOGY={s:?}: expected pair, mesh3, chain3 or all")
            })
        })
        .collect()
}

/// `topology seed [ops]` lines of `chaos/regressions.txt`.
fn regressions() -> Vec<Spec> {
    include_str!("chaos/regressions.txt")
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let bad = || -> ! {
                panic!("chaos/regressions.txt: bad line {l:?} (want: topology seed [ops])")
            };
            Spec {
                topo: f
                    .first()
                    .and_then(|t| Topology::parse(t))
                    .unwrap_or_else(|| bad()),
                seed: f
                    .get(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| bad()),
                ops: match f.get(2) {
                    Some(o) => o.parse().unwrap_or_else(|_| bad()),
                    None => DEFAULT_OPS,
                },
            }
        })
        .collect()
}

/// The runs selected by the environment.
fn selection() -> Vec<Spec> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let ops = env("CHAOS_OPS").map_or(DEFAULT_OPS, |o| {
        o.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_OPS={o:?}: expected a number"))
    });
    let (seeds, topos) = (env("CHAOS_SEEDS"), env("CHAOS_TOPOLOGY"));
    if seeds.is_none() && topos.is_none() {
        let mut v: Vec<Spec> = DEFAULT_SET
            .iter()
            .map(|&(topo, seed)| Spec { topo, seed, ops })
            .collect();
        for r in regressions() {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        return v;
    }
    let seeds = seeds.map_or(vec![1], |s| parse_seeds(&s));
    let topos = topos.map_or(Topology::ALL.to_vec(), |t| parse_topologies(&t));
    let mut v = Vec::new();
    for topo in topos {
        for &seed in &seeds {
            v.push(Spec { topo, seed, ops });
        }
    }
    v
}

/// Harness panics embed whole node logs; the chaos report saves those, so
/// the panic message printed at the time is cut short.
fn shorten_panic_messages() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied());
            match msg {
                Some(m) if m.len() > 3000 => {
                    let head: String = m.chars().take(3000).collect();
                    let at = info.location().map(|l| l.to_string()).unwrap_or_default();
                    eprintln!(
                        "panicked at {at}:\n{head}\n[… cut; the chaos report keeps the node logs]"
                    );
                }
                _ => default(info),
            }
        }));
    });
}

fn summary(outcomes: &[Outcome]) -> String {
    let mut s = format!(
        "{:>6}  {:<8}  {:<6}  {:>7}  first failure\n",
        "seed", "topology", "result", "seconds"
    );
    for o in outcomes {
        s.push_str(&format!(
            "{:>6}  {:<8}  {:<6}  {:>7.1}  {}\n",
            o.spec.seed,
            o.spec.topo.name(),
            if o.failure.is_some() { "FAIL" } else { "ok" },
            o.secs,
            o.failure.as_ref().map_or("", |f| f.first.as_str())
        ));
    }
    s
}

#[test]
fn run_seeds() {
    shorten_panic_messages();
    let specs = selection();
    let mut outcomes = Vec::new();
    for spec in specs {
        let o = run(spec);
        // One line per run for scripts/chaos.sh (tab-separated).
        println!(
            "CHAOS-RESULT\t{}\t{}\t{}\t{:.1}\t{}",
            o.spec.topo,
            o.spec.seed,
            if o.failure.is_some() { "FAIL" } else { "ok" },
            o.secs,
            o.failure.as_ref().map_or("", |f| f.first.as_str())
        );
        if let Some(f) = &o.failure {
            eprintln!("{}\n(report saved in {})\n", f.report, f.dir.display());
        }
        outcomes.push(o);
    }
    let table = summary(&outcomes);
    eprintln!("{table}");
    let failed = outcomes.iter().filter(|o| o.failure.is_some()).count();
    assert!(
        failed == 0,
        "{failed} of {} chaos runs failed (reports above, saved under target/tmp/chaos/):\n{table}",
        outcomes.len()
    );
}

#[test]
fn seed_lists_parse() {
    assert_eq!(parse_seeds("7"), vec![7]);
    assert_eq!(parse_seeds("1..3"), vec![1, 2, 3]);
    assert_eq!(parse_seeds("1..=3,9"), vec![1, 2, 3, 9]);
    assert_eq!(parse_topologies("all").len(), 3);
    assert_eq!(
        parse_topologies("pair,chain3"),
        vec![Topology::Pair, Topology::Chain3]
    );
    let _ = regressions();
}
