//! The detail pane of one file: what the table's row says in full, the
//! lock and its queue, held changes, and the conflict copies kept of it.

use ratatui::Frame;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use tandem_common::display::human_size;

use crate::app::{AppState, DetailPane, FileDetail};

use super::{centered, selected_style};

/// Times in full when there is room.
fn time_format(width: u16) -> &'static str {
    if width >= 100 {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%m-%d %H:%M"
    }
}

fn heading(text: &str) -> Line<'static> {
    Line::styled(
        text.to_string(),
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    )
}

fn grey(text: String) -> Line<'static> {
    Line::styled(text, Style::default().fg(Color::DarkGray))
}

/// Draws the pane over the screen.
pub fn render(frame: &mut Frame, s: &AppState, d: &DetailPane) {
    let area = centered(
        frame.area(),
        frame.area().width.saturating_sub(4).min(110),
        frame.area().height.saturating_sub(2),
    );
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(format!(" {} ", d.path))
        .title_bottom(" f fetch · l lock · u unlock · r reload · Esc close ")
        .border_style(Style::default().fg(Color::Cyan));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let time = time_format(inner.width);
    let mut lines: Vec<Line> = Vec::new();
    match s.files.get(d.path.as_str()) {
        Some(f) => {
            lines.push(heading("Newest version"));
            if let Some(t) = &f.link {
                lines.push(Line::from(format!(
                    "  a symbolic link to {t} (synced as a link, never followed)"
                )));
            }
            let hex = f.hash.to_hex();
            lines.push(Line::from(format!(
                "  {} · modified {} · BLAKE3 {} · on {}",
                human_size(f.size),
                s.zone.format(f.mtime_ns, time),
                &hex[..hex.len().min(16)],
                if f.nodes.is_empty() {
                    "no node yet".to_string()
                } else {
                    f.nodes.join(", ")
                }
            )));
            lines.push(heading("Each node"));
            for st in &f.states {
                let colour = match st.state.as_str() {
                    "in sync" => Color::Green,
                    "error" => Color::Red,
                    _ => Color::Yellow,
                };
                lines.push(Line::from(vec![
                    Span::raw(format!("  {:<16} ", st.node)),
                    Span::styled(st.state.as_str(), Style::default().fg(colour)),
                ]));
            }
        }
        None => lines.push(grey(
            "  not in the table (deleted, or filtered out of the cluster's list)".into(),
        )),
    }
    match &d.detail {
        None => lines.push(grey(
            "  loading the lock, held changes and conflict copies…".into(),
        )),
        Some(Err(e)) => lines.push(Line::styled(
            format!("  cannot load the rest: {e} (r tries again)"),
            Style::default().fg(Color::Red),
        )),
        Some(Ok(det)) => more(s, d, det, time, &mut lines),
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

/// The lock, held changes and conflict copies.
fn more(
    s: &AppState,
    d: &DetailPane,
    det: &FileDetail,
    time: &str,
    lines: &mut Vec<Line<'static>>,
) {
    lines.push(heading("Lock"));
    match &det.lock {
        None => lines.push(Line::from("  not locked")),
        Some(l) => {
            lines.push(Line::from(format!(
                "  {} since {}, taken through {}",
                l.owner_name,
                s.zone.format(l.since_ns, time),
                l.via
            )));
            if !l.waiting.is_empty() {
                lines.push(Line::from(format!(
                    "  waiting, first in line first: {}",
                    l.waiting.join(", ")
                )));
            }
        }
    }
    lines.push(heading("Held changes"));
    if det.held.is_empty() {
        lines.push(Line::from("  none"));
    }
    for h in &det.held {
        lines.push(Line::from(format!(
            "  on {}: {} ({}, modified {}), held since {}",
            h.node,
            crate::wording::kind_word(h.kind),
            human_size(h.size),
            s.zone.format(h.mtime_ns, time),
            s.zone.format(h.since_ns, time)
        )));
    }
    lines.push(heading("Conflict copies"));
    if det.conflicts.is_empty() {
        lines.push(Line::from("  none kept"));
    } else {
        lines.push(grey(
            "  ↑↓ choose · F fetch (download) · R restore as current · x delete".into(),
        ));
    }
    for (i, c) in det.conflicts.iter().enumerate() {
        let text = format!(
            "{}{} on {}: {}'s version, {}, modified {}, kept {}",
            if i == d.sel { "▶" } else { " " },
            c.short_id(),
            c.node,
            if c.author.is_empty() { "?" } else { &c.author },
            human_size(c.size),
            s.zone.format(c.mtime_ns, time),
            s.zone.format(c.kept_ns, time)
        );
        lines.push(if i == d.sel {
            Line::styled(text, selected_style())
        } else {
            Line::from(text)
        });
    }
    for u in &det.unanswered {
        lines.push(Line::styled(
            format!("  not included (the node did not answer): {u}"),
            Style::default().fg(Color::Red),
        ));
    }
}
