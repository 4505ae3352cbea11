//! The event bus: every change, transfer, conflict, lock and connection is
//! published here, with a sequence number, for the live feed. A bounded
//! backlog lets a client that reconnects resume after its last sequence; if
//! it fell too far behind (or the node restarted) it is told what it missed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tandem_common::proto::{Event, EventKind, FeedCursor};
use tokio::sync::broadcast;

/// Events kept for resuming clients.
pub const BACKLOG: usize = 10_000;

/// What a new subscriber gets.
pub struct Subscription {
    /// Events after the cursor still in the backlog.
    pub replay: Vec<Event>,
    /// Sequences that can no longer be replayed: (first, next).
    pub missed: Option<(u64, u64)>,
    /// Live events from now on.
    pub live: broadcast::Receiver<Event>,
}

/// Publishes events to every subscriber.
pub struct EventBus {
    node: String,
    epoch: u64,
    next: AtomicU64,
    backlog: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus for node `node`; `epoch` identifies this run.
    pub fn new(node: &str, epoch: u64) -> EventBus {
        EventBus {
            node: node.to_string(),
            epoch,
            next: AtomicU64::new(1),
            backlog: Mutex::new(VecDeque::new()),
            tx: broadcast::channel(4096).0,
        }
    }

    /// This run's id.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Publishes an event.
    pub fn emit(&self, kind: EventKind) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let ev = Event {
            epoch: self.epoch,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
            time_ns: crate::core::now_ns(),
            node: self.node.clone(),
            kind,
        };
        if backlog.len() == BACKLOG {
            backlog.pop_front();
        }
        backlog.push_back(ev.clone());
        // No subscribers is fine.
        let _ = self.tx.send(ev);
    }

    /// Subscribes, replaying what came after `after` when possible.
    pub fn subscribe(&self, after: Option<FeedCursor>) -> Subscription {
        let backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.tx.subscribe();
        let next = self.next.load(Ordering::Relaxed);
        let Some(after) = after else {
            return Subscription {
                replay: Vec::new(),
                missed: None,
                live,
            };
        };
        let oldest = backlog.front().map_or(next, |e| e.seq);
        let (from, missed) = if after.epoch != self.epoch || after.seq > next {
            // Another run of the node: everything before now is unknown.
            (oldest, Some((1, oldest)))
        } else if after.seq + 1 < oldest {
            (oldest, Some((after.seq + 1, oldest)))
        } else {
            (after.seq + 1, None)
        };
        let replay = backlog.iter().filter(|e| e.seq >= from).cloned().collect();
        Subscription {
            replay,
            missed: missed.filter(|(a, b)| a < b),
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::RelPath;

    fn added(n: u64) -> EventKind {
        EventKind::Added {
            path: RelPath::new(format!("f{n}")).unwrap(),
            size: n,
        }
    }

    #[test]
    fn resume_replays_after_cursor_and_reports_gaps() {
        let bus = EventBus::new("A", 7);
        for i in 0..5 {
            bus.emit(added(i));
        }
        let s = bus.subscribe(Some(FeedCursor { epoch: 7, seq: 3 }));
        assert_eq!(
            s.replay.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert!(s.missed.is_none());
        let s = bus.subscribe(Some(FeedCursor { epoch: 6, seq: 3 }));
        assert_eq!(s.replay.len(), 5, "another run: replay all that is kept");
        for i in 0..BACKLOG as u64 {
            bus.emit(added(i));
        }
        let s = bus.subscribe(Some(FeedCursor { epoch: 7, seq: 3 }));
        assert_eq!(s.missed, Some((4, 6)));
        assert_eq!(s.replay.first().unwrap().seq, 6);
    }

    #[tokio::test]
    async fn live_events_arrive_in_order() {
        let bus = EventBus::new("A", 1);
        let mut s = bus.subscribe(None);
        bus.emit(added(1));
        bus.emit(added(2));
        assert_eq!(s.live.recv().await.unwrap().seq, 1);
        assert_eq!(s.live.recv().await.unwrap().seq, 2);
    }
}
