//! The live feed: the cluster's events and the UI's own notes, newest
//! first, bounded, scrollable without losing the reader's place, shown by
//! kind (client connects hidden unless asked for), and the keys it takes
//! while it has them (after `[`, `]` or a click on it).

use std::collections::VecDeque;

use tandem_common::proto::{Event, EventKind};

use crate::keys::Action;
use crate::wording::{describe_event, event_kind_name};

/// Feed lines kept (older ones are dropped).
pub const FEED_CAP: usize = 1000;

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLine {
    /// When (ns).
    pub time_ns: i64,
    /// Reporting node ("" for the UI's own notes).
    pub node: String,
    /// [`event_kind_name`], or "note".
    pub kind: &'static str,
    /// The event in words.
    pub text: String,
    /// What it is about, for the kind filter.
    pub group: EventGroup,
}

/// What a feed line is about: the feed shows one group at a time, or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventGroup {
    /// Files added, changed, deleted, and copies between nodes.
    Transfers,
    /// Conflicts, and copies restored or discarded.
    Conflicts,
    /// Locks and the changes held under them.
    Locks,
    /// Changes that could not be applied, folders not watched.
    Errors,
    /// Nodes up and down.
    Nodes,
    /// Clients connecting and leaving (a busy node makes many: hidden
    /// unless asked for).
    Clients,
    /// The UI's own notes (the connection, missed events): always shown.
    Notes,
}

impl EventGroup {
    /// The groups the filter cycles through after "all".
    pub const FILTERS: [EventGroup; 5] = [
        EventGroup::Transfers,
        EventGroup::Conflicts,
        EventGroup::Locks,
        EventGroup::Errors,
        EventGroup::Nodes,
    ];

    /// The group of an event (a new kind must pick one here).
    pub fn of(e: &EventKind) -> EventGroup {
        match e {
            EventKind::Added { .. }
            | EventKind::Changed { .. }
            | EventKind::Deleted { .. }
            | EventKind::Transferred { .. }
            | EventKind::VersionRestored { .. } => EventGroup::Transfers,
            EventKind::Conflict { .. }
            | EventKind::ConflictRestored { .. }
            | EventKind::ConflictDiscarded { .. } => EventGroup::Conflicts,
            EventKind::Locked { .. }
            | EventKind::Unlocked { .. }
            | EventKind::Held { .. }
            | EventKind::Released { .. } => EventGroup::Locks,
            // A recovery ends an error: it belongs with it.
            EventKind::ApplyFailed { .. }
            | EventKind::ApplyRecovered { .. }
            | EventKind::Unwatched { .. }
            | EventKind::NamesCollide { .. } => EventGroup::Errors,
            EventKind::NodeUp { .. } | EventKind::NodeDown { .. } => EventGroup::Nodes,
            EventKind::ClientConnected { .. } | EventKind::ClientDisconnected { .. } => {
                EventGroup::Clients
            }
        }
    }

    /// How the feed's title names it.
    pub fn label(self) -> &'static str {
        match self {
            EventGroup::Transfers => "transfers",
            EventGroup::Conflicts => "conflicts",
            EventGroup::Locks => "locks",
            EventGroup::Errors => "errors",
            EventGroup::Nodes => "nodes",
            EventGroup::Clients => "clients",
            EventGroup::Notes => "notes",
        }
    }
}

/// The live feed: newest first, bounded.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Newest first, shown or not.
    pub lines: VecDeque<FeedLine>,
    /// Shown lines scrolled away from the newest (0 = following).
    pub scroll: usize,
    /// The one group shown (`None`: all).
    pub only: Option<EventGroup>,
    /// Whether client connect and disconnect lines are shown.
    pub show_clients: bool,
    /// Whether the moving keys scroll the feed instead of the table.
    pub focused: bool,
}

impl Feed {
    /// Adds a feed event, in words.
    pub(super) fn event(&mut self, e: &Event) {
        self.push(FeedLine {
            time_ns: e.time_ns,
            node: e.node.clone(),
            kind: event_kind_name(&e.kind),
            text: describe_event(&e.kind),
            group: EventGroup::of(&e.kind),
        });
    }

    /// Adds a note of the UI's own (a lost connection, missed events).
    pub(super) fn note(&mut self, time_ns: i64, text: String) {
        self.push(FeedLine {
            time_ns,
            node: String::new(),
            kind: "note",
            text,
            group: EventGroup::Notes,
        });
    }

    fn push(&mut self, line: FeedLine) {
        let shown = self.shows(&line);
        self.lines.push_front(line);
        self.lines.truncate(FEED_CAP);
        if self.scroll > 0 && shown {
            // Keep what the reader is looking at in place.
            self.scroll = (self.scroll + 1).min(self.shown_len().saturating_sub(1));
        }
    }

    /// Whether `line` passes the kind filter and the clients switch.
    pub fn shows(&self, line: &FeedLine) -> bool {
        match line.group {
            EventGroup::Notes => true,
            EventGroup::Clients => {
                self.show_clients && matches!(self.only, None | Some(EventGroup::Nodes))
            }
            g => self.only.is_none_or(|only| only == g),
        }
    }

    /// The lines shown, newest first.
    pub fn shown(&self) -> impl Iterator<Item = &FeedLine> {
        self.lines.iter().filter(|l| self.shows(l))
    }

    fn shown_len(&self) -> usize {
        self.shown().count()
    }

    /// Scrolls `delta` shown lines towards older ones (negative: newer).
    pub(super) fn scroll_by(&mut self, delta: isize) {
        let max = self.shown_len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(delta).min(max);
    }

    /// Back to the newest line, following again; the keys go back to the
    /// table.
    pub(super) fn go_live(&mut self) {
        self.scroll = 0;
        self.focused = false;
    }

    /// Shows the next group (all, transfers, …, nodes, all). What was on
    /// screen may be gone: follow the newest again.
    pub(super) fn next_group(&mut self) {
        self.only = match self.only {
            None => Some(EventGroup::FILTERS[0]),
            Some(g) => EventGroup::FILTERS
                .iter()
                .position(|f| *f == g)
                .and_then(|i| EventGroup::FILTERS.get(i + 1))
                .copied(),
        };
        self.scroll = 0;
    }

    /// Shows or hides client connect and disconnect lines.
    pub(super) fn toggle_clients(&mut self) {
        self.show_clients = !self.show_clients;
        self.scroll = 0;
    }

    /// A moving key while the feed has the keys; `false` if it is not
    /// one. Down is older (the feed reads downwards into the past); End
    /// and `G` return to live, as the end of a log is its newest line.
    pub(super) fn on_key(&mut self, a: Action, page: usize) -> bool {
        let page = page.max(1) as isize;
        match a {
            Action::Down => self.scroll_by(1),
            Action::Up => self.scroll_by(-1),
            Action::PageDown => self.scroll_by(page),
            Action::PageUp => self.scroll_by(-page),
            Action::Home => self.scroll_by(isize::MAX / 2),
            Action::End => self.go_live(),
            Action::Clear => self.focused = false,
            _ => return false,
        }
        true
    }
}
