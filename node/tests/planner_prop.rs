//! Property test of the sync decision logic (`tandem_node::engine`), with
//! no I/O: a small pure simulator of 2–4 nodes runs random sequences of
//! edits, deletes, renames, link failures and deliveries in random orders,
//! then brings every link up and delivers everything until nothing changes.
//!
//! # What the simulator models (mirrors `node/src/core` and `node/src/index.rs`)
//!
//! - Each node has an index (path → `FileEntry`), a Lamport clock and a list
//!   of conflict copies kept aside (path, content hash).
//! - A local change (`Index::next_version`) sets the node's own counter to
//!   `max(clock, prev.max_counter()) + 1` on top of the previous version of
//!   that path (tombstones included). Re-observing the same content, mtime
//!   and mode is not a change (`Index::observe_file` returns `None`).
//!   A delete keeps the previous mtime and mode (`Index::tombstone`).
//!   The new entry lists only its own write, and keeps the conflict losers
//!   of the previous one (`Index::local_change`).
//! - A rename is what the watcher sees: the new name appears with the same
//!   content, mtime and mode, and the old name becomes a tombstone.
//! - A delivery is one `on_remote_entry`: the receiver runs
//!   `plan(local, remote)`; on `Take` it first keeps its current content as a
//!   conflict copy if told to, then records the remote entry with the
//!   planned version, writes and losers and moves its clock forward
//!   (`Index::record_remote`); on `Reassert` it keeps its content with the
//!   planned version, writes and losers (`Index::reassert`).
//!   A `Sync` op delivers the sender's whole index in `on_remote_index`
//!   order (live entries first, then tombstones deepest path first). An
//!   entry taken unchanged from a peer is not announced back to that peer
//!   (`Index::entries_since`).
//!
//! Not modelled: directories (`EntryKind::Dir`, `apply_dir`, a file and a
//! directory at the same name); the time a download takes (a taken live file
//! is installed at once, so `install`'s "changed here meanwhile" re-check
//! and the `needed` queue never come into play); deferred deletes of files
//! still used as block sources; held changes (locks); scanning delays (a
//! local change is indexed at once, as `refresh` does before deciding).
//!
//! # What it checks
//!
//! Every write (an edit, or the new name of a rename) gets an id. A node's
//! live entry carries the ids of the writes whose content it holds (two
//! writes of the same content merge, because the planner needs no conflict
//! copy for them). A write is *superseded* when a node edits, deletes or
//! renames away a path while that write is its current content: sequential
//! overwrites are not losses. A write is *kept* when a node moves it to its
//! conflicts list.
//!
//! - During the run, on every delivery: in a conflict exactly one side takes
//!   (both nodes pick the same winner); a taken version strictly dominates
//!   ours and covers the remote one; a live file replaced by other content
//!   without a conflict copy holds only superseded or kept writes (nothing
//!   is silently overwritten); a delete never beats a concurrent edit: a
//!   tombstone never wins a conflict (with or without a conflict copy), so
//!   a write is only ever kept after losing to a live version, and a live
//!   file a tombstone replaces holds only superseded or kept writes;
//!   "history beats clocks": a conflict is never won, with
//!   other content, by an entry showing a write that the receiving node's
//!   history has already overwritten or deleted (its version vector covers
//!   a change made on top of that write), unless the receiver's own content
//!   (or delete) is just as overwritten in the remote's history: a cycle
//!   that no history orders (deletes are tracked like writes for this: a
//!   file created again on top of a tombstone overwrites its deletes).
//! - At the end: (1) convergence: every node has the same (deleted, hash,
//!   mtime, size, and mode of live files) and the same version vector at
//!   every path; (2) no loss: every write is the current live content of its
//!   path on some node, or in some node's conflicts list, or superseded;
//!   (3) a path that ends deleted had every write to it superseded or
//!   kept (that is, lost to a live version).
//!
//! # Tests, running, seeds and the regression file
//!
//! `sync_converges_and_loses_nothing` runs the scenarios with one file mode;
//! `sync_with_modes_converges` lets edits change the mode too (it is synced
//! but not part of the conflict order); `minimal_cases_found` replays, by
//! hand, the minimal failing cases proptest found; `simulator_sanity` checks
//! the simulator itself.
//!
//! `cargo test -p tandem-node --test planner_prop`. `PROPTEST_CASES` sets the
//! number of cases per property (default 512, under a second each in a
//! debug build when they pass). Each run
//! prints its generator seed (`PROPTEST_RNG_SEED=…` replays the whole run).
//! On failure proptest shrinks to a minimal case, prints it (the assertion
//! message also prints the numbered operations, a trace and every node's
//! state) and appends its seed to `node/proptest-regressions/planner_prop.txt`;
//! commit that file: the saved seeds are re-run first by every later run
//! (of both properties: the file is per source file, not per test).
//!
//! Why the path is set explicitly: proptest's default
//! (`SourceParallel("proptest-regressions")`) walks up from the test's source
//! file looking for a `lib.rs` or `main.rs`. For an integration test in
//! `node/tests/` there is none (`node/src/` is not an ancestor), so proptest
//! warns and falls back to `node/tests/planner_prop.proptest-regressions`.
//! `Direct` with an absolute path from `CARGO_MANIFEST_DIR` puts the file
//! next to the crate root, where unit tests' regression files go too.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use tandem_common::model::Dot;
use tandem_common::{ContentHash, EntryKind, FileEntry, NodeId, RelPath, VersionVector, VvOrder};
use tandem_node::engine::{Decision, plan};

