//! The event bus: every change, transfer, conflict, lock and connection is
//! published here, with a sequence number, for the live feed. A bounded
//! backlog lets a client that reconnects resume after its last sequence; if
//! it fell too far behind (or the node restarted) it is told what it missed.
//!
//! The feed is the cluster's: each node passes its events to its peers,
//! which publish them (under their own sequence numbers, keeping the
//! reporting node's name and time) and pass them on, so a chain's far end is
//! heard too. An event is identified by its reporter's run and sequence;
//! one that arrives again by another path is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tandem_common::proto::{Event, EventKind, FeedCursor};
use tokio::sync::broadcast;

/// Events kept for resuming clients: as many as Syncthing keeps for its
/// GUI (`EventSubBufferSize`, 1,000). A client away for longer, or during
/// a burst (a sync of many files makes a few events per file), is told
/// which events it missed and reloads the table, as it does after a
/// restart of the node. It was 10,000: 1,000 lowered each node's peak on
/// the 20,000-file row by 2.8-4.9 MiB (bench/SYNC.md, session 29).
pub const BACKLOG: usize = 1_000;
/// Reporting nodes whose events are relayed (a bound against a peer that
/// makes up names).
const MAX_REPORTERS: usize = 1024;
/// Longest reporting node name relayed.
const MAX_NODE_NAME: usize = 255;

/// What a new subscriber gets.
pub struct Subscription {
    /// Events after the cursor still in the backlog.
    pub replay: Vec<Event>,
    /// Sequences that can no longer be replayed: (first, next).
    pub missed: Option<(u64, u64)>,
    /// Live events from now on.
    pub live: broadcast::Receiver<Arc<Event>>,
}

/// Publishes events to every subscriber.
///
/// An event of this node is held once, behind an `Arc`, however many of the
/// backlog and the channels' slots hold it (one relayed from a peer twice:
/// as renumbered here, and as passed on): a sync of many files fills the
/// backlog, and each channel's slots are allocated in full when it is made.
pub struct EventBus {
    node: String,
    epoch: u64,
    next: AtomicU64,
    backlog: Mutex<VecDeque<Arc<Event>>>,
    tx: broadcast::Sender<Arc<Event>>,
    /// Events to pass on to peers, numbered by the node that reported them.
    relay_tx: broadcast::Sender<Arc<Event>>,
    /// Newest (run, sequence) seen per reporting node.
    seen: Mutex<HashMap<String, (u64, u64)>>,
}

