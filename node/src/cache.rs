//! The per-node in-memory cache of file contents served to clients.
//!
//! Entries are keyed by path *and* content hash, so a changed file is never
//! served stale. Files larger than the cache are streamed from disk and not
//! cached. Concurrent requests for the same uncached file share one disk
//! read. Two eviction policies: `moka` (the default, size-aware TinyLFU from
//! the moka crate) and `largest-first`, the original cached file server's
//! rule (make room by evicting the largest cached files, so a file larger
//! than the incoming one goes first).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tandem_common::proto::{CacheEntry, CacheReport};
use tandem_common::{ContentHash, RelPath};

/// Default capacity: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 * 1024 * 1024;

/// A cache key: which file, which content.
pub type Key = (RelPath, ContentHash);

/// Eviction policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Size-aware TinyLFU (moka).
    Moka,
    /// Evict the largest cached files first (the original server's rule).
    LargestFirst,
}

impl Policy {
    /// The policy's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Moka => "moka",
            Policy::LargestFirst => "largest-first",
        }
    }
}

/// PURE: the largest-first policy's bookkeeping.
#[derive(Debug, Default)]
pub struct LargestFirst {
    capacity: u64,
    used: u64,
    entries: HashMap<Key, Bytes>,
    /// (size, key), so the largest entry is found in O(log n).
    by_size: std::collections::BTreeSet<(usize, Key)>,
}

impl LargestFirst {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        LargestFirst {
            capacity,
            ..Default::default()
        }
    }

    /// Looks up a key.
    pub fn get(&self, k: &Key) -> Option<Bytes> {
        self.entries.get(k).cloned()
    }

    /// Inserts; returns the keys evicted to make room. A value larger than
    /// the whole cache is not stored.
    pub fn insert(&mut self, k: Key, v: Bytes) -> Vec<Key> {
        let size = v.len() as u64;
        let mut evicted = Vec::new();
        if size > self.capacity {
            return evicted;
        }
        if let Some(old) = self.entries.remove(&k) {
            self.used -= old.len() as u64;
            self.by_size.remove(&(old.len(), k.clone()));
        }
        while self.used + size > self.capacity {
            // The largest entry (ties: the largest key); if any cached
            // file is larger than the new one, this is one of them.
            let Some((_, victim)) = self.by_size.pop_last() else {
                break;
            };
            if let Some(v) = self.entries.remove(&victim) {
                self.used -= v.len() as u64;
            }
            evicted.push(victim);
        }
        self.used += size;
        self.by_size.insert((v.len(), k.clone()));
        self.entries.insert(k, v);
        evicted
    }

    /// Bytes in use.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// True if `k` is cached.
    pub fn contains(&self, k: &Key) -> bool {
        self.entries.contains_key(k)
    }
}

enum Store {
    Moka(moka::sync::Cache<Key, Bytes>),
    LargestFirst(Mutex<LargestFirst>),
}

#[derive(Clone, Copy)]
struct Stat {
    size: u64,
    hits: u64,
    last_ns: i64,
}

type Inflight = Arc<tokio::sync::OnceCell<Result<Bytes, String>>>;