/// Few paths, so that nodes collide on them often.
const PATHS: [&str; 3] = ["a", "b", "d/c"];
/// Few distinct contents, so that nodes write identical content.
const CONTENTS: u8 = 3;
/// A small mtime range, so that concurrent edits tie on mtime.
const MTIMES: i64 = 3;
const MODES: [u32; 2] = [0o644, 0o755];
const MAX_OPS: usize = 40;
/// Nodes per scenario. Four is what it takes for chains of conflicts (a
/// node settles a conflict, a second writes on top of the winner, a third
/// settles differently) to bring back overwritten content when entries
/// record a single dot; `minimal_cases_found` has such cases.
const MAX_NODES: usize = 4;
const MAX_ROUNDS: usize = 50;

fn config() -> ProptestConfig {
    // From the default, so that the other PROPTEST_* variables still apply.
    let mut c = ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(512),
        ..ProptestConfig::default()
    };
    // The default is 4 × cases, too few to shrink 40 operations well.
    if c.max_shrink_iters == u32::MAX {
        c.max_shrink_iters = 50_000;
    }
    // Print the generator seed so a failing run can be replayed whole.
    if c.rng_seed == RngSeed::Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        c.rng_seed = RngSeed::Fixed(nanos ^ u64::from(std::process::id()).rotate_left(32));
    }
    eprintln!(
        "planner_prop: {} cases; replay with PROPTEST_RNG_SEED={}",
        c.cases, c.rng_seed
    );
    // None when PROPTEST_DISABLE_FAILURE_PERSISTENCE is set: keep it off.
    if c.failure_persistence.is_some() {
        c.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/planner_prop.txt"
        ))));
    }
    c
}

// ---------------------------------------------------------------------------
// Operations

/// One step of a scenario. Node numbers are below the scenario's node count;
/// paths index [`PATHS`]. (`Debug` prints modes in decimal: 420 is 0o644,
/// 493 is 0o755.)
#[derive(Clone, Debug)]
enum Op {
    /// Creates or modifies a file: content `c{content}`.
    Edit {
        node: usize,
        path: usize,
        content: u8,
        mtime: i64,
        mode: u32,
    },
    /// Deletes a live file.
    Delete {
        node: usize,
        path: usize,
    },
    /// Renames a live file, replacing `to` if it exists.
    Rename {
        node: usize,
        from: usize,
        to: usize,
    },
    LinkDown(usize, usize),
    LinkUp(usize, usize),
    /// `from` announces its entry at `path` to `to` (if the link is up).
    Deliver {
        from: usize,
        to: usize,
        path: usize,
    },
    /// `from` sends its whole index to `to` (if the link is up).
    Sync {
        from: usize,
        to: usize,
    },
}

/// Two different nodes.
fn pair(n: usize) -> impl Strategy<Value = (usize, usize)> {
    (0..n, 1..n).prop_map(move |(a, k)| (a, (a + k) % n))
}

fn op(n: usize, modes: bool) -> impl Strategy<Value = Op> {
    let np = PATHS.len();
    let nmodes = if modes { MODES.len() } else { 1 };
    prop_oneof![
        4 => (0..n, 0..np, 0..CONTENTS, 0..MTIMES, 0..nmodes).prop_map(
            |(node, path, content, mtime, m)| Op::Edit {
                node,
                path,
                content,
                mtime,
                mode: MODES[m],
            }
        ),
        2 => (0..n, 0..np).prop_map(|(node, path)| Op::Delete { node, path }),
        1 => (0..n, 0..np, 1..np).prop_map(move |(node, from, k)| Op::Rename {
            node,
            from,
            to: (from + k) % np,
        }),
        1 => pair(n).prop_map(|(a, b)| Op::LinkDown(a, b)),
        1 => pair(n).prop_map(|(a, b)| Op::LinkUp(a, b)),
        6 => (pair(n), 0..np).prop_map(|((from, to), path)| Op::Deliver { from, to, path }),
        1 => pair(n).prop_map(|(from, to)| Op::Sync { from, to }),
    ]
}

/// A scenario: a node count and the operations.
fn scenario(modes: bool) -> impl Strategy<Value = (usize, Vec<Op>)> {
    (2..=MAX_NODES)
        .prop_flat_map(move |n| (Just(n), prop::collection::vec(op(n, modes), 0..=MAX_OPS)))
}

// ---------------------------------------------------------------------------
// The simulator

type WriteId = usize;
/// A delete (or a rename's old name), numbered in order.
type DeleteId = usize;

/// One version of a path written by a user (an edit, or a rename's target).
#[derive(Clone, Debug)]
struct Write {
    node: usize,
    path: usize,
    content: u8,
    op: usize,
}

/// What a node has at one path: the entry, and for a live file the writes
/// whose content it is.
#[derive(Clone, Debug)]
struct Slot {
    entry: FileEntry,
    writes: BTreeSet<WriteId>,
    /// For a live file, the write whose content and mtime it shows (on a
    /// conflict the winner's).
    shown: Option<WriteId>,
    /// For a tombstone, the deletes it records (two concurrent deletes
    /// merge, like two writes of the same content).
    deletes: BTreeSet<DeleteId>,
    /// The node this entry was taken from unchanged (same version): it is
    /// not announced back to it (`Index::entries_since` skips it).
    origin: Option<usize>,
}

/// A conflict copy kept aside.
#[derive(Clone, Debug)]
struct Kept {
    path: usize,
    hash: ContentHash,
    writes: BTreeSet<WriteId>,
}

struct SimNode {
    id: NodeId,
    clock: u64,
    index: BTreeMap<usize, Slot>,
    conflicts: Vec<Kept>,
}

