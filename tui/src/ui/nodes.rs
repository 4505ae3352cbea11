//! The Nodes view (what `tandem nodes` shows, clock skew flagged) and the
//! popup with one node's own files.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Margin, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState};
use tandem_common::display::human_size;
use tandem_common::proto::NodeStatus;

use crate::app::{AppState, Conn, DiscoverPopup, SKEW_WARN_MS};

use super::{data_style, fit_left, header_style, selected_style, thousands};

/// Lines under the table: warnings and the hint.
fn notes(s: &AppState) -> Vec<Line<'static>> {
    let asked = match &s.conn {
        Conn::Up { name } => name.clone(),
        Conn::Down { .. } => s.node_addr.clone(),
    };
    let red = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
    let mut out: Vec<Line> = s
        .nodes
        .iter()
        .filter_map(|n| {
            let off = n.clock_offset_ms?;
            (off.abs() > SKEW_WARN_MS).then(|| {
                Line::styled(
                    format!(
                        "⚠ {}'s clock is {:.2} s {} {asked}'s: newer/older decisions on modification times can go wrong; sync the clocks (NTP).",
                        n.name,
                        off.abs() as f64 / 1000.0,
                        if off > 0 { "ahead of" } else { "behind" }
                    ),
                    red,
                )
            })
        })
        .collect();
    out.push(Line::styled(
        "Enter: list the selected node's own files · refreshed every 2 s",
        Style::default().fg(Color::DarkGray),
    ));
    out
}

fn split(main: Rect, notes: &[Line]) -> [Rect; 2] {
    // Lines once wrapped to the width (one column of margin each side).
    let w = usize::from(main.width.saturating_sub(2)).max(1);
    let lines: usize = notes.iter().map(|l| l.width().div_ceil(w).max(1)).sum();
    let h = (lines as u16).min(main.height / 2);
    Layout::vertical([Constraint::Min(0), Constraint::Length(h)]).areas(main)
}

/// Rows the selected node's charts take under the table: none on short
/// screens, where the table needs them.
fn charts_height(main: Rect) -> u16 {
    if main.height >= 16 {
        super::charts::HEIGHT
    } else {
        0
    }
}

/// Node rows on screen (for paging).
pub fn table_rows(main: Rect) -> usize {
    super::table_rows(main)
        .saturating_sub(2)
        .saturating_sub(usize::from(charts_height(main)))
}

fn rtt(us: Option<u64>) -> String {
    us.map_or_else(|| "—".into(), tandem_common::display::rtt)
}

fn clock(off: Option<i64>) -> (String, Style) {
    match off {
        None => ("—".into(), Style::default()),
        Some(ms) if ms.abs() > SKEW_WARN_MS => (
            format!("{ms:+} ms ⚠"),
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ),
        Some(ms) => (format!("{ms:+} ms"), Style::default()),
    }
}

/// Draws the node table.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    if s.nodes.is_empty() {
        let e = s.nodes_error.as_deref();
        super::missing_report(frame, area, s, "Nodes", "the node list", e);
        return;
    }
    let notes = notes(s);
    let [table_area, charts_area, notes_area] = {
        let [rest, notes_area] = split(area, &notes);
        let [t, c] =
            Layout::vertical([Constraint::Min(0), Constraint::Length(charts_height(area))])
                .areas(rest);
        [t, c, notes_area]
    };
    if let Some(n) = s.nodes.get(s.nodes_sel)
        && charts_area.height > 0
    {
        super::charts::render_node(frame, charts_area, n);
    }
    let base = data_style(s);
    let live = s.is_up();
    let wide = area.width >= 110;
    let height = super::table_rows(table_area);
    let offset = crate::app::visible_offset(0, s.nodes_sel, s.nodes.len(), height);
    let row = |n: &NodeStatus| {
        let (clk, clk_style) = clock(n.clock_offset_ms);
        let (state, state_style) = if n.up {
            ("up", Style::default().fg(Color::Green))
        } else {
            (
                "down",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            )
        };
        let right = |t: String| Cell::from(Line::from(t).alignment(Alignment::Right));
        let mut cells = vec![Cell::from(n.name.clone())];
        if wide {
            cells.push(Cell::from(n.addr.clone()));
        }
        cells.push(Cell::from(state).style(if live { state_style } else { base }));
        cells.push(right(rtt(n.rtt_us)));
        cells.push(right(thousands(n.files)));
        cells.push(right(human_size(n.bytes)));
        cells.push(right(format!("{:.1}%", n.cpu_percent)));
        if wide {
            cells.push(right(human_size(n.rss)));
        }
        cells.push(right(tandem_common::display::uptime(n.uptime_s)));
        cells.push(Cell::from(clk).style(if live { clk_style } else { base }));
        Row::new(cells)
    };
    let rows: Vec<Row> = s.nodes.iter().skip(offset).take(height).map(row).collect();
    let mut head = vec!["Name"];
    if wide {
        head.push("Address");
    }
    head.extend(["State", "RTT", "Files", "Bytes", "CPU"]);
    if wide {
        head.push("Memory");
    }
    head.extend(["Uptime", "Clock"]);
    // Names and addresses as long as they are (a far node's address says
    // it is reached through others), within reason.
    let longest = |f: fn(&NodeStatus) -> &str, min: usize, max: usize| {
        s.nodes
            .iter()
            .map(|n| super::text::width(f(n)))
            .max()
            .unwrap_or(0)
            .clamp(min, max) as u16
    };
    let mut widths = vec![Constraint::Length(longest(|n| &n.name, 8, 24))];
    if wide {
        widths.push(Constraint::Length(longest(|n| &n.addr, 21, 44)));
    }
    widths.extend([
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(6),
    ]);
    if wide {
        widths.push(Constraint::Length(10));
    }
    widths.extend([Constraint::Length(7), Constraint::Length(10)]);
    let (up, down) = s.node_counts();
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(header_style()))
        .block(
            Block::bordered()
                .title(format!(" Nodes · {up} up · {down} down "))
                .style(base),
        )
        .style(base)
        .row_highlight_style(selected_style())
        .highlight_symbol("▶")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(Some(s.nodes_sel - offset));
    frame.render_stateful_widget(table, table_area, &mut state);
    frame.render_widget(
        Paragraph::new(notes).wrap(ratatui::widgets::Wrap { trim: true }),
        notes_area.inner(Margin::new(1, 0)),
    );
}

