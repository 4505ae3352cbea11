//! The node's own figures: CPU (from the process's own CPU time), memory
//! (sysinfo) and traffic, sampled every few seconds, kept for the last
//! minutes for the charts and logged now and then, traffic and sync counters, and their Prometheus
//! text form for `--metrics-listen`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_common::buffers::{KEEP_IDLE, SEGMENTS};
use tandem_common::proto::NodeSample;

/// How often CPU, memory and traffic are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept for the charts: five minutes.
pub const HISTORY: usize = 150;
/// Every how many samples a line goes to the log (every 30 s).
const LOG_EVERY: u32 = 15;

/// Counters and the latest samples.
pub struct Metrics {
    started: Instant,
    cpu_percent_bits: AtomicU32,
    rss: AtomicU64,
    history: Mutex<VecDeque<NodeSample>>,
    /// Bytes of block data received from peers.
    pub bytes_received: AtomicU64,
    /// Bytes of block data sent to peers.
    pub bytes_sent: AtomicU64,
    /// Files received from peers.
    pub transfers: AtomicU64,
    /// Conflicts resolved here.
    pub conflicts: AtomicU64,
    /// Live client connections.
    pub clients: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            cpu_percent_bits: AtomicU32::new(0),
            rss: AtomicU64::new(0),
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            clients: AtomicU64::new(0),
        }
    }
}

/// CPU time (user + system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// What the previous sample saw, to turn totals into rates.
struct Before {
    at: Instant,
    cpu: Duration,
    sent: u64,
    received: u64,
    hits: u64,
    misses: u64,
}

impl Metrics {
    /// Process CPU use over the last sampling interval, in percent of one
    /// core.
    pub fn cpu_percent(&self) -> f32 {
        f32::from_bits(self.cpu_percent_bits.load(Ordering::Relaxed))
    }

    /// Resident memory at the last sample.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The samples of the last minutes, oldest first.
    pub fn history(&self) -> Vec<NodeSample> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn before(&self, cache: (u64, u64)) -> Before {
        Before {
            at: Instant::now(),
            cpu: cpu_time(),
            sent: self.bytes_sent.load(Ordering::Relaxed),
            received: self.bytes_received.load(Ordering::Relaxed),
            hits: cache.0,
            misses: cache.1,
        }
    }

    /// Takes one sample: the rates since `prev`, which becomes now.
    /// `rss` is the resident memory now.
    fn sample(&self, prev: &mut Before, rss: u64, cache: (u64, u64)) -> NodeSample {
        let now = self.before(cache);
        let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
        let per_s = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs) as u64;
        let s = NodeSample {
            at_s: crate::clock::now_ns() / 1_000_000_000,
            // CPU time used over wall time passed: what `top` shows.
            cpu_percent: ((now.cpu.saturating_sub(prev.cpu)).as_secs_f64() / secs * 100.0) as f32,
            rss,
            sent_per_s: per_s(now.sent, prev.sent),
            received_per_s: per_s(now.received, prev.received),
            cache_hits: now.hits.saturating_sub(prev.hits).min(u32::MAX as u64) as u32,
            cache_misses: now.misses.saturating_sub(prev.misses).min(u32::MAX as u64) as u32,
        };
        *prev = now;
        self.cpu_percent_bits
            .store(s.cpu_percent.to_bits(), Ordering::Relaxed);
        self.rss.store(rss, Ordering::Relaxed);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(s);
        s
    }

    /// Samples every [`SAMPLE_EVERY`] until cancelled; `cache` gives the
    /// cache's hits and misses so far.
    pub async fn sample_loop(
        &self,
        cache: impl Fn() -> (u64, u64),
        stop: tokio_util::sync::CancellationToken,
    ) {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
        let pid = Pid::from_u32(std::process::id());
        // Without sysinfo, CPU, traffic and cache are still sampled; memory
        // reads 0 (unknown).
        let mut sys = System::new()
            .inspect_err(|e| tracing::warn!("cannot sample memory: {e}"))
            .ok();
        let rss_now = |sys: &mut Option<System>| {
            let Some(sys) = sys else { return 0 };
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_memory(),
            );
            sys.process(pid).map_or(0, |p| p.memory())
        };
        // Memory is known at once; rates need an interval.
        self.rss.store(rss_now(&mut sys), Ordering::Relaxed);
        let mut prev = self.before(cache());
        let mut n = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            // The segment buffers kept for reuse (up to 16 MiB) go when no
            // transfer has used them for a while.
            if SEGMENTS.release_idle(KEEP_IDLE) > 0 {
                release_memory();
            }
            let rss = rss_now(&mut sys);
            let s = self.sample(&mut prev, rss, cache());
            n = n.wrapping_add(1);
            if n % LOG_EVERY == 1 {
                let machine = sys.as_mut().map(|sys| {
                    sys.refresh_memory();
                    format!(
                        "; machine memory {} of {}",
                        tandem_common::display::human_size(sys.used_memory()),
                        tandem_common::display::human_size(sys.total_memory())
                    )
                });
                tracing::info!(
                    "metrics: process cpu {:.1}%, rss {}{}",
                    s.cpu_percent,
                    tandem_common::display::human_size(rss),
                    machine.unwrap_or_default()
                );
            }
        }
    }
}

