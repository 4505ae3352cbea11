//! One-shot subcommands: plain text for people, `--json` for scripts.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use tandem_common::display::{human_size, local_time, rfc3339};
use tandem_common::proto::{
    CacheReport, ClientInfo, Event, HeldChange, HeldFate, HeldKind, ListedFile, LockInfo,
    NodeStatus,
};

use crate::ui::text::pad;
use crate::wording::{describe_event, event_kind_name, event_path, kind_word};

/// One row of `list --json`.
#[derive(Serialize)]
struct JsonRow<'a> {
    index: usize,
    path: &'a str,
    size: u64,
    mtime: String,
    hash: String,
    nodes: &'a [String],
    locked_by: Option<&'a str>,
    held: u32,
    states: BTreeMap<&'a str, &'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a str>,
}

/// `list --json` written as its rows arrive: the same text as one
/// pretty-printed array, without holding the table (a million rows took
/// about a gigabyte in the client when gathered first).
pub struct JsonList<W: Write> {
    out: W,
    rows: usize,
}

impl<W: Write> JsonList<W> {
    /// Starts the array.
    pub fn new(out: W) -> Self {
        JsonList { out, rows: 0 }
    }

    /// Writes the next rows.
    pub fn rows(&mut self, files: &[ListedFile]) -> std::io::Result<()> {
        for f in files {
            let row = JsonRow {
                index: self.rows + 1,
                path: f.path.as_str(),
                size: f.size,
                mtime: rfc3339(f.mtime_ns),
                hash: f.hash.to_hex(),
                nodes: &f.nodes,
                locked_by: f.locked_by.as_deref(),
                held: f.held,
                states: f
                    .states
                    .iter()
                    .map(|s| (s.node.as_str(), s.state.as_str()))
                    .collect(),
                link: f.link.as_deref(),
            };
            // An element of a pretty array is the element pretty-printed,
            // each line indented once (JSON strings hold no raw newline).
            let text = serde_json::to_string_pretty(&row)?;
            self.out
                .write_all(if self.rows == 0 { b"[\n" } else { b",\n" })?;
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    self.out.write_all(b"\n")?;
                }
                write!(self.out, "  {line}")?;
            }
            self.rows += 1;
        }
        Ok(())
    }

    /// Ends the array.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out
            .write_all(if self.rows == 0 { b"[]\n" } else { b"\n]\n" })?;
        self.out.flush()
    }
}

/// Rows `list` gathers before it writes the table for people: its columns
/// are as wide as the widest of these (a table this long or shorter comes
/// out as if printed whole; a longer one numbers its rows in 7 columns);
/// later rows are written as they arrive, a name wider than its column
/// pushing the rest of its own line right (as `ls -l` of a growing folder
/// would), so a million rows are never held.
pub const TEXT_LIST_SIZING_ROWS: usize = 4096;

/// `list` for people written as its rows arrive (see
/// [`TEXT_LIST_SIZING_ROWS`]).
pub struct TextList<W: Write> {
    out: W,
    /// Rows gathered until the columns are sized.
    first: Vec<ListedFile>,
    /// (index width, name width) once the header is written.
    widths: Option<(usize, usize)>,
    rows: usize,
}

impl<W: Write> TextList<W> {
    /// Starts the table.
    pub fn new(out: W) -> Self {
        TextList {
            out,
            first: Vec::new(),
            widths: None,
            rows: 0,
        }
    }

    /// Writes (or, until the columns are sized, gathers) the next rows.
    pub fn rows(&mut self, files: Vec<ListedFile>) -> std::io::Result<()> {
        if self.widths.is_some() {
            return files.iter().try_for_each(|f| self.row(f));
        }
        self.first.extend(files);
        // More than the sizing rows: more may follow (a table of exactly
        // that many is sized at the end, as a whole).
        if self.first.len() > TEXT_LIST_SIZING_ROWS {
            let first = std::mem::take(&mut self.first);
            self.size_and_write(&first, false)?;
        }
        Ok(())
    }

