//! The detail pane of one file (Enter on the Files view, or `:versions
//! PATH` for a path the table does not have): the newest version and each
//! node's, the lock and its queue, the changes held back, the file's
//! conflict copies and the versions nodes kept of it, with what can be done
//! to them. One selection runs over the copies and then the versions.
//!
//! The pane loads again when the feed says the file changed (debounced),
//! after a reconnect, and on `r`.

use crossterm::event::{KeyCode, KeyEvent};
use tandem_common::RelPath;
use tandem_common::proto::ConflictAction;

use super::Wanted;
use super::{AppState, DEBOUNCE_NS, DetailItem, DetailPane, Effect, FileDetail, Level, Mode};

/// What a selected line is, to find it again after a reload: (a version,
/// node, id).
type ItemKey = (bool, String, String);

fn key_of(item: DetailItem<'_>) -> ItemKey {
    match item {
        DetailItem::Copy(c) => (false, c.node.clone(), c.id.clone()),
        DetailItem::Version(v) => (true, v.node.clone(), v.id.clone()),
    }
}

impl DetailPane {
    /// The pane on `path`, loading.
    fn loading(path: RelPath) -> Self {
        DetailPane {
            path,
            detail: None,
            sel: 0,
            loading: true,
            reload_due_ns: None,
        }
    }

    /// The selected conflict copy or version, once loaded.
    pub fn selected(&self) -> Option<DetailItem<'_>> {
        match &self.detail {
            Some(Ok(det)) => det.item(self.sel),
            _ => None,
        }
    }

    /// Selectable lines (none while loading or after an error).
    fn items(&self) -> usize {
        match &self.detail {
            Some(Ok(det)) => det.items(),
            _ => 0,
        }
    }

    /// Whether a change to `path` changes what the pane shows: the file
    /// itself, or a file under a path that was a folder (its versions are
    /// listed).
    fn shows(&self, path: &RelPath) -> bool {
        *path == self.path || path.is_inside(&self.path)
    }
}

impl AppState {
    /// Opens the pane on the selected file and asks for what it shows.
    pub(super) fn open_detail(&mut self) -> Vec<Effect> {
        let Some(f) = self.files.selected() else {
            self.set_status(Level::Error, "no file selected");
            return Vec::new();
        };
        let path = f.path.clone();
        self.open_detail_of(path)
    }

    /// Opens the pane on `path`, in the table or not (a file deleted
    /// everywhere has no row, but its kept versions are there to restore).
    pub(super) fn open_detail_of(&mut self, path: RelPath) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        self.mode = Mode::Detail(DetailPane::loading(path.clone()));
        vec![Effect::LoadDetail(path)]
    }

    /// The pane's detail arrived. The selection stays on its copy or
    /// version when the lists changed under it.
    pub(super) fn detail_loaded(&mut self, path: RelPath, result: Result<FileDetail, String>) {
        let Mode::Detail(d) = &mut self.mode else {
            return;
        };
        if d.path != path {
            return;
        }
        d.loading = false;
        let was = d.selected().map(key_of);
        if let Ok(det) = &result {
            let found = was.and_then(|k| {
                (0..det.items()).find(|&i| det.item(i).map(key_of).as_ref() == Some(&k))
            });
            d.sel = found.unwrap_or(d.sel).min(det.items().saturating_sub(1));
        }
        d.detail = Some(result);
    }

    /// The feed said `path` changed: the pane loads again soon if it shows
    /// it (a change kept a version, or took the lock, or held a change…).
    pub(super) fn detail_touched(&mut self, path: &RelPath) {
        let due = self.now_ns + DEBOUNCE_NS;
        if let Mode::Detail(d) = &mut self.mode
            && d.shows(path)
        {
            d.reload_due_ns = Some(d.reload_due_ns.map_or(due, |t| t.min(due)));
        }
    }

    /// Loads the pane again when a reload came due (and none is under way:
    /// the one under way may predate the change, so the due time stays).
    pub(super) fn reload_detail_when_due(&mut self, now: i64, fx: &mut Vec<Effect>) {
        if let Mode::Detail(d) = &mut self.mode
            && !d.loading
            && d.reload_due_ns.is_some_and(|t| now >= t)
        {
            d.reload_due_ns = None;
            d.loading = true;
            fx.push(Effect::LoadDetail(d.path.clone()));
        }
    }

    /// The connection ended: the pane's load under way will not answer.
    pub(super) fn detail_abandoned(&mut self) {
        if let Mode::Detail(d) = &mut self.mode {
            d.loading = false;
        }
    }

    /// A new connection: what the pane shows may have changed meanwhile.
    pub(super) fn detail_after_connect(&mut self, fx: &mut Vec<Effect>) {
        if let Mode::Detail(d) = &mut self.mode {
            d.reload_due_ns = None;
            d.loading = true;
            fx.push(Effect::LoadDetail(d.path.clone()));
        }
    }
}

