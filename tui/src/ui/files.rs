//! The merged file table and the fetch prompt.

use crate::app::Wanted;
use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Margin, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, HighlightSpacing, Paragraph, Row, Scrollbar, ScrollbarOrientation,
    ScrollbarState, Table, TableState, Wrap,
};
use tandem_common::display::human_size;
use tandem_common::proto::ListedFile;

use crate::app::{AppState, RowState, SortKey, visible_offset};

use super::text::{fit_path, width};
use super::{centered, data_style, fit_left, fit_right, header_style, selected_style, thousands};

/// A file's state in words, and its colour: conflict, held, syncing k/n
/// (k of n nodes have the newest version), stale k/n, missing k/n, in sync.
pub fn file_state(s: &AppState, f: &ListedFile, up: usize) -> (String, Color) {
    match RowState::of(f, s.files.has_conflict(&f.path), up) {
        RowState::Conflict => ("conflict".into(), Color::Magenta),
        RowState::Held(n) => (format!("held {n}"), Color::Yellow),
        RowState::Syncing { ok, n } => (format!("syncing {ok}/{n}"), Color::Cyan),
        RowState::Stale { ok, n } => (format!("stale {ok}/{n}"), Color::LightRed),
        RowState::Missing { ok, n } => (format!("missing {ok}/{n}"), Color::DarkGray),
        RowState::InSync => ("in sync".into(), Color::Green),
    }
}

/// The Name column keeps at least this many cells (or the widest name,
/// if narrower): less important columns are dropped first.
pub const NAME_MIN: u16 = 40;
/// Other columns grow only once Name has this many cells (or all it needs).
const NAME_WANT: u16 = 48;

/// A column of the file table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// Row number (what `:lock N` takes).
    Num,
    /// The path.
    Name,
    /// Size.
    Size,
    /// Modification time.
    Modified,
    /// Nodes holding the newest version.
    Replicas,
    /// Sync state.
    State,
    /// Lock owner.
    Lock,
}

impl Column {
    /// The order a click on its header asks for (`#` and Replicas: none).
    pub fn sort_key(self) -> Option<SortKey> {
        match self {
            Column::Name => Some(SortKey::Name),
            Column::Size => Some(SortKey::Size),
            Column::Modified => Some(SortKey::Modified),
            Column::State => Some(SortKey::State),
            Column::Lock => Some(SortKey::Lock),
            Column::Num | Column::Replicas => None,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Column::Num => "#",
            Column::Name => "Name",
            Column::Size => "Size",
            Column::Modified => "Modified",
            Column::Replicas => "Replicas",
            Column::State => "State",
            Column::Lock => "Lock",
        }
    }
}

/// The columns shown at a width, left to right, with their widths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// (column, cells), in order.
    pub list: Vec<(Column, u16)>,
    /// How Modified is written at its width.
    time_fmt: &'static str,
}

/// What the rows on screen would like: cells for the replicas and the lock
/// owner, and the widest name of the whole table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wants {
    /// Cells of the longest replica list.
    pub replicas: usize,
    /// Cells of the longest lock owner.
    pub lock: usize,
    /// Cells of the widest name.
    pub name: usize,
}

/// Chooses columns for a table `inner_width` cells wide: the Name column
/// keeps [`NAME_MIN`] cells (or all the widest name needs) by dropping
/// Replicas (State sums them up), then Modified, Size and Lock; spare
/// room then widens Replicas, Lock and Modified.
pub fn columns(inner_width: u16, rows: usize, wants: Wants) -> Columns {
    use Column::*;
    let num = (thousands(rows as u64).len() as u16).max(1);
    let mut list = vec![
        (Num, num),
        (Name, 0),
        (Size, 11),
        (Modified, 11),
        (Replicas, 8),
        (State, 11),
        (Lock, 8),
    ];
    // The selection mark, then one space between columns.
    let name_room = |list: &[(Column, u16)]| {
        let others: u16 = list.iter().map(|(_, w)| w + 1).sum();
        inner_width.saturating_sub(others)
    };
    let widest = u16::try_from(wants.name).unwrap_or(u16::MAX).max(4);
    for drop in [Replicas, Modified, Size, Lock] {
        if name_room(&list) >= widest.min(NAME_MIN) {
            break;
        }
        list.retain(|(c, _)| *c != drop);
    }
    let spare = |list: &[(Column, u16)]| name_room(list).saturating_sub(widest.min(NAME_WANT));
    let mut time_fmt = "%m-%d %H:%M";
    let grow_to = |want: usize, max: u16| (want.min(usize::from(max)) as u16).max(8) - 8;
    let wish = [
        (Replicas, grow_to(wants.replicas, 24)),
        (Lock, grow_to(wants.lock, 16)),
        (Modified, 8),
    ];
    for (col, w) in wish {
        let grow = spare(&list).min(w);
        if let Some(c) = list.iter_mut().find(|(c, _)| *c == col) {
            // The long time format, or none.
            if col == Modified && grow < w {
                continue;
            }
            c.1 += grow;
            if col == Modified {
                time_fmt = "%Y-%m-%d %H:%M:%S";
            }
        }
    }
    let name = name_room(&list).max(8);
    list[1].1 = name;
    Columns { list, time_fmt }
}

