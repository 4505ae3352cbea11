//! Hit ratio of the node's file cache policies under a skewed workload.
//!
//!     cargo run --release -p tandem-node --example cache_bench
//!     cargo run --release -p tandem-node --example cache_bench -- \
//!         --files 2000 --requests 200000 --skews 1.0,1.1,1.2 --capacities 64,256 --seed 1
//!
//! Drives the real `tandem_node::cache::FileCache` (both policies) through
//! `get_or_load`, exactly as `api::serve_local` does, with a loader that
//! returns a `Bytes` of the file's size (a slice of one shared zeroed buffer,
//! so the run measures the cache, not the allocator or a disk).
//!
//! Workload: FILES files whose sizes are log-uniform between 4 KiB and
//! 16 MiB (fixed per seed), requested REQUESTS times; each request picks a
//! file by a Zipf(s) law over popularity ranks (rank 1 the most popular).
//! Ranks are assigned to files by a random permutation, so popularity is
//! independent of size. The same trace (same seed) is replayed against every
//! policy, so the rows of one (s, capacity) group are directly comparable.
//!
//! Printed per policy: hits, misses (loader calls), hit ratio, byte hit ratio
//! (bytes served from the cache / bytes requested), the cache's own report
//! (hits/misses/used at the end; the misses must equal the loader calls),
//! and the wall time per request. For reference, an "oracle" row: the
//! best *static* content for that capacity (files chosen greedily by
//! request count per byte from the trace itself, never changing), replayed
//! on the same trace with the first request of each cached file counted
//! as a miss. It is not an upper bound for byte hit ratio, just a yardstick.
//!
//! Deterministic: a xorshift64* PRNG and an inverse-CDF Zipf sampler, no
//! extra dependencies.

use std::time::Instant;

use bytes::Bytes;
use tandem_common::{ContentHash, RelPath};
use tandem_node::cache::{FileCache, Key, Policy};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
const MIN_SIZE: u64 = 4 * KIB;
const MAX_SIZE: u64 = 16 * MIB;

/// xorshift64* (Vigna): small, fast, good enough for workload generation.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so seeds 0, 1, 2 ... give unrelated streams
        // and the state is never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1), 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize
    }
}

/// Zipf(s) over ranks 0..n (rank 0 the most popular), by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for k in 1..=n {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut XorShift) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }

    /// Probability of rank 0.
    fn top(&self) -> f64 {
        self.cdf[0]
    }
}

struct Opts {
    files: usize,
    requests: usize,
    skews: Vec<f64>,
    capacities_mib: Vec<u64>,
    seed: u64,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        files: 2000,
        requests: 200_000,
        skews: vec![1.0, 1.1, 1.2],
        capacities_mib: vec![64, 256],
        seed: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    let usage = "usage: cache_bench [--files N] [--requests N] [--skews S,S,..] \
                 [--capacities MIB,MIB,..] [--seed N]";
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_else(|| {
            eprintln!("{usage}");
            std::process::exit(2)
        });
        let bad = |what: &str| -> ! {
            eprintln!("cache_bench: bad {what} {val:?}\n{usage}");
            std::process::exit(2)
        };
        match args[i].as_str() {
            "--files" => o.files = val.parse().unwrap_or_else(|_| bad("--files")),
            "--requests" => o.requests = val.parse().unwrap_or_else(|_| bad("--requests")),
            "--seed" => o.seed = val.parse().unwrap_or_else(|_| bad("--seed")),
            "--skews" => {
                o.skews = val
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| bad("--skews")))
                    .collect()
            }
            "--capacities" => {
                o.capacities_mib = val
                    .split(',')
                    .map(|s| s.trim().parse().unwrap_or_else(|_| bad("--capacities")))
                    .collect()
            }
            _ => {
                eprintln!("{usage}");
                std::process::exit(2)
            }
        }
        i += 2;
    }
    if o.files == 0 || o.requests == 0 || o.skews.is_empty() || o.capacities_mib.is_empty() {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    o
}