    /// Ends the table.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.widths.is_none() {
            let first = std::mem::take(&mut self.first);
            self.size_and_write(&first, true)?;
        }
        if self.rows == 0 {
            writeln!(self.out, "(no files)")?;
        }
        self.out.flush()
    }

    /// Sizes the columns from `first`, writes the header and them.
    /// `complete`: these are all the rows; else more may follow, and the
    /// numbers get room for up to 9,999,999 rows.
    fn size_and_write(&mut self, first: &[ListedFile], complete: bool) -> std::io::Result<()> {
        let width = first
            .iter()
            .map(|f| crate::ui::text::width(&list_name(f)))
            .max()
            .unwrap_or(4)
            .max(4);
        let rows = if complete { first.len() } else { 9_999_999 };
        let iw = rows.to_string().len().max(1);
        writeln!(
            self.out,
            "{:>iw$}  {}  {:>10}  {:<19}  {:<12}  LOCK",
            "#",
            pad("NAME", width),
            "SIZE",
            "MODIFIED",
            "NODES"
        )?;
        self.widths = Some((iw, width));
        first.iter().try_for_each(|f| self.row(f))
    }

    fn row(&mut self, f: &ListedFile) -> std::io::Result<()> {
        let (iw, width) = self.widths.unwrap_or((1, 4));
        self.rows += 1;
        let lock = match (&f.locked_by, f.held) {
            (Some(o), 0) => format!("locked by {o}"),
            (Some(o), n) => format!("locked by {o}, {n} held"),
            (None, 0) => String::new(),
            (None, n) => format!("{n} held"),
        };
        let line = format!(
            "{:>iw$}  {}  {:>10}  {:<19}  {:<12}  {}",
            self.rows,
            // `{:<width$}` pads by chars: a wide name would push its row out.
            pad(&list_name(f), width),
            if f.link.is_some() {
                "link".to_string()
            } else {
                human_size(f.size)
            },
            local_time(f.mtime_ns),
            f.nodes.join(","),
            lock
        );
        writeln!(self.out, "{}", line.trim_end())
    }
}

/// A row's name as `list` shows it: a link as `ls -l` shows it, its name,
/// an arrow, its target.
fn list_name(f: &ListedFile) -> String {
    match &f.link {
        Some(t) => format!("{} -> {t}", f.path),
        None => f.path.to_string(),
    }
}

/// Prints the file table.
pub fn print_list(files: &[ListedFile], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let mut list = JsonList::new(&mut *out);
        list.rows(files)?;
        return list.finish();
    }
    let mut list = TextList::new(&mut *out);
    list.size_and_write(files, true)?;
    list.finish()
}

