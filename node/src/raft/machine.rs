//! PURE: the cluster's lock table, as the Raft state machine applies it.
//!
//! Every node applies the same committed commands in the same log order, so
//! every node computes the same table and the same answer for each command:
//! of two racing `Lock` commands for one path, the one earlier in the log
//! wins and the other is refused, on every node alike. Nothing here reads a
//! clock, a disk or a random source: times come inside the commands (the
//! proposer's clock), and the bounds are constants every node shares.
//!
//! A path's entry always has a holder; waiters queue behind it in arrival
//! order. An unlock (by the holder, or by anyone with `force`) hands the
//! lock to the first waiter; with nobody waiting the entry disappears.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use tandem_common::{NodeId, RelPath};
use uuid::Uuid;

/// Most waiters one path may queue; a further `Wait` is answered `QueueFull`.
pub const MAX_WAITERS: usize = 64;
/// Most paths locked at once; a further `Lock` is answered `TableFull`.
pub const MAX_LOCKS: usize = 100_000;
/// Longest owner name (bytes) a claim may carry.
pub const MAX_NAME: usize = 256;

/// Who holds (or waits for) a lock: a client identity, its name for
/// people, the node it works through, and when (proposer's clock, ns since
/// the Unix epoch: when granted for a holder, when queued for a waiter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The client identity that owns the claim.
    pub owner: Uuid,
    /// The identity's name, for messages.
    pub owner_name: String,
    /// The node the owner works through (where its edits flow from).
    pub via: NodeId,
    /// When the lock was granted (holder) or requested (waiter).
    pub at_ns: i64,
}

/// One command of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Take the lock now, or be refused.
    Lock {
        /// What to lock.
        path: RelPath,
        /// Who asks.
        claim: Claim,
    },
    /// Take the lock now, or queue for it.
    Wait {
        /// What to lock.
        path: RelPath,
        /// Who asks.
        claim: Claim,
    },
    /// Leave the queue of a path.
    CancelWait {
        /// Which path's queue.
        path: RelPath,
        /// Whose place.
        owner: Uuid,
    },
    /// Release a lock; the first waiter (if any) gets it.
    Unlock {
        /// Which lock.
        path: RelPath,
        /// Who asks.
        by: Uuid,
        /// Release even if `by` is not the holder (authorization is the
        /// caller's business, before proposing).
        force: bool,
        /// When (proposer's clock); the next holder's grant time.
        at_ns: i64,
    },
}

impl LockCommand {
    /// The one path this command reads and changes.
    pub fn path(&self) -> &RelPath {
        match self {
            LockCommand::Lock { path, .. }
            | LockCommand::Wait { path, .. }
            | LockCommand::CancelWait { path, .. }
            | LockCommand::Unlock { path, .. } => path,
        }
    }
}

/// The answer to one applied command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutcome {
    /// The lock was free and is now this claim's.
    Granted(Claim),
    /// The asking identity already held it (a retried command): unchanged.
    AlreadyHeld(Claim),
    /// Someone else holds it.
    Refused {
        /// The current holder.
        holder: Claim,
    },
    /// Queued behind the holder (a retried `Wait` keeps its place).
    Queued {
        /// The current holder.
        holder: Claim,
        /// Place in the queue, 1 = next.
        position: usize,
    },
    /// The queue already has `MAX_WAITERS` claims.
    QueueFull {
        /// The current holder.
        holder: Claim,
    },
    /// `MAX_LOCKS` paths are locked already.
    TableFull,
    /// A claim carried a name longer than `MAX_NAME`.
    NameTooLong,
    /// The lock was released; `next` is the waiter who now holds it.
    Released {
        /// The claim that was released.
        released: Claim,
        /// The first waiter, now the holder.
        next: Option<Claim>,
    },
    /// Nobody holds a lock on the path.
    NotLocked,
    /// Someone else holds it and `force` was not given.
    NotOwner {
        /// The current holder.
        holder: Claim,
    },
    /// The identity left the queue.
    WaitCancelled,
    /// The identity was not queued for the path.
    NotWaiting,
}

/// A locked path: its holder and the queue behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathLock {
    /// Who holds the lock.
    pub holder: Claim,
    /// Who waits, first in line first.
    pub queue: VecDeque<Claim>,
}

/// Bounds of a table; every node must use the same ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limits {
    locks: usize,
    waiters: usize,
}

const LIMITS: Limits = Limits {
    locks: MAX_LOCKS,
    waiters: MAX_WAITERS,
};

/// Every lock of the cluster, one entry per locked path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockTable {
    locks: BTreeMap<RelPath, PathLock>,
    limits: Limits,
}

