//! The `?` overlay, generated from the key table in [`crate::keys`].

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::keys;

type Section = (&'static str, Vec<(&'static str, &'static str)>);

fn section_lines(sec: &Section) -> Vec<Line<'static>> {
    let (title, rows) = sec;
    let w = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = vec![Line::styled(
        *title,
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    )];
    for (k, h) in rows {
        out.push(Line::from(vec![
            Span::styled(
                format!("  {k:<w$}  "),
                Style::default()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(*h),
        ]));
    }
    out
}

/// Draws the help over the whole screen `area`, scrolled by `scroll` lines
/// when it is taller than the screen.
pub fn render(frame: &mut Frame, area: Rect, scroll: u16) {
    let sections = keys::help_sections();
    let heights: Vec<usize> = sections.iter().map(|(_, r)| r.len() + 1).collect();
    let total: usize = heights.iter().sum::<usize>() + sections.len() - 1;
    let popup_w = area.width.saturating_sub(2).min(100);
    let mut block = Block::bordered().border_style(Style::default().fg(Color::Cyan));
    // Two columns, split at the section boundary nearest the middle.
    let mut split = sections.len();
    let mut acc = 0;
    for (i, h) in heights.iter().enumerate() {
        if acc + h > total.div_ceil(2) && i > 0 {
            split = i;
            break;
        }
        acc += h + 1;
    }
    let col_h = |secs: &[usize]| secs.iter().sum::<usize>() + secs.len().saturating_sub(1);
    let rows = col_h(&heights[..split]).max(col_h(&heights[split..])) as u16;
    let popup = super::centered(area, popup_w, rows + 2);
    let fits = rows + 2 <= area.height;
    let scroll = if fits {
        0
    } else {
        scroll.min(rows + 2 - area.height)
    };
    block = block.title(if fits {
        " Help · any key closes "
    } else {
        " Help · ↓↑ scroll · any other key closes "
    });
    if fits || popup_w >= 100 {
        block =
            block.title(Line::from(" Tandem: one folder, the same on every node ").right_aligned());
    }
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let column = |secs: &[Section]| {
        let mut lines = Vec::new();
        for (i, sec) in secs.iter().enumerate() {
            if i > 0 {
                lines.push(Line::from(""));
            }
            lines.extend(section_lines(sec));
        }
        lines
    };
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .spacing(1)
            .areas(inner.inner(ratatui::layout::Margin::new(1, 0)));
    frame.render_widget(
        Paragraph::new(column(&sections[..split])).scroll((scroll, 0)),
        left,
    );
    frame.render_widget(
        Paragraph::new(column(&sections[split..])).scroll((scroll, 0)),
        right,
    );
}
