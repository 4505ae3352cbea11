//! The Conflicts view (what `tandem conflicts` shows: every node's kept
//! losing versions, newest first) and the question asked before an action
//! that changes other people's work.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Margin, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap,
};
use tandem_common::display::human_size;

use crate::app::{AppState, Confirm, visible_offset};

use super::{centered, data_style, fit_left, header_style, selected_style};

/// Copy rows on screen (for paging; the notes under the table take one
/// line or more).
pub fn table_rows(main: Rect) -> usize {
    super::table_rows(main).saturating_sub(1)
}

/// Draws the list, or why there is none.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let Some((copies, unanswered)) = &s.conflicts else {
        let e = s.conflicts_error.as_deref();
        super::missing_report(frame, area, s, "Conflicts", "the conflict list", e);
        return;
    };
    let mut notes = Vec::new();
    if copies.is_empty() {
        notes.push(Line::styled(
            "No conflict copies: every node's losing versions are restored or deleted.",
            Style::default().fg(Color::Green),
        ));
    }
    for u in unanswered {
        notes.push(Line::styled(
            format!("not included: {u}"),
            Style::default().fg(Color::Red),
        ));
    }
    notes.push(Line::styled(
        "R restore · x delete (both ask first)",
        Style::default().fg(Color::DarkGray),
    ));
    let w = usize::from(area.width.saturating_sub(2)).max(1);
    let notes_h = notes
        .iter()
        .map(|l| l.width().div_ceil(w).max(1))
        .sum::<usize>()
        .min(usize::from(area.height / 3)) as u16;
    let [table_area, notes_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(notes_h)]).areas(area);
    let base = data_style(s);
    let wide = area.width >= 100;
    let time_fmt = if wide {
        "%Y-%m-%d %H:%M"
    } else {
        "%m-%d %H:%M"
    };
    let time_w: u16 = if wide { 16 } else { 11 };
    // ID, node, made on, size, kept; the file gets the rest.
    let fixed = 7 + 10 + 10 + 10 + time_w + 2 + 6 + 1;
    let file_w = area.width.saturating_sub(fixed).max(10);
    let height = super::table_rows(table_area);
    let offset = visible_offset(0, s.conflicts_sel, copies.len(), height);
    let rows: Vec<Row> = copies
        .iter()
        .skip(offset)
        .take(height)
        .map(|c| {
            let file = match &c.path {
                Some(p) => fit_left(p.as_str(), usize::from(file_w)),
                None => fit_left(&format!("? {}", c.id), usize::from(file_w)),
            };
            Row::new(vec![
                Cell::from(c.short_id()),
                Cell::from(c.node.clone()),
                Cell::from(if c.author.is_empty() {
                    "?".to_string()
                } else {
                    c.author.clone()
                }),
                Cell::from(Line::from(human_size(c.size)).alignment(Alignment::Right)),
                Cell::from(s.zone.format(c.kept_ns, time_fmt)),
                Cell::from(file),
            ])
        })
        .collect();
    let header = Row::new(vec![
        Cell::from("ID"),
        Cell::from("Node"),
        Cell::from("Made on"),
        Cell::from(Line::from("Size").alignment(Alignment::Right)),
        Cell::from("Kept"),
        Cell::from("File"),
    ])
    .style(header_style());
    let title = format!(
        " Conflict copies · {} kept on the nodes · newest first ",
        copies.len()
    );
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(time_w),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(Block::bordered().title(title).style(base))
    .style(base)
    .row_highlight_style(selected_style())
    .highlight_symbol("▶")
    .highlight_spacing(HighlightSpacing::Always);
    let mut state =
        TableState::default().with_selected((!copies.is_empty()).then(|| s.conflicts_sel - offset));
    frame.render_stateful_widget(table, table_area, &mut state);
    frame.render_widget(
        Paragraph::new(notes).wrap(Wrap { trim: true }),
        notes_area.inner(Margin::new(1, 0)),
    );
}

/// The question before an action, in a box over the screen.
pub fn confirm(frame: &mut Frame, c: &Confirm) {
    let width = frame.area().width.saturating_sub(4).min(76);
    let inner_w = usize::from(width.saturating_sub(2)).max(1);
    let text_lines = c
        .question
        .split('\n')
        .map(|l| Line::from(l).width().div_ceil(inner_w).max(1))
        .sum::<usize>() as u16;
    let area = centered(frame.area(), width, text_lines + 4);
    frame.render_widget(Clear, area);
    let block = Block::bordered()
        .title(" Are you sure? ")
        .border_style(Style::default().fg(Color::Yellow));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [q, _, keys] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(inner);
    frame.render_widget(
        Paragraph::new(c.question.as_str()).wrap(Wrap { trim: true }),
        q,
    );
    frame.render_widget(
        Paragraph::new(Line::styled(
            "y yes, do it · any other key: no",
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )),
        keys,
    );
}