struct Sim {
    nodes: Vec<SimNode>,
    /// Unordered pairs (low, high) whose link is down.
    down: BTreeSet<(usize, usize)>,
    writes: Vec<Write>,
    /// Write → every local change made on top of it while it was current
    /// somewhere: (node, op, version of that change).
    superseded: BTreeMap<WriteId, Vec<(usize, usize, VersionVector)>>,
    /// Number of deletes so far.
    deletes: usize,
    /// Delete → every local change made on top of it while it was current
    /// somewhere (a file created again): (node, op, version of that change).
    undeleted: BTreeMap<DeleteId, Vec<(usize, usize, VersionVector)>>,
    /// Write → node that first kept it as a conflict copy.
    kept: BTreeMap<WriteId, usize>,
    /// Human-readable log of everything that happened.
    trace: Vec<String>,
    /// Index of the operation being run (`ops.len()` during the final sync).
    step: usize,
    contents: Vec<ContentHash>,
}

fn content_bytes(c: u8) -> Vec<u8> {
    format!("content {c}").into_bytes()
}

fn rel(path: usize) -> RelPath {
    RelPath::new(PATHS[path]).expect("valid path")
}

impl Sim {
    fn new(n: usize) -> Sim {
        Sim {
            // Fixed ids, so that tie-breaks on version vectors are
            // reproducible (NodeId::random would change them on every run).
            nodes: (0..n)
                .map(|i| SimNode {
                    id: NodeId(uuid::Uuid::from_u128(i as u128 + 1)),
                    clock: 0,
                    index: BTreeMap::new(),
                    conflicts: Vec::new(),
                })
                .collect(),
            down: BTreeSet::new(),
            writes: Vec::new(),
            superseded: BTreeMap::new(),
            deletes: 0,
            undeleted: BTreeMap::new(),
            kept: BTreeMap::new(),
            trace: Vec::new(),
            step: 0,
            contents: (0..CONTENTS)
                .map(|c| ContentHash::of(&content_bytes(c)))
                .collect(),
        }
    }

    fn link_up(&self, a: usize, b: usize) -> bool {
        !self.down.contains(&(a.min(b), a.max(b)))
    }

    // -- local changes (Index::observe_file / tombstone / next_version) ----

    fn next_version(&mut self, node: usize, prev: Option<&VersionVector>) -> VersionVector {
        let n = &mut self.nodes[node];
        let mut v = prev.cloned().unwrap_or_default();
        n.clock = n.clock.max(v.max_counter()) + 1;
        v.set(n.id, n.clock);
        v
    }

    /// The dot of the write `node` just versioned with `next_version`.
    fn dot(&self, node: usize) -> Dot {
        Dot {
            node: Some(self.nodes[node].id),
            counter: self.nodes[node].clock,
        }
    }

    /// The current live content at `path` on `node` is replaced by a local
    /// change with version `by`: its writes were seen, so their loss is
    /// legitimate. Likewise a tombstone's deletes, when the file is created
    /// again.
    fn supersede(&mut self, node: usize, path: usize, by: &VersionVector) {
        let Some(s) = self.nodes[node].index.get(&path) else {
            return;
        };
        let by = (node, self.step, by.clone());
        if s.entry.is_live_file() {
            for w in s.writes.clone() {
                self.superseded.entry(w).or_default().push(by.clone());
            }
        } else if s.entry.deleted {
            for d in s.deletes.clone() {
                self.undeleted.entry(d).or_default().push(by.clone());
            }
        }
    }

    /// A file with this content appears at `path` on `node`.
    fn observe_file(&mut self, node: usize, path: usize, content: u8, mtime: i64, mode: u32) {
        let hash = self.contents[content as usize];
        let prev = self.nodes[node].index.get(&path).cloned();
        if let Some(p) = &prev
            && p.entry.is_live_file()
            && p.entry.hash == hash
            && p.entry.mtime_ns == mtime
            && p.entry.mode == mode
        {
            self.log(format!("n{node} {}: unchanged", PATHS[path]));
            return;
        }
        let version = self.next_version(node, prev.as_ref().map(|p| &p.entry.version));
        self.supersede(node, path, &version);
        let id = self.writes.len();
        self.writes.push(Write {
            node,
            path,
            content,
            op: self.step,
        });
        let entry = FileEntry {
            path: rel(path),
            kind: EntryKind::File,
            size: content_bytes(content).len() as u64,
            mtime_ns: mtime,
            mode,
            hash,
            blocks: vec![hash],
            written: self.dot(node).into(),
            // Conflict losers stay live: the user wrote over the shown
            // content only (`Index::local_change`).
            losers: prev.map(|p| p.entry.losers).unwrap_or_default(),
            version,
            deleted: false,
        };
        self.log(format!(
            "n{node} {}: write w{id} = {}",
            PATHS[path],
            self.entry_str(&entry)
        ));
        self.nodes[node].index.insert(
            path,
            Slot {
                entry,
                writes: BTreeSet::from([id]),
                shown: Some(id),
                deletes: BTreeSet::new(),
                origin: None,
            },
        );
    }

