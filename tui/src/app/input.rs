//! The keyboard and the mouse: keys in each [`Mode`] (text boxes through
//! the shared line editor), the actions bound to them in [`crate::keys`],
//! scrolling and clicks.

use std::path::PathBuf;

use crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::{Position, Rect};

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

    /// Rows one PageUp/PageDown moves in the current view.
    fn page(&self) -> usize {
        match self.view {
            View::Files => self.table_height(),
            View::Cache => crate::ui::cache::table_rows(self.areas().main),
            View::Nodes => crate::ui::nodes::table_rows(self.areas().main),
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
        Mode::Help => Vec::new(),
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
        Mode::FetchPrompt { path, mut input } => match edit_line(&mut input, &k) {
            Edit::Submit => {
                let folder = if input.trim().is_empty() {
                    s.fetch_folder()
                } else {
                    PathBuf::from(input.trim())
                };
                s.fetch_into(path, folder, false, false)
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
                s.mode = Mode::FetchPrompt { path, input };
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
    }
}

fn on_action(s: &mut AppState, a: Action, k: &KeyEvent) -> Vec<Effect> {
    let mut fx = Vec::new();
    let page = s.page() as isize;
    match a {
        Action::Quit => fx.push(Effect::Quit),
        Action::Help => s.mode = Mode::Help,
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
        Action::Filter => s.mode = Mode::Filter,
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
        Action::Fetch => match s.files.selected() {
            Some(f) => {
                s.mode = Mode::FetchPrompt {
                    path: f.path.clone(),
                    input: s.fetch_folder().display().to_string(),
                }
            }
            None => s.set_status(Level::Error, "no file selected"),
        },
        Action::Command => s.mode = Mode::Command(String::new()),
        Action::FeedOlder => s.feed.scroll_by(1),
        Action::FeedNewer => s.feed.scroll_by(-1),
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

/// The wheel scrolls what it is over; a click selects a table row.
pub(super) fn on_mouse(s: &mut AppState, m: MouseEvent) {
    let at = Position::new(m.column, m.row);
    let areas = s.areas();
    let over_feed = areas.feed.is_some_and(|f| f.contains(at));
    let delta = match m.kind {
        MouseEventKind::ScrollDown => WHEEL_ROWS as isize,
        MouseEventKind::ScrollUp => -(WHEEL_ROWS as isize),
        MouseEventKind::Down(MouseButton::Left) => {
            // A click on a row of the table selects it.
            let main = areas.main;
            if s.mode == Mode::Normal && s.view == View::Files && main.contains(at) {
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
            return;
        }
        _ => return,
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
        Mode::Help => {}
        _ if over_feed => s.feed.scroll_by(delta.signum()),
        _ => move_selection(s, delta),
    }
}
