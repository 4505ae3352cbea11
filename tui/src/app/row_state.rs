//! A file's sync state as one value: what the State column says and
//! what sorting by state orders by, so the two cannot disagree.

use tandem_common::proto::{FileState, ListedFile, NodeFileState};

/// A file's state across the cluster, most in need of attention first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowState {
    /// A conflict was reported since the file last changed.
    Conflict,
    /// Changes held under a lock (how many).
    Held(u32),
    /// `ok` of `n` nodes have the newest version; others have an old one.
    Stale {
        /// Nodes with the newest version.
        ok: usize,
        /// Nodes reporting.
        n: usize,
    },
    /// `ok` of `n` nodes have it; others have none.
    Missing {
        /// Nodes with the newest version.
        ok: usize,
        /// Nodes reporting.
        n: usize,
    },
    /// A copy is under way; `ok` of `n` nodes have it.
    Syncing {
        /// Nodes with the newest version.
        ok: usize,
        /// Nodes reporting (or up).
        n: usize,
    },
    /// Every node has the newest version.
    InSync,
}

impl RowState {
    /// The state of `f`. `up` counts the nodes up, for rows from a node
    /// that does not report per-node states (0: no count, in sync).
    pub fn of(f: &ListedFile, conflict: bool, up: usize) -> RowState {
        RowState::of_parts(&f.nodes, &f.states, f.held, conflict, up)
    }

    /// The state of a file held by `nodes`, with per-node `states` and
    /// `held` changes (what [`RowState::of`] reads of a row).
    pub fn of_parts(
        nodes: &[String],
        states: &[NodeFileState],
        held: u32,
        conflict: bool,
        up: usize,
    ) -> RowState {
        if conflict {
            return RowState::Conflict;
        }
        let count = |st: FileState| states.iter().filter(|x| x.state == st).count();
        if held > 0 || count(FileState::Held) > 0 {
            return RowState::Held(held.max(1));
        }
        if states.is_empty() {
            return if nodes.len() < up {
                RowState::Syncing {
                    ok: nodes.len(),
                    n: up,
                }
            } else {
                RowState::InSync
            };
        }
        let n = states.len();
        let ok = count(FileState::InSync);
        if count(FileState::Syncing) > 0 {
            RowState::Syncing { ok, n }
        } else if count(FileState::Stale) > 0 {
            RowState::Stale { ok, n }
        } else if ok < n {
            RowState::Missing { ok, n }
        } else {
            RowState::InSync
        }
    }

    /// Sort rank: only the kind counts (a changing count must not move a
    /// row, nor need one to be found by it).
    pub fn rank(self) -> u8 {
        match self {
            RowState::Conflict => 0,
            RowState::Held(_) => 1,
            RowState::Stale { .. } => 2,
            RowState::Missing { .. } => 3,
            RowState::Syncing { .. } => 4,
            RowState::InSync => 5,
        }
    }
}
