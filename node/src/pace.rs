//! Receiver-paced announcements. A peer's index messages are acknowledged
//! (`PeerMessage::IndexTaken`) only while this node has room for more of
//! what they announce, and the peer sends at most a window of messages
//! ahead of those acknowledgements: the queue of files announced and not
//! yet installed stays near [`FRESH_MARK`] however large the sync, and
//! small files' contents sent with their entries are kept instead of
//! dropped and asked for again (from one peer at a time: the room is one
//! window's, so several peers sending at once can still overrun it, which
//! costs a second fetch of what was dropped, never a stall).
//!
//! The core counts, per peer, the queued versions that peer announced and
//! that are on their way in ("fresh": not yet tried, or being fetched for
//! the first time). A version that failed (other than by its link
//! closing), is declined (send-only node) or waits for another transfer
//! stops counting: it may stay queued for a long time, and a link must
//! never wait for it. One whose peer is not linked keeps counting (no link
//! waits on it, and it goes first when the link is up again). A link that
//! waited [`ACK_ANYWAY`] acknowledges regardless, so even a count that went
//! wrong slows a peer down, never stops it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tandem_common::NodeId;
use tokio::sync::Notify;

/// Fresh queued versions from one peer below which its index messages are
/// acknowledged: a few seconds of installs of small files, about 8 MiB of
/// queue.
pub const FRESH_MARK: usize = 16_384;

/// Index batches are cut at about this many bytes (small files' content
/// sent inside the batch included).
pub const INDEX_BATCH_BYTES: usize = 512 * 1024;

/// Index messages sent to one peer and not yet acknowledged by it
/// (`IndexTaken`), at most: the index is read from the core (and small
/// files from disk) only as fast as the peer takes it in, so memory stays
/// flat on both sides however large the index. Four of 512 KiB keep a
/// 100 Mbit/s link with 50 ms round trips busy.
pub const INDEX_WINDOW: usize = 4;

/// Bytes of small files' content received with entries and not yet
/// written, at most; beyond it content is dropped (and asked for when its
/// turn comes), so a peer that ignores the pacing cannot fill memory.
pub const GIVEN_MAX_HELD: usize = 4 << 20;

/// Index messages are acknowledged only while a whole window of messages
/// (each a batch plus at most one small file over it) still fits under
/// [`GIVEN_MAX_HELD`]: the peer may have that many on their way already,
/// each acknowledged when there was room for it alone, and content that
/// arrives over the limit is dropped and asked for again (with 2 MiB and
/// room for one message, about 40 % of a 20,000-file sync was: 62 to 81
/// requests of about 124 files). The room is one peer's window: several
/// peers sending at once may still overrun it (see the module's note).
pub const GIVEN_ROOM: usize =
    INDEX_WINDOW * (INDEX_BATCH_BYTES + tandem_common::proto::INLINE_MAX as usize);

/// The longest a link holds back an acknowledgement.
pub const ACK_ANYWAY: Duration = Duration::from_secs(5);

/// What the core has queued from each peer, and content held; shared by
/// the core (which counts) and the links (which wait for room).
#[derive(Default)]
pub struct Pace {
    fresh: Mutex<HashMap<NodeId, usize>>,
    /// Bytes of content held in queued versions (see [`GIVEN_MAX_HELD`]).
    given_held: AtomicUsize,
    room: Notify,
}

impl Pace {
    /// A fresh version from `peer` was queued.
    pub fn add(&self, peer: NodeId) {
        *self.counts().entry(peer).or_default() += 1;
    }

    /// A fresh version from `peer` left the queue or stopped counting
    /// (links waiting for room are woken when it goes below the mark: a
    /// wake for every file installed cost more system time than the
    /// installs, 200,000 files taking 40-44 s instead of 31-34).
    pub fn sub(&self, peer: NodeId) {
        let crossed = {
            let mut counts = self.counts();
            let Some(n) = counts.get_mut(&peer) else {
                return;
            };
            *n = n.saturating_sub(1);
            let left = *n;
            if left == 0 {
                counts.remove(&peer);
            }
            left + 1 == FRESH_MARK
        };
        if crossed {
            self.wake();
        }
    }

