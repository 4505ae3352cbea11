//! Small charts of a node's last minutes (CPU, memory, traffic, cache hit
//! rate) from the samples each node keeps ([`NodeSample`]), and the sync
//! progress line: pictures where people would rather look than read.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Sparkline};
use tandem_common::display::{eta, human_size, rate};
use tandem_common::proto::{NodeSample, NodeStatus};

/// Rows the node charts take (borders included).
pub const HEIGHT: u16 = 5;

/// One chart: a title with the latest value and the range, over bars.
struct Series {
    /// With the peak, and without (for narrow columns).
    titles: (String, String),
    values: Vec<u64>,
    /// The value a full bar stands for (at least the largest value).
    max: u64,
    colour: Color,
}

fn series(
    samples: &[NodeSample],
    name: &str,
    value: impl Fn(&NodeSample) -> u64,
    show: impl Fn(u64) -> String,
    floor: u64,
    colour: Color,
) -> Series {
    let values: Vec<u64> = samples.iter().map(&value).collect();
    let last = values.last().copied().unwrap_or(0);
    let peak = values.iter().copied().max().unwrap_or(0);
    Series {
        titles: (
            format!(" {name} {} (peak {}) ", show(last), show(peak)),
            format!(" {name} {} ", show(last)),
        ),
        values,
        max: peak.max(floor),
        colour,
    }
}

/// The latest `width` samples (the chart shows one bar per sample).
fn tail(samples: &[NodeSample], width: u16) -> &[NodeSample] {
    let w = usize::from(width.saturating_sub(2));
    &samples[samples.len().saturating_sub(w)..]
}

fn percent(tenths: u64) -> String {
    format!("{:.1}%", tenths as f64 / 10.0)
}

/// Draws CPU, memory, sending and receiving of `n` side by side over the
/// last minutes (one bar per sample, newest on the right).
pub fn render_node(frame: &mut Frame, area: Rect, n: &NodeStatus) {
    if n.history.is_empty() {
        let why = if n.up {
            "no samples yet (one every 2 s)"
        } else {
            "down: no figures"
        };
        frame.render_widget(
            Block::bordered()
                .title(format!(" {}: {why} ", n.name))
                .style(Style::default().fg(Color::DarkGray)),
            area,
        );
        return;
    }
    let cols = Layout::horizontal([Constraint::Ratio(1, 4); 4]).split(area);
    let h = |i: usize| tail(&n.history, cols[i].width);
    let all = [
        series(
            h(0),
            "CPU",
            |s| (s.cpu_percent.max(0.0) * 10.0) as u64,
            percent,
            1000,
            Color::Yellow,
        ),
        series(h(1), "mem", |s| s.rss, human_size, 1, Color::Magenta),
        series(h(2), "↑", |s| s.sent_per_s, rate, 1024, Color::Cyan),
        series(h(3), "↓", |s| s.received_per_s, rate, 1024, Color::Green),
    ];
    for (s, col) in all.into_iter().zip(cols.iter()) {
        let fits = s.titles.0.chars().count() + 2 <= usize::from(col.width);
        let title = if fits { s.titles.0 } else { s.titles.1 };
        let line = Sparkline::default()
            .block(Block::bordered().title(title))
            .data(&s.values)
            .max(s.max)
            .style(Style::default().fg(s.colour));
        frame.render_widget(line, *col);
    }
}

/// The cache hit rate per sample of `n` (percent; samples without any
/// lookup are left out), with a title saying the latest and the average.
pub fn render_hit_rate(frame: &mut Frame, area: Rect, n: &NodeStatus) {
    let samples = tail(&n.history, area.width);
    let rates: Vec<u64> = samples
        .iter()
        .filter_map(|s| {
            let lookups = u64::from(s.cache_hits) + u64::from(s.cache_misses);
            (u64::from(s.cache_hits) * 100).checked_div(lookups)
        })
        .collect();
    let (hits, lookups) = samples.iter().fold((0u64, 0u64), |(h, l), s| {
        (
            h + u64::from(s.cache_hits),
            l + u64::from(s.cache_hits) + u64::from(s.cache_misses),
        )
    });
    let title = match (hits * 100).checked_div(lookups) {
        None => format!(" hit rate on {}: no lookups in the last minutes ", n.name),
        Some(pct) => format!(
            " hit rate on {}: {pct}% of {lookups} lookups in the last {} ",
            n.name,
            span(samples)
        ),
    };
    frame.render_widget(
        Sparkline::default()
            .block(Block::bordered().title(title))
            .data(&rates)
            .max(100)
            .style(Style::default().fg(Color::Green)),
        area,
    );
}

