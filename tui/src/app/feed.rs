//! The live feed: the cluster's events and the UI's own notes, newest
//! first, bounded, scrollable without losing the reader's place.

use std::collections::VecDeque;

use tandem_common::proto::Event;

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
}

/// The live feed: newest first, bounded.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// Newest first.
    pub lines: VecDeque<FeedLine>,
    /// Lines scrolled away from the newest (0 = following).
    pub scroll: usize,
}

impl Feed {
    /// Adds a feed event, in words.
    pub(super) fn event(&mut self, e: &Event) {
        self.push(FeedLine {
            time_ns: e.time_ns,
            node: e.node.clone(),
            kind: event_kind_name(&e.kind),
            text: describe_event(&e.kind),
        });
    }

    /// Adds a note of the UI's own (a lost connection, missed events).
    pub(super) fn note(&mut self, time_ns: i64, text: String) {
        self.push(FeedLine {
            time_ns,
            node: String::new(),
            kind: "note",
            text,
        });
    }

    fn push(&mut self, line: FeedLine) {
        self.lines.push_front(line);
        self.lines.truncate(FEED_CAP);
        if self.scroll > 0 {
            // Keep what the reader is looking at in place.
            self.scroll = (self.scroll + 1).min(self.lines.len().saturating_sub(1));
        }
    }

    /// Scrolls `delta` lines towards older ones (negative: newer).
    pub(super) fn scroll_by(&mut self, delta: isize) {
        let max = self.lines.len().saturating_sub(1);
        self.scroll = self.scroll.saturating_add_signed(delta).min(max);
    }
}
