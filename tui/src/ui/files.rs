//! The merged file table and the fetch prompt.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Margin, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Scrollbar, ScrollbarOrientation,
    ScrollbarState, Table, TableState, Wrap,
};
use tandem_common::RelPath;
use tandem_common::display::human_size;
use tandem_common::proto::{FileState, ListedFile};

use crate::app::{AppState, visible_offset};

use super::{centered, data_style, fit_left, fit_right, header_style, selected_style, thousands};

/// A file's state in words, and its colour: conflict, held, syncing k/n
/// (k of n nodes have the newest version), stale k/n, missing k/n, in sync.
pub fn file_state(s: &AppState, f: &ListedFile, up: usize) -> (String, Color) {
    if s.files.has_conflict(&f.path) {
        return ("conflict".into(), Color::Magenta);
    }
    let count = |st: FileState| f.states.iter().filter(|x| x.state == st).count();
    if f.held > 0 || count(FileState::Held) > 0 {
        return (format!("held {}", f.held.max(1)), Color::Yellow);
    }
    if f.states.is_empty() {
        // A node that does not report per-node states: count replicas.
        return if f.nodes.len() < up {
            (format!("syncing {}/{up}", f.nodes.len()), Color::Cyan)
        } else {
            ("in sync".into(), Color::Green)
        };
    }
    let n = f.states.len();
    let ok = count(FileState::InSync);
    if count(FileState::Syncing) > 0 {
        (format!("syncing {ok}/{n}"), Color::Cyan)
    } else if count(FileState::Stale) > 0 {
        (format!("stale {ok}/{n}"), Color::LightRed)
    } else if ok < n {
        (format!("missing {ok}/{n}"), Color::DarkGray)
    } else {
        ("in sync".into(), Color::Green)
    }
}

struct Columns {
    num: u16,
    name: u16,
    size: u16,
    time: u16,
    time_fmt: &'static str,
    replicas: u16,
    state: u16,
    lock: u16,
}

fn columns(inner_width: u16, rows: usize, replicas_len: usize) -> Columns {
    let num = (thousands(rows as u64).len() as u16).max(1);
    let mut c = Columns {
        num,
        name: 0,
        size: 11,
        time: 11,
        time_fmt: "%m-%d %H:%M",
        replicas: 8,
        state: 11,
        lock: 8,
    };
    // One column for the selection mark, one space between columns.
    let used = |c: &Columns| 1 + c.num + c.size + c.time + c.replicas + c.state + c.lock + 7;
    // Wider columns only while the name keeps enough room.
    let room = |c: &Columns| inner_width.saturating_sub(used(c));
    let want = (replicas_len as u16).clamp(8, 24);
    let grow = room(&c).saturating_sub(28).min(want - c.replicas);
    c.replicas += grow;
    let grow = room(&c).saturating_sub(32).min(8);
    c.lock += grow;
    if room(&c) >= 48 {
        c.time = 19;
        c.time_fmt = "%Y-%m-%d %H:%M:%S";
    }
    c.name = room(&c).max(8);
    c
}