struct Row {
    name: &'static str,
    hits: u64,
    misses: u64,
    hit_bytes: u64,
    req_bytes: u64,
    /// (hits, misses, used) from `FileCache::report`, when a real cache ran.
    report: Option<(u64, u64, u64, usize)>,
    ns_per_req: f64,
}

fn print_row(r: &Row, cap: u64) {
    let total = r.hits + r.misses;
    let (rep, used) = match r.report {
        Some((h, m, used, n)) => {
            let ok = if h == r.hits && m == r.misses {
                ""
            } else {
                " MISMATCH"
            };
            let over = if used > cap { " OVER CAPACITY" } else { "" };
            (
                format!("{h}/{m}{ok}"),
                format!("{:.1} MiB in {n}{over}", used as f64 / MIB as f64),
            )
        }
        None => ("-".to_string(), "-".to_string()),
    };
    println!(
        "  {:<14} {:>8} {:>8} {:>8.2}% {:>9.2}% {:>18} {:>24} {:>9}",
        r.name,
        r.hits,
        r.misses,
        100.0 * r.hits as f64 / total as f64,
        100.0 * r.hit_bytes as f64 / r.req_bytes.max(1) as f64,
        rep,
        used,
        if r.ns_per_req > 0.0 {
            format!("{:.0}", r.ns_per_req)
        } else {
            "-".to_string()
        },
    );
}

/// Replays `trace` through a real `FileCache`.
fn run_policy(
    rt: &tokio::runtime::Runtime,
    policy: Policy,
    cap: u64,
    keys: &[Key],
    sizes: &[u64],
    trace: &[u32],
    zeros: &Bytes,
) -> Row {
    let cache = FileCache::new(cap, policy);
    let t0 = Instant::now();
    let (loads, loaded_bytes, req_bytes) = rt.block_on(async {
        let mut loads = 0u64;
        let mut loaded_bytes = 0u64;
        let mut req_bytes = 0u64;
        for &f in trace {
            let f = f as usize;
            let size = sizes[f];
            req_bytes += size;
            // The node only caches files that fit (serve_local streams the
            // rest from disk and calls count_uncached); with MAX_SIZE below
            // every capacity tried here, every file takes this path.
            if size > cache.capacity() {
                cache.count_uncached();
                loads += 1;
                loaded_bytes += size;
                continue;
            }
            let mut called = false;
            let v = cache
                .get_or_load(&keys[f], || {
                    called = true;
                    let v = zeros.slice(..size as usize);
                    async move { Ok(v) }
                })
                .await
                .expect("the loader never fails");
            debug_assert_eq!(v.len() as u64, size);
            if called {
                loads += 1;
                loaded_bytes += size;
            }
        }
        (loads, loaded_bytes, req_bytes)
    });
    let elapsed = t0.elapsed();
    let rep = cache.report("bench");
    Row {
        name: policy.name(),
        hits: trace.len() as u64 - loads,
        misses: loads,
        hit_bytes: req_bytes - loaded_bytes,
        req_bytes,
        report: Some((rep.hits, rep.misses, rep.used, rep.entries.len())),
        ns_per_req: elapsed.as_nanos() as f64 / trace.len() as f64,
    }
}

/// The best static cache content for `cap`, chosen with hindsight: files
/// by request count per byte, greedily, while they fit.
fn oracle(cap: u64, sizes: &[u64], trace: &[u32]) -> Row {
    let mut count = vec![0u64; sizes.len()];
    for &f in trace {
        count[f as usize] += 1;
    }
    let mut order: Vec<usize> = (0..sizes.len()).filter(|&f| count[f] > 0).collect();
    order.sort_by(|&a, &b| {
        let da = count[a] as f64 / sizes[a] as f64;
        let db = count[b] as f64 / sizes[b] as f64;
        db.total_cmp(&da).then(a.cmp(&b))
    });
    let mut cached = vec![false; sizes.len()];
    let mut used = 0u64;
    for f in order {
        if used + sizes[f] <= cap {
            used += sizes[f];
            cached[f] = true;
        }
    }
    let (mut hits, mut hit_bytes, mut req_bytes) = (0u64, 0u64, 0u64);
    let mut seen = vec![false; sizes.len()];
    for &f in trace {
        let f = f as usize;
        req_bytes += sizes[f];
        if cached[f] && seen[f] {
            hits += 1;
            hit_bytes += sizes[f];
        }
        seen[f] = true;
    }
    Row {
        name: "(oracle)",
        hits,
        misses: trace.len() as u64 - hits,
        hit_bytes,
        req_bytes,
        report: None,
        ns_per_req: 0.0,
    }
}