    fn tombstone(&mut self, node: usize, path: usize) {
        let Some(prev) = self.nodes[node].index.get(&path).cloned() else {
            return;
        };
        let version = self.next_version(node, Some(&prev.entry.version));
        self.supersede(node, path, &version);
        let delete = self.deletes;
        self.deletes += 1;
        let entry = FileEntry {
            size: 0,
            hash: ContentHash::default(),
            blocks: Vec::new(),
            written: self.dot(node).into(),
            version,
            deleted: true,
            ..prev.entry
        };
        self.log(format!(
            "n{node} {}: delete d{delete} -> {}",
            PATHS[path],
            self.entry_str(&entry)
        ));
        self.nodes[node].index.insert(
            path,
            Slot {
                entry,
                writes: BTreeSet::new(),
                shown: None,
                deletes: BTreeSet::from([delete]),
                origin: None,
            },
        );
    }

    fn live(&self, node: usize, path: usize) -> Option<&FileEntry> {
        self.nodes[node]
            .index
            .get(&path)
            .map(|s| &s.entry)
            .filter(|e| e.is_live_file())
    }

    // -- sync (Core::on_remote_entry with the planner) ----------------------

    /// `to` handles `from`'s entry at `path`. Returns whether it took it.
    fn deliver(&mut self, from: usize, to: usize, path: usize) -> Result<bool, String> {
        let Some(remote) = self.nodes[from].index.get(&path).cloned() else {
            return Ok(false);
        };
        if remote.origin == Some(to) {
            // Not echoed back to the node it came from.
            return Ok(false);
        }
        let local = self.nodes[to].index.get(&path).cloned();
        let decision = plan(local.as_ref().map(|s| &s.entry), &remote.entry);
        let what = format!(
            "n{from}->n{to} {}: remote {} local {}",
            PATHS[path],
            self.entry_str(&remote.entry),
            local
                .as_ref()
                .map_or("none".to_string(), |l| self.entry_str(&l.entry))
        );
        if let Some(l) = &local
            && l.entry.version.compare(&remote.entry.version) == VvOrder::Concurrent
        {
            // Both sides of a conflict must agree on the winner.
            let back = plan(Some(&remote.entry), &l.entry);
            let takes = matches!(decision, Decision::Take { .. });
            let back_takes = matches!(back, Decision::Take { .. });
            if takes == back_takes {
                return Err(format!(
                    "conflict decided inconsistently ({what}): here {decision:?}, \
                     at the other side {back:?}"
                ));
            }
        }
        if let Decision::Reassert {
            version,
            written,
            losers,
        } = &decision
        {
            // Core::on_remote_entry → Index::reassert: keep our content,
            // record the merged vector so the peer takes ours.
            let Some(l) = &local else {
                return Err(format!("reassert without a local entry ({what})"));
            };
            if version.compare(&l.entry.version) != VvOrder::After
                || version.compare(&remote.entry.version) != VvOrder::After
            {
                return Err(format!(
                    "reasserted version {} does not dominate both ({what})",
                    self.vv_str(version)
                ));
            }
            self.log(format!("{what}: reassert as {}", self.vv_str(version)));
            let n = &mut self.nodes[to];
            n.clock = n.clock.max(version.max_counter());
            if let Some(slot) = n.index.get_mut(&path) {
                slot.entry.version = version.clone();
                slot.entry.written = written.clone();
                slot.entry.losers = losers.clone();
                slot.origin = None;
            }
            return Ok(true);
        }
        let Decision::Take {
            mut version,
            keep_ours_as_conflict,
            written,
            losers,
            bump,
        } = decision
        else {
            self.log(format!("{what}: ignore"));
            return Ok(false);
        };
        if bump {
            // Index::bump: the settling node adds an event of its own.
            let n = &mut self.nodes[to];
            n.clock = n.clock.max(version.max_counter()) + 1;
            version.set(n.id, n.clock);
        }
        self.log(format!(
            "{what}: take as {} keep_ours={keep_ours_as_conflict}",
            self.vv_str(&version)
        ));
        if !matches!(
            version.compare(&remote.entry.version),
            VvOrder::After | VvOrder::Equal
        ) {
            return Err(format!(
                "taken version {} does not cover the remote's ({what})",
                self.vv_str(&version)
            ));
        }
        let mut writes = BTreeSet::new();
        // History beats clocks: content this node's history has seen
        // overwritten or deleted must not win a conflict against it — unless
        // the same bytes were also written independently and that write was
        // never overwritten (then the bytes are legitimately alive).
        if let Some(l) = &local
            && l.entry.version.compare(&remote.entry.version) == VvOrder::Concurrent
            && !(l.entry.is_live_file() && l.entry.hash == remote.entry.hash)
            && !remote.writes.is_empty()
        {
            // A change made on top of write or delete `w` (its changes in
            // `on_top`) that history `h` includes.
            let dead_in = |on_top: &BTreeMap<usize, Vec<(usize, usize, VersionVector)>>,
                           w: &usize,
                           h: &VersionVector| {
                on_top.get(w).and_then(|by| {
                    by.iter()
                        .find(|(_, _, v)| matches!(v.compare(h), VvOrder::Before | VvOrder::Equal))
                        .cloned()
                })
            };
            let seen_dead = |w: &usize| dead_in(&self.superseded, w, &l.entry.version);
            // When our own content (or delete) is just as dead in the
            // remote's history (each side overwrote the other's, and those
            // changes lost conflicts), no order exists; the planner keeps
            // the loser.
            let rv = &remote.entry.version;
            let ours_dead_too = if l.entry.deleted {
                !l.deletes.is_empty()
                    && l.deletes
                        .iter()
                        .all(|d| dead_in(&self.undeleted, d, rv).is_some())
            } else {
                l.entry.is_live_file()
                    && !l.writes.is_empty()
                    && l.writes
                        .iter()
                        .all(|w| dead_in(&self.superseded, w, rv).is_some())
            };
            if !ours_dead_too
                && remote.writes.iter().all(|w| seen_dead(w).is_some())
                && let Some(&w) = remote.writes.iter().next()
                && let Some((n, op, v)) = seen_dead(&w)
            {
                return Err(format!(
                    "overwritten content came back: {} won a conflict although this \
                     node's version {} already includes the change n{n} made on top \
                     of it in op {op} ({}) ({what})",
                    self.write_str(w),
                    self.vv_str(&l.entry.version),
                    self.vv_str(&v),
                ));
            }
        }
        if let Some(l) = &local {
            if version.compare(&l.entry.version) != VvOrder::After {
                return Err(format!(
                    "taken version {} does not dominate ours ({what})",
                    self.vv_str(&version)
                ));
            }
            let same_content = remote.entry.is_live_file()
                && l.entry.is_live_file()
                && remote.entry.hash == l.entry.hash;
            if keep_ours_as_conflict {
                if !l.entry.is_live_file() {
                    return Err(format!("asked to keep a non-file as a conflict ({what})"));
                }
                if remote.entry.deleted {
                    return Err(format!(
                        "a delete beat a concurrent edit (the edit was kept as a \
                         conflict copy) ({what})"
                    ));
                }
                for &w in &l.writes {
                    self.kept.entry(w).or_insert(to);
                }
                self.nodes[to].conflicts.push(Kept {
                    path,
                    hash: l.entry.hash,
                    writes: l.writes.clone(),
                });
            } else if same_content {
                // Same bytes: ours lives on in the taken file.
                writes.extend(l.writes.iter().copied());
            } else if l.entry.is_live_file() {
                let lost: Vec<String> = l
                    .writes
                    .iter()
                    .filter(|w| !self.settled(**w))
                    .map(|w| self.write_str(*w))
                    .collect();
                if !lost.is_empty() {
                    let how = if remote.entry.deleted {
                        "a delete beat a concurrent edit"
                    } else {
                        "a live file was overwritten without a conflict copy"
                    };
                    return Err(format!("{how}: {} lost ({what})", lost.join(", ")));
                }
            }
        }
        if remote.entry.is_live_file() {
            writes.extend(remote.writes.iter().copied());
        }
        // Two tombstones: both deletes live on in the one taken.
        let mut deletes = remote.deletes.clone();
        if let Some(l) = &local
            && l.entry.deleted
            && remote.entry.deleted
        {
            deletes.extend(l.deletes.iter().copied());
        }
        let origin = (version == remote.entry.version
            && written == remote.entry.written
            && losers == remote.entry.losers)
            .then_some(from);
        let n = &mut self.nodes[to];
        n.clock = n.clock.max(version.max_counter());
        n.index.insert(
            path,
            Slot {
                entry: FileEntry {
                    version,
                    written,
                    losers,
                    ..remote.entry
                },
                writes,
                shown: remote.shown,
                deletes,
                origin,
            },
        );
        Ok(true)
    }