impl Default for LockTable {
    fn default() -> Self {
        LockTable {
            locks: BTreeMap::new(),
            limits: LIMITS,
        }
    }
}

impl LockTable {
    /// A table holding `locks` (read back from a store or a snapshot).
    pub fn from_locks(locks: BTreeMap<RelPath, PathLock>) -> LockTable {
        LockTable {
            locks,
            limits: LIMITS,
        }
    }

    /// Every locked path, in path order.
    pub fn locks(&self) -> &BTreeMap<RelPath, PathLock> {
        &self.locks
    }

    /// The lock on `path`, if any.
    pub fn get(&self, path: &RelPath) -> Option<&PathLock> {
        self.locks.get(path)
    }

    /// Number of locked paths.
    pub fn len(&self) -> usize {
        self.locks.len()
    }

    /// Whether nothing is locked.
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Applies one command and answers it. Only `cmd.path()` can change.
    pub fn apply(&mut self, cmd: &LockCommand) -> LockOutcome {
        match cmd {
            LockCommand::Lock { path, claim } => self.lock(path, claim, false),
            LockCommand::Wait { path, claim } => self.lock(path, claim, true),
            LockCommand::CancelWait { path, owner } => self.cancel_wait(path, *owner),
            LockCommand::Unlock {
                path,
                by,
                force,
                at_ns,
            } => self.unlock(path, *by, *force, *at_ns),
        }
    }

    fn lock(&mut self, path: &RelPath, claim: &Claim, wait: bool) -> LockOutcome {
        if claim.owner_name.len() > MAX_NAME {
            return LockOutcome::NameTooLong;
        }
        let Some(entry) = self.locks.get_mut(path) else {
            if self.locks.len() >= self.limits.locks {
                return LockOutcome::TableFull;
            }
            self.locks.insert(
                path.clone(),
                PathLock {
                    holder: claim.clone(),
                    queue: VecDeque::new(),
                },
            );
            return LockOutcome::Granted(claim.clone());
        };
        if entry.holder.owner == claim.owner {
            return LockOutcome::AlreadyHeld(entry.holder.clone());
        }
        let holder = entry.holder.clone();
        if !wait {
            return LockOutcome::Refused { holder };
        }
        if let Some(i) = entry.queue.iter().position(|w| w.owner == claim.owner) {
            return LockOutcome::Queued {
                holder,
                position: i + 1,
            };
        }
        if entry.queue.len() >= self.limits.waiters {
            return LockOutcome::QueueFull { holder };
        }
        entry.queue.push_back(claim.clone());
        LockOutcome::Queued {
            holder,
            position: entry.queue.len(),
        }
    }

    fn cancel_wait(&mut self, path: &RelPath, owner: Uuid) -> LockOutcome {
        let Some(entry) = self.locks.get_mut(path) else {
            return LockOutcome::NotWaiting;
        };
        match entry.queue.iter().position(|w| w.owner == owner) {
            Some(i) => {
                entry.queue.remove(i);
                LockOutcome::WaitCancelled
            }
            None => LockOutcome::NotWaiting,
        }
    }

