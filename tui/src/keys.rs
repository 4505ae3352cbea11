//! The key table: the one place that says which key does what, where.
//!
//! [`update`](crate::app::update) looks keys up here, the footer lists the
//! bindings of the current view from here and the `?` overlay is generated
//! from here, so the three can never disagree.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::View;

/// What a key asks for (in the normal mode; text inputs and popups have
/// their own few keys, listed in [`INPUT_KEYS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the UI.
    Quit,
    /// Open the help overlay.
    Help,
    /// Next tab.
    NextView,
    /// Previous tab.
    PrevView,
    /// Tab by its number (the key's digit).
    ViewByNumber,
    /// Ask the node again now.
    Refresh,
    /// Selection up one row.
    Up,
    /// Selection down one row.
    Down,
    /// One page up.
    PageUp,
    /// One page down.
    PageDown,
    /// First row.
    Home,
    /// Last row.
    End,
    /// Edit the filter.
    Filter,
    /// Clear the filter and the status line.
    Clear,
    /// Next sort order.
    Sort,
    /// Lock the selected file.
    Lock,
    /// Lock the selected file, or wait in its queue until it is ours.
    LockWait,
    /// Unlock the selected file.
    Unlock,
    /// Fetch the selected file (on Conflicts: the selected copy).
    Fetch,
    /// Open the command line.
    Command,
    /// Scroll the feed to older events.
    FeedOlder,
    /// Scroll the feed to newer events.
    FeedNewer,
    /// Open the selected row (on Nodes: list that node's own files).
    Open,
    /// Make the selected conflict copy current again (after a question).
    Restore,
    /// Delete the selected conflict copy (after a question).
    Discard,
    /// Talk to the selected node instead.
    ConnectTo,
    /// Show the next node's cache.
    NextCache,
    /// Show the feed's next kind of event (all, transfers, …, nodes).
    FeedKind,
    /// Show or hide client connect and disconnect lines in the feed.
    FeedClients,
    /// Select the next row matching the last filter text.
    NextMatch,
    /// Select the previous row matching the last filter text.
    PrevMatch,
}

/// One key of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A printable character (Shift allowed, so `?`, `:` and `G` work).
    Char(char),
    /// Control + a letter.
    Ctrl(char),
    /// A special key without Control or Alt.
    Code(KeyCode),
}

impl Key {
    fn matches(self, k: &KeyEvent) -> bool {
        let ctrl_alt = k
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
        match self {
            Key::Char(c) => k.code == KeyCode::Char(c) && !ctrl_alt,
            Key::Ctrl(c) => {
                k.modifiers.contains(KeyModifiers::CONTROL)
                    && matches!(k.code, KeyCode::Char(x) if x.eq_ignore_ascii_case(&c))
            }
            Key::Code(code) => k.code == code && !ctrl_alt,
        }
    }
}

/// Where a binding works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In every view.
    Everywhere,
    /// Moving in the current view's list.
    Move,
    /// Files view.
    Files,
    /// Nodes view.
    Nodes,
    /// Conflicts view.
    Conflicts,
    /// Cache view.
    Cache,
}

impl Scope {
    /// Whether the binding works in `view`.
    pub fn applies(self, view: View) -> bool {
        match self {
            Scope::Everywhere | Scope::Move => true,
            Scope::Files => view == View::Files,
            Scope::Nodes => view == View::Nodes,
            Scope::Conflicts => view == View::Conflicts,
            Scope::Cache => view == View::Cache,
        }
    }

    /// Heading in the help overlay.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Everywhere => "Everywhere",
            Scope::Move => "Moving",
            Scope::Files => "Files view",
            Scope::Nodes => "Nodes view",
            Scope::Conflicts => "Conflicts view",
            Scope::Cache => "Cache view",
        }
    }
}

/// A key binding.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// The keys (any of them).
    pub keys: &'static [Key],
    /// How the keys are written in help and footer.
    pub label: &'static str,
    /// What they do.
    pub action: Action,
    /// Where they work.
    pub scope: Scope,
    /// One line of help.
    pub help: &'static str,
    /// (keys, a word or two) for the footer; `None` keeps it out.
    pub footer: Option<(&'static str, &'static str)>,
}

const fn b(
    keys: &'static [Key],
    label: &'static str,
    action: Action,
    scope: Scope,
    help: &'static str,
    footer: Option<(&'static str, &'static str)>,
) -> Binding {
    Binding {
        keys,
        label,
        action,
        scope,
        help,
        footer,
    }
}

use Key::{Char, Code, Ctrl};

