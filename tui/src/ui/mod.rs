//! Drawing: a pure function of the [`AppState`] onto a ratatui frame.
//!
//! One module per part of the screen. Only the rows that fit on screen are
//! turned into widgets, so a frame costs the same with ten files or
//! 100,000.

pub mod cache;
pub mod charts;
pub mod conflicts;
pub mod detail;
pub mod feed;
pub mod files;
pub mod help;
pub mod nodes;
pub mod status;
pub mod text;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};

use crate::app::{AppState, Mode, View};

/// From this width on, the feed goes beside the table instead of below:
/// the table then still has every column at its natural width and about
/// 50 cells of Name, and the feed about 60 cells (narrower, most of its
/// lines would take two rows). Below it the feed is a strip under the
/// table, as wide as the screen.
pub const WIDE: u16 = 170;

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Connection, nodes, totals.
    pub header: Rect,
    /// Tabs, sort and filter.
    pub tabs: Rect,
    /// The current view (the file table on Files).
    pub main: Rect,
    /// The feed (Files view only).
    pub feed: Option<Rect>,
    /// Status line, progress, or the text being typed.
    pub status: Rect,
    /// Keys of the current view.
    pub footer: Rect,
}

/// Splits the screen for `view`. Pure, so the update function uses it too
/// (page size, mouse hits).
pub fn layout(area: Rect, view: View) -> Areas {
    let [header, tabs, body, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let (main, feed) = match view {
        View::Files if area.width >= WIDE => {
            let feed_w = (u32::from(area.width) * 35 / 100) as u16;
            let [m, f] =
                Layout::horizontal([Constraint::Min(0), Constraint::Length(feed_w)]).areas(body);
            (m, Some(f))
        }
        View::Files if body.height >= 12 => {
            let feed_h = (body.height / 3).max(5);
            let [m, f] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(feed_h)]).areas(body);
            (m, Some(f))
        }
        _ => (body, None),
    };
    Areas {
        header,
        tabs,
        main,
        feed,
        status,
        footer,
    }
}

/// Data rows that fit in a bordered table with one header row.
pub fn table_rows(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(3))
}

/// Draws the whole screen.
pub fn render(frame: &mut Frame, s: &AppState) {
    let a = layout(frame.area(), s.view);
    status::header(frame, a.header, s);
    status::tabs(frame, a.tabs, s);
    match s.view {
        View::Files => {
            files::render(frame, a.main, s);
            if let Some(f) = a.feed {
                feed::render(frame, f, s);
            }
        }
        View::Cache => cache::render(frame, a.main, s),
        View::Nodes => nodes::render(frame, a.main, s),
        View::Conflicts => conflicts::render(frame, a.main, s),
    }
    status::status_line(frame, a.status, s);
    status::footer(frame, a.footer, s);
    match &s.mode {
        Mode::Help => help::render(frame, frame.area(), s.help_scroll),
        Mode::FetchPrompt { what, input } => files::fetch_prompt(frame, s, what, input),
        Mode::Discover(p) => nodes::discover(frame, s, p),
        Mode::Confirm(c) => conflicts::confirm(frame, c),
        Mode::Detail(d) => detail::render(frame, s, d),
        Mode::Normal | Mode::Filter | Mode::Command(_) | Mode::Overwrite(_) => {}
    }
}