impl EventBus {
    /// A bus for node `node`; `epoch` identifies this run.
    pub fn new(node: &str, epoch: u64) -> EventBus {
        EventBus {
            node: node.to_string(),
            epoch,
            next: AtomicU64::new(1),
            // Allocated once at its bound: grown by doubling, it would
            // end with more slots than events and hold both halves while
            // it moves.
            backlog: Mutex::new(VecDeque::with_capacity(BACKLOG)),
            tx: broadcast::channel(4096).0,
            relay_tx: broadcast::channel(4096).0,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// This run's id.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Publishes an event of this node (and passes it to peers).
    pub fn emit(&self, kind: EventKind) {
        let ev = self.publish(self.node.clone(), crate::clock::now_ns(), kind);
        let _ = self.relay_tx.send(ev);
    }

    /// Publishes an event another node reported, unless it was seen before
    /// (it arrives once per path); true when it was new. New events are
    /// passed on to peers as the reporter numbered them.
    pub fn relay(&self, ev: Event) -> bool {
        if ev.node == self.node || ev.node.len() > MAX_NODE_NAME {
            return false;
        }
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let newer = match seen.get(&ev.node) {
                // Runs are numbered by their start time, and a restarted
                // node numbers its events from 1 again in its new run.
                Some(&(epoch, seq)) => (ev.epoch, ev.seq) > (epoch, seq),
                None => seen.len() < MAX_REPORTERS,
            };
            if !newer {
                return false;
            }
            seen.insert(ev.node.clone(), (ev.epoch, ev.seq));
        }
        self.publish(ev.node.clone(), ev.time_ns, ev.kind.clone());
        let _ = self.relay_tx.send(Arc::new(ev));
        true
    }

    /// Events to pass on to a peer, from now on.
    pub fn relayed(&self) -> broadcast::Receiver<Arc<Event>> {
        self.relay_tx.subscribe()
    }

    /// Numbers an event in this bus, keeps it for resuming, and sends it to
    /// subscribers.
    fn publish(&self, node: String, time_ns: i64, kind: EventKind) -> Arc<Event> {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let ev = Arc::new(Event {
            epoch: self.epoch,
            seq: self.next.fetch_add(1, Ordering::Relaxed),
            time_ns,
            node,
            kind,
        });
        if backlog.len() == BACKLOG {
            backlog.pop_front();
        }
        backlog.push_back(ev.clone());
        // No subscribers is fine.
        let _ = self.tx.send(ev.clone());
        ev
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
        let replay = backlog
            .iter()
            .filter(|e| e.seq >= from)
            .map(|e| Event::clone(e))
            .collect();
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

    #[test]
    fn relayed_events_are_published_once_and_passed_on() {
        let bus = EventBus::new("A", 7);
        let mut sub = bus.subscribe(None);
        let mut out = bus.relayed();
        let from_b = |epoch, seq| Event {
            epoch,
            seq,
            time_ns: 42,
            node: "B".into(),
            kind: added(seq),
        };
        assert!(bus.relay(from_b(3, 1)));
        assert!(!bus.relay(from_b(3, 1)), "the same event by another path");
        assert!(bus.relay(from_b(3, 2)));
        assert!(!bus.relay(from_b(3, 1)), "older than one seen");
        assert!(bus.relay(from_b(4, 1)), "B restarted: a new run");
        bus.emit(added(9));

        let got: Vec<(String, u64, i64)> = std::iter::from_fn(|| sub.live.try_recv().ok())
            .map(|e| (e.node.clone(), e.seq, e.time_ns))
            .collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            ("B".into(), 1, 42),
            "renumbered here, B's time kept"
        );
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(got[3].0, "A");
        let passed: Vec<Event> = std::iter::from_fn(|| out.try_recv().ok())
            .map(Arc::unwrap_or_clone)
            .collect();
        assert_eq!(
            passed
                .iter()
                .map(|e| (e.node.as_str(), e.epoch, e.seq))
                .collect::<Vec<_>>(),
            vec![("B", 3, 1), ("B", 3, 2), ("B", 4, 1), ("A", 7, 4)],
            "peers get B's events as B numbered them"
        );
        let echo = passed.last().cloned().expect("our own event");
        assert!(!bus.relay(echo), "our own event coming back is dropped");
    }

    #[test]
    fn a_full_backlog_holds_its_bound_and_no_more() {
        let bus = EventBus::new("A", 1);
        let mut sub = bus.subscribe(None);
        for i in 0..(BACKLOG as u64 + 10) {
            bus.emit(added(i));
        }
        let backlog = bus.backlog.lock().unwrap();
        assert_eq!(backlog.len(), BACKLOG);
        assert_eq!(backlog.front().unwrap().seq, 11, "the oldest went first");
        // Grown by doubling it would hold more slots than events.
        assert_eq!(backlog.capacity(), BACKLOG);
        drop(backlog);
        // The live copy and the backlog's are one event (the subscriber
        // lagged: the channel holds fewer than were sent).
        let mut last = None;
        loop {
            match sub.live.try_recv() {
                Ok(e) => last = Some(e),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let last = last.expect("live events");
        assert_eq!(last.seq, BACKLOG as u64 + 10);
        let kept = bus.backlog.lock().unwrap().back().cloned().unwrap();
        assert!(Arc::ptr_eq(&last, &kept));
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
