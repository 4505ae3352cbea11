//! The detail pane of one file (Enter on the Files view): the newest
//! version and each node's, the lock and its queue, the changes held back,
//! and the file's conflict copies with what can be done to them.

use crossterm::event::{KeyCode, KeyEvent};
use tandem_common::proto::ConflictAction;

use super::Wanted;
use super::{AppState, DetailPane, Effect, Level, Mode};

impl AppState {
    /// Opens the pane on the selected file and asks for what it shows.
    pub(super) fn open_detail(&mut self) -> Vec<Effect> {
        let Some(f) = self.files.selected() else {
            self.set_status(Level::Error, "no file selected");
            return Vec::new();
        };
        if !self.is_up() {
            return self.not_connected();
        }
        let path = f.path.clone();
        self.mode = Mode::Detail(DetailPane {
            path: path.clone(),
            detail: None,
            sel: 0,
        });
        vec![Effect::LoadDetail(path)]
    }
}

/// A key while the pane is open. Actions on the file or a copy close it
/// (a question or a prompt takes its place).
pub(super) fn on_detail_key(s: &mut AppState, mut d: DetailPane, k: &KeyEvent) -> Vec<Effect> {
    let copies = match &d.detail {
        Some(Ok(det)) => det.conflicts.clone(),
        _ => Vec::new(),
    };
    match k.code {
        KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
        KeyCode::Up | KeyCode::Char('k') => d.sel = d.sel.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => {
            d.sel = (d.sel + 1).min(copies.len().saturating_sub(1));
        }
        KeyCode::Char('r') => {
            let path = d.path.clone();
            d.detail = None;
            s.mode = Mode::Detail(d);
            return vec![Effect::LoadDetail(path)];
        }
        KeyCode::Char('R' | 'x') | KeyCode::Delete => {
            let action = if k.code == KeyCode::Char('R') {
                ConflictAction::Restore
            } else {
                ConflictAction::Discard
            };
            match copies.get(d.sel) {
                Some(copy) => s.ask_resolve_copy(copy.clone(), action),
                None => s.set_status(Level::Error, "this file has no conflict copies"),
            }
            if matches!(s.mode, Mode::Confirm(_)) {
                return Vec::new();
            }
        }
        KeyCode::Char('F') => {
            match copies.get(d.sel) {
                Some(copy) => s.ask_fetch_copy(copy),
                None => s.set_status(Level::Error, "this file has no conflict copies"),
            }
            if matches!(s.mode, Mode::FetchPrompt { .. }) {
                return Vec::new();
            }
        }
        KeyCode::Char('f') => {
            s.mode = Mode::FetchPrompt {
                what: Wanted::file(d.path),
                input: s.fetch_folder().display().to_string(),
            };
            return Vec::new();
        }
        KeyCode::Char('l') => return s.lock(d.path),
        KeyCode::Char('u') => return s.unlock(d.path, false),
        _ => {}
    }
    s.mode = Mode::Detail(d);
    Vec::new()
}