    /// `from` sends its whole index, in `Core::on_remote_index` order.
    fn sync(&mut self, from: usize, to: usize) -> Result<bool, String> {
        let (mut lives, mut tombs) = (Vec::new(), Vec::new());
        for (p, s) in &self.nodes[from].index {
            if s.entry.deleted {
                tombs.push(*p);
            } else {
                lives.push(*p);
            }
        }
        tombs.sort_by(|a, b| PATHS[*b].cmp(PATHS[*a]));
        let mut took = false;
        for p in lives.into_iter().chain(tombs) {
            took |= self.deliver(from, to, p)?;
        }
        Ok(took)
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Edit {
                node,
                path,
                content,
                mtime,
                mode,
            } => self.observe_file(node, path, content, mtime, mode),
            Op::Delete { node, path } => {
                if self.live(node, path).is_some() {
                    self.tombstone(node, path);
                }
            }
            Op::Rename { node, from, to } => {
                if let Some(e) = self.live(node, from).cloned() {
                    let content = self
                        .contents
                        .iter()
                        .position(|h| *h == e.hash)
                        .expect("known content") as u8;
                    self.log(format!("n{node}: rename {} -> {}", PATHS[from], PATHS[to]));
                    self.observe_file(node, to, content, e.mtime_ns, e.mode);
                    self.tombstone(node, from);
                }
            }
            Op::LinkDown(a, b) => {
                self.down.insert((a.min(b), a.max(b)));
            }
            Op::LinkUp(a, b) => {
                self.down.remove(&(a.min(b), a.max(b)));
            }
            Op::Deliver { from, to, path } => {
                if self.link_up(from, to) {
                    self.deliver(from, to, path)?;
                }
            }
            Op::Sync { from, to } => {
                if self.link_up(from, to) {
                    self.sync(from, to)?;
                }
            }
        }
        Ok(())
    }

    /// All links up; everyone sends everything until a round changes nothing.
    fn settle(&mut self) -> Result<usize, String> {
        self.down.clear();
        let n = self.nodes.len();
        for round in 1..=MAX_ROUNDS {
            self.log(format!("-- final round {round}"));
            let mut changed = false;
            for from in 0..n {
                for to in 0..n {
                    if from != to {
                        changed |= self.sync(from, to)?;
                    }
                }
            }
            if !changed {
                return Ok(round);
            }
        }
        Err(format!("still changing after {MAX_ROUNDS} rounds"))
    }

    // -- final properties ---------------------------------------------------

    fn check_converged(&self) -> Result<(), String> {
        let view = |node: &SimNode, path: usize| {
            node.index.get(&path).map(|s| {
                let e = &s.entry;
                let mode = if e.deleted { None } else { Some(e.mode) };
                (
                    e.deleted,
                    e.hash,
                    e.mtime_ns,
                    e.size,
                    mode,
                    e.version.clone(),
                )
            })
        };
        for (path, name) in PATHS.iter().enumerate() {
            let first = view(&self.nodes[0], path);
            for (i, node) in self.nodes.iter().enumerate().skip(1) {
                if view(node, path) != first {
                    return Err(format!(
                        "not converged at {name}: n0 has {}, n{i} has {}",
                        self.slot_str(0, path),
                        self.slot_str(i, path)
                    ));
                }
            }
        }
        Ok(())
    }

    /// A write is settled when it (or an identical write: same path, same
    /// bytes — the same version as far as anyone can tell) was overwritten
    /// by a node that had it, or kept as a conflict copy.
    fn settled(&self, id: usize) -> bool {
        let w = &self.writes[id];
        self.writes.iter().enumerate().any(|(j, o)| {
            (j == id || (o.path == w.path && o.content == w.content))
                && (self.superseded.contains_key(&j) || self.kept.contains_key(&j))
        })
    }

    fn check_nothing_lost(&self) -> Result<(), String> {
        for (id, w) in self.writes.iter().enumerate() {
            if self.settled(id) {
                continue;
            }
            let current = self.nodes.iter().any(|n| {
                n.index
                    .get(&w.path)
                    .is_some_and(|s| s.entry.is_live_file() && s.writes.contains(&id))
            });
            if current {
                continue;
            }
            let deleted = self.nodes[0]
                .index
                .get(&w.path)
                .is_some_and(|s| s.entry.deleted);
            let how = if deleted {
                "a delete beat a concurrent edit"
            } else {
                "lost"
            };
            return Err(format!(
                "{how}: {} is not current anywhere, was not superseded by a \
                 node that had it, and is in no conflicts list",
                self.write_str(id)
            ));
        }
        // (3) A path that ends deleted lost no write to a delete.
        for (id, w) in self.writes.iter().enumerate() {
            let deleted = self.nodes[0]
                .index
                .get(&w.path)
                .is_some_and(|s| s.entry.deleted);
            let ok = self.settled(id);
            if deleted && !ok {
                return Err(format!(
                    "a delete beat a concurrent edit: {} ends deleted, but was \
                     neither superseded by a node that had it nor kept after \
                     losing to a live version",
                    self.write_str(id)
                ));
            }
        }
        // The same at the level of content: (path, hash) pairs.
        for (id, w) in self.writes.iter().enumerate() {
            let hash = self.contents[w.content as usize];
            let somewhere = self.nodes.iter().any(|n| {
                n.index
                    .get(&w.path)
                    .is_some_and(|s| s.entry.is_live_file() && s.entry.hash == hash)
                    || n.conflicts
                        .iter()
                        .any(|k| k.path == w.path && k.hash == hash)
            });
            if !somewhere && !self.settled(id) {
                return Err(format!(
                    "content of {} is neither current nor kept anywhere",
                    self.write_str(id)
                ));
            }
        }
        Ok(())
    }

    // -- display ------------------------------------------------------------

    fn log(&mut self, s: String) {
        let step = self.step;
        self.trace.push(format!("[{step}] {s}"));
    }

    fn node_name(&self, id: NodeId) -> String {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .map_or(format!("{id:?}"), |i| format!("n{i}"))
    }

    fn vv_str(&self, v: &VersionVector) -> String {
        let parts: Vec<String> = v
            .iter()
            .map(|(n, c)| format!("{}:{c}", self.node_name(n)))
            .collect();
        format!("{{{}}}", parts.join(","))
    }

    fn hash_str(&self, h: &ContentHash) -> String {
        self.contents
            .iter()
            .position(|c| c == h)
            .map_or(format!("{h:?}"), |i| format!("c{i}"))
    }

    fn entry_str(&self, e: &FileEntry) -> String {
        let dots = |w: &tandem_common::model::Writes| {
            w.iter()
                .map(|d| match d.node {
                    Some(id) => format!("{}@{}", self.node_name(id), d.counter),
                    None => "-".into(),
                })
                .collect::<Vec<_>>()
                .join("+")
        };
        let mut dot = dots(&e.written);
        if !e.losers.is_empty() {
            let _ = write!(dot, " (losers {})", dots(&e.losers));
        }
        if e.deleted {
            format!(
                "deleted(mtime {}) {} by {dot}",
                e.mtime_ns,
                self.vv_str(&e.version)
            )
        } else {
            format!(
                "{}(mtime {}, mode {:o}) {} by {dot}",
                self.hash_str(&e.hash),
                e.mtime_ns,
                e.mode,
                self.vv_str(&e.version)
            )
        }
    }

    fn slot_str(&self, node: usize, path: usize) -> String {
        match self.nodes[node].index.get(&path) {
            None => "nothing".into(),
            Some(s) => {
                let ws: Vec<String> = s
                    .writes
                    .iter()
                    .map(|w| format!("w{w}"))
                    .chain(s.deletes.iter().map(|d| format!("d{d}")))
                    .collect();
                format!("{} [{}]", self.entry_str(&s.entry), ws.join(","))
            }
        }
    }

    fn write_str(&self, id: WriteId) -> String {
        let w = &self.writes[id];
        format!(
            "w{id} (c{} at {} by n{} in op {})",
            w.content, PATHS[w.path], w.node, w.op
        )
    }

    fn state(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let _ = writeln!(out, "n{i} (clock {}):", n.clock);
            for path in n.index.keys() {
                let _ = writeln!(out, "  {:4} {}", PATHS[*path], self.slot_str(i, *path));
            }
            for k in &n.conflicts {
                let ws: Vec<String> = k.writes.iter().map(|w| format!("w{w}")).collect();
                let _ = writeln!(
                    out,
                    "  conflict copy of {}: {} [{}]",
                    PATHS[k.path],
                    self.hash_str(&k.hash),
                    ws.join(",")
                );
            }
        }
        let _ = writeln!(out, "writes:");
        for id in 0..self.writes.len() {
            let fate = match (self.superseded.get(&id), self.kept.get(&id)) {
                (Some(by), _) => {
                    let by: Vec<String> = by
                        .iter()
                        .map(|(n, op, v)| format!("n{n} in op {op} ({})", self.vv_str(v)))
                        .collect();
                    format!("superseded by {}", by.join(", "))
                }
                (None, Some(n)) => format!("kept as a conflict by n{n}"),
                (None, None) => "current".into(),
            };
            let _ = writeln!(out, "  {}: {fate}", self.write_str(id));
        }
        out
    }
}

