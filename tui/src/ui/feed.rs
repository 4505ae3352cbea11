//! The live feed: newest first, coloured by kind, scrollable.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::app::{AppState, FeedLine};

use super::text::wrap;

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

/// Cells of the time in front of each line (`12:00:00 `); wrapped rows
/// are indented by as much, so the times stand out in a column.
const TIME_W: usize = 9;

/// One feed line as screen rows of `width` cells: long lines wrap, so
/// every line can be read whole.
fn rows(s: &AppState, l: &FeedLine, colour: Color, width: usize) -> Vec<Line<'static>> {
    let grey = Style::default().fg(Color::DarkGray);
    let plain = Style::default().fg(colour);
    let bold = plain.add_modifier(Modifier::BOLD);
    // Too narrow for an indent: wrap under the time.
    let indent = if width >= TIME_W + 16 { TIME_W } else { 0 };
    let text = if l.node.is_empty() {
        l.text.clone()
    } else {
        format!("{} {}", l.node, l.text)
    };
    let wrapped = wrap(&text, width.saturating_sub(TIME_W), width - indent);
    let mut node_left = l.node.len();
    wrapped
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let mut spans = vec![if i == 0 {
                Span::styled(s.zone.format(l.time_ns, "%H:%M:%S "), grey)
            } else {
                Span::raw(" ".repeat(indent))
            }];
            // The node's name (maybe cut across rows) in bold.
            let mut cut = node_left.min(row.len());
            while !row.is_char_boundary(cut) {
                cut -= 1;
            }
            node_left -= cut;
            if cut > 0 {
                spans.push(Span::styled(row[..cut].to_string(), bold));
            }
            spans.push(Span::styled(row[cut..].to_string(), plain));
            Line::from(spans)
        })
        .collect()
}

/// Draws the visible part of the feed.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let feed = &s.feed;
    let kind = feed.only.map_or("all", |g| g.label());
    let clients = if feed.show_clients {
        ""
    } else {
        " · clients hidden"
    };
    let place = if feed.scroll > 0 {
        format!("{} newer above", feed.scroll)
    } else {
        "newest first".to_string()
    };
    let mut block = Block::bordered()
        .title(format!(" Feed · {kind}{clients} · {place} "))
        .style(super::data_style(s));
    if feed.focused {
        // The moving keys scroll the feed now: say so where the eye is.
        block = block
            .border_style(Style::default().fg(Color::Cyan))
            .title_bottom(Line::from(" End: live · Esc: back to the table ").right_aligned());
    } else if feed.scroll > 0 {
        block = block.title_bottom(Line::from(" ] newer · [ older ").right_aligned());
    }
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let live = s.is_up();
    let height = usize::from(inner.height);
    let width = usize::from(inner.width).max(1);
    let mut lines: Vec<Line> = Vec::new();
    for l in feed.shown().skip(feed.scroll) {
        if lines.len() >= height {
            break;
        }
        let colour = if live {
            kind_colour(l.kind)
        } else {
            Color::DarkGray
        };
        lines.extend(rows(s, l, colour, width));
    }
    lines.truncate(height);
    if lines.is_empty() {
        let empty = match feed.only {
            None => "Waiting for events: changes, transfers and locks show up here.".to_string(),
            Some(g) => format!("No {} events yet (e shows other kinds).", g.label()),
        };
        frame.render_widget(
            Paragraph::new(empty).style(Style::default().fg(Color::DarkGray)),
            inner,
        );
    } else {
        frame.render_widget(Paragraph::new(lines), inner);
    }
}
