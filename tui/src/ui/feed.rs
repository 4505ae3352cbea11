//! The live feed: newest first, coloured by kind, scrollable.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::AppState;

/// The colour of an event kind ([`crate::wording::event_kind_name`]).
pub fn kind_colour(kind: &str) -> Color {
    match kind {
        "added" => Color::Green,
        "changed" => Color::LightBlue,
        "deleted" => Color::Red,
        "transferred" => Color::Cyan,
        "conflict" => Color::Magenta,
        "locked" => Color::Yellow,
        "unlocked" => Color::LightYellow,
        "held" | "released" => Color::LightMagenta,
        "node_up" => Color::LightGreen,
        "node_down" => Color::LightRed,
        _ => Color::DarkGray,
    }
}

/// Draws the visible part of the feed.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let feed = &s.feed;
    let title = if feed.scroll > 0 {
        format!(" Feed · {} newer above (] to follow) ", feed.scroll)
    } else {
        " Feed · newest first ".to_string()
    };
    let block = Block::bordered().title(title).style(super::data_style(s));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let live = s.is_up();
    let lines: Vec<Line> = feed
        .lines
        .iter()
        .skip(feed.scroll)
        .take(usize::from(inner.height))
        .map(|l| {
            let colour = if live {
                kind_colour(l.kind)
            } else {
                Color::DarkGray
            };
            let mut spans = vec![Span::styled(
                s.zone.format(l.time_ns, "%H:%M:%S "),
                Style::default().fg(Color::DarkGray),
            )];
            if !l.node.is_empty() {
                spans.push(Span::styled(
                    format!("{} ", l.node),
                    Style::default().fg(colour).add_modifier(Modifier::BOLD),
                ));
            }
            spans.push(Span::styled(l.text.clone(), Style::default().fg(colour)));
            Line::from(spans)
        })
        .collect();
    if lines.is_empty() {
        frame.render_widget(
            Paragraph::new("Waiting for events: changes, transfers and locks show up here.")
                .style(Style::default().fg(Color::DarkGray)),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}
