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
    /// Fetch the selected file.
    Fetch,
    /// Open the command line.
    Command,
    /// Scroll the feed to older events.
    FeedOlder,
    /// Scroll the feed to newer events.
    FeedNewer,
    /// Open the selected row (on Nodes: list that node's own files).
    Open,
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
}

impl Scope {
    /// Whether the binding works in `view`.
    pub fn applies(self, view: View) -> bool {
        match self {
            Scope::Everywhere | Scope::Move => true,
            Scope::Files => view == View::Files,
            Scope::Nodes => view == View::Nodes,
        }
    }

    /// Heading in the help overlay.
    pub fn title(self) -> &'static str {
        match self {
            Scope::Everywhere => "Everywhere",
            Scope::Move => "Moving",
            Scope::Files => "Files view",
            Scope::Nodes => "Nodes view",
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
    b(&[Char('s')], "s", Action::Sort, Scope::Files, "sort: name, size, modified", Some(("s", "sort"))),
    b(&[Char('l')], "l", Action::Lock, Scope::Files, "lock the selected file", Some(("l", "lock"))),
    b(&[Char('L')], "L", Action::LockWait, Scope::Files, "lock, or queue for it", None),
    b(&[Char('u')], "u", Action::Unlock, Scope::Files, "unlock the selected file", Some(("u", "unlock"))),
    b(&[Char('f')], "f", Action::Fetch, Scope::Files, "fetch (download) the file", Some(("f", "fetch"))),
    b(&[Char('[')], "[ ]", Action::FeedOlder, Scope::Files, "feed: [ older, ] newer", Some(("[ ]", "feed"))),
    b(&[Char(']')], "]", Action::FeedNewer, Scope::Files, "", None),
    b(&[Code(KeyCode::Esc)], "Esc", Action::Clear, Scope::Files, "cancel fetch; clear filter", None),
    b(&[Code(KeyCode::Enter)], "Enter", Action::Open, Scope::Nodes, "list the node's own files", Some(("Enter", "its files"))),
    b(&[Char(':')], ":", Action::Command, Scope::Everywhere, "command line (see below)", Some((":", "command"))),
    b(&[Code(KeyCode::Tab)], "Tab", Action::NextView, Scope::Everywhere, "next tab (S-Tab: back)", Some(("Tab", "tabs"))),
    b(&[Code(KeyCode::BackTab)], "S-Tab", Action::PrevView, Scope::Everywhere, "", None),
    b(&[Char('1'), Char('2'), Char('3')], "1 2 3", Action::ViewByNumber, Scope::Everywhere, "Files, Cache, Nodes tab", None),
    b(&[Char('r')], "r", Action::Refresh, Scope::Everywhere, "ask the node again now", None),
    b(&[Char('?')], "?", Action::Help, Scope::Everywhere, "this help", Some(("?", "help"))),
    b(&[Char('q'), Ctrl('c')], "q Ctrl-C", Action::Quit, Scope::Everywhere, "quit", Some(("q", "quit"))),
    b(&[Code(KeyCode::Up), Char('k')], "↑ k", Action::Up, Scope::Move, "previous row", None),
    b(&[Code(KeyCode::Down), Char('j')], "↓ j", Action::Down, Scope::Move, "next row (or mouse wheel)", None),
    b(&[Code(KeyCode::PageUp)], "PgUp", Action::PageUp, Scope::Move, "one page up", None),
    b(&[Code(KeyCode::PageDown)], "PgDn", Action::PageDown, Scope::Move, "one page down", None),
    b(&[Code(KeyCode::Home), Char('g')], "Home g", Action::Home, Scope::Move, "first row", None),
    b(&[Code(KeyCode::End), Char('G')], "End G", Action::End, Scope::Move, "last row", None),
];

/// Keys of the text inputs and popups, for the help overlay.
pub const INPUT_KEYS: &[(&str, &str)] = &[
    ("Enter", "apply"),
    ("Esc", "cancel, close a popup"),
    ("Backspace", "delete a character"),
];

/// The command line's commands, for the help overlay and its errors.
pub const COMMANDS: &[(&str, &str)] = &[
    ("lock [--wait] N", "lock file #N"),
    ("unlock N [--force]", "unlock #N"),
    // NAME keeps its folders under DIR (the last DIR used by default): a
    // table of paths fetched into one folder stays a tree, without clashes.
    ("fetch NAME [DIR]", "into DIR/NAME"),
    ("fetch … --flat", "no subfolders"),
    ("list", "reload all"),
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
    let mut out = Vec::new();
    // In this order the two columns of the overlay come out balanced.
    for scope in [Scope::Everywhere, Scope::Move, Scope::Nodes, Scope::Files] {
        let rows: Vec<_> = BINDINGS
            .iter()
            .filter(|b| b.scope == scope && !b.help.is_empty())
            .map(|b| (b.label, b.help))
            .collect();
        out.push((scope.title(), rows));
    }
    out.push(("Commands (:)", COMMANDS.to_vec()));
    out.push(("Typing", INPUT_KEYS.to_vec()));
    out
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