/// The columns of the file table as drawn in `area` (the Files view's
/// main area) for the rows on screen; the mouse uses it to find headers.
pub fn table_columns(area: Rect, s: &AppState) -> Columns {
    let t = &s.files;
    let height = super::table_rows(area);
    let offset = visible_offset(t.offset(), t.selected_pos(), t.view_len(), height);
    let mut wants = Wants {
        name: t.widest_name(),
        ..Wants::default()
    };
    for (_, f) in t.window(offset, height) {
        let replicas = f.nodes.iter().map(|n| width(n) + 1).sum::<usize>();
        wants.replicas = wants.replicas.max(replicas.saturating_sub(1));
        wants.lock = wants.lock.max(f.locked_by.as_deref().map_or(0, width));
    }
    columns(area.width.saturating_sub(2), t.view_len(), wants)
}

/// The column whose header is at column `x` of the table drawn in `area`
/// (after the border and the selection mark; one space between columns).
pub fn header_at(area: Rect, s: &AppState, x: u16) -> Option<Column> {
    let mut left = area.x + 2;
    for (col, w) in table_columns(area, s).list {
        if (left..left + w).contains(&x) {
            return Some(col);
        }
        left += w + 1;
    }
    None
}

/// Draws the file table: only the rows on screen become widgets.
pub fn render(frame: &mut Frame, area: Rect, s: &AppState) {
    let t = &s.files;
    let height = super::table_rows(area);
    let offset = visible_offset(t.offset(), t.selected_pos(), t.view_len(), height);
    let window: Vec<(usize, ListedFile)> = t.window(offset, height).collect();
    let c = table_columns(area, s);
    let (up, _) = s.node_counts();
    let base = data_style(s);
    let live = s.is_up();
    let rows: Vec<Row> = window
        .iter()
        .map(|(pos, f)| {
            let pos = *pos;
            let coloured = |text: String, col: Color| {
                if live {
                    Cell::from(text).style(Style::default().fg(col))
                } else {
                    Cell::from(text)
                }
            };
            let cells = c.list.iter().map(|&(col, w)| {
                let w = usize::from(w);
                match col {
                    Column::Num => Cell::from(
                        Line::from(thousands(pos as u64 + 1)).alignment(Alignment::Right),
                    ),
                    Column::Name => match &f.link {
                        // As `ls -l` shows a link.
                        Some(t) => Cell::from(fit_path(&format!("{} -> {t}", f.path), w)),
                        None => Cell::from(fit_path(f.path.as_str(), w)),
                    },
                    Column::Size if f.link.is_some() => {
                        Cell::from(Line::from("link").alignment(Alignment::Right))
                    }
                    Column::Size => {
                        Cell::from(Line::from(human_size(f.size)).alignment(Alignment::Right))
                    }
                    Column::Modified => Cell::from(s.zone.format(f.mtime_ns, c.time_fmt)),
                    Column::Replicas => Cell::from(fit_right(&f.nodes.join(","), w)),
                    Column::State => {
                        let (state, colour) = file_state(s, f, up);
                        coloured(state, colour)
                    }
                    Column::Lock => coloured(
                        fit_right(f.locked_by.as_deref().unwrap_or_default(), w),
                        Color::Yellow,
                    ),
                }
            });
            Row::new(cells)
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
    let header = Row::new(c.list.iter().map(|&(col, _)| {
        // The sorted column says so, and which way.
        let title = match col.sort_key() {
            Some(k) if k == t.sort() => format!("{} {}", col.title(), k.arrow(t.reversed())),
            _ => col.title().to_string(),
        };
        match col {
            Column::Num | Column::Size => Cell::from(Line::from(title).alignment(Alignment::Right)),
            _ => Cell::from(title),
        }
    }))
    .style(if live { header_style() } else { base });
    let widths: Vec<Constraint> = c.list.iter().map(|&(_, w)| Constraint::Length(w)).collect();
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

/// The popup asking where to fetch `what` to.
pub fn fetch_prompt(frame: &mut Frame, s: &AppState, what: &Wanted, input: &str) {
    let area = centered(frame.area(), 72, 7);
    frame.render_widget(Clear, area);
    let (name, size) = match what {
        Wanted::File { path, .. } => (
            path.as_str().to_string(),
            s.files.get(path.as_str()).map(|f| f.size),
        ),
        Wanted::Copy { node, id } => (
            format!("copy {} on {node}", id.file_name()),
            s.conflicts
                .iter()
                .flat_map(|(copies, _)| copies)
                .find(|c| c.node == *node && c.id == id.as_str())
                .map(|c| c.size),
        ),
    };
    let size = size
        .map(|n| format!(" ({})", human_size(n)))
        .unwrap_or_default();
    let block = Block::bordered()
        .title(format!(" Fetch {}{size} ", fit_left(&name, 50)))
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