/// The box a report's view shows until the report is there: why it is
/// missing (`error`), loading, or not connected. `what` names the report
/// ("the node list").
pub(crate) fn missing_report(
    frame: &mut Frame,
    area: Rect,
    s: &AppState,
    title: &str,
    what: &str,
    error: Option<&str>,
) {
    let (text, colour) = match error {
        Some(e) => (
            format!(
                "{} is not available: {e}.\nAsked again every 2 s.",
                capitalized(what)
            ),
            Color::Red,
        ),
        None if s.is_up() => (format!("Loading {what}…"), Color::DarkGray),
        None => ("Not connected.".to_string(), Color::DarkGray),
    };
    frame.render_widget(
        ratatui::widgets::Paragraph::new(text)
            .style(Style::default().fg(colour))
            .block(ratatui::widgets::Block::bordered().title(format!(" {title} "))),
        area,
    );
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Base style of data that may be out of date (the node is away).
pub(crate) fn data_style(s: &AppState) -> Style {
    if s.is_up() {
        Style::default()
    } else {
        Style::default().fg(Color::DarkGray)
    }
}

/// The selected row.
pub(crate) fn selected_style() -> Style {
    Style::default()
        .bg(Color::Blue)
        .fg(Color::White)
        .add_modifier(Modifier::BOLD)
}

/// Column headers.
pub(crate) fn header_style() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keeps the end of `s` (the file name matters most) within `w` cells.
pub fn fit_left(s: &str, w: usize) -> String {
    text::fit_left(s, w)
}

/// Keeps the start of `s` within `w` cells.
pub fn fit_right(s: &str, w: usize) -> String {
    text::fit_right(s, w)
}

/// A rectangle of at most `w`×`h` centered in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    area.centered(
        Constraint::Length(w.min(area.width)),
        Constraint::Length(h.min(area.height)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn feed_goes_beside_on_wide_screens_and_below_on_narrow_ones() {
        let wide = layout(Rect::new(0, 0, 200, 50), View::Files);
        let f = wide.feed.unwrap();
        assert_eq!(f.y, wide.main.y);
        assert!(f.x >= wide.main.right());
        let narrow = layout(Rect::new(0, 0, 80, 24), View::Files);
        let f = narrow.feed.unwrap();
        assert_eq!(f.x, narrow.main.x);
        assert!(f.y >= narrow.main.bottom());
        assert!(table_rows(narrow.main) >= 8, "{narrow:?}");
        assert!(layout(Rect::new(0, 0, 80, 24), View::Cache).feed.is_none());
        // At 120 columns beside would leave the table too narrow.
        let middle = layout(Rect::new(0, 0, 120, 36), View::Files);
        assert!(middle.feed.unwrap().y >= middle.main.bottom());
        assert_eq!(middle.main.width, 120);
    }

    #[test]
    fn names_keep_their_room_at_every_size_and_columns_make_way() {
        use files::{Column, NAME_MIN, Wants, columns};
        let wants = Wants {
            replicas: 10,
            lock: 10,
            name: 60,
        };
        for (w, h) in [
            (80, 24),
            (119, 36),
            (120, 36),
            (169, 48),
            (170, 48),
            (200, 50),
        ] {
            let a = layout(Rect::new(0, 0, w, h), View::Files);
            // Up to 99,999 rows: a five-digit # column.
            let c = columns(a.main.width - 2, 99_999, wants);
            let name = c.list.iter().find(|(c, _)| *c == Column::Name).unwrap().1;
            assert!(name >= NAME_MIN, "{w}x{h}: {c:?}");
            let used: u16 = c.list.iter().map(|(_, w)| w + 1).sum();
            assert!(used <= a.main.width - 2, "{w}x{h} overflows: {c:?}");
            let shown: Vec<Column> = c.list.iter().map(|(c, _)| *c).collect();
            assert!(shown.contains(&Column::State), "{w}x{h}: {c:?}");
            if w >= 120 {
                assert_eq!(shown.len(), 7, "{w}x{h} keeps every column: {c:?}");
            }
        }
        let narrow = columns(78, 30, wants);
        let shown: Vec<Column> = narrow.list.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            shown,
            [
                Column::Num,
                Column::Name,
                Column::Size,
                Column::State,
                Column::Lock
            ],
            "Replicas, then Modified make way first"
        );
        // Short names need less room: only as much is made as they need.
        let short = columns(78, 30, Wants { name: 20, ..wants });
        assert_eq!(short.list.len(), 7, "{short:?}");
        let short = columns(78, 30, Wants { name: 25, ..wants });
        assert_eq!(short.list.len(), 6, "{short:?}");
    }
}