/// The popup's rectangle in a screen of `area`.
fn popup_area(area: Rect) -> Rect {
    let w = area.width.saturating_sub(4).min(110);
    let h = area.height.saturating_sub(4);
    super::centered(area, w, h)
}

/// Rows of files the popup shows in a screen of `area` (for paging).
pub fn discover_rows(area: Rect) -> usize {
    super::table_rows(popup_area(area))
}

/// Draws the popup with one node's own files.
pub fn discover(frame: &mut Frame, s: &AppState, p: &DiscoverPopup) {
    let area = popup_area(frame.area());
    frame.render_widget(Clear, area);
    let block = |title: String| {
        Block::bordered()
            .title(title)
            .title(Line::from(" Esc closes ").right_aligned())
            .border_style(Style::default().fg(Color::Cyan))
    };
    let files = match &p.files {
        None => {
            frame.render_widget(
                Paragraph::new(format!("Asking {} for its files…", p.node))
                    .block(block(format!(" Files on {} ", p.node))),
                area,
            );
            return;
        }
        Some(Err(e)) => {
            frame.render_widget(
                Paragraph::new(Span::styled(
                    format!("Cannot list the files of {}: {e}", p.node),
                    Style::default().fg(Color::Red),
                ))
                .block(block(format!(" Files on {} ", p.node))),
                area,
            );
            return;
        }
        Some(Ok(files)) => files,
    };
    let height = super::table_rows(area);
    let wide = area.width >= 100;
    let time_fmt = if wide {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%m-%d %H:%M"
    };
    let time_w: u16 = if wide { 19 } else { 11 };
    let name_w = area.width.saturating_sub(2 + 11 + time_w + 2).max(8);
    let rows: Vec<Row> = files
        .in_order(p.scroll, height)
        .into_iter()
        .map(|f| {
            Row::new(vec![
                Cell::from(fit_left(f.path.as_str(), usize::from(name_w))),
                Cell::from(Line::from(human_size(f.size)).alignment(Alignment::Right)),
                Cell::from(s.zone.format(f.mtime_ns, time_fmt)),
            ])
        })
        .collect();
    let header = Row::new(vec![
        Cell::from("Name"),
        Cell::from(Line::from("Size").alignment(Alignment::Right)),
        Cell::from("Modified"),
    ])
    .style(header_style());
    let title = if files.len() > height {
        format!(
            " Files on {} · {}–{} of {} ",
            p.node,
            p.scroll + 1,
            (p.scroll + height).min(files.len()),
            thousands(files.len() as u64)
        )
    } else {
        format!(" Files on {} · {} ", p.node, thousands(files.len() as u64))
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_w),
            Constraint::Length(11),
            Constraint::Length(time_w),
        ],
    )
    .header(header)
    .block(block(title));
    frame.render_widget(table, area);
    if files.is_empty() {
        frame.render_widget(
            Paragraph::new(format!("{} has no files of its own.", p.node))
                .style(Style::default().fg(Color::DarkGray)),
            area.inner(Margin::new(2, 2)),
        );
    }
}
