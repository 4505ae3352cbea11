//! When to ask the node again: the file table (debounced after changes the
//! feed cannot patch), the Cache and Nodes reports (while shown, and the
//! node list soon after a node comes or goes), the detail pane (soon after
//! its file changed), and the connection (while the node is away). The
//! clock comes in [`Msg::Tick`](super::Msg::Tick).

use super::{AppState, Effect, View};

/// Cache and Nodes views are asked again this often while visible; the
/// whole file table at most this often after changes the feed cannot patch.
pub const REFRESH_NS: i64 = 2_000_000_000;
/// Wait this long after a change before refreshing, to batch bursts.
pub const DEBOUNCE_NS: i64 = 300_000_000;
/// Reconnect attempts this often while the node is away.
pub const RECONNECT_NS: i64 = 1_000_000_000;

/// The file table's reloads.
#[derive(Debug, Clone)]
pub(super) struct ListRefresh {
    in_flight: bool,
    requested_ns: i64,
    due_ns: Option<i64>,
    /// A change came while a reload was under way: its answer may miss it.
    dirty_in_flight: bool,
}

impl Default for ListRefresh {
    fn default() -> Self {
        ListRefresh {
            in_flight: false,
            // Long enough ago that the first reload is not held back.
            requested_ns: i64::MIN / 2,
            due_ns: None,
            dirty_in_flight: false,
        }
    }
}

/// A report asked for again while it is shown (the cache, the node list).
#[derive(Debug, Clone, Default)]
pub(super) struct ReportRefresh {
    requested_ns: Option<i64>,
    in_flight: bool,
    /// Asked for at this time even when not shown (the node list after a
    /// node came or went).
    due_ns: Option<i64>,
}

impl ReportRefresh {
    /// Whether to ask now: nothing under way, and the last request is
    /// older than [`REFRESH_NS`] (or `force`).
    pub(super) fn stale(&self, now: i64, force: bool) -> bool {
        !self.in_flight && (force || self.requested_ns.is_none_or(|t| now - t >= REFRESH_NS))
    }

    pub(super) fn start(&mut self, now: i64) {
        self.in_flight = true;
        self.requested_ns = Some(now);
    }

    /// The answer came (or never will: the connection ended).
    pub(super) fn answered(&mut self) {
        self.in_flight = false;
    }
}

impl AppState {
    /// Asks for the whole table after `DEBOUNCE_NS`, at most once per
    /// `REFRESH_NS`.
    pub(super) fn schedule_list(&mut self) {
        let l = &mut self.list_refresh;
        if l.in_flight {
            l.dirty_in_flight = true;
            return;
        }
        let due = (self.now_ns + DEBOUNCE_NS).max(l.requested_ns + REFRESH_NS);
        l.due_ns = Some(l.due_ns.map_or(due, |d| d.min(due)));
    }

    /// Asks for the whole table at the next tick (events were missed, so
    /// the table cannot be patched).
    pub(super) fn schedule_list_now(&mut self) {
        self.list_refresh.due_ns = Some(self.now_ns);
        self.schedule_list();
    }

    /// Asks for the node list a moment from now, unless it is already due
    /// (after the feed said a node came or went).
    pub(super) fn schedule_nodes(&mut self) {
        let at = self.now_ns + 2 * DEBOUNCE_NS;
        self.nodes_refresh.due_ns.get_or_insert(at);
    }

    pub(super) fn request_list(&mut self, fx: &mut Vec<Effect>) {
        if !self.is_up() || self.list_refresh.in_flight {
            return;
        }
        self.list_refresh = ListRefresh {
            in_flight: true,
            requested_ns: self.now_ns,
            due_ns: None,
            dirty_in_flight: false,
        };
        fx.push(Effect::RefreshList);
    }

    /// The table arrived, or failed to.
    pub(super) fn list_answered(&mut self) {
        self.list_refresh.in_flight = false;
    }

    /// Whether a change came while the table now loaded was under way (the
    /// flag is cleared).
    pub(super) fn take_list_dirty(&mut self) -> bool {
        std::mem::take(&mut self.list_refresh.dirty_in_flight)
    }

    /// The connection ended: no answer under way will come.
    pub(super) fn abandon_requests(&mut self) {
        self.list_refresh.in_flight = false;
        self.cache_refresh.answered();
        self.nodes_refresh.answered();
        self.conflicts_refresh.answered();
        self.detail_abandoned();
    }

    /// A new connection: the table and the node list (the header's node
    /// counts come from it) at once, and the current view's report.
    pub(super) fn refresh_after_connect(&mut self, fx: &mut Vec<Effect>) {
        self.abandon_requests();
        self.request_list(fx);
        self.nodes_refresh.start(self.now_ns);
        fx.push(Effect::RefreshNodes);
        self.refresh_view(false, fx);
        self.detail_after_connect(fx);
    }

    /// Asks for the current view's report when it is older than
    /// `REFRESH_NS` (or `force`).
    pub(super) fn refresh_view(&mut self, force: bool, fx: &mut Vec<Effect>) {
        if !self.is_up() {
            return;
        }
        let now = self.now_ns;
        match self.view {
            View::Cache if self.cache_refresh.stale(now, force) => {
                self.cache_refresh.start(now);
                fx.push(match &self.cache_of {
                    None => Effect::RefreshCache,
                    Some(n) => Effect::RefreshCacheOf(n.clone()),
                });
            }
            View::Nodes if self.nodes_refresh.stale(now, force) => {
                self.nodes_refresh.start(now);
                fx.push(Effect::RefreshNodes);
            }
            View::Conflicts if self.conflicts_refresh.stale(now, force) => {
                self.conflicts_refresh.start(now);
                fx.push(Effect::RefreshConflicts);
            }
            View::Files if force => self.request_list(fx),
            _ => {}
        }
        // Every view shows figures from the node list (the header's sync
        // progress, the Cache view's hit rate): it stays fresh everywhere.
        if self.view != View::Nodes && self.nodes_refresh.stale(now, false) {
            self.nodes_refresh.start(now);
            fx.push(Effect::RefreshNodes);
        }
    }
}

/// The clock: reconnects while the node is away, else asks for whatever
/// came due.
pub(super) fn on_tick(s: &mut AppState, now: i64, fx: &mut Vec<Effect>) {
    s.now_ns = s.now_ns.max(now);
    if !s.is_up() {
        if !s.connecting && now >= s.next_attempt_ns {
            s.connecting = true;
            fx.push(Effect::Connect);
        }
        return;
    }
    if s.list_refresh.due_ns.is_some_and(|d| now >= d) {
        s.request_list(fx);
    }
    let nodes = &mut s.nodes_refresh;
    if nodes.due_ns.is_some_and(|d| now >= d) && !nodes.in_flight && s.view != View::Nodes {
        nodes.due_ns = None;
        nodes.start(now);
        fx.push(Effect::RefreshNodes);
    }
    s.reload_detail_when_due(now, fx);
    s.refresh_view(false, fx);
}
