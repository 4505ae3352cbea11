//! What the node's feed says: each event becomes a feed line and patches
//! the table and the known nodes in place; a restarted node or missed
//! events make the table reload instead.

use tandem_common::proto::{Event, EventKind, FeedCursor, FileState, ListedFile, NodeFileState};

use super::AppState;

/// The feed (re)started in the node's run `epoch`: a different run than
/// the one resumed from means events may be lost, so the table reloads.
pub(super) fn on_subscribed(s: &mut AppState, epoch: u64) {
    if s.resumed_from.take().is_some_and(|c| c.epoch != epoch) {
        s.note("the node restarted; events from its previous run may be missing");
        if s.cursor.is_some_and(|c| c.epoch != epoch) {
            s.cursor = None;
        }
        s.schedule_list();
    }
}

/// Events `from..to` of run `epoch` never came: the table cannot be
/// patched, so it reloads at once.
pub(super) fn on_missed(s: &mut AppState, epoch: u64, from: u64, to: u64, now: i64) {
    s.now_ns = s.now_ns.max(now);
    s.cursor = Some(FeedCursor {
        epoch,
        seq: to.saturating_sub(1),
    });
    s.note(format!(
        "missed events {from}..{to} (the feed fell behind); reloading the table"
    ));
    s.schedule_list_now();
}

/// Applies a feed event: a line in the feed, and a patch of the table.
pub(super) fn on_event(s: &mut AppState, e: Event) {
    s.now_ns = s.now_ns.max(e.time_ns);
    s.cursor = Some(FeedCursor {
        epoch: e.epoch,
        seq: e.seq,
    });
    s.feed.event(&e);
    if let Some(path) = crate::wording::event_path(&e.kind) {
        s.detail_touched(path);
    }
    let node = e.node;
    match e.kind {
        // A new version made on `node`: only it holds it so far. The event
        // has no hash or mtime: show the event's time until the table is
        // reloaded (debounced, at most every REFRESH_NS).
        EventKind::Added { path, size } | EventKind::Changed { path, size } => {
            s.files.clear_conflict(&path);
            let mtime_ns = e.time_ns;
            let patched = s.files.patch(&path, |f| {
                f.size = size;
                f.mtime_ns = mtime_ns;
                f.nodes = vec![node.clone()];
                for st in &mut f.states {
                    if st.node != node && st.state == FileState::InSync {
                        st.state = FileState::Stale;
                    }
                }
                set_node_state(f, &node, FileState::InSync);
            });
            if !patched {
                s.files.upsert(ListedFile {
                    link: None,
                    path,
                    size,
                    mtime_ns,
                    hash: tandem_common::ContentHash::default(),
                    nodes: vec![node.clone()],
                    locked_by: None,
                    held: 0,
                    states: vec![NodeFileState {
                        node: node.clone(),
                        state: FileState::InSync,
                    }],
                });
            }
            s.mark_known(&[node]);
            s.schedule_list();
        }
        EventKind::Deleted { path, .. } => {
            s.files.remove(&path);
        }
        EventKind::Transferred { path, to, size, .. } => {
            let known = s.files.patch(&path, |f| {
                f.size = size;
                if !f.nodes.contains(&to) {
                    f.nodes.push(to.clone());
                }
                set_node_state(f, &to, FileState::InSync);
            });
            if !known {
                s.schedule_list();
            }
            s.mark_known(&[to]);
        }
        EventKind::Conflict { path, .. } => {
            s.files.mark_conflict(path);
            s.schedule_list();
        }
        EventKind::ConflictRestored { .. } | EventKind::VersionRestored { .. } => s.schedule_list(),
        EventKind::Locked { path, owner, .. } => {
            s.files.patch(&path, |f| f.locked_by = Some(owner));
        }
        EventKind::Unlocked { path, .. } => {
            s.files.patch(&path, |f| {
                f.locked_by = None;
                f.held = 0;
            });
        }
        EventKind::Held { path, .. } => {
            s.files.patch(&path, |f| f.held += 1);
        }
        EventKind::Released { path, .. } => {
            s.files.patch(&path, |f| f.held = f.held.saturating_sub(1));
        }
        // Counted at once; the node list (asked a moment later) has the
        // last word, as a peer may have another connection still up.
        EventKind::NodeUp { name } => {
            s.known_nodes.insert(name, true);
            s.schedule_nodes();
        }
        EventKind::NodeDown { name } => {
            s.known_nodes.insert(name, false);
            s.schedule_nodes();
        }
        EventKind::ClientConnected { .. } | EventKind::ClientDisconnected { .. } => {}
        // The table's state column comes from the next reload.
        EventKind::ApplyFailed { .. }
        | EventKind::ApplyRecovered { .. }
        | EventKind::ConflictDiscarded { .. }
        | EventKind::Unwatched { .. }
        | EventKind::NamesCollide { .. } => {}
    }
    s.settle();
}

/// Sets `node`'s state for the file, adding it when missing.
fn set_node_state(f: &mut ListedFile, node: &str, state: FileState) {
    match f.states.iter_mut().find(|s| s.node == node) {
        Some(s) => s.state = state,
        None => f.states.push(NodeFileState {
            node: node.to_string(),
            state,
        }),
    }
}
