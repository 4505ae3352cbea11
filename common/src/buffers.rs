//! Large byte buffers kept for reuse on the bulk paths: blocks read from
//! disk to be sent or copied into a file, and bodies received from a peer.
//!
//! A fresh buffer costs a page fault for every 4 KiB the first time it is
//! written, and memory the allocator has given back is fresh again the
//! next time. On a virtual machine that hands freed memory back to its
//! host (as the one the benchmarks run on does), touching such memory
//! costs far more: copying the 256 MiB of a file's unchanged blocks
//! through a fresh buffer per block took 2.0–2.7 s, through kept buffers
//! 0.3 s (`bench/SYNC.md`, session 26). A [`Pool`] keeps a few buffers;
//! when none was used for a while they are let go
//! ([`Pool::release_idle`]), so an idle node does not hold them.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// The largest buffer [`SEGMENTS`] keeps: a transfer's segment (sixteen
/// 128 KiB blocks).
pub const SEGMENT_MAX: usize = 2 << 20;

/// How long [`SEGMENTS`]' buffers are kept when nothing uses them (each
/// process that reads or sends bodies calls [`Pool::release_idle`] with it
/// now and then).
pub const KEEP_IDLE: Duration = Duration::from_secs(20);

/// The node-wide pool of segment buffers (512 KiB to a segment), shared by
/// the sender's answers, the receiver's bodies and the blocks a transfer
/// copies from local files. Eight are kept at most: 16 MiB.
pub static SEGMENTS: Pool = Pool::new(8, SEGMENT_MAX / 4, SEGMENT_MAX);

/// Buffers kept for reuse: at most `keep` of them, each of a length (when
/// taken) and capacity (when given back) between `min_len` and `max_len`.
/// Smaller buffers are cheap to make and are not kept: a small body must
/// not hold a large buffer for as long as it lives. A buffer lent out may
/// be up to `max_len / min_len` times the length asked (four times, for
/// [`SEGMENTS`]), which is what bounds the memory lent out against the
/// bytes asked for.
pub struct Pool {
    kept: Mutex<Kept>,
    keep: usize,
    min_len: usize,
    max_len: usize,
}

struct Kept {
    bufs: Vec<Vec<u8>>,
    /// When a buffer was last taken or given back.
    used: Option<Instant>,
}

impl Pool {
    /// A pool keeping at most `keep` buffers of `min_len..=max_len` bytes.
    pub const fn new(keep: usize, min_len: usize, max_len: usize) -> Pool {
        Pool {
            kept: Mutex::new(Kept {
                bufs: Vec::new(),
                used: None,
            }),
            keep,
            min_len,
            max_len,
        }
    }

    /// Whether a buffer of `len` bytes is one this pool keeps.
    pub fn keeps(&self, len: usize) -> bool {
        (self.min_len..=self.max_len).contains(&len)
    }

    /// A buffer of `len` bytes. Its contents are unspecified: a kept buffer
    /// holds what it held before (only bytes past its last length are
    /// zeroed), so the caller must write every byte before it reads any.
    /// A length the pool does not keep gets a fresh, zeroed buffer.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if !self.keeps(len) {
            return vec![0; len];
        }
        let mut buf = {
            let mut k = self.lock();
            k.used = Some(Instant::now());
            k.bufs.pop()
        }
        .unwrap_or_default();
        if buf.len() >= len {
            buf.truncate(len);
        } else {
            // Exact, so a buffer grown to a segment is still kept.
            buf.reserve_exact(len - buf.len());
            buf.resize(len, 0);
        }
        buf
    }

    /// Keeps `buf` for a later [`Pool::take`], if its capacity is one the
    /// pool keeps and fewer than `keep` are kept; else frees it.
    pub fn give_back(&self, buf: Vec<u8>) {
        if !self.keeps(buf.capacity()) {
            return;
        }
        let mut k = self.lock();
        k.used = Some(Instant::now());
        if k.bufs.len() < self.keep {
            k.bufs.push(buf);
        }
    }

    /// `buf` as shared bytes, given back to this pool when the last slice
    /// of them is dropped.
    pub fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled { buf, pool: self })
    }

    /// Frees the kept buffers if none was taken or given back for `idle`;
    /// returns how many were freed.
    pub fn release_idle(&self, idle: Duration) -> usize {
        let freed = {
            let mut k = self.lock();
            if k.used.is_none_or(|t| t.elapsed() < idle) {
                return 0;
            }
            k.used = None;
            std::mem::take(&mut k.bufs)
        };
        freed.len()
    }

    /// How many buffers are kept now.
    pub fn kept(&self) -> usize {
        self.lock().bufs.len()
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic elsewhere while holding it left a list of buffers, not
        // a broken invariant.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pool's buffer lent out as [`Bytes`].
struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_in_range_are_kept_up_to_the_bound() {
        let pool = Pool::new(2, 100, 1000);
        let a = pool.take(1000);
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        pool.give_back(a);
        assert_eq!(pool.kept(), 1);
        // Taken again, shorter: the same memory, cut to length.
        let b = pool.take(500);
        assert_eq!((b.len(), b.as_ptr()), (500, ptr));
        assert_eq!(pool.kept(), 0);
        // Grown back to the top of the range: still kept after.
        let b = {
            let mut b = b;
            b.truncate(100);
            pool.give_back(b);
            pool.take(1000)
        };
        assert_eq!(b.len(), 1000);
        pool.give_back(b);
        assert_eq!(pool.kept(), 1);
        for _ in 0..5 {
            pool.give_back(vec![0; 200]);
        }
        assert_eq!(pool.kept(), 2, "at most `keep`");
    }

    #[test]
    fn buffers_out_of_range_are_neither_lent_nor_kept() {
        let pool = Pool::new(4, 100, 1000);
        pool.give_back(vec![7; 300]);
        assert_eq!(pool.kept(), 1);
        // Too small or too large to take the kept one: fresh and zeroed.
        let small = pool.take(10);
        assert_eq!(small, vec![0; 10]);
        let large = pool.take(2000);
        assert_eq!(large, vec![0; 2000]);
        assert_eq!(pool.kept(), 1);
        pool.give_back(small);
        pool.give_back(large);
        assert_eq!(pool.kept(), 1, "neither a small nor a large one is kept");
        assert_eq!(pool.take(300), vec![7; 300], "the kept one, as it was");
    }

    #[test]
    fn frozen_buffers_come_back_when_the_last_slice_is_dropped() {
        static POOL: Pool = Pool::new(4, 10, 100);
        let bytes = POOL.freeze(POOL.take(100));
        let (a, b) = (bytes.slice(..50), bytes.slice(50..));
        drop(bytes);
        drop(a);
        assert_eq!(POOL.kept(), 0, "a slice still holds it");
        drop(b);
        assert_eq!(POOL.kept(), 1);
    }

    #[test]
    fn kept_buffers_are_freed_when_the_pool_is_idle() {
        let pool = Pool::new(4, 10, 100);
        assert_eq!(pool.release_idle(Duration::ZERO), 0, "never used");
        pool.give_back(vec![0; 50]);
        pool.give_back(vec![0; 50]);
        assert_eq!(
            pool.release_idle(Duration::from_secs(3600)),
            0,
            "used just now"
        );
        assert_eq!(pool.kept(), 2);
        assert_eq!(pool.release_idle(Duration::ZERO), 2);
        assert_eq!(pool.kept(), 0);
    }
}