/// Every binding of the normal mode, in footer order.
#[rustfmt::skip]
pub const BINDINGS: &[Binding] = &[
    b(&[Char('/')], "/", Action::Filter, Scope::Files, "filter by part of the name", Some(("/", "filter"))),
    b(&[Char('s')], "s", Action::Sort, Scope::Files, "sort (or click a header)", Some(("s", "sort"))),
    b(&[Char('n')], "n N", Action::NextMatch, Scope::Files, "next/previous filter match", None),
    b(&[Char('N')], "N", Action::PrevMatch, Scope::Files, "", None),
    b(&[Char('l')], "l", Action::Lock, Scope::Files, "lock the selected file", Some(("l", "lock"))),
    b(&[Char('L')], "L", Action::LockWait, Scope::Files, "lock, or queue for it", None),
    b(&[Char('u')], "u", Action::Unlock, Scope::Files, "unlock the selected file", Some(("u", "unlock"))),
    b(&[Char('f')], "f", Action::Fetch, Scope::Files, "fetch (download) the file", Some(("f", "fetch"))),
    b(&[Char('[')], "[ ]", Action::FeedOlder, Scope::Files, "feed older/newer; it takes ↑↓", Some(("[ ]", "feed"))),
    b(&[Char(']')], "]", Action::FeedNewer, Scope::Files, "", None),
    b(&[Char('e')], "e c", Action::FeedKind, Scope::Files, "feed: kinds (e), clients (c)", Some(("e", "events"))),
    b(&[Char('c')], "c", Action::FeedClients, Scope::Files, "", None),
    b(&[Code(KeyCode::Esc)], "Esc", Action::Clear, Scope::Files, "cancel fetch; clear filter", None),
    b(&[Code(KeyCode::Enter)], "Enter", Action::Open, Scope::Nodes, "list the node's own files", Some(("Enter", "its files"))),
    b(&[Code(KeyCode::Enter)], "Enter", Action::Open, Scope::Files, "the file in detail", Some(("Enter", "detail"))),
    b(&[Char('c')], "c", Action::ConnectTo, Scope::Nodes, "connect to it instead", Some(("c", "connect"))),
    b(&[Char('o')], "o", Action::NextCache, Scope::Cache, "show another node's cache", Some(("o", "other node"))),
    b(&[Char('R')], "R", Action::Restore, Scope::Conflicts, "make the copy current", Some(("R", "restore"))),
    b(&[Char('x'), Code(KeyCode::Delete)], "x Del", Action::Discard, Scope::Conflicts, "delete the copy", Some(("x", "delete"))),
    b(&[Char('f')], "f", Action::Fetch, Scope::Conflicts, "fetch (download) the copy", Some(("f", "fetch"))),
    b(&[Char(':')], ":", Action::Command, Scope::Everywhere, "command line (see below)", Some((":", "command"))),
    b(&[Code(KeyCode::Tab)], "Tab", Action::NextView, Scope::Everywhere, "next tab (S-Tab: back)", Some(("Tab", "tabs"))),
    b(&[Code(KeyCode::BackTab)], "S-Tab", Action::PrevView, Scope::Everywhere, "", None),
    b(&[Char('1'), Char('2'), Char('3'), Char('4')], "1 2 3 4", Action::ViewByNumber, Scope::Everywhere, "tab by its number", None),
    b(&[Char('r')], "r", Action::Refresh, Scope::Everywhere, "ask the node again now", None),
    b(&[Char('?')], "?", Action::Help, Scope::Everywhere, "this help", Some(("?", "help"))),
    b(&[Char('q'), Ctrl('c')], "q Ctrl-C", Action::Quit, Scope::Everywhere, "quit", Some(("q", "quit"))),
    b(&[Code(KeyCode::Up), Char('k')], "↑ k", Action::Up, Scope::Move, "previous row (feed: newer)", None),
    b(&[Code(KeyCode::Down), Char('j')], "↓ j", Action::Down, Scope::Move, "next row (feed: older)", None),
    b(&[Code(KeyCode::PageUp)], "PgUp", Action::PageUp, Scope::Move, "one page up", None),
    b(&[Code(KeyCode::PageDown)], "PgDn", Action::PageDown, Scope::Move, "one page down", None),
    b(&[Code(KeyCode::Home), Char('g')], "Home g", Action::Home, Scope::Move, "first row (feed: oldest)", None),
    b(&[Code(KeyCode::End), Char('G')], "End G", Action::End, Scope::Move, "last row (feed: live)", None),
];