    /// How many fresh versions from `peer` are queued.
    pub fn fresh(&self, peer: NodeId) -> usize {
        self.counts().get(&peer).copied().unwrap_or(0)
    }

    /// Bytes of content held (given to queued versions).
    pub fn given_held(&self) -> usize {
        self.given_held.load(Ordering::Relaxed)
    }

    /// `n` more bytes of content are held.
    pub fn hold(&self, n: usize) {
        self.given_held.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes of content held are let go (written or dropped): links
    /// waiting for room are woken when this makes room.
    pub fn release(&self, n: usize) {
        let before = self.given_held.fetch_sub(n, Ordering::Relaxed);
        let fits = |held: usize| held + GIVEN_ROOM <= GIVEN_MAX_HELD;
        if !fits(before) && fits(before.saturating_sub(n)) {
            self.wake();
        }
    }

    /// True when `peer`'s next index message fits.
    pub fn has_room(&self, peer: NodeId) -> bool {
        self.fresh(peer) < FRESH_MARK && self.given_held() + GIVEN_ROOM <= GIVEN_MAX_HELD
    }

    /// Wakes links that wait for room (the core calls it when work is done
    /// or leaves the queue; a spurious wake costs one look).
    pub fn wake(&self) {
        self.room.notify_waiters();
    }

    /// Waits until `peer`'s next index message fits, or [`ACK_ANYWAY`].
    /// True when it fits (false: the wait ran out).
    pub async fn room_for(&self, peer: NodeId) -> bool {
        let deadline = tokio::time::Instant::now() + ACK_ANYWAY;
        loop {
            let woken = self.room.notified();
            tokio::pin!(woken);
            // Registered before looking, so a wake in between is not lost.
            woken.as_mut().enable();
            if self.has_room(peer) {
                return true;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return false;
            }
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, usize>> {
        // A panic while holding it cannot leave the map torn (one integer
        // changes at a time): keep using it.
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(n: u8) -> NodeId {
        NodeId(uuid::Uuid::from_bytes([n; 16]))
    }

    #[test]
    fn room_depends_on_the_peer_and_on_content_held() {
        let pace = Pace::default();
        for _ in 0..FRESH_MARK {
            pace.add(node(1));
        }
        assert!(!pace.has_room(node(1)));
        assert!(
            pace.has_room(node(2)),
            "another peer's queue does not count"
        );
        pace.sub(node(1));
        assert!(pace.has_room(node(1)));
        pace.hold(GIVEN_MAX_HELD - GIVEN_ROOM + 1);
        assert!(
            !pace.has_room(node(2)),
            "content held counts for every peer"
        );
        pace.release(1);
        assert!(pace.has_room(node(2)));
        // More subs than adds never wrap.
        for _ in 0..FRESH_MARK + 5 {
            pace.sub(node(1));
        }
        assert_eq!(pace.fresh(node(1)), 0);
    }

    #[tokio::test]
    async fn a_waiting_link_is_woken_when_room_is_made() {
        let pace = Arc::new(Pace::default());
        for _ in 0..FRESH_MARK {
            pace.add(node(1));
        }
        let waiter = tokio::spawn({
            let pace = pace.clone();
            async move { pace.room_for(node(1)).await }
        });
        tokio::task::yield_now().await;
        pace.sub(node(1));
        // Without the wake it would wait out ACK_ANYWAY and say false.
        assert!(waiter.await.expect("waiter"), "it found room");
    }

    #[tokio::test]
    async fn a_waiting_link_is_woken_when_content_is_written() {
        let pace = Arc::new(Pace::default());
        pace.hold(GIVEN_MAX_HELD);
        let waiter = tokio::spawn({
            let pace = pace.clone();
            async move { pace.room_for(node(1)).await }
        });
        tokio::task::yield_now().await;
        pace.release(GIVEN_ROOM / 2);
        pace.release(GIVEN_ROOM / 2);
        assert!(waiter.await.expect("waiter"), "it found room");
    }

    #[tokio::test(start_paused = true)]
    async fn a_link_never_waits_longer_than_ack_anyway() {
        let pace = Pace::default();
        for _ in 0..FRESH_MARK {
            pace.add(node(1));
        }
        assert!(!pace.room_for(node(1)).await, "no room, but the wait ended");
    }
}
