//! The detail pane of one file: what the table's row says in full, the
//! lock and its queue, held changes, the conflict copies kept of it, and
//! the versions nodes kept of it.
//!
//! The pane wraps its own lines (continuations indented), so it knows
//! which rows the selected copy or version takes and scrolls to keep them
//! on screen when the lists are longer than the pane.

use ratatui::Frame;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use tandem_common::display::{ago, human_size};

use crate::app::{AppState, DetailPane, FileDetail};

use super::text::{width, wrap};
use super::{centered, selected_style};

/// Times in full when there is room.
fn time_format(width: u16) -> &'static str {
    if width >= 100 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%m-%d %H:%M"
    }
}

fn heading() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

fn grey() -> Style {
    Style::default().fg(Color::DarkGray)
}

fn red() -> Style {
    Style::default().fg(Color::Red)
}

/// The pane's rows, wrapped by hand to its width, and where the selected
/// line is among them.
struct Rows {
    width: usize,
    lines: Vec<Line<'static>>,
    /// First row and end of the selected copy or version.
    selected: Option<(usize, usize)>,
}

impl Rows {
    /// `prefix` then `text`, word-wrapped; continuation rows start at
    /// column `indent`.
    fn text(&mut self, prefix: &str, text: &str, style: Style, indent: usize) {
        let lead = width(prefix);
        let indent = indent.min(self.width.saturating_sub(1));
        let rows = wrap(
            text,
            self.width.saturating_sub(lead),
            self.width.saturating_sub(indent),
        );
        for (i, row) in rows.into_iter().enumerate() {
            let start = if i == 0 {
                prefix.to_string()
            } else {
                " ".repeat(indent)
            };
            self.lines.push(Line::styled(start + &row, style));
        }
    }

    /// An indented line of plain text.
    fn plain(&mut self, text: &str, style: Style) {
        self.text("  ", text, style, 4);
    }

    /// One selectable line (a copy, a version): `id` then `text`,
    /// continuations under the text.
    fn item(&mut self, selected: bool, id: &str, text: &str) {
        let start = self.lines.len();
        let (marker, style) = if selected {
            ("▶", selected_style())
        } else {
            (" ", Style::default())
        };
        let prefix = format!("{marker}{id} ");
        self.text(&prefix, text, style, width(&prefix));
        if selected {
            self.selected = Some((start, self.lines.len()));
        }
    }

    /// The first row to show in `height` rows: 0 when everything fits,
    /// else the selected line about in the middle (as far as the ends
    /// allow), so what is around it shows too.
    fn scroll(&self, height: usize) -> usize {
        let total = self.lines.len();
        if total <= height {
            return 0;
        }
        let Some((a, b)) = self.selected else {
            return 0;
        };
        // A line taller than the pane shows its start.
        if b - a >= height {
            return a;
        }
        ((a + b) / 2).saturating_sub(height / 2).min(total - height)
    }
}

