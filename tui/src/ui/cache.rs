//! The Cache view: what `tandem cache` shows, refreshed every 2 s.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Margin, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{
    Block, Cell, HighlightSpacing, LineGauge, Paragraph, Row, Table, TableState,
};
use tandem_common::display::human_size;

use crate::app::{AppState, visible_offset};

use super::{data_style, fit_left, header_style, selected_style, thousands};

const SUMMARY_H: u16 = 5;

/// Summary, hit-rate chart (not on short screens), entries.
fn split(main: Rect) -> [Rect; 3] {
    let chart = if main.height >= 18 {
        super::charts::HEIGHT
    } else {
        0
    };
    Layout::vertical([
        Constraint::Length(SUMMARY_H),
        Constraint::Length(chart),
        Constraint::Min(0),
    ])
    .areas(main)
}

/// Entry rows on screen (for paging).
pub fn table_rows(main: Rect) -> usize {
    super::table_rows(split(main)[2])
}

/// Draws the cache report, or why there is none.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let Some(c) = &s.cache else {
        let e = s.cache_error.as_deref();
        super::missing_report(frame, area, s, "Cache", "the cache report", e);
        return;
    };
    let base = data_style(s);
    let [top, chart, bottom] = split(area);
    // The node's samples come with the node list (kept fresh in every view).
    if let Some(n) = s.nodes.iter().find(|n| n.name == c.node)
        && chart.height > 0
    {
        super::charts::render_hit_rate(frame, chart, n);
    }
    let block = Block::bordered()
        .title(format!(" Cache of {} · policy {} ", c.node, c.policy))
        .style(base);
    let inner = block.inner(top);
    frame.render_widget(block, top);
    let [l1, l2, l3] = Layout::vertical([Constraint::Length(1); 3]).areas(inner);
    let ratio = if c.capacity == 0 {
        0.0
    } else {
        (c.used as f64 / c.capacity as f64).clamp(0.0, 1.0)
    };
    frame.render_widget(
        Paragraph::new(format!(
            "{} entries · used {} of {} ({:.1}%)",
            thousands(c.entries.len() as u64),
            human_size(c.used),
            human_size(c.capacity),
            ratio * 100.0
        )),
        l1,
    );
    frame.render_widget(
        LineGauge::default()
            .ratio(ratio)
            .label("used ")
            .filled_style(Style::default().fg(if ratio > 0.9 {
                Color::Red
            } else {
                Color::Green
            }))
            .unfilled_style(Style::default().fg(Color::DarkGray)),
        l2,
    );
    let asked = c.hits + c.misses;
    let rate = if asked == 0 {
        "no requests yet".to_string()
    } else {
        format!("hit rate {:.1}%", c.hits as f64 * 100.0 / asked as f64)
    };
    frame.render_widget(
        Paragraph::new(format!(
            "hits {} · misses {} · {rate}",
            thousands(c.hits),
            thousands(c.misses)
        )),
        l3,
    );

    let height = super::table_rows(bottom);
    let offset = visible_offset(0, s.cache_sel, c.entries.len(), height);
    let wide = bottom.width >= 100;
    let time_fmt = if wide {
        "%Y-%m-%d %H:%M:%S"
    } else {
        "%H:%M:%S"
    };
    let time_w = if wide { 19 } else { 8 };
    let name_w = bottom
        .width
        .saturating_sub(2 + 1 + 11 + 8 + time_w + 3)
        .max(8);
    let rows: Vec<Row> = c
        .entries
        .iter()
        .skip(offset)
        .take(height)
        .map(|e| {
            Row::new(vec![
                Cell::from(fit_left(e.path.as_str(), usize::from(name_w))),
                Cell::from(Line::from(human_size(e.size)).alignment(Alignment::Right)),
                Cell::from(Line::from(thousands(e.hits)).alignment(Alignment::Right)),
                Cell::from(s.zone.format(e.last_access_ns, time_fmt)),
            ])
        })
        .collect();
    let header = Row::new(vec![
        Cell::from("Path"),
        Cell::from(Line::from("Size").alignment(Alignment::Right)),
        Cell::from(Line::from("Hits").alignment(Alignment::Right)),
        Cell::from("Accessed"),
    ])
    .style(header_style());
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_w),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(time_w),
        ],
    )
    .header(header)
    .block(Block::bordered().title(" Cached files ").style(base))
    .style(base)
    .row_highlight_style(selected_style())
    .highlight_symbol("▶")
    .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default();
    if !c.entries.is_empty() {
        state.select(Some(s.cache_sel - offset));
    }
    frame.render_stateful_widget(table, bottom, &mut state);
    if c.entries.is_empty() {
        frame.render_widget(
            Paragraph::new("The cache is empty.").style(Style::default().fg(Color::DarkGray)),
            bottom.inner(Margin::new(2, 2)),
        );
    }
}