fn main() {
    let o = parse_args();
    let t_all = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime");

    // Files: log-uniform sizes, keys as the node builds them.
    let mut rng = XorShift::new(o.seed);
    let (lo, hi) = ((MIN_SIZE as f64).ln(), (MAX_SIZE as f64).ln());
    let sizes: Vec<u64> = (0..o.files)
        .map(|_| ((lo + (hi - lo) * rng.next_f64()).exp() as u64).clamp(MIN_SIZE, MAX_SIZE))
        .collect();
    let keys: Vec<Key> = (0..o.files)
        .map(|i| {
            let p = format!("data/d{:02}/file{i:05}.bin", i % 37);
            let h = ContentHash::of(p.as_bytes());
            (RelPath::new(p).expect("a valid path"), h)
        })
        .collect();
    // Rank -> file: a Fisher-Yates shuffle, so popularity ignores size.
    let mut by_rank: Vec<u32> = (0..o.files as u32).collect();
    for i in (1..by_rank.len()).rev() {
        let j = rng.below(i + 1);
        by_rank.swap(i, j);
    }
    let zeros = Bytes::from(vec![0u8; MAX_SIZE as usize]);

    let total: u64 = sizes.iter().sum();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    println!(
        "cache_bench: {} files, {:.2} GiB total, sizes log-uniform {} KiB .. {} MiB \
         (median {:.0} KiB, mean {:.0} KiB), {} requests per run, seed {}",
        o.files,
        total as f64 / (1u64 << 30) as f64,
        MIN_SIZE / KIB,
        MAX_SIZE / MIB,
        sorted[sorted.len() / 2] as f64 / KIB as f64,
        total as f64 / o.files as f64 / KIB as f64,
        o.requests,
        o.seed,
    );
    println!(
        "  hit ratio = hits / requests; byte hit ratio = bytes served from cache / bytes requested"
    );
    println!(
        "  report = FileCache::report() hits/misses at the end (must equal the columns), used = bytes held"
    );

    for &s in &o.skews {
        let zipf = Zipf::new(o.files, s);
        // One trace per skew, replayed for every capacity and policy.
        let mut trng = XorShift::new(o.seed ^ (s.to_bits().rotate_left(17)));
        let trace: Vec<u32> = (0..o.requests)
            .map(|_| by_rank[zipf.sample(&mut trng)])
            .collect();
        let mut distinct = vec![false; o.files];
        for &f in &trace {
            distinct[f as usize] = true;
        }
        let distinct_n = distinct.iter().filter(|&&d| d).count();
        let distinct_bytes: u64 = (0..o.files)
            .filter(|&f| distinct[f])
            .map(|f| sizes[f])
            .sum();
        for &cap_mib in &o.capacities_mib {
            let cap = cap_mib * MIB;
            println!();
            println!(
                "Zipf s={s:.2} (top file {:.1}% of requests; {distinct_n} distinct files, {:.2} GiB, requested), capacity {cap_mib} MiB",
                100.0 * zipf.top(),
                distinct_bytes as f64 / (1u64 << 30) as f64,
            );
            println!(
                "  {:<14} {:>8} {:>8} {:>9} {:>10} {:>18} {:>24} {:>9}",
                "policy",
                "hits",
                "misses",
                "hit%",
                "byte hit%",
                "report hits/misses",
                "used at end",
                "ns/req"
            );
            for policy in [Policy::Moka, Policy::LargestFirst] {
                let row = run_policy(&rt, policy, cap, &keys, &sizes, &trace, &zeros);
                print_row(&row, cap);
            }
            print_row(&oracle(cap, &sizes, &trace), cap);
        }
    }
    println!();
    println!("total time {:.1?}", t_all.elapsed());
}