/// Prints the lock table.
pub fn print_locks(locks: &[LockInfo], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = locks
            .iter()
            .map(|l| {
                serde_json::json!({
                    "path": l.path.as_str(),
                    "owner": l.owner_name,
                    "owner_id": l.owner.to_string(),
                    "since": rfc3339(l.since_ns),
                    "via": l.via,
                    "waiting": l.waiting,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    if locks.is_empty() {
        return writeln!(out, "(no locks)");
    }
    writeln!(
        out,
        "{:<30}  {:<20}  {:<36}  {:<19}  {:<10}  WAITING",
        "PATH", "OWNER", "OWNER ID", "SINCE", "VIA"
    )?;
    for l in locks {
        let waiting = if l.waiting.is_empty() {
            "-".to_string()
        } else {
            l.waiting
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{}. {w}", i + 1))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "{:<30}  {:<20}  {:<36}  {:<19}  {:<10}  {waiting}",
            l.path.as_str(),
            l.owner_name,
            l.owner,
            local_time(l.since_ns),
            l.via
        )?;
    }
    Ok(())
}

/// Prints held changes.
pub fn print_held(held: &[HeldChange], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = held
            .iter()
            .map(|h| {
                serde_json::json!({
                    "path": h.path.as_str(),
                    "node": h.node,
                    "kind": kind_word(h.kind),
                    "size": h.size,
                    "mtime": rfc3339(h.mtime_ns),
                    "since": rfc3339(h.since_ns),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    if held.is_empty() {
        return writeln!(out, "(no held changes)");
    }
    writeln!(
        out,
        "{:<30}  {:<10}  {:<6}  {:>10}  {:<19}  SINCE",
        "PATH", "NODE", "KIND", "SIZE", "MODIFIED"
    )?;
    for h in held {
        writeln!(
            out,
            "{:<30}  {:<10}  {:<6}  {:>10}  {:<19}  {}",
            h.path.as_str(),
            h.node,
            kind_word(h.kind),
            human_size(h.size),
            local_time(h.mtime_ns),
            local_time(h.since_ns)
        )?;
    }
    Ok(())
}

/// Prints a node's cache.
pub fn print_cache(r: &CacheReport, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    let ratio = if r.hits + r.misses == 0 {
        0.0
    } else {
        r.hits as f64 / (r.hits + r.misses) as f64
    };
    if json {
        let v = serde_json::json!({
            "node": r.node,
            "policy": r.policy,
            "capacity": r.capacity,
            "used": r.used,
            "hits": r.hits,
            "misses": r.misses,
            "hit_ratio": ratio,
            "entries": r.entries.iter().map(|e| serde_json::json!({
                "path": e.path.as_str(),
                "size": e.size,
                "hits": e.hits,
                "last_access": rfc3339(e.last_access_ns),
            })).collect::<Vec<_>>(),
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "cache of {} ({}): {} of {} used, {} hits, {} misses, hit ratio {:.1}%",
        r.node,
        r.policy,
        human_size(r.used),
        human_size(r.capacity),
        r.hits,
        r.misses,
        ratio * 100.0
    )?;
    if r.entries.is_empty() {
        return writeln!(out, "(empty)");
    }
    writeln!(
        out,
        "{:<40}  {:>10}  {:>6}  LAST ACCESS",
        "PATH", "SIZE", "HITS"
    )?;
    for e in &r.entries {
        writeln!(
            out,
            "{:<40}  {:>10}  {:>6}  {}",
            e.path.as_str(),
            human_size(e.size),
            e.hits,
            local_time(e.last_access_ns)
        )?;
    }
    Ok(())
}

/// Prints the cluster's nodes; flags clock skew over a second.
pub fn print_nodes(nodes: &[NodeStatus], json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "id": n.id.map(|i| i.to_string()),
                    "name": n.name,
                    "addr": n.addr,
                    "up": n.up,
                    "rtt_ms": n.rtt_us.map(|u| u as f64 / 1000.0),
                    "files": n.files,
                    "bytes": n.bytes,
                    "cpu_percent": n.cpu_percent,
                    "rss": n.rss,
                    "uptime_s": n.uptime_s,
                    "clock_offset_ms": n.clock_offset_ms,
                    "warnings": n.warnings,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{:<12}  {:<31}  {:<21}  {:<4}  {:>8}  {:>7}  {:>10}  {:>6}  {:>10}  {:>8}  CLOCK",
        "NAME", "ID", "ADDRESS", "UP", "RTT", "FILES", "BYTES", "CPU", "MEMORY", "UPTIME"
    )?;
    for n in nodes {
        let id = n.id.map_or("-".to_string(), |i| i.to_string());
        let rtt = n.rtt_us.map_or("-".into(), tandem_common::display::rtt);
        let clock = match n.clock_offset_ms {
            None => "-".to_string(),
            Some(o) if o.abs() > 1000 => format!("{o:+} ms  SKEW: newest-mtime-wins is unreliable"),
            Some(o) => format!("{o:+} ms"),
        };
        if n.up {
            writeln!(
                out,
                "{:<12}  {:<31}  {:<21}  {:<4}  {:>8}  {:>7}  {:>10}  {:>5.1}%  {:>10}  {:>8}  {}",
                n.name,
                id,
                n.addr,
                "up",
                rtt,
                n.files,
                human_size(n.bytes),
                n.cpu_percent,
                human_size(n.rss),
                tandem_common::display::uptime(n.uptime_s),
                clock
            )?;
            for w in &n.warnings {
                writeln!(out, "  ! {}: {w}", n.name)?;
            }
        } else {
            writeln!(
                out,
                "{:<12}  {:<31}  {:<21}  {:<4}",
                n.name, id, n.addr, "DOWN"
            )?;
        }
    }
    Ok(())
}

/// Prints what a node ignores: its patterns, lines that are not patterns,
/// and the ignored paths with the pattern that matched each.
pub fn print_ignored(
    r: &tandem_common::proto::IgnoredReport,
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let rule = |p: &tandem_common::proto::IgnoreRule| serde_json::json!({ "pattern": p.pattern, "source": p.source });
    if json {
        let v = serde_json::json!({
            "node": r.node,
            "patterns": r.patterns.iter().map(rule).collect::<Vec<_>>(),
            "problems": r.problems,
            "paths": r.paths.iter().map(|p| serde_json::json!({
                "path": p.path.as_str(),
                "dir": p.dir,
                "pattern": p.rule.pattern,
                "source": p.rule.source,
            })).collect::<Vec<_>>(),
            "not_listed": r.not_listed,
        });
        serde_json::to_writer_pretty(&mut *out, &v)?;
        return writeln!(out);
    }
    if r.patterns.is_empty() {
        writeln!(
            out,
            "{} ignores nothing (no patterns in .tandemignore or --ignore)",
            r.node
        )?;
    } else {
        writeln!(out, "patterns of {}:", r.node)?;
        for p in &r.patterns {
            writeln!(out, "  {:<30}  {}", p.pattern, p.source)?;
        }
    }
    for p in &r.problems {
        writeln!(out, "not a pattern: {p}")?;
    }
    if r.patterns.is_empty() {
        return Ok(());
    }
    if r.paths.is_empty() {
        return writeln!(out, "(nothing on {}'s disk matches them)", r.node);
    }
    let width = r
        .paths
        .iter()
        .map(|p| crate::ui::text::width(p.path.as_str()) + usize::from(p.dir))
        .max()
        .unwrap_or(0)
        .clamp(4, 60);
    writeln!(out, "{}  PATTERN", crate::ui::text::pad("PATH", width))?;
    for p in &r.paths {
        let shown = if p.dir {
            format!("{}/", p.path)
        } else {
            p.path.to_string()
        };
        writeln!(
            out,
            "{}  {} ({})",
            crate::ui::text::pad(&shown, width),
            p.rule.pattern,
            p.rule.source
        )?;
    }
    if r.not_listed > 0 {
        writeln!(out, "… and {} more not listed", r.not_listed)?;
    }
    Ok(())
}

/// Prints the node's live clients.
pub fn print_clients(
    clients: &[ClientInfo],
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if json {
        let rows: Vec<serde_json::Value> = clients
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id.map(|i| tandem_common::identity::format_id(&i)),
                    "name": c.name,
                    "addr": c.addr,
                    "since": rfc3339(c.since_ns),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    writeln!(
        out,
        "{:<24}  {:<31}  {:<21}  SINCE",
        "NAME", "ID", "ADDRESS"
    )?;
    for c in clients {
        let id = c.id.map_or("(unknown)".to_string(), |i| {
            tandem_common::identity::format_id(&i)
        });
        writeln!(
            out,
            "{:<24}  {:<31}  {:<21}  {}",
            c.name,
            id,
            c.addr,
            local_time(c.since_ns)
        )?;
    }
    Ok(())
}

/// The cluster's client identities: id, role, name, who set it and when.
pub fn print_identities(
    ids: &[tandem_common::proto::IdentityRecord],
    json: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let id_of =
        |i: &tandem_common::proto::IdentityRecord| tandem_common::identity::format_id(&i.id);
    let role_of = |i: &tandem_common::proto::IdentityRecord| i.role.map_or("none", |r| r.as_str());
    if json {
        let rows: Vec<serde_json::Value> = ids
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": id_of(i),
                    "name": i.name,
                    "role": i.role.map(|r| r.as_str()),
                    "by": i.by,
                    "changed": rfc3339(i.changed_ns),
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        return writeln!(out);
    }
    writeln!(out, "{:<31}  {:<5}  {:<24}  SET BY", "ID", "ROLE", "NAME")?;
    for i in ids {
        writeln!(
            out,
            "{:<31}  {:<5}  {:<24}  {} ({})",
            id_of(i),
            role_of(i),
            i.name,
            i.by,
            local_time(i.changed_ns)
        )?;
    }
    Ok(())
}

/// Prints one feed event: a line of text, or one JSON object per line.
pub fn print_event(e: &Event, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    if json {
        let mut v = serde_json::json!({
            "seq": e.seq,
            "epoch": e.epoch,
            "time": rfc3339(e.time_ns),
            "node": e.node,
            "kind": event_kind_name(&e.kind),
            "text": describe_event(&e.kind),
        });
        if let Some(p) = event_path(&e.kind) {
            v["path"] = serde_json::Value::String(p.to_string());
        }
        serde_json::to_writer(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        let t = chrono::DateTime::<chrono::Local>::from(
            chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(e.time_ns),
        );
        writeln!(
            out,
            "{} [{}] {}",
            t.format("%H:%M:%S%.3f"),
            e.node,
            describe_event(&e.kind)
        )?;
    }
    out.flush()
}

/// One line per released change, for `unlock`.
pub fn describe_released(held: &[HeldChange], fates: &[HeldFate]) -> Vec<String> {
    held.iter()
        .enumerate()
        .map(|(i, h)| {
            let what = match h.kind {
                HeldKind::Modify => format!(
                    "change made on {} ({}, modified {})",
                    h.node,
                    human_size(h.size),
                    local_time(h.mtime_ns)
                ),
                HeldKind::Delete => format!("DELETE made on {}", h.node),
            };
            let fate = match fates.get(i) {
                Some(HeldFate::Released) => "handed back to the normal rules".to_string(),
                Some(HeldFate::KeptAsConflict { on, kept_as }) => format!(
                    "not made on top of the owner's latest version: kept as a conflict copy on {on} ({kept_as}); the owner's version stays"
                ),
                Some(HeldFate::NotReported) | None => {
                    "being reconciled (its node has not reported yet; see `tandem feed`)".to_string()
                }
            };
            format!("  released: {what}: {fate}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_common::{ContentHash, RelPath};

    fn file(p: &str, size: u64) -> ListedFile {
        ListedFile {
            link: None,
            path: RelPath::new(p).unwrap(),
            size,
            mtime_ns: 1_700_000_000_000_000_000,
            hash: ContentHash::of(p.as_bytes()),
            nodes: vec!["a".into()],
            locked_by: None,
            held: 0,
            states: vec![],
        }
    }

    #[test]
    fn json_rows_streamed_in_pages_are_one_pretty_array() {
        let mut files: Vec<ListedFile> = (0..5).map(|i| file(&format!("f{i}"), i)).collect();
        files[1].link = Some("t\n\"x\"".into());
        files[2].locked_by = Some("ann".into());
        for n in [0, 1, 5] {
            let files = &files[..n];
            // What one array printed whole looks like.
            let rows: Vec<JsonRow> = files
                .iter()
                .enumerate()
                .map(|(i, f)| JsonRow {
                    index: i + 1,
                    path: f.path.as_str(),
                    size: f.size,
                    mtime: rfc3339(f.mtime_ns),
                    hash: f.hash.to_hex(),
                    nodes: &f.nodes,
                    locked_by: f.locked_by.as_deref(),
                    held: f.held,
                    states: BTreeMap::new(),
                    link: f.link.as_deref(),
                })
                .collect();
            let whole = serde_json::to_string_pretty(&rows).unwrap();
            // The same, in pages of two.
            let mut out = Vec::new();
            let mut list = JsonList::new(&mut out);
            for page in files.chunks(2) {
                list.rows(page).unwrap();
            }
            list.finish().unwrap();
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text, format!("{whole}\n"), "{n} rows");
            let parsed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed.len(), n);
        }
    }

    #[test]
    fn text_rows_streamed_in_pages_size_columns_from_the_first_rows() {
        // Up to the sizing rows (exactly that many included), pages make
        // the same table as one call.
        let n = TEXT_LIST_SIZING_ROWS;
        let mut files: Vec<ListedFile> = (0..n).map(|i| file(&format!("f{i:05}"), 1)).collect();
        files[3].link = Some("target".into());
        for n in [0, 1, 5, TEXT_LIST_SIZING_ROWS] {
            let mut whole = Vec::new();
            print_list(&files[..n], false, &mut whole).unwrap();
            for page in [2, 1024, TEXT_LIST_SIZING_ROWS] {
                let mut paged = Vec::new();
                let mut list = TextList::new(&mut paged);
                for rows in files[..n].chunks(page) {
                    list.rows(rows.to_vec()).unwrap();
                }
                list.finish().unwrap();
                assert!(paged == whole, "{n} rows in pages of {page}");
            }
        }
        // Beyond them, rows are written as they come, with the columns of
        // the first rows: a longer name later keeps its whole text (pushing
        // its own line right), the numbers have room for a long table, and
        // nothing is held back until the end.
        let n = TEXT_LIST_SIZING_ROWS + 2000;
        let mut files: Vec<ListedFile> = (0..n).map(|i| file(&format!("f{i:05}"), 1)).collect();
        let long = "a-much-longer-name-than-the-first-rows-had";
        files[n - 1] = file(long, 1);
        let mut out = Vec::new();
        let mut list = TextList::new(&mut out);
        for page in files.chunks(1000) {
            list.rows(page.to_vec()).unwrap();
        }
        let lines_before_finish = String::from_utf8_lossy(list.out).lines().count();
        list.finish().unwrap();
        assert_eq!(
            lines_before_finish,
            n + 1,
            "every row written before the end"
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), n + 1);
        assert!(lines[0].starts_with("      #  NAME    "), "{}", lines[0]);
        assert!(lines[1].starts_with("      1  f00000  "), "{}", lines[1]);
        assert!(
            lines[n].starts_with(&format!("   {n}  {long}  ")),
            "{}",
            lines[n]
        );
        // Sized from the first rows: the long name did not widen the column.
        assert_eq!(lines[1].len() + long.len() - "f00000".len(), lines[n].len());
    }

    #[test]
    fn wide_names_line_up_by_display_width() {
        let files = vec![file("ünïcödé-名前.txt", 10), file("plain.txt", 20)];
        let mut out = Vec::new();
        print_list(&files, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        // The SIZE column ends in the same screen column on every line.
        let end_of = |line: &str, field: &str| {
            let at = line.find(field).unwrap() + field.len();
            crate::ui::text::width(&line[..at])
        };
        let lines: Vec<&str> = text.lines().collect();
        let header = end_of(lines[0], "SIZE");
        assert_eq!(end_of(lines[1], "10 B"), header, "{text}");
        assert_eq!(end_of(lines[2], "20 B"), header, "{text}");
    }

    #[test]
    fn text_and_json() {
        let files = vec![file("a.txt", 1536), file("dir/b", 3)];
        let mut out = Vec::new();
        print_list(&files, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("NAME") && lines[0].contains("SIZE"));
        assert!(
            lines[1].starts_with("1  a.txt") && lines[1].contains("1.50 KiB"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("2  dir/b") && lines[2].contains("3 B"),
            "{text}"
        );

        let mut out = Vec::new();
        print_list(&files, true, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[1]["index"], 2);
        assert_eq!(v[1]["path"], "dir/b");
        assert_eq!(v[0]["size"], 1536);
        assert_eq!(v[0]["mtime"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(v[0]["nodes"][0], "a");
        assert!(v[0]["locked_by"].is_null());
        assert_eq!(v[0]["hash"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn nodes_print_rtt_and_uptime_like_the_ui() {
        let node = |rtt_us, uptime_s| NodeStatus {
            id: None,
            name: "B".into(),
            addr: "127.0.0.1:7002".into(),
            up: true,
            rtt_us,
            files: 1,
            bytes: 2,
            cpu_percent: 0.5,
            rss: 1 << 20,
            uptime_s,
            clock_offset_ms: Some(0),
            warnings: vec![],
            history: vec![],
            pending_files: 0,
            pending_bytes: 0,
        };
        let mut out = Vec::new();
        print_nodes(
            &[node(Some(412), 7_380), node(Some(1_260), 45)],
            false,
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].contains("  412 µs  "), "{text}");
        assert!(lines[1].contains("  2h03m  +0 ms"), "{text}");
        assert!(lines[2].contains("  1.3 ms  "), "{text}");
        assert!(lines[2].contains("  45s  +0 ms"), "{text}");
        // The same words as the UI's Nodes view.
        assert_eq!(tandem_common::display::rtt(412), "412 µs");
        assert_eq!(tandem_common::display::uptime(7_380), "2h03m");
    }
}