/// Said when a key for conflict copies meets a selected version, or the
/// other way round, or nothing to act on.
fn wrong_line(s: &mut AppState, d: &DetailPane, key: char) {
    let text = match (d.selected(), key) {
        (None, 'V') => format!("no kept versions of {} are listed", d.path),
        (None, _) => "this file has no conflict copies".to_string(),
        (Some(DetailItem::Copy(_)), _) => {
            "that is a conflict copy: R restores it; V restores a kept version (below the copies)"
                .to_string()
        }
        (Some(DetailItem::Version(_)), 'R') => {
            "that is a kept version: V restores it (R is for conflict copies)".to_string()
        }
        (Some(DetailItem::Version(_)), 'F') => {
            "a kept version cannot be fetched, only restored (V); F fetches conflict copies"
                .to_string()
        }
        (Some(DetailItem::Version(_)), _) => {
            "kept versions are not deleted by hand: each node removes them by age and size (--keep-versions, --versions-size)"
                .to_string()
        }
    };
    s.set_status(Level::Error, text);
}

/// A key while the pane is open. Actions on the file, a copy or a version
/// close it (a question or a prompt takes its place).
pub(super) fn on_detail_key(s: &mut AppState, mut d: DetailPane, k: &KeyEvent) -> Vec<Effect> {
    let last = d.items().saturating_sub(1);
    match k.code {
        KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') => return Vec::new(),
        KeyCode::Up | KeyCode::Char('k') => d.sel = d.sel.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => d.sel = (d.sel + 1).min(last),
        KeyCode::Home | KeyCode::Char('g') => d.sel = 0,
        KeyCode::End | KeyCode::Char('G') => d.sel = last,
        KeyCode::Char('r') => {
            let path = d.path.clone();
            d.detail = None;
            d.loading = true;
            d.reload_due_ns = None;
            s.mode = Mode::Detail(d);
            return vec![Effect::LoadDetail(path)];
        }
        KeyCode::Char('R' | 'x') | KeyCode::Delete => {
            let (action, key) = if k.code == KeyCode::Char('R') {
                (ConflictAction::Restore, 'R')
            } else {
                (ConflictAction::Discard, 'x')
            };
            match d.selected() {
                Some(DetailItem::Copy(copy)) => s.ask_resolve_copy(copy.clone(), action),
                _ => wrong_line(s, &d, key),
            }
            if matches!(s.mode, Mode::Confirm(_)) {
                return Vec::new();
            }
        }
        KeyCode::Char('V') => {
            match d.selected() {
                Some(DetailItem::Version(v)) => s.ask_restore_version(v.clone()),
                _ => wrong_line(s, &d, 'V'),
            }
            if matches!(s.mode, Mode::Confirm(_)) {
                return Vec::new();
            }
        }
        KeyCode::Char('F') => {
            match d.selected() {
                Some(DetailItem::Copy(copy)) => {
                    let copy = copy.clone();
                    s.ask_fetch_copy(&copy);
                }
                _ => wrong_line(s, &d, 'F'),
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