/// Draws the pane over the screen.
pub fn render(frame: &mut Frame, s: &AppState, d: &DetailPane) {
    let area = centered(
        frame.area(),
        frame.area().width.saturating_sub(4).min(110),
        frame.area().height.saturating_sub(2),
    );
    frame.render_widget(Clear, area);
    let mut block = Block::bordered()
        .title(format!(" {} ", d.path))
        .title_bottom(" f fetch · l lock · u unlock · r reload · Esc close ")
        .border_style(Style::default().fg(Color::Cyan));
    let inner = block.inner(area);
    let time = time_format(inner.width);
    let mut rows = Rows {
        width: usize::from(inner.width).max(1),
        lines: Vec::new(),
        selected: None,
    };
    match s.files.get(d.path.as_str()) {
        Some(f) => {
            rows.lines.push(Line::styled("Newest version", heading()));
            if let Some(t) = &f.link {
                rows.plain(
                    &format!("a symbolic link to {t} (synced as a link, never followed)"),
                    Style::default(),
                );
            }
            let hex = f.hash.to_hex();
            rows.plain(
                &format!(
                    "{} · modified {} · BLAKE3 {} · on {}",
                    human_size(f.size),
                    s.zone.format(f.mtime_ns, time),
                    &hex[..hex.len().min(16)],
                    if f.nodes.is_empty() {
                        "no node yet".to_string()
                    } else {
                        f.nodes.join(", ")
                    }
                ),
                Style::default(),
            );
            rows.lines.push(Line::styled("Each node", heading()));
            for st in &f.states {
                let colour = match st.state.as_str() {
                    "in sync" => Color::Green,
                    "error" => Color::Red,
                    _ => Color::Yellow,
                };
                rows.lines.push(Line::from(vec![
                    Span::raw(format!("  {:<16} ", st.node)),
                    Span::styled(st.state.as_str(), Style::default().fg(colour)),
                ]));
            }
        }
        None => rows.plain(
            "not in the table: deleted, a folder, or left out of the cluster's list",
            grey(),
        ),
    }
    match &d.detail {
        None => rows.plain(
            "loading the lock, held changes, conflict copies and kept versions…",
            grey(),
        ),
        Some(Err(e)) => rows.plain(&format!("cannot load the rest: {e} (r tries again)"), red()),
        Some(Ok(det)) => more(s, d, det, time, &mut rows),
    }
    let height = usize::from(inner.height);
    let top = rows.scroll(height);
    let (above, below) = (top > 0, rows.lines.len() > top + height);
    if above || below {
        let more = match (above, below) {
            (true, true) => " ↑↓ more ",
            (true, false) => " ↑ more ",
            _ => " ↓ more ",
        };
        block = block.title(Line::from(more).right_aligned());
    }
    frame.render_widget(block, area);
    let shown: Vec<Line> = rows.lines.into_iter().skip(top).take(height).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

/// The lock, held changes, conflict copies and kept versions.
fn more(s: &AppState, d: &DetailPane, det: &FileDetail, time: &str, rows: &mut Rows) {
    rows.lines.push(Line::styled("Lock", heading()));
    match &det.lock {
        None => rows.plain("not locked", Style::default()),
        Some(l) => {
            rows.plain(
                &format!(
                    "{} since {}, taken through {}",
                    l.owner_name,
                    s.zone.format(l.since_ns, time),
                    l.via
                ),
                Style::default(),
            );
            if !l.waiting.is_empty() {
                rows.plain(
                    &format!("waiting, first in line first: {}", l.waiting.join(", ")),
                    Style::default(),
                );
            }
        }
    }
    rows.lines.push(Line::styled("Held changes", heading()));
    if det.held.is_empty() {
        rows.plain("none", Style::default());
    }
    for h in &det.held {
        rows.plain(
            &format!(
                "on {}: {} ({}, modified {}), held since {}",
                h.node,
                crate::wording::kind_word(h.kind),
                human_size(h.size),
                s.zone.format(h.mtime_ns, time),
                s.zone.format(h.since_ns, time)
            ),
            Style::default(),
        );
    }
    rows.lines.push(Line::styled("Conflict copies", heading()));
    if det.conflicts.is_empty() {
        rows.plain(none_kept(&det.unanswered), Style::default());
    } else {
        rows.plain(
            "↑↓ choose · F fetch (download) · R restore as current · x delete",
            grey(),
        );
    }
    for (i, c) in det.conflicts.iter().enumerate() {
        let text = format!(
            "on {}: {}'s version, {}, modified {}, kept {}",
            c.node,
            if c.author.is_empty() { "?" } else { &c.author },
            human_size(c.size),
            s.zone.format(c.mtime_ns, time),
            s.zone.format(c.kept_ns, time)
        );
        rows.item(i == d.sel, &c.short_id(), &text);
    }
    not_included(&det.unanswered, rows);
    rows.lines.push(Line::styled("Kept versions", heading()));
    if det.versions.is_empty() {
        rows.plain(none_kept(&det.versions_unanswered), Style::default());
    } else {
        rows.plain("newest first · ↑↓ choose · V restore as current", grey());
    }
    let first = det.conflicts.len();
    for (i, v) in det.versions.iter().enumerate() {
        let kept = u64::try_from(s.now_ns.saturating_sub(v.kept_ns)).unwrap_or(0);
        // A folder's versions are of the files that were in it.
        let of = if v.path == d.path {
            String::new()
        } else {
            format!("{} ", v.path)
        };
        let text = format!(
            "{of}on {}: kept {}, {}, modified {}, {}",
            v.node,
            ago(kept / 1_000_000_000),
            human_size(v.size),
            s.zone.format(v.mtime_ns, time),
            crate::versions::cause(v)
        );
        rows.item(first + i == d.sel, &v.short_id(), &text);
    }
    not_included(&det.versions_unanswered, rows);
}

/// An empty list: none kept, or (some nodes did not answer) none that
/// the others know of.
fn none_kept(unanswered: &[String]) -> &'static str {
    if unanswered.is_empty() {
        "none kept"
    } else {
        "none on the nodes that answered"
    }
}

/// The nodes that did not say what they keep.
fn not_included(unanswered: &[String], rows: &mut Rows) {
    for u in unanswered {
        rows.plain(
            &format!("not included (the node did not answer): {u}"),
            red(),
        );
    }
}