/// How long the samples cover, in words.
fn span(samples: &[NodeSample]) -> String {
    let secs = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.at_s.saturating_sub(a.at_s).max(0),
        _ => 0,
    };
    if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// What each node still has to apply, for the header while syncing:
/// `⟳ B 120 files, 1.2 GiB left, 95 MiB/s, ~13 s`, or without the words
/// and the rate when not `full` (`⟳ B 120 files 1.2 GiB ~13 s`). `None`
/// when every node is in sync.
pub fn sync_progress(nodes: &[NodeStatus], full: bool) -> Option<String> {
    let parts: Vec<String> = nodes
        .iter()
        .filter(|n| n.up && n.pending_files > 0)
        .map(|n| {
            let files = format!(
                "{} file{}",
                n.pending_files,
                if n.pending_files == 1 { "" } else { "s" }
            );
            let mut s = format!("{} {files}", n.name);
            if n.pending_bytes > 0 {
                let left = human_size(n.pending_bytes);
                s.push_str(&if full {
                    format!(", {left} left")
                } else {
                    format!(" {left}")
                });
                // The last few samples: one slow one does not swing it.
                let recent = &n.history[n.history.len().saturating_sub(3)..];
                let speed = recent
                    .iter()
                    .fold(0u64, |a, x| a.saturating_add(x.received_per_s))
                    / (recent.len().max(1) as u64);
                if let Some(secs) = n.pending_bytes.checked_div(speed) {
                    let eta = eta(secs);
                    s.push_str(&if full {
                        format!(", {}, ~{eta}", rate(speed))
                    } else {
                        format!(" ~{eta}")
                    });
                }
            }
            s
        })
        .collect();
    (!parts.is_empty()).then(|| {
        if full {
            format!("⟳ syncing: {}", parts.join(" · "))
        } else {
            format!("⟳ {}", parts.join(" · "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, pending: (u64, u64), received: &[u64]) -> NodeStatus {
        NodeStatus {
            id: None,
            name: name.into(),
            addr: String::new(),
            up: true,
            rtt_us: None,
            files: 0,
            bytes: 0,
            cpu_percent: 0.0,
            rss: 0,
            uptime_s: 0,
            clock_offset_ms: None,
            warnings: Vec::new(),
            history: received
                .iter()
                .enumerate()
                .map(|(i, r)| NodeSample {
                    at_s: i as i64 * 2,
                    cpu_percent: 0.0,
                    rss: 0,
                    sent_per_s: 0,
                    received_per_s: *r,
                    cache_hits: 0,
                    cache_misses: 0,
                })
                .collect(),
            pending_files: pending.0,
            pending_bytes: pending.1,
        }
    }

    #[test]
    fn progress_names_each_syncing_node_with_rate_and_eta() {
        assert_eq!(sync_progress(&[node("A", (0, 0), &[5])], true), None);
        let nodes = [
            node("A", (0, 0), &[]),
            node("B", (120, 100 << 20), &[0, 10 << 20, 10 << 20, 10 << 20]),
            node("C", (1, 0), &[]),
        ];
        assert_eq!(
            sync_progress(&nodes, true).unwrap(),
            "⟳ syncing: B 120 files, 100 MiB left, 10 MiB/s, ~10 s · C 1 file"
        );
        assert_eq!(
            sync_progress(&nodes, false).unwrap(),
            "⟳ B 120 files 100 MiB ~10 s · C 1 file"
        );
    }
}