/// The cache, with hit statistics.
pub struct FileCache {
    capacity: u64,
    policy: Policy,
    store: Store,
    stats: Arc<Mutex<HashMap<Key, Stat>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    inflight: Mutex<HashMap<Key, Inflight>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FileCache {
    /// A cache of `capacity` bytes with `policy`.
    pub fn new(capacity: u64, policy: Policy) -> FileCache {
        let stats: Arc<Mutex<HashMap<Key, Stat>>> = Arc::default();
        let store = match policy {
            Policy::Moka => {
                let s = stats.clone();
                Store::Moka(
                    moka::sync::Cache::builder()
                        // Weighed in KiB so entries up to 4 TiB fit a u32.
                        .max_capacity(capacity.div_ceil(1024))
                        .weigher(|_k: &Key, v: &Bytes| {
                            (v.len() as u64).div_ceil(1024).max(1) as u32
                        })
                        .eviction_listener(move |k: Arc<Key>, _v, _cause| {
                            lock(&s).remove(&*k);
                        })
                        .build(),
                )
            }
            Policy::LargestFirst => Store::LargestFirst(Mutex::new(LargestFirst::new(capacity))),
        };
        FileCache {
            capacity,
            policy,
            store,
            stats,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn lookup(&self, k: &Key) -> Option<Bytes> {
        match &self.store {
            Store::Moka(c) => c.get(k),
            Store::LargestFirst(c) => lock(c).get(k),
        }
    }

    fn store(&self, k: Key, v: Bytes) {
        lock(&self.stats).insert(
            k.clone(),
            Stat {
                size: v.len() as u64,
                hits: 0,
                last_ns: crate::clock::now_ns(),
            },
        );
        match &self.store {
            Store::Moka(c) => c.insert(k, v),
            Store::LargestFirst(c) => {
                let evicted = lock(c).insert(k.clone(), v);
                let mut stats = lock(&self.stats);
                for e in evicted {
                    stats.remove(&e);
                }
                if !lock(c).contains(&k) {
                    stats.remove(&k);
                }
            }
        }
    }

    /// The content for `k`: from the cache, or from `load` (once, however
    /// many callers ask at the same time), caching the result when it fits.
    pub async fn get_or_load<F, Fut>(&self, k: &Key, load: F) -> Result<Bytes, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, String>>,
    {
        if let Some(v) = self.lookup(k) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = lock(&self.stats).get_mut(k) {
                s.hits += 1;
                s.last_ns = crate::clock::now_ns();
            }
            return Ok(v);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let cell = lock(&self.inflight).entry(k.clone()).or_default().clone();
        let res = cell.get_or_init(load).await.clone();
        let first = {
            let mut m = lock(&self.inflight);
            match m.get(k) {
                Some(c) if Arc::ptr_eq(c, &cell) => {
                    m.remove(k);
                    true
                }
                _ => false,
            }
        };
        if first && let Ok(v) = &res {
            self.store(k.clone(), v.clone());
        }
        res
    }

    /// Counts a request served from disk without caching (too large).
    pub fn count_uncached(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses, bytes used).
    pub fn totals(&self) -> (u64, u64, u64) {
        let used = lock(&self.stats).values().map(|s| s.size).sum();
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            used,
        )
    }

    /// The listing for `tandem cache`.
    pub fn report(&self, node: &str) -> CacheReport {
        if let Store::Moka(c) = &self.store {
            c.run_pending_tasks();
        }
        let mut entries: Vec<CacheEntry> = lock(&self.stats)
            .iter()
            .map(|((p, _), s)| CacheEntry {
                path: p.clone(),
                size: s.size,
                hits: s.hits,
                last_access_ns: s.last_ns,
            })
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let (hits, misses, used) = self.totals();
        CacheReport {
            node: node.to_string(),
            policy: self.policy.name().to_string(),
            capacity: self.capacity,
            used,
            hits,
            misses,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str) -> Key {
        (RelPath::new(p).unwrap(), ContentHash::of(p.as_bytes()))
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn largest_first_evicts_a_larger_file_first() {
        let mut c = LargestFirst::new(100);
        assert!(c.insert(key("a"), bytes(50)).is_empty());
        assert!(c.insert(key("b"), bytes(30)).is_empty());
        assert!(c.insert(key("c"), bytes(15)).is_empty());
        // 95 used; 20 more needs room: "a" (50) is larger than 20 and goes.
        assert_eq!(c.insert(key("d"), bytes(20)), vec![key("a")]);
        assert_eq!(c.used(), 65);
        // No cached file is larger than 40: evict until there is room,
        // largest first ("b" 30 is enough).
        assert_eq!(c.insert(key("e"), bytes(40)), vec![key("b")]);
        assert_eq!(c.used(), 75);
        // Too large for the whole cache: not stored, nothing evicted.
        assert!(c.insert(key("huge"), bytes(101)).is_empty());
        assert!(!c.contains(&key("huge")));
        assert!(c.contains(&key("c")) && c.contains(&key("d")) && c.contains(&key("e")));
        // Needing more than one eviction.
        assert_eq!(
            c.insert(key("f"), bytes(90)),
            vec![key("e"), key("d"), key("c")]
        );
        assert_eq!(c.used(), 90);
    }

    #[tokio::test]
    async fn one_load_for_concurrent_misses_and_hits_counted() {
        let cache = FileCache::new(1024, Policy::LargestFirst);
        let loads = AtomicU64::new(0);
        let k = key("x");
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(bytes(10))
        };
        let (a, b) = tokio::join!(cache.get_or_load(&k, load), cache.get_or_load(&k, load));
        assert_eq!((a.unwrap().len(), b.unwrap().len()), (10, 10));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "the disk is read once");
        cache.get_or_load(&k, load).await.unwrap();
        let r = cache.report("A");
        assert_eq!((r.hits, r.misses, r.used), (1, 2, 10));
        assert_eq!(r.entries[0].hits, 1);
        // Another content hash for the same path is a different entry.
        let k2 = (k.0.clone(), ContentHash::of(b"other"));
        cache
            .get_or_load(&k2, || async { Ok(bytes(5)) })
            .await
            .unwrap();
        assert_eq!(cache.report("A").entries.len(), 2);
    }

    #[test]
    fn moka_policy_respects_capacity() {
        let cache = FileCache::new(64 * 1024, Policy::Moka);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..20 {
            let k = key(&format!("f{i}"));
            rt.block_on(cache.get_or_load(&k, || async { Ok(bytes(8 * 1024)) }))
                .unwrap();
        }
        let r = cache.report("A");
        assert!(r.used <= 64 * 1024, "used {} over capacity", r.used);
        assert_eq!(r.misses, 20);
    }
}
