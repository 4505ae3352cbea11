//! Drawing: a pure function of the [`AppState`] onto a ratatui frame.
//!
//! One module per part of the screen. Only the rows that fit on screen are
//! turned into widgets, so a frame costs the same with ten files or
//! 100,000.

pub mod cache;
pub mod charts;
pub mod feed;
pub mod files;
pub mod help;
pub mod nodes;
pub mod status;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};

use crate::app::{AppState, Mode, View};

/// From this width on, the feed goes beside the table instead of below.
pub const WIDE: u16 = 120;

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
            let feed_w = (u32::from(area.width) * 38 / 100) as u16;
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
    }
    status::status_line(frame, a.status, s);
    status::footer(frame, a.footer, s);
    match &s.mode {
        Mode::Help => help::render(frame, frame.area()),
        Mode::FetchPrompt { path, input } => files::fetch_prompt(frame, s, path, input),
        Mode::Discover(p) => nodes::discover(frame, s, p),
        Mode::Normal | Mode::Filter | Mode::Command(_) | Mode::Overwrite(_) => {}
    }
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

/// Keeps the end of `s` (the file name matters most) within `w` columns.
pub fn fit_left(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let tail: String = s.chars().skip(n - (w - 1)).collect();
    format!("…{tail}")
}

/// Keeps the start of `s` within `w` columns.
pub fn fit_right(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let head: String = s.chars().take(w - 1).collect();
    format!("{head}…")
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
        assert_eq!(fit_left("abcdef", 4), "…def");
        assert_eq!(fit_left("abc", 4), "abc");
        assert_eq!(fit_right("abcdef", 4), "abc…");
    }

    #[test]
    fn feed_goes_beside_on_wide_screens_and_below_on_narrow_ones() {
        let wide = layout(Rect::new(0, 0, 160, 48), View::Files);
        let f = wide.feed.unwrap();
        assert_eq!(f.y, wide.main.y);
        assert!(f.x >= wide.main.right());
        let narrow = layout(Rect::new(0, 0, 80, 24), View::Files);
        let f = narrow.feed.unwrap();
        assert_eq!(f.x, narrow.main.x);
        assert!(f.y >= narrow.main.bottom());
        assert!(table_rows(narrow.main) >= 8, "{narrow:?}");
        assert!(layout(Rect::new(0, 0, 80, 24), View::Cache).feed.is_none());
    }
}
