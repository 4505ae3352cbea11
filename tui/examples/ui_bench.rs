//! Benchmark of the terminal UI with 100,000 files (not a test):
//!
//! ```text
//! cargo run --release -p tandem-tui --example ui_bench [-- --node HOST:PORT] [--files N]
//! ```
//!
//! Reports the time to build the table state from a list, the median (and
//! p99, max) time to render a 160×48 frame while scrolling, filter and
//! sort times, and the process's resident memory. With `--node`, it also
//! times the list request over the wire from a real node ("start to a full
//! table"), taking the rows in page by page as the UI does; `--files`
//! makes that many rows here instead (100,000 by default). Targets: a
//! frame under 16 ms, RSS under 150 MB.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tandem_common::proto::{Event, EventKind, FileState, ListedFile, NodeFileState};
use tandem_common::{ContentHash, RelPath};
use tandem_tui::app::{AppState, Msg, Rows, Zone, update};
use tandem_tui::ui;

const N: usize = 100_000;
const NOW: i64 = 1_795_521_600_000_000_000;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn files(n: usize) -> impl Iterator<Item = ListedFile> {
    (0..n).map(|i| ListedFile {
        link: None,
        path: RelPath::new(format!(
            "project-{:03}/src/module_{:04}/file-{i:06}.rs",
            i % 211,
            i % 1009
        ))
        .expect("valid path"),
        size: (i as u64 * 7_919) % 10_000_019,
        mtime_ns: NOW - (i as i64 * 1_000_003) % 86_400_000_000_000,
        hash: ContentHash::of(&i.to_le_bytes()),
        nodes: vec!["alpha".into(), "beta".into()],
        locked_by: (i % 1000 == 0).then(|| "ana@laptop".to_string()),
        held: 0,
        states: vec![
            NodeFileState {
                node: "alpha".into(),
                state: FileState::InSync,
            },
            NodeFileState {
                node: "beta".into(),
                state: FileState::InSync,
            },
        ],
    })
}

fn key(code: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99), v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    tandem_tui::memory::tune_allocator();
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let node = arg("--node");
    let count: usize = match arg("--files") {
        Some(n) => n.parse()?,
        None => N,
    };
    let rss0 = rss_kib("VmRSS:");
    let mut s = AppState::new(
        "127.0.0.1:7001",
        Zone::Local,
        PathBuf::from("/tmp"),
        NOW,
        (160, 48),
    );
    s.start();
    update(
        &mut s,
        Msg::Connected {
            node_name: "alpha".into(),
            now: NOW,
        },
    );

    let list = match &node {
        Some(addr) => {
            let rt = tokio::runtime::Runtime::new()?;
            let t = Instant::now();
            let list = rt.block_on(async {
                let c = tandem_tui::client::Client::connect(addr).await?;
                let mut rows = Rows::default();
                c.list_each(|page| {
                    rows.extend(page);
                    Ok(())
                })
                .await?;
                anyhow::Ok(rows)
            })?;
            println!(
                "list from {addr}: {} files in {}",
                list.len(),
                ms(t.elapsed())
            );
            list
        }
        None => {
            let t = Instant::now();
            let rows: Rows = files(count).collect();
            println!("rows taken in: {}", ms(t.elapsed()));
            rows
        }
    };
    let n = list.len();
    let t = Instant::now();
    update(
        &mut s,
        Msg::ListLoaded {
            result: Ok(list),
            now: NOW,
        },
    );
    let build = t.elapsed();
    // What the UI does after each table load (see `ui_main`).
    let t = Instant::now();
    tandem_tui::memory::release_memory();
    let trim = t.elapsed();

    let mut term = Terminal::new(TestBackend::new(160, 48))?;
    let t = Instant::now();
    term.draw(|f| ui::render(f, &s))?;
    let first = t.elapsed();

    // Scroll: a mix of line and page moves over the whole table, plus
    // some feed events patching rows, drawing a frame after each.
    let mut frames = Vec::new();
    let mut updates = Vec::new();
    for i in 0..2_000u64 {
        let msg = match i % 10 {
            0 => key(KeyCode::PageDown),
            9 => Msg::Event(Event {
                epoch: 1,
                seq: i,
                time_ns: NOW,
                node: "beta".into(),
                kind: EventKind::Locked {
                    path: s
                        .files
                        .row((i as usize * 37) % n)
                        .expect("row")
                        .path
                        .clone(),
                    owner: "bo".into(),
                    via: "beta".into(),
                },
            }),
            _ => key(KeyCode::Down),
        };
        let t = Instant::now();
        update(&mut s, msg);
        updates.push(t.elapsed());
        let t = Instant::now();
        term.draw(|f| ui::render(f, &s))?;
        frames.push(t.elapsed());
    }
    let (f50, f99, fmax) = stats(frames);
    let (u50, u99, umax) = stats(updates);

    update(
        &mut s,
        Msg::Key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE)),
    );
    let mut keystrokes = Vec::new();
    for c in "module_0042".chars() {
        let t = Instant::now();
        update(
            &mut s,
            Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)),
        );
        keystrokes.push(t.elapsed());
    }
    let matched = s.files.view_len();
    let t = Instant::now();
    update(&mut s, key(KeyCode::Backspace));
    let widen = t.elapsed();
    let (k50, _, kmax) = stats(keystrokes);
    update(&mut s, key(KeyCode::Esc));
    let t = Instant::now();
    update(
        &mut s,
        Msg::Key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE)),
    );
    let sort = t.elapsed();
    let t = Instant::now();
    term.draw(|f| ui::render(f, &s))?;
    let after_sort = t.elapsed();

    println!("rows: {n}");
    println!("build the table state (ListLoaded): {}", ms(build));
    println!("give freed memory back (malloc_trim): {}", ms(trim));
    println!("first frame 160x48: {}", ms(first));
    println!(
        "frame while scrolling (2000 frames): median {} · p99 {} · max {}",
        ms(f50),
        ms(f99),
        ms(fmax)
    );
    println!(
        "update per key/event: median {} · p99 {} · max {}",
        ms(u50),
        ms(u99),
        ms(umax)
    );
    println!(
        "filter keystroke ({n} rows): median {} · max {} ({matched} match); backspace {}",
        ms(k50),
        ms(kmax),
        ms(widen)
    );
    println!(
        "sort by size ({n} rows): {} · next frame {}",
        ms(sort),
        ms(after_sort)
    );
    println!(
        "RSS: {:.1} MB now, peak {:.1} MB (at start {:.1} MB)",
        rss_kib("VmRSS:") as f64 / 1024.0,
        rss_kib("VmHWM:") as f64 / 1024.0,
        rss0 as f64 / 1024.0
    );
    Ok(())
}
