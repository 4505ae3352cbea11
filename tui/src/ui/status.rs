//! The header (connection, nodes, totals), the tab bar, the status line
//! (messages, fetch progress, the text being typed, questions) and the
//! footer (keys).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{LineGauge, Paragraph};
use tandem_common::display::{eta, human_size, rate};

use crate::app::{
    AppState, Conn, DetailItem, FetchProgress, Level, Mode, SKEW_WARN_MS, View, fetch_dest,
};
use crate::keys;

use super::{fit_left, thousands};

/// Whether any node's clock is off by more than [`SKEW_WARN_MS`].
pub fn clock_skew(s: &AppState) -> bool {
    s.nodes
        .iter()
        .any(|n| n.clock_offset_ms.is_some_and(|o| o.abs() > SKEW_WARN_MS))
}

/// Top line: who we talk to, the cluster's nodes, the totals.
pub fn header(frame: &mut Frame, area: Rect, s: &AppState) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut spans = vec![Span::styled(
        " Tandem ",
        Style::default()
            .bg(Color::Cyan)
            .fg(Color::Black)
            .add_modifier(Modifier::BOLD),
    )];
    match &s.conn {
        Conn::Up { name } => {
            spans.push(Span::styled(" ● ", Style::default().fg(Color::Green)));
            spans.push(Span::styled(name.clone(), bold));
            let progress = super::charts::sync_progress(&s.nodes, area.width >= 120);
            // While syncing on a narrow screen, the progress takes the
            // place of the address and the totals.
            let roomy = progress.is_none() || area.width >= 120;
            if roomy {
                spans.push(Span::raw(format!(" {}", s.node_addr)));
            }
            let (up, down) = s.node_counts();
            spans.push(Span::raw("  nodes "));
            spans.push(Span::styled(
                format!("{up} up"),
                Style::default().fg(Color::Green),
            ));
            if down > 0 {
                spans.push(Span::raw(" "));
                spans.push(Span::styled(
                    format!("{down} down"),
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            }
            if roomy {
                spans.push(Span::raw(format!(
                    "  {} files {}",
                    thousands(s.files.len() as u64),
                    human_size(s.files.total_bytes())
                )));
            }
            if let Some(p) = progress {
                spans.push(Span::styled(
                    format!("  {p}"),
                    Style::default().fg(Color::Yellow),
                ));
            }
            if clock_skew(s) {
                spans.push(Span::styled(
                    "  ⚠ clock skew (see Nodes)",
                    Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
                ));
            }
        }
        Conn::Down {
            reason,
            since_ns,
            was_up,
        } => {
            let red = Style::default().fg(Color::Red).add_modifier(Modifier::BOLD);
            let grey = Style::default().fg(Color::Gray);
            spans.push(Span::styled(" ✖ ", red));
            if *was_up {
                let who = s.last_node_name.as_deref().unwrap_or(&s.node_addr);
                spans.push(Span::styled(
                    format!(
                        "{who} is away since {}",
                        s.zone.format(*since_ns, "%H:%M:%S")
                    ),
                    red,
                ));
                spans.push(Span::styled(
                    format!(" · reconnecting every second · table not live · {reason}"),
                    grey,
                ));
            } else if reason == "connecting…" {
                spans.push(Span::raw(format!("connecting to {}…", s.node_addr)));
            } else {
                spans.push(Span::styled(format!("cannot reach {}", s.node_addr), red));
                spans.push(Span::styled(
                    format!(" · retrying every second · {reason}"),
                    grey,
                ));
            }
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Each tab with its label (` 1 Files `; the current one is drawn as
/// `[1 Files]`, as wide), in order; one space follows each.
fn tab_labels() -> impl Iterator<Item = (View, String)> {
    View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, format!(" {} {} ", i + 1, v.title())))
}

/// The tab drawn at column `x` of the tab bar `area`, if any (mouse).
pub fn tab_at(area: Rect, x: u16) -> Option<View> {
    let mut left = area.x;
    for (v, label) in tab_labels() {
        let w = label.chars().count() as u16;
        if (left..left + w).contains(&x) {
            return Some(v);
        }
        left += w + 1;
    }
    None
}

/// The tab bar, with the sort and the filter on the right.
pub fn tabs(frame: &mut Frame, area: Rect, s: &AppState) {
    let mut spans = Vec::new();
    for (v, label) in tab_labels() {
        if v == s.view {
            spans.push(Span::styled(
                format!("[{}]", label.trim()),
                Style::default()
                    .fg(Color::Black)
                    .bg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            ));
        } else {
            spans.push(Span::styled(label, Style::default().fg(Color::Gray)));
        }
        spans.push(Span::raw(" "));
    }
    let left = Line::from(spans);
    let right = match s.view {
        View::Files => {
            let mut r = format!("sort: {}", s.files.sort_label());
            if !s.files.filter().is_empty() {
                r.push_str(&format!(
                    " · filter \"{}\": {} of {}",
                    s.files.filter(),
                    thousands(s.files.view_len() as u64),
                    thousands(s.files.len() as u64)
                ));
            }
            r
        }
        View::Cache | View::Nodes | View::Conflicts => "refreshed every 2 s".to_string(),
    };
    let [l, r] = Layout::horizontal([Constraint::Length(left.width() as u16), Constraint::Min(0)])
        .areas(area);
    frame.render_widget(Paragraph::new(left), l);
    frame.render_widget(
        Paragraph::new(Line::from(format!("{right} ")).right_aligned())
            .style(Style::default().fg(Color::Gray)),
        r,
    );
}

/// The status line: the text being typed, a question, the fetch's
/// progress, or the last message.
pub fn status_line(frame: &mut Frame, area: Rect, s: &AppState) {
    let input = |frame: &mut Frame, prompt: &str, text: &str, hint: &str| {
        let line = Line::from(vec![
            Span::styled(
                prompt.to_string(),
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::raw(text.to_string()),
            Span::styled(format!("   {hint}"), Style::default().fg(Color::DarkGray)),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        let x = area.x + (prompt.chars().count() + text.chars().count()) as u16;
        frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    };
    match &s.mode {
        Mode::Filter => {
            return input(
                frame,
                "filter /",
                s.files.filter(),
                "Enter keep · Esc clear",
            );
        }
        Mode::Command(text) => {
            return input(frame, ":", text, "Enter run · Esc cancel · try: lock 3");
        }
        Mode::Overwrite(q) => {
            // The folder gives way first: the name and the question matter.
            let folder = q
                .existing
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let full = q.text();
            let spare = full.chars().count().saturating_sub(usize::from(area.width));
            let shown = fit_left(&folder, folder.chars().count().saturating_sub(spare));
            let text = full.replacen(&folder, &shown, 1);
            let style = Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD);
            frame.render_widget(Paragraph::new(Line::styled(text, style)), area);
            return;
        }
        Mode::FetchPrompt { what, input } => {
            // Where the file will land, as typed so far: the folders kept.
            let folder = if input.trim().is_empty() {
                s.fetch_folder()
            } else {
                input.trim().into()
            };
            let path = what.rel();
            let to = fetch_dest(path, &folder, false).join(path.file_name());
            let text = format!("saves as {} (missing folders are made)", to.display());
            frame.render_widget(
                Paragraph::new(Line::styled(
                    fit_left(&text, usize::from(area.width)),
                    Style::default().fg(Color::Gray),
                )),
                area,
            );
            return;
        }
        _ => {}
    }
    if let Some(f) = &s.fetch {
        let ratio = if f.total == 0 {
            0.0
        } else {
            (f.done as f64 / f.total as f64).clamp(0.0, 1.0)
        };
        let label = gauge_label(f, ratio, area.width);
        let gauge = LineGauge::default()
            .ratio(ratio)
            .label(label)
            .filled_style(Style::default().fg(Color::Cyan))
            .unfilled_style(Style::default().fg(Color::DarkGray));
        frame.render_widget(gauge, area);
        return;
    }
    if let Some(st) = &s.status {
        let (mark, style) = match st.level {
            Level::Info => ("", Style::default()),
            Level::Ok => ("✔ ", Style::default().fg(Color::Green)),
            Level::Error => (
                "✖ ",
                Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
        };
        frame.render_widget(
            Paragraph::new(Line::styled(format!("{mark}{}", st.text), style)),
            area,
        );
    }
}

/// The fetch gauge's words: the file, the node, how far, the rate and the
/// time left (in the words of the CLI's progress bar). Below 100 columns
/// the verb, the node and the bytes done give way, so the bar still shows.
fn gauge_label(f: &FetchProgress, ratio: f64, width: u16) -> String {
    let name = f.what.rel().file_name();
    if f.cancelling {
        return format!("cancelling the fetch of {name}… ");
    }
    let pct = format!("{:.0}%", ratio * 100.0);
    let speed = match (f.per_sec(), f.eta_secs()) {
        (Some(r), Some(left)) => format!(" · {} · ~{} left", rate(r), eta(left)),
        (Some(r), None) => format!(" · {}", rate(r)),
        _ => String::new(),
    };
    if width >= 100 {
        let from = f
            .from
            .as_deref()
            .map(|n| format!(" from {n}"))
            .unwrap_or_default();
        format!(
            "fetching {name}{from}: {pct} ({} of {}){speed} ",
            human_size(f.done),
            human_size(f.total)
        )
    } else {
        format!("{name} {pct} of {}{speed} ", human_size(f.total))
    }
}

/// The keys that work now, from the key table.
pub fn footer(frame: &mut Frame, area: Rect, s: &AppState) {
    let key = Style::default().fg(Color::Black).bg(Color::Gray);
    let word = Style::default().fg(Color::Gray);
    let fixed: Vec<(&str, &str)> = match &s.mode {
        Mode::Normal => Vec::new(),
        Mode::Filter => vec![("Enter", "keep"), ("Esc", "clear"), ("↑↓", "move")],
        Mode::Command(_) => vec![("Enter", "run"), ("Esc", "cancel")],
        Mode::FetchPrompt { .. } => {
            vec![("Enter", "fetch"), ("Esc", "cancel"), ("Ctrl-U", "clear")]
        }
        Mode::Overwrite(_) => vec![("y", "replace it"), ("n Esc", "keep it")],
        Mode::Help => vec![("↓↑", "scroll"), ("any other key", "close help")],
        Mode::Discover(_) => vec![("↑↓ PgUp PgDn", "scroll"), ("Esc", "close")],
        Mode::Confirm(_) => vec![("y", "yes"), ("any other key", "no")],
        // What the keys do to the selected line.
        Mode::Detail(d) => match d.selected() {
            Some(DetailItem::Copy(_)) => vec![
                ("↑↓", "choose"),
                ("F R x", "fetch, restore, delete copy"),
                ("Esc", "close"),
            ],
            Some(DetailItem::Version(_)) => vec![
                ("↑↓", "choose"),
                ("V", "restore this version"),
                ("Esc", "close"),
            ],
            None => vec![
                ("f l u", "fetch, lock, unlock"),
                ("r", "load again"),
                ("Esc", "close"),
            ],
        },
    };
    let items = if s.mode == Mode::Normal && s.view == View::Files && s.feed.focused {
        keys::feed_footer()
    } else if s.mode == Mode::Normal {
        let mut items = keys::footer(s.view);
        // First, so it is never the one left out.
        if s.fetch.is_some() {
            items.insert(0, ("Esc", "cancel fetch"));
        }
        items
    } else {
        fixed
    };
    // Always keep the last two (help and quit) visible; fill from the left.
    let width = |(k, w): &(&str, &str)| k.chars().count() + w.chars().count() + 4;
    let tail = if s.mode == Mode::Normal {
        2.min(items.len())
    } else {
        0
    };
    let (head, last) = items.split_at(items.len() - tail);
    let mut budget = usize::from(area.width).saturating_sub(last.iter().map(width).sum());
    let mut shown = Vec::new();
    for it in head {
        if width(it) > budget {
            break;
        }
        budget -= width(it);
        shown.push(*it);
    }
    shown.extend_from_slice(last);
    let mut spans = Vec::new();
    for (k, w) in shown {
        spans.push(Span::styled(format!(" {k} "), key));
        spans.push(Span::styled(format!("{w} "), word));
        spans.push(Span::raw(" "));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