/// Draws the file table: only the rows on screen become widgets.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let t = &s.files;
    let height = super::table_rows(area);
    let offset = visible_offset(t.offset(), t.selected_pos(), t.view_len(), height);
    let window: Vec<(usize, &ListedFile)> = t.window(offset, height).collect();
    let replicas_len = window
        .iter()
        .map(|(_, f)| f.nodes.iter().map(|n| n.chars().count() + 1).sum::<usize>())
        .max()
        .unwrap_or(0);
    let c = columns(area.width.saturating_sub(2), t.view_len(), replicas_len);
    let (up, _) = s.node_counts();
    let base = data_style(s);
    let live = s.is_up();
    let rows: Vec<Row> = window
        .iter()
        .map(|&(pos, f)| {
            let (state, colour) = file_state(s, f, up);
            let lock = f.locked_by.clone().unwrap_or_default();
            let coloured = |text: String, col: Color| {
                if live {
                    Cell::from(text).style(Style::default().fg(col))
                } else {
                    Cell::from(text)
                }
            };
            Row::new(vec![
                Cell::from(Line::from(thousands(pos as u64 + 1)).alignment(Alignment::Right)),
                Cell::from(fit_left(f.path.as_str(), usize::from(c.name))),
                Cell::from(Line::from(human_size(f.size)).alignment(Alignment::Right)),
                Cell::from(s.zone.format(f.mtime_ns, c.time_fmt)),
                Cell::from(fit_right(&f.nodes.join(","), usize::from(c.replicas))),
                coloured(state, colour),
                coloured(fit_right(&lock, usize::from(c.lock)), Color::Yellow),
            ])
        })
        .collect();
    let title = if t.filter().is_empty() {
        format!(" Files · {} ", thousands(t.len() as u64))
    } else {
        format!(
            " Files · {} of {} match \"{}\" ",
            thousands(t.view_len() as u64),
            thousands(t.len() as u64),
            t.filter()
        )
    };
    let mut block = Block::bordered().title(title).style(base);
    if let crate::app::Conn::Down {
        since_ns,
        was_up: true,
        ..
    } = &s.conn
    {
        block = block.title(
            Line::from(format!(
                " not live since {} ",
                s.zone.format(*since_ns, "%H:%M:%S")
            ))
            .right_aligned(),
        );
    }
    let header = Row::new(vec![
        Cell::from(Line::from("#").alignment(Alignment::Right)),
        Cell::from("Name"),
        Cell::from(Line::from("Size").alignment(Alignment::Right)),
        Cell::from("Modified"),
        Cell::from("Replicas"),
        Cell::from("State"),
        Cell::from("Lock"),
    ])
    .style(if live { header_style() } else { base });
    let widths = [
        Constraint::Length(c.num),
        Constraint::Length(c.name),
        Constraint::Length(c.size),
        Constraint::Length(c.time),
        Constraint::Length(c.replicas),
        Constraint::Length(c.state),
        Constraint::Length(c.lock),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .style(base)
        .column_spacing(1)
        .row_highlight_style(if live {
            selected_style()
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        })
        .highlight_symbol("▶")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default();
    if t.view_len() > 0 {
        state.select(Some(t.selected_pos() - offset));
    }
    frame.render_stateful_widget(table, area, &mut state);
    if t.view_len() > height && height > 0 {
        let mut sb = ScrollbarState::new(t.view_len().saturating_sub(height)).position(offset);
        frame.render_stateful_widget(
            Scrollbar::new(ScrollbarOrientation::VerticalRight),
            area.inner(Margin::new(0, 1)),
            &mut sb,
        );
    }
    if t.view_len() == 0 {
        let msg = if !t.filter().is_empty() {
            format!(
                "No file matches \"{}\" (Esc clears the filter).",
                t.filter()
            )
        } else if let Some(e) = s
            .list_error
            .as_deref()
            .filter(|_| s.list_loaded_ns.is_none())
        {
            format!("Cannot load the file list: {e}")
        } else if s.list_loaded_ns.is_none() && s.is_up() {
            "Loading the file list…".to_string()
        } else if s.list_loaded_ns.is_none() {
            "Not connected yet: the table appears as soon as the node answers.".to_string()
        } else {
            "No files yet: files put in any node's directory appear here.".to_string()
        };
        let inner = area.inner(Margin::new(2, 2));
        frame.render_widget(
            Paragraph::new(msg)
                .style(Style::default().fg(Color::DarkGray))
                .wrap(Wrap { trim: true }),
            inner,
        );
    }
}

/// The popup asking where to fetch `path` to.
pub fn fetch_prompt(frame: &mut Frame, s: &AppState, path: &RelPath, input: &str) {
    let area = centered(frame.area(), 72, 7);
    frame.render_widget(Clear, area);
    let size = s
        .files
        .get(path.as_str())
        .map(|f| format!(" ({})", human_size(f.size)))
        .unwrap_or_default();
    let block = Block::bordered()
        .title(format!(" Fetch {}{size} ", fit_left(path.as_str(), 50)))
        .border_style(Style::default().fg(Color::Cyan));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let w = usize::from(inner.width.saturating_sub(1));
    let shown = fit_left(input, w);
    let lines = vec![
        Line::from("Destination directory:"),
        Line::from(Span::styled(
            shown.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        )),
        Line::from(""),
        Line::from(Span::styled(
            "Enter fetch · Esc cancel · Ctrl-U clear",
            Style::default().fg(Color::DarkGray),
        )),
    ];
    frame.render_widget(Paragraph::new(lines), inner);
    let x = inner.x + shown.chars().count() as u16;
    frame.set_cursor_position(Position::new(
        x.min(inner.right().saturating_sub(1)),
        inner.y + 1,
    ));
}
