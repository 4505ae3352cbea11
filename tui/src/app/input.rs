//! The keyboard and the mouse: keys in each [`Mode`] (text boxes through
//! the shared line editor), the actions bound to them in [`crate::keys`],
//! scrolling and clicks.

use std::path::PathBuf;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};
use tandem_common::proto::ConflictAction;

use super::Wanted;
use super::command::run_command;
use super::line_edit::{Edit, edit_line};
use super::{AppState, DiscoverPopup, Effect, Level, Mode, View, visible_offset};
use crate::keys::{self, Action};

/// Rows moved by one mouse-wheel notch.
pub const WHEEL_ROWS: usize = 3;

impl AppState {
    /// Switches tabs; the new tab's report is asked for when stale.
    fn set_view(&mut self, v: View, fx: &mut Vec<Effect>) {
        self.view = v;
        self.refresh_view(false, fx);
    }

    /// Lines one PageUp/PageDown moves the feed (0 when it is not shown).
    fn feed_page(&self) -> usize {
        self.areas()
            .feed
            .map_or(0, |f| usize::from(f.height.saturating_sub(2)))
    }

    /// Gives the feed the moving keys, if it is on screen.
    fn focus_feed(&mut self) {
        self.feed.focused = self.view == View::Files && self.areas().feed.is_some();
    }

    /// `n`/`N`: selects the next (previous) row matching the last filter,
    /// going round the end as vi does, and says when it went round.
    fn jump_to_match(&mut self, forward: bool) {
        let text = self.files.search().to_string();
        if text.is_empty() {
            self.set_status(
                Level::Info,
                "n/N find rows matching a filter: type one with / first",
            );
            return;
        }
        match self.files.find_match(forward) {
            Some((pos, wrapped)) => {
                self.files.select(pos);
                self.settle();
                if wrapped {
                    let from = if forward { "top" } else { "bottom" };
                    self.set_status(Level::Info, format!("\"{text}\": went round to the {from}"));
                } else {
                    self.status = None;
                }
            }
            None => self.set_status(Level::Error, format!("no file matches \"{text}\"")),
        }
    }

    /// Rows one PageUp/PageDown moves in the current view.
    fn page(&self) -> usize {
        match self.view {
            View::Files => self.table_height(),
            View::Cache => crate::ui::cache::table_rows(self.areas().main),
            View::Nodes => crate::ui::nodes::table_rows(self.areas().main),
            View::Conflicts => crate::ui::conflicts::table_rows(self.areas().main),
        }
        .max(1)
    }
}

fn is_ctrl_c(k: &KeyEvent) -> bool {
    k.modifiers.contains(KeyModifiers::CONTROL) && matches!(k.code, KeyCode::Char('c' | 'C'))
}