    fn unlock(&mut self, path: &RelPath, by: Uuid, force: bool, at_ns: i64) -> LockOutcome {
        let Some(entry) = self.locks.get_mut(path) else {
            return LockOutcome::NotLocked;
        };
        if entry.holder.owner != by && !force {
            return LockOutcome::NotOwner {
                holder: entry.holder.clone(),
            };
        }
        match entry.queue.pop_front() {
            Some(mut next) => {
                next.at_ns = at_ns;
                let released = std::mem::replace(&mut entry.holder, next.clone());
                LockOutcome::Released {
                    released,
                    next: Some(next),
                }
            }
            None => {
                let released = entry.holder.clone();
                self.locks.remove(path);
                LockOutcome::Released {
                    released,
                    next: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    fn claim(n: u128, at_ns: i64) -> Claim {
        Claim {
            owner: Uuid::from_u128(n),
            owner_name: format!("user{n}"),
            via: NodeId(Uuid::from_u128(1000 + n)),
            at_ns,
        }
    }

    fn lock(path: &str, c: &Claim) -> LockCommand {
        LockCommand::Lock {
            path: p(path),
            claim: c.clone(),
        }
    }

    fn wait(path: &str, c: &Claim) -> LockCommand {
        LockCommand::Wait {
            path: p(path),
            claim: c.clone(),
        }
    }

    fn unlock(path: &str, by: u128, force: bool) -> LockCommand {
        LockCommand::Unlock {
            path: p(path),
            by: Uuid::from_u128(by),
            force,
            at_ns: 99,
        }
    }

    #[test]
    fn first_lock_wins_second_is_refused_naming_the_holder() {
        let mut t = LockTable::default();
        let (a, b) = (claim(1, 10), claim(2, 11));
        assert_eq!(t.apply(&lock("x", &a)), LockOutcome::Granted(a.clone()));
        assert_eq!(
            t.apply(&lock("x", &b)),
            LockOutcome::Refused { holder: a.clone() }
        );
        // Another path is independent.
        assert_eq!(t.apply(&lock("y", &b)), LockOutcome::Granted(b.clone()));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_retried_lock_by_the_holder_is_already_held_and_changes_nothing() {
        let mut t = LockTable::default();
        let a = claim(1, 10);
        t.apply(&lock("x", &a));
        let again = claim(1, 20);
        assert_eq!(
            t.apply(&lock("x", &again)),
            LockOutcome::AlreadyHeld(a.clone())
        );
        assert_eq!(
            t.apply(&wait("x", &again)),
            LockOutcome::AlreadyHeld(a.clone())
        );
        assert_eq!(t.get(&p("x")).unwrap().holder, a);
    }

    #[test]
    fn only_the_owner_unlocks_unless_forced() {
        let mut t = LockTable::default();
        let a = claim(1, 10);
        t.apply(&lock("x", &a));
        assert_eq!(
            t.apply(&unlock("x", 2, false)),
            LockOutcome::NotOwner { holder: a.clone() }
        );
        assert!(t.get(&p("x")).is_some());
        assert_eq!(
            t.apply(&unlock("x", 2, true)),
            LockOutcome::Released {
                released: a.clone(),
                next: None
            }
        );
        assert!(t.is_empty());
        assert_eq!(t.apply(&unlock("x", 1, false)), LockOutcome::NotLocked);
    }

    #[test]
    fn the_owner_unlocks_and_the_path_is_free_again() {
        let mut t = LockTable::default();
        let (a, b) = (claim(1, 10), claim(2, 11));
        t.apply(&lock("x", &a));
        assert_eq!(
            t.apply(&unlock("x", 1, false)),
            LockOutcome::Released {
                released: a,
                next: None
            }
        );
        assert_eq!(t.apply(&lock("x", &b)), LockOutcome::Granted(b));
    }

    #[test]
    fn waiters_are_granted_in_order_as_each_unlocks() {
        let mut t = LockTable::default();
        let (a, b, c, d) = (claim(1, 1), claim(2, 2), claim(3, 3), claim(4, 4));
        // Granted waiters take the unlock's time.
        let granted = |c: &Claim| Claim {
            at_ns: 99,
            ..c.clone()
        };
        let queued = |holder: &Claim, position| LockOutcome::Queued {
            holder: holder.clone(),
            position,
        };
        let released = |r: &Claim, next: Option<&Claim>| LockOutcome::Released {
            released: r.clone(),
            next: next.cloned(),
        };
        let (gb, gc, gd) = (granted(&b), granted(&c), granted(&d));
        let steps = [
            (wait("x", &a), LockOutcome::Granted(a.clone())),
            (wait("x", &b), queued(&a, 1)),
            (wait("x", &c), queued(&a, 2)),
            // A retried wait keeps its place.
            (wait("x", &b), queued(&a, 1)),
            (wait("x", &d), queued(&a, 3)),
            // A plain lock by a waiter is refused; it stays queued.
            (lock("x", &c), LockOutcome::Refused { holder: a.clone() }),
            (unlock("x", 1, false), released(&a, Some(&gb))),
            // Only the new holder unlocks without force.
            (
                unlock("x", 3, false),
                LockOutcome::NotOwner { holder: gb.clone() },
            ),
            (unlock("x", 2, false), released(&gb, Some(&gc))),
            (unlock("x", 3, false), released(&gc, Some(&gd))),
            (unlock("x", 4, false), released(&gd, None)),
        ];
        for (n, (cmd, want)) in steps.into_iter().enumerate() {
            assert_eq!(t.apply(&cmd), want, "step {n}: {cmd:?}");
        }
        assert!(t.is_empty());
    }

    #[test]
    fn a_forced_unlock_also_hands_the_lock_to_the_first_waiter() {
        let mut t = LockTable::default();
        let (a, b) = (claim(1, 1), claim(2, 2));
        t.apply(&lock("x", &a));
        t.apply(&wait("x", &b));
        let out = t.apply(&unlock("x", 7, true));
        assert_eq!(
            out,
            LockOutcome::Released {
                released: a,
                next: Some(Claim { at_ns: 99, ..b })
            }
        );
    }

    #[test]
    fn cancel_wait_leaves_the_queue_and_the_rest_move_up() {
        let mut t = LockTable::default();
        let (a, b, c) = (claim(1, 1), claim(2, 2), claim(3, 3));
        t.apply(&lock("x", &a));
        t.apply(&wait("x", &b));
        t.apply(&wait("x", &c));
        let cancel = |owner| LockCommand::CancelWait {
            path: p("x"),
            owner: Uuid::from_u128(owner),
        };
        assert_eq!(t.apply(&cancel(2)), LockOutcome::WaitCancelled);
        assert_eq!(t.apply(&cancel(2)), LockOutcome::NotWaiting);
        // The holder is not a waiter.
        assert_eq!(t.apply(&cancel(1)), LockOutcome::NotWaiting);
        assert_eq!(
            t.apply(&LockCommand::CancelWait {
                path: p("nothing"),
                owner: Uuid::from_u128(2)
            }),
            LockOutcome::NotWaiting
        );
        assert_eq!(
            t.apply(&wait("x", &c)),
            LockOutcome::Queued {
                holder: a,
                position: 1
            }
        );
    }

    #[test]
    fn bounds_refuse_instead_of_growing() {
        let mut t = LockTable {
            locks: BTreeMap::new(),
            limits: Limits {
                locks: 2,
                waiters: 1,
            },
        };
        let (a, b, c) = (claim(1, 1), claim(2, 2), claim(3, 3));
        t.apply(&lock("x", &a));
        t.apply(&lock("y", &a));
        assert_eq!(t.apply(&lock("z", &a)), LockOutcome::TableFull);
        // Waiting on a locked path needs no new entry.
        t.apply(&wait("x", &b));
        assert_eq!(
            t.apply(&wait("x", &c)),
            LockOutcome::QueueFull { holder: a.clone() }
        );
        let long = Claim {
            owner_name: "n".repeat(MAX_NAME + 1),
            ..claim(4, 4)
        };
        assert_eq!(t.apply(&lock("x", &long)), LockOutcome::NameTooLong);
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn the_same_commands_in_the_same_order_give_the_same_table_and_answers() {
        let cmds = [
            lock("a", &claim(1, 1)),
            wait("a", &claim(2, 2)),
            lock("b", &claim(2, 3)),
            unlock("a", 1, false),
            wait("b", &claim(1, 4)),
            unlock("b", 3, true),
        ];
        let (mut t1, mut t2) = (LockTable::default(), LockTable::default());
        let r1: Vec<_> = cmds.iter().map(|c| t1.apply(c)).collect();
        let r2: Vec<_> = cmds.iter().map(|c| t2.apply(c)).collect();
        assert_eq!(r1, r2);
        assert_eq!(t1, t2);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn command() -> impl Strategy<Value = LockCommand> {
            let path = prop::sample::select(vec!["a", "b", "c/d"]);
            let owner = 1u128..5;
            prop_oneof![
                (path.clone(), owner.clone(), 0i64..100)
                    .prop_map(|(p, o, t)| lock(p, &claim(o, t))),
                (path.clone(), owner.clone(), 0i64..100)
                    .prop_map(|(p, o, t)| wait(p, &claim(o, t))),
                (path.clone(), owner.clone(), any::<bool>()).prop_map(|(p, o, f)| unlock(p, o, f)),
                (path, owner).prop_map(|(p, o)| LockCommand::CancelWait {
                    path: super::p(p),
                    owner: Uuid::from_u128(o),
                }),
            ]
        }

        proptest! {
            /// One holder per path, never queued behind itself, no identity
            /// queued twice; a grant is reported exactly when the holder
            /// changes to the asker.
            #[test]
            fn invariants_hold_after_any_sequence(cmds in prop::collection::vec(command(), 0..60)) {
                let mut t = LockTable::default();
                for cmd in &cmds {
                    let before = t.get(cmd.path()).map(|l| l.holder.clone());
                    let out = t.apply(cmd);
                    let after = t.get(cmd.path()).map(|l| l.holder.clone());
                    match &out {
                        LockOutcome::Granted(c) => {
                            prop_assert!(before.is_none());
                            prop_assert_eq!(after.as_ref(), Some(c));
                        }
                        LockOutcome::Released { next, .. } => {
                            prop_assert!(before.is_some());
                            prop_assert_eq!(&after, next);
                        }
                        _ => prop_assert_eq!(&before, &after),
                    }
                    for l in t.locks().values() {
                        prop_assert!(l.queue.iter().all(|w| w.owner != l.holder.owner));
                        let mut owners: Vec<_> = l.queue.iter().map(|w| w.owner).collect();
                        owners.sort();
                        owners.dedup();
                        prop_assert_eq!(owners.len(), l.queue.len());
                    }
                }
            }
        }
    }
}