/// Runs a scenario; on failure, the message has everything needed to debug.
fn run(n: usize, ops: &[Op]) -> Result<(), String> {
    let mut sim = Sim::new(n);
    let outcome = (|| {
        for (i, op) in ops.iter().enumerate() {
            sim.step = i;
            sim.log(format!("{op:?}"));
            sim.apply(op)?;
        }
        sim.step = ops.len();
        sim.settle()?;
        sim.check_converged()?;
        sim.check_nothing_lost()
    })();
    outcome.map_err(|e| {
        let mut msg = format!("{e}\n\n{n} nodes, operations:\n");
        for (i, op) in ops.iter().enumerate() {
            let _ = writeln!(msg, "  {i:2}: {op:?}");
        }
        let _ = writeln!(msg, "\ntrace:");
        for t in &sim.trace {
            let _ = writeln!(msg, "  {t}");
        }
        let _ = write!(msg, "\nstate:\n{}", sim.state());
        msg
    })
}

proptest! {
    #![proptest_config(config())]

    /// Files keep one mode: the properties the sync design promises.
    #[test]
    fn sync_converges_and_loses_nothing((n, ops) in scenario(false)) {
        if let Err(e) = run(n, &ops) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// Edits may also change the mode (which is synced, but not part of the
    /// conflict order).
    #[test]
    fn sync_with_modes_converges((n, ops) in scenario(true)) {
        if let Err(e) = run(n, &ops) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The simulator itself: a plain concurrent edit makes one conflict copy,
/// a delete loses to a concurrent edit, and a sequential edit is no loss.
#[test]
fn simulator_sanity() {
    let edit = |node, path, content, mtime| edit(node, path, content, mtime, MODES[0]);
    let ops = [
        edit(0, 0, 0, 1),
        edit(1, 0, 1, 2),
        Op::Deliver {
            from: 0,
            to: 1,
            path: 0,
        },
        Op::Deliver {
            from: 1,
            to: 0,
            path: 0,
        },
    ];
    let mut sim = Sim::new(2);
    for op in &ops {
        sim.apply(op).unwrap();
    }
    sim.settle().unwrap();
    sim.check_converged().unwrap();
    sim.check_nothing_lost().unwrap();
    assert_eq!(sim.nodes[0].conflicts.len(), 1, "{}", sim.state());
    assert!(sim.nodes[1].conflicts.is_empty(), "{}", sim.state());
    assert_eq!(sim.live(1, 0).unwrap().hash, sim.contents[1]);

    // Delete on n0 vs concurrent edit on n1: the edit survives everywhere.
    let ops = [
        edit(0, 1, 0, 1),
        Op::Sync { from: 0, to: 1 },
        Op::Delete { node: 0, path: 1 },
        edit(1, 1, 2, 0),
    ];
    run(2, &ops).unwrap();
    let mut sim = Sim::new(2);
    for op in &ops {
        sim.apply(op).unwrap();
    }
    sim.settle().unwrap();
    assert!(sim.live(0, 1).is_some_and(|e| e.hash == sim.contents[2]));
    assert!(sim.superseded.contains_key(&0));

    // A rename reaches the other node as a new name and a tombstone.
    let ops = [
        edit(0, 0, 1, 1),
        Op::Sync { from: 0, to: 1 },
        Op::Rename {
            node: 1,
            from: 0,
            to: 2,
        },
    ];
    let mut sim = Sim::new(2);
    for op in &ops {
        sim.apply(op).unwrap();
    }
    sim.settle().unwrap();
    sim.check_converged().unwrap();
    sim.check_nothing_lost().unwrap();
    assert!(sim.live(0, 0).is_none() && sim.live(0, 2).is_some());
}

fn edit(node: usize, path: usize, content: u8, mtime: i64, mode: u32) -> Op {
    Op::Edit {
        node,
        path,
        content,
        mtime,
        mode,
    }
}

/// The minimal cases proptest found, written out so that they stay
/// readable and are checked even if the strategies change (the saved seeds
/// in the regression file only replay the same cases with the same
/// strategies). Each one failed with the planner of its time; the comments
/// say how.
#[test]
fn minimal_cases_found() {
    let deliver = |from, to, path| Op::Deliver { from, to, path };
    let cases: Vec<(&str, usize, Vec<Op>)> = vec![
        (
            // n1 takes n0's newer `b` over its own (kept as a conflict) and
            // records it with the merged vector {n0:1,n1:1}. n0, not having
            // heard back yet, deletes `b`: {n0:2}. The merged entry looks
            // concurrent with the delete, "a live version beats a deletion",
            // and `b` comes back on n0 although nobody edited it after the
            // delete. Clocks are sane here: mtimes only grow.
            "a delete is undone by a merged conflict version",
            2,
            vec![
                edit(1, 1, 0, 0, 0o644),
                edit(0, 1, 1, 1, 0o644),
                deliver(0, 1, 1),
                Op::Delete { node: 0, path: 1 },
            ],
        ),
        (
            // Same shape with an edit instead of the delete, when the new
            // content has an older mtime (clock skew, `cp -p`, `tar x`):
            // n0's own newer edit goes to its conflicts folder and the
            // content it replaced comes back ("history beats clocks" broken).
            "content a node overwrote comes back and wins",
            2,
            vec![
                edit(1, 1, 0, 0, 0o644),
                edit(0, 1, 1, 2, 0o644),
                deliver(0, 1, 1),
                edit(0, 1, 2, 1, 0o644),
            ],
        ),
        (
            // n2 merges n0's and n1's `b` (same content): the merged entry
            // shows n1's mtime 1 with vector {n0:1,n1:1}. n1 then overwrites
            // its `b` ({n1:2}, mtime 0). Back at n1 the merged entry looks
            // concurrent and wins on that stale mtime, while n0 resolves
            // n0's vs n1's versions the other way: n0 and n1 end with the
            // same vector {n0:1,n1:2} and different content, and never agree
            // again (each ignores the other's "equal" version). The history
            // check fires first.
            "a stale merged mtime wins; then equal version vectors, different content",
            3,
            vec![
                edit(0, 1, 1, 0, 0o644),
                deliver(0, 2, 1),
                edit(1, 1, 1, 1, 0o644),
                deliver(1, 2, 1),
                edit(1, 1, 0, 0, 0o644),
            ],
        ),
        (
            // Same content and mtime, different mode: the conflict order
            // falls through to the version vector, which a merge changes, so
            // the order is not the same on every node; the mode is not in
            // the conflict key at all.
            "equal version vectors, different mode",
            3,
            vec![
                edit(0, 0, 0, 0, 0o644),
                deliver(0, 2, 0),
                edit(0, 0, 0, 2, 0o755),
                edit(1, 0, 0, 2, 0o644),
                Op::Sync { from: 1, to: 2 },
            ],
        ),
        (
            // The 4-node limit of a single dot per entry. n3 takes n1's c1
            // and writes c0 over it (n3@2). n0's concurrent write of the
            // same bytes c0 wins at n3 on mode, and n3 recorded only n0's
            // dot: that c1 was overwritten at n3 was forgotten. n2 settles
            // c1 (newer mtime) against n0's c0; at n3, c1 then looked like
            // a conflict winner, and came back. Fixed by listing every
            // write of the shown bytes (n0@1 and n3@2).
            "a same-bytes merge forgets an overwrite; 4 nodes",
            4,
            vec![
                edit(1, 0, 1, 1, 0o644),
                edit(0, 0, 0, 0, 0o755),
                deliver(1, 3, 0),
                edit(3, 0, 0, 0, 0o644),
            ],
        ),
        (
            // Why losers stay live. n0 keeps c1 aside when n2's c0 (newer)
            // wins; n2 had deleted c0, and its delete lost to n0's c1. c1
            // must win at n0 (c0 was deleted); forgetting losers made both
            // sides look replaced in the other's history.
            "a conflict loser outlives its deleted winner",
            3,
            vec![
                edit(2, 0, 0, 1, 0o644),
                Op::Sync { from: 2, to: 1 },
                edit(0, 0, 1, 0, 0o644),
                Op::Delete { node: 2, path: 0 },
            ],
        ),
        (
            // Why a local change leaves losers live. At n2, n0's c1 loses
            // to n3's c0, and n2 then writes over c0; n3 deletes c2 (n1's,
            // which beat n3's c0 there) and the delete loses to c1. If the
            // write at n2 had replaced c1 too, both sides would look
            // replaced, and c2, which n3 deleted, would win at n3.
            "a local change does not replace conflict losers",
            4,
            vec![
                edit(0, 2, 1, 0, 0o644),
                edit(1, 2, 2, 1, 0o644),
                edit(3, 2, 0, 0, 0o644),
                Op::Sync { from: 0, to: 2 },
                deliver(3, 2, 2),
                Op::Sync { from: 1, to: 3 },
                edit(2, 2, 0, 1, 0o644),
                Op::Rename {
                    node: 3,
                    from: 2,
                    to: 0,
                },
            ],
        ),
        (
            // A cycle: at n1, c2 (n1's own, overwritten by it) came back
            // through n2's write of the same bytes and n2 then deleted it;
            // at n2, the file was created again and lost to n1's c2. Each
            // side shows what the other replaced; the merged history keeps
            // only conflict losers, which neither shows. The conflict rule
            // decides (a live file beats the delete).
            "a cycle with a tombstone",
            3,
            vec![
                edit(1, 1, 2, 0, 0o644),
                edit(2, 1, 2, 0, 0o644),
                Op::Sync { from: 1, to: 0 },
                edit(1, 1, 0, 0, 0o644),
                deliver(2, 1, 1),
                Op::Delete { node: 2, path: 1 },
                Op::Sync { from: 2, to: 1 },
                edit(2, 1, 0, 0, 0o644),
                Op::Delete { node: 0, path: 0 },
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, n, ops) in &cases {
        if let Err(e) = run(*n, ops) {
            failures.push(format!("=== {name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