/// A key press, in the current mode.
pub(super) fn on_key(s: &mut AppState, k: KeyEvent) -> Vec<Effect> {
    if k.kind == KeyEventKind::Release {
        return Vec::new();
    }
    if is_ctrl_c(&k) {
        return vec![Effect::Quit];
    }
    match std::mem::replace(&mut s.mode, Mode::Normal) {
        // While a fetch runs, Esc stops it (in any view).
        Mode::Normal if k.code == KeyCode::Esc && s.fetch.is_some() => s.cancel_fetch(),
        Mode::Normal => match keys::lookup(s.view, &k) {
            Some(a) => on_action(s, a, &k),
            None => Vec::new(),
        },
        // The arrows scroll a help taller than the screen; any other key
        // closes it.
        Mode::Help => {
            match k.code {
                KeyCode::Down | KeyCode::Char('j') | KeyCode::PageDown => {
                    s.help_scroll = s.help_scroll.saturating_add(3);
                    s.mode = Mode::Help;
                }
                KeyCode::Up | KeyCode::Char('k') | KeyCode::PageUp => {
                    s.help_scroll = s.help_scroll.saturating_sub(3);
                    s.mode = Mode::Help;
                }
                _ => {}
            }
            Vec::new()
        }
        Mode::Detail(d) => super::detail::on_detail_key(s, d, &k),
        // Only `y` says yes: Enter or a stray key must not restore or
        // delete anything.
        Mode::Confirm(c) => {
            let plain = !k
                .modifiers
                .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
            if plain && matches!(k.code, KeyCode::Char('y' | 'Y')) {
                s.set_status(Level::Info, c.doing);
                if !s.is_up() {
                    return s.not_connected();
                }
                c.yes
            } else {
                s.set_status(Level::Info, "cancelled; nothing was changed");
                Vec::new()
            }
        }
        Mode::Filter => {
            let mut filter = s.files.filter().to_string();
            match edit_line(&mut filter, &k) {
                Edit::Submit => {}
                Edit::Cancel => s.files.set_filter(""),
                Edit::Changed => {
                    s.files.set_filter(&filter);
                    s.mode = Mode::Filter;
                }
                // The selection moves while filtering, to pick from the matches.
                Edit::Other
                    if matches!(
                        k.code,
                        KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown
                    ) =>
                {
                    s.mode = Mode::Filter;
                    let a = keys::lookup(View::Files, &k);
                    return a.map(|a| on_action(s, a, &k)).unwrap_or_default();
                }
                Edit::BackspaceOnEmpty | Edit::Other => s.mode = Mode::Filter,
            }
            s.settle();
            Vec::new()
        }
        Mode::Command(mut input) => match edit_line(&mut input, &k) {
            Edit::Submit => run_command(s, &input),
            // Erasing past the `:` closes the command line, as in vi.
            Edit::Cancel | Edit::BackspaceOnEmpty => Vec::new(),
            Edit::Changed | Edit::Other => {
                s.mode = Mode::Command(input);
                Vec::new()
            }
        },
        Mode::FetchPrompt { what, mut input } => match edit_line(&mut input, &k) {
            Edit::Submit => {
                let folder = if input.trim().is_empty() {
                    s.fetch_folder()
                } else {
                    PathBuf::from(input.trim())
                };
                s.fetch_into(what, folder, false, false)
            }
            Edit::Cancel => Vec::new(),
            edit => {
                // The prompt opens with the last folder filled in:
                // Ctrl-U clears it to type another.
                if edit == Edit::Other
                    && k.code == KeyCode::Char('u')
                    && k.modifiers.contains(KeyModifiers::CONTROL)
                {
                    input.clear();
                }
                s.mode = Mode::FetchPrompt { what, input };
                Vec::new()
            }
        },
        Mode::Overwrite(q) => super::fetch::on_overwrite_key(s, q, &k),
        Mode::Discover(mut p) => {
            let len = p.listed();
            let page = discover_rows(s);
            match k.code {
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
                KeyCode::Up | KeyCode::Char('k') => p.scroll = p.scroll.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => p.scroll += 1,
                KeyCode::PageUp => p.scroll = p.scroll.saturating_sub(page),
                KeyCode::PageDown => p.scroll += page,
                KeyCode::Home | KeyCode::Char('g') => p.scroll = 0,
                KeyCode::End | KeyCode::Char('G') => p.scroll = len,
                _ => {}
            }
            p.scroll = p.scroll.min(len.saturating_sub(page));
            s.mode = Mode::Discover(p);
            Vec::new()
        }
    }
}

fn discover_rows(s: &AppState) -> usize {
    crate::ui::nodes::discover_rows(Rect::new(0, 0, s.size.0, s.size.1)).max(1)
}

fn move_selection(s: &mut AppState, delta: isize) {
    match s.view {
        View::Files => {
            s.files.move_by(delta);
            s.settle();
        }
        View::Cache => {
            let len = s.cache.as_ref().map_or(0, |c| c.entries.len());
            s.cache_sel = s
                .cache_sel
                .saturating_add_signed(delta)
                .min(len.saturating_sub(1));
        }
        View::Nodes => {
            s.nodes_sel = s
                .nodes_sel
                .saturating_add_signed(delta)
                .min(s.nodes.len().saturating_sub(1));
        }
        View::Conflicts => {
            s.conflicts_sel = s
                .conflicts_sel
                .saturating_add_signed(delta)
                .min(s.conflicts_len().saturating_sub(1));
        }
    }
}