/// Returns freed heap memory to the system (after big, short-lived
/// allocations: the start-up scan, a 100,000-row listing).
pub fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Figures the Prometheus page shows beside the counters.
pub struct Gauges {
    /// Live files.
    pub files: u64,
    /// Bytes in live files.
    pub bytes: u64,
    /// Peers connected.
    pub peers_up: u64,
    /// Cache hits.
    pub cache_hits: u64,
    /// Cache misses.
    pub cache_misses: u64,
    /// Bytes in the cache.
    pub cache_bytes: u64,
}

/// The Prometheus text exposition of `m` and `g`.
pub fn prometheus(m: &Metrics, g: &Gauges) -> String {
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let rows: [(&str, &str, &str, f64); 14] = [
        (
            "tandem_files",
            "gauge",
            "Live files in the index",
            g.files as f64,
        ),
        (
            "tandem_bytes",
            "gauge",
            "Bytes in live files",
            g.bytes as f64,
        ),
        (
            "tandem_bytes_sent_total",
            "counter",
            "Block bytes sent to peers",
            c(&m.bytes_sent) as f64,
        ),
        (
            "tandem_bytes_received_total",
            "counter",
            "Block bytes received from peers",
            c(&m.bytes_received) as f64,
        ),
        (
            "tandem_transfers_total",
            "counter",
            "Files received from peers",
            c(&m.transfers) as f64,
        ),
        (
            "tandem_conflicts_total",
            "counter",
            "Conflicts resolved",
            c(&m.conflicts) as f64,
        ),
        (
            "tandem_cache_hits_total",
            "counter",
            "File cache hits",
            g.cache_hits as f64,
        ),
        (
            "tandem_cache_misses_total",
            "counter",
            "File cache misses",
            g.cache_misses as f64,
        ),
        (
            "tandem_cache_bytes",
            "gauge",
            "Bytes in the file cache",
            g.cache_bytes as f64,
        ),
        (
            "tandem_clients",
            "gauge",
            "Connected clients",
            c(&m.clients) as f64,
        ),
        (
            "tandem_peers_up",
            "gauge",
            "Connected peers",
            g.peers_up as f64,
        ),
        (
            "tandem_process_cpu_percent",
            "gauge",
            "Process CPU use (percent of one core)",
            m.cpu_percent() as f64,
        ),
        (
            "tandem_process_resident_bytes",
            "gauge",
            "Process resident memory",
            m.rss() as f64,
        ),
        (
            "tandem_uptime_seconds",
            "gauge",
            "Seconds since start",
            m.uptime_s() as f64,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in rows {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_turn_totals_into_rates_and_keep_the_last_minutes() {
        let m = Metrics::default();
        let mut prev = m.before((0, 0));
        // Busy for a while: the sample must see it (the CPU column once
        // read 0.0 % during a transfer).
        let spin_until = cpu_time() + Duration::from_millis(150);
        let mut x = 0u64;
        while cpu_time() < spin_until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        Metrics::add(&m.bytes_sent, 10_000_000);
        let s = m.sample(&mut prev, 42, (3, 1));
        assert!(s.cpu_percent > 1.0, "{s:?}");
        assert_eq!(m.cpu_percent(), s.cpu_percent);
        assert!(s.sent_per_s > 0 && s.received_per_s == 0, "{s:?}");
        assert_eq!((s.rss, s.cache_hits, s.cache_misses), (42, 3, 1));
        for i in 0..HISTORY + 5 {
            m.sample(&mut prev, i as u64, (3, 1));
        }
        let h = m.history();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h.last().unwrap().rss, (HISTORY + 4) as u64, "newest last");
        assert_eq!(
            h.last().unwrap().cache_hits,
            0,
            "no new hits: 0 in the interval"
        );
    }

    #[test]
    fn prometheus_text_has_help_type_and_value() {
        let m = Metrics::default();
        Metrics::add(&m.transfers, 3);
        let g = Gauges {
            files: 10,
            bytes: 2048,
            peers_up: 1,
            cache_hits: 4,
            cache_misses: 1,
            cache_bytes: 100,
        };
        let text = prometheus(&m, &g);
        assert!(text.contains("# TYPE tandem_transfers_total counter\ntandem_transfers_total 3\n"));
        assert!(text.contains("tandem_files 10\n"));
        assert!(text.contains("tandem_cache_hits_total 4\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.split(' ');
            let (name, value) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(name.starts_with("tandem_"));
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
