//! The node's own figures: CPU and memory (sampled with sysinfo every few
//! seconds and logged), traffic and sync counters, and their Prometheus
//! text form for `--metrics-listen`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often CPU and memory are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Every how many samples a line goes to the log.
const LOG_EVERY: u32 = 6;

/// Counters and the latest samples.
pub struct Metrics {
    started: Instant,
    cpu_percent_bits: AtomicU32,
    rss: AtomicU64,
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
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            transfers: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            clients: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Process CPU use at the last sample, in percent of one core.
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

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Samples every [`SAMPLE_EVERY`] until cancelled.
    pub async fn sample_loop(&self, stop: tokio_util::sync::CancellationToken) {
        use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
        let pid = Pid::from_u32(std::process::id());
        let mut sys = match System::new() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot sample CPU and memory: {e}");
                return;
            }
        };
        let mut n = 0u32;
        loop {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
            sys.refresh_memory();
            sys.refresh_cpu_usage();
            if let Some(p) = sys.process(pid) {
                self.cpu_percent_bits
                    .store(p.cpu_usage().to_bits(), Ordering::Relaxed);
                self.rss.store(p.memory(), Ordering::Relaxed);
            }
            if n % LOG_EVERY == 1 {
                tracing::info!(
                    "metrics: process cpu {:.1}%, rss {}; machine cpu {:.1}%, memory {} of {}",
                    self.cpu_percent(),
                    tandem_common::display::human_size(self.rss()),
                    sys.global_cpu_usage(),
                    tandem_common::display::human_size(sys.used_memory()),
                    tandem_common::display::human_size(sys.total_memory()),
                );
            }
            n = n.wrapping_add(1);
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_EVERY) => {}
                _ = stop.cancelled() => return,
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