fn on_action(s: &mut AppState, a: Action, k: &KeyEvent) -> Vec<Effect> {
    let mut fx = Vec::new();
    if s.view == View::Files && s.feed.focused && s.feed.on_key(a, s.feed_page()) {
        return fx;
    }
    let page = s.page() as isize;
    match a {
        Action::Quit => fx.push(Effect::Quit),
        Action::Help => {
            s.help_scroll = 0;
            s.mode = Mode::Help;
        }
        Action::NextView => {
            let v = View::ALL[(s.view.index() + 1) % View::ALL.len()];
            s.set_view(v, &mut fx);
        }
        Action::PrevView => {
            let v = View::ALL[(s.view.index() + View::ALL.len() - 1) % View::ALL.len()];
            s.set_view(v, &mut fx);
        }
        Action::ViewByNumber => {
            if let KeyCode::Char(c) = k.code
                && let Some(v) = c
                    .to_digit(10)
                    .and_then(|d| View::ALL.get((d as usize).wrapping_sub(1)))
            {
                s.set_view(*v, &mut fx);
            }
        }
        Action::Refresh => {
            s.refresh_view(true, &mut fx);
            if fx.is_empty() && !s.is_up() {
                return s.not_connected();
            }
        }
        Action::Up => move_selection(s, -1),
        Action::Down => move_selection(s, 1),
        Action::PageUp => move_selection(s, -page),
        Action::PageDown => move_selection(s, page),
        Action::Home => move_selection(s, isize::MIN / 2),
        Action::End => move_selection(s, isize::MAX / 2),
        Action::Filter => {
            // ↑↓ while filtering pick from the matches in the table.
            s.feed.focused = false;
            s.mode = Mode::Filter;
        }
        Action::Clear => {
            s.files.set_filter("");
            s.status = None;
            s.settle();
        }
        Action::Sort => {
            let next = s.files.sort().next();
            s.files.set_sort(next);
            s.settle();
        }
        Action::Lock => match s.files.selected() {
            // Said before anything is asked: taking it would be refused.
            Some(f) if f.locked_by.is_some() => {
                let (path, owner) = (f.path.clone(), f.locked_by.clone().unwrap_or_default());
                s.set_status(
                    Level::Info,
                    format!(
                        "{path} is already locked by {owner}: L waits in its queue; u unlocks it if the lock is yours"
                    ),
                );
            }
            Some(f) => return s.lock(f.path.clone()),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::LockWait => match s.files.selected() {
            Some(f) => return s.lock_wait(f.path.clone()),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Unlock => match s.files.selected() {
            Some(f) => return s.unlock(f.path.clone(), false),
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Fetch if s.view == View::Conflicts => match s.selected_conflict() {
            Some(c) => {
                let c = c.clone();
                s.ask_fetch_copy(&c);
            }
            None => s.set_status(Level::Error, "no conflict copy selected"),
        },
        Action::Fetch => match s.files.selected() {
            Some(f) => {
                s.mode = Mode::FetchPrompt {
                    what: Wanted::file(f.path.clone()),
                    input: s.fetch_folder().display().to_string(),
                }
            }
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Command => s.mode = Mode::Command(String::new()),
        Action::ConnectTo => {
            if let Some(n) = s.nodes.get(s.nodes_sel) {
                // A far node's address reads "HOST:PORT (through other nodes)".
                let addr = n.addr.split(" (").next().unwrap_or_default().to_string();
                // A node listening on every address says so, not where
                // it can be reached from here.
                let wildcard = ["0.0.0.0:", "[::]:"].iter().any(|w| addr.starts_with(w));
                if addr.is_empty() || addr.starts_with('(') || wildcard {
                    let name = n.name.clone();
                    s.set_status(
                        Level::Error,
                        format!("no address is known for {name}; use :connect HOST:PORT"),
                    );
                } else {
                    let name = n.name.clone();
                    return s.switch_node(&addr, Some(name));
                }
            }
        }
        Action::NextCache => return s.next_cache_node(),
        Action::Restore => s.ask_resolve(ConflictAction::Restore),
        Action::Discard => s.ask_resolve(ConflictAction::Discard),
        Action::FeedOlder => {
            s.feed.scroll_by(1);
            s.focus_feed();
        }
        Action::FeedNewer => {
            s.feed.scroll_by(-1);
            s.focus_feed();
        }
        Action::NextMatch => s.jump_to_match(true),
        Action::PrevMatch => s.jump_to_match(false),
        Action::FeedKind => s.feed.next_group(),
        Action::FeedClients => s.feed.toggle_clients(),
        Action::Open if s.view == View::Files => return s.open_detail(),
        Action::Open => {
            if let Some(n) = s.nodes.get(s.nodes_sel) {
                let node = n.name.clone();
                if !s.is_up() {
                    return s.not_connected();
                }
                s.mode = Mode::Discover(DiscoverPopup {
                    node: node.clone(),
                    files: None,
                    scroll: 0,
                });
                fx.push(Effect::Discover(node));
            }
        }
    }
    fx
}

/// The wheel scrolls what it is over; a click selects a table row, a
/// tab, or the order (on a column header).
pub(super) fn on_mouse(s: &mut AppState, m: MouseEvent) -> Vec<Effect> {
    let mut fx = Vec::new();
    let at = Position::new(m.column, m.row);
    let areas = s.areas();
    let over_feed = areas.feed.is_some_and(|f| f.contains(at));
    let delta = match m.kind {
        MouseEventKind::ScrollDown => WHEEL_ROWS as isize,
        MouseEventKind::ScrollUp => -(WHEEL_ROWS as isize),
        MouseEventKind::Down(MouseButton::Left) => {
            // A click on the feed gives it the keys; on the table, back.
            let main = areas.main;
            if s.mode == Mode::Normal && areas.tabs.contains(at) {
                if let Some(v) = crate::ui::status::tab_at(areas.tabs, m.column) {
                    s.set_view(v, &mut fx);
                }
                return fx;
            }
            let on_header = main.contains(at) && m.row == main.y + 1;
            if s.mode == Mode::Normal && s.view == View::Files && on_header {
                s.feed.focused = false;
                let col = crate::ui::files::header_at(main, s, m.column);
                if let Some(k) = col.and_then(|c| c.sort_key()) {
                    s.files.sort_by_column(k);
                    s.settle();
                }
                return fx;
            }
            if s.mode == Mode::Normal && over_feed {
                s.focus_feed();
            }
            if s.mode == Mode::Normal && s.view == View::Files && main.contains(at) {
                s.feed.focused = false;
                let first_row = main.y + 2; // border + header
                if m.row >= first_row && m.row < main.bottom().saturating_sub(1) {
                    let h = s.table_height();
                    let off = visible_offset(
                        s.files.offset(),
                        s.files.selected_pos(),
                        s.files.view_len(),
                        h,
                    );
                    let pos = off + usize::from(m.row - first_row);
                    if pos < s.files.view_len() {
                        s.files.select(pos);
                        s.settle();
                    }
                }
            }
            return fx;
        }
        _ => return fx,
    };
    match &mut s.mode {
        Mode::Discover(p) => {
            let len = p.listed();
            let page = crate::ui::nodes::discover_rows(Rect::new(0, 0, s.size.0, s.size.1));
            p.scroll = p
                .scroll
                .saturating_add_signed(delta)
                .min(len.saturating_sub(page));
        }
        Mode::Help | Mode::Confirm(_) | Mode::Detail(_) => {}
        _ if over_feed => {
            s.feed.scroll_by(delta.signum());
            s.focus_feed();
        }
        _ => move_selection(s, delta),
    }
    fx
}