/// Keys of the text inputs and popups, for the help overlay.
pub const INPUT_KEYS: &[(&str, &str)] = &[
    ("Enter", "apply"),
    ("Esc", "cancel, close a popup"),
    ("Backspace", "delete a character"),
];

/// Keys of the detail pane (Enter on a file, `:versions PATH`), for the
/// help overlay; the pane's own lines and footer say them where they apply.
pub const DETAIL_KEYS: &[(&str, &str)] = &[
    ("↑↓ g G", "choose a copy or a version"),
    ("R x F", "restore, delete, fetch copy"),
    ("V", "restore the kept version"),
    ("f l u", "file: fetch, lock, unlock"),
    ("r", "load again"),
];

/// The footer while the feed has the keys (help and quit last, as in
/// [`footer`]).
pub fn feed_footer() -> Vec<(&'static str, &'static str)> {
    vec![
        ("↑↓ PgUp PgDn", "scroll feed"),
        ("End", "live"),
        ("e", "events"),
        ("c", "clients"),
        ("Esc", "table"),
        ("?", "help"),
        ("q", "quit"),
    ]
}

/// The command line's commands, for the help overlay and its errors.
pub const COMMANDS: &[(&str, &str)] = &[
    ("lock [--wait] N", "lock file #N"),
    ("unlock N [--force]", "unlock #N"),
    // NAME keeps its folders under DIR (the last DIR used by default): a
    // table of paths fetched into one folder stays a tree, without clashes.
    ("fetch NAME [DIR]", "into DIR/NAME"),
    ("fetch … --flat", "no subfolders"),
    ("versions PATH", "versions (deleted too)"),
    // `override [PATH]` (send-only) and `revert [PATH]` (receive-only).
    ("override, revert", "one-way node's diffs"),
    ("list", "reload all"),
    ("connect HOST:PORT", "switch node"),
    ("cache [NODE]", "a node's cache"),
    ("quit", "leave"),
];

/// The action bound to `key` in `view`, if any.
pub fn lookup(view: View, key: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .filter(|b| b.scope.applies(view))
        .find(|b| b.keys.iter().any(|k| k.matches(key)))
        .map(|b| b.action)
}

/// The footer's (keys, words) for `view`, in table order.
pub fn footer(view: View) -> Vec<(&'static str, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| b.scope.applies(view))
        .filter_map(|b| b.footer)
        .collect()
}

/// The help overlay's sections: (title, [(keys, help)]). Bindings with an
/// empty help are covered by a neighbour's line (`]` by `[ ]`).
pub fn help_sections() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    let rows = |scope: Scope| {
        let rows: Vec<_> = BINDINGS
            .iter()
            .filter(|b| b.scope == scope && !b.help.is_empty())
            .map(|b| (b.label, b.help))
            .collect();
        (scope.title(), rows)
    };
    // In this order the two columns of the overlay come out balanced, and
    // it fits in 36 rows (on shorter screens the overlay scrolls).
    vec![
        rows(Scope::Everywhere),
        rows(Scope::Move),
        ("Typing", INPUT_KEYS.to_vec()),
        ("Detail pane (Enter)", DETAIL_KEYS.to_vec()),
        rows(Scope::Nodes),
        rows(Scope::Files),
        rows(Scope::Cache),
        rows(Scope::Conflicts),
        ("Commands (:)", COMMANDS.to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn lookups_respect_scope_and_modifiers() {
        let none = KeyModifiers::NONE;
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char('l'), none)),
            Some(Action::Lock)
        );
        assert_eq!(lookup(View::Cache, &key(KeyCode::Char('l'), none)), None);
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char('?'), KeyModifiers::SHIFT)),
            Some(Action::Help)
        );
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char(']'), none)),
            Some(Action::FeedNewer)
        );
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char('['), none)),
            Some(Action::FeedOlder)
        );
        assert_eq!(
            lookup(View::Nodes, &key(KeyCode::Enter, none)),
            Some(Action::Open)
        );
        // Ctrl-L is not `l`.
        assert_eq!(
            lookup(View::Files, &key(KeyCode::Char('l'), KeyModifiers::CONTROL)),
            None
        );
    }

    #[test]
    fn every_action_is_reachable_and_documented() {
        let sections = help_sections();
        let documented: usize = sections.iter().map(|(_, r)| r.len()).sum();
        assert!(documented >= BINDINGS.len() - 3, "help lists the bindings");
        assert!(footer(View::Files).iter().any(|(k, _)| *k == "?"));
        assert!(footer(View::Nodes).iter().all(|(k, _)| *k != "l"));
    }
}
