//! Rendering tests: every view at 80×24 and 160×48 with ratatui's
//! TestBackend, snapshotted with insta. Data and "now" are fixed and times
//! are shown in UTC, so the snapshots are the same on every machine.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tandem_common::proto::{
    CacheEntry, CacheReport, ConflictCopy, Event, EventKind, FileState, HeldChange, HeldKind,
    KeptVersion, ListedFile, LockInfo, NodeFileState, NodeSample, NodeStatus,
};
use tandem_common::{ContentHash, RelPath};
use tandem_tui::app::{AppState, FetchError, FileDetail, Mode, Msg, Zone, update};
use tandem_tui::ui;

/// 2026-11-24 12:00:00 UTC.
const NOW: i64 = 1_795_521_600_000_000_000;
const SEC: i64 = 1_000_000_000;
/// Every view at these sizes: the layouts' (feed below at 80 and 120
/// columns, beside at 200).
const SIZES: [(u16, u16); 3] = [(80, 24), (120, 36), (200, 50)];

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file(path: &str, size: u64, age_s: i64, states: &[(&str, FileState)]) -> ListedFile {
    ListedFile {
        link: None,
        path: p(path),
        size,
        mtime_ns: NOW - age_s * SEC,
        hash: ContentHash::of(path.as_bytes()),
        nodes: states
            .iter()
            .filter(|(_, s)| *s == FileState::InSync)
            .map(|(n, _)| n.to_string())
            .collect(),
        locked_by: None,
        held: 0,
        states: states
            .iter()
            .map(|(n, s)| NodeFileState {
                node: n.to_string(),
                state: *s,
            })
            .collect(),
    }
}

fn files() -> Vec<ListedFile> {
    use FileState::*;
    let both = [("alpha", InSync), ("beta", InSync)];
    let mut v = vec![
        file("README.md", 2_048, 86_400 * 3, &both),
        file(
            "docs/architecture/overview-of-the-sync-protocol.md",
            48_213,
            7_200,
            &both,
        ),
        file("docs/plan.md", 1_536, 600, &both),
        file(
            "music/album/01 - opening.flac",
            31_457_280,
            86_400 * 40,
            &[("alpha", InSync), ("beta", Syncing)],
        ),
        file(
            "photos/2026/beach.jpg",
            3_500_000,
            86_400 * 12,
            &[("alpha", InSync), ("beta", Stale)],
        ),
        file(
            "photos/2026/hills.jpg",
            4_100_000,
            86_400 * 12,
            &[("alpha", InSync), ("beta", Missing)],
        ),
        file("src/main.rs", 12_345, 30, &both),
        file("src/lib.rs", 999, 45, &both),
        file(
            "notes/todo.txt",
            77,
            90,
            &[("alpha", Held), ("beta", InSync)],
        ),
    ];
    v[6].locked_by = Some("ana@laptop".into());
    v[8].locked_by = Some("bo@desk".into());
    v[8].held = 2;
    for i in 0..20 {
        v.push(file(
            &format!("data/batch-{i:02}.csv"),
            1_000 * (i + 1),
            3_600 + i as i64,
            &both,
        ));
    }
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Five minutes of samples, one every 2 s, in a pattern of `seed`.
fn history(seed: u64, receiving: bool) -> Vec<NodeSample> {
    (0..150u64)
        .map(|i| {
            let wave = (i * 7 + seed * 13) % 40;
            NodeSample {
                at_s: 1_700_000_000 + i as i64 * 2,
                cpu_percent: (wave as f32) * 1.5,
                rss: (20 << 20) + wave * (64 << 10),
                sent_per_s: if i > 100 { wave << 20 } else { 0 },
                received_per_s: if receiving && i > 100 {
                    (40 - wave) << 20
                } else {
                    0
                },
                cache_hits: (wave % 5) as u32,
                cache_misses: u32::from(wave.is_multiple_of(7)),
            }
        })
        .collect()
}

fn nodes(skew: bool) -> Vec<NodeStatus> {
    vec![
        NodeStatus {
            id: None,
            name: "alpha".into(),
            addr: "127.0.0.1:7001".into(),
            up: true,
            rtt_us: Some(0),
            files: 29,
            bytes: 39_131_205,
            cpu_percent: 1.5,
            rss: 24 << 20,
            uptime_s: 7_380,
            clock_offset_ms: Some(0),
            warnings: Vec::new(),
            history: history(1, false),
            pending_files: 0,
            pending_bytes: 0,
        },
        NodeStatus {
            id: None,
            name: "beta".into(),
            addr: "127.0.0.1:7002".into(),
            up: true,
            rtt_us: Some(412),
            files: 27,
            bytes: 7_673_925,
            cpu_percent: 0.3,
            rss: 22 << 20,
            uptime_s: 7_200,
            clock_offset_ms: Some(if skew { 1_520 } else { 12 }),
            warnings: Vec::new(),
            history: history(2, true),
            pending_files: 0,
            pending_bytes: 0,
        },
        NodeStatus {
            id: None,
            name: "gamma".into(),
            addr: "10.0.0.9:7001".into(),
            up: false,
            rtt_us: None,
            files: 0,
            bytes: 0,
            cpu_percent: 0.0,
            rss: 0,
            uptime_s: 0,
            clock_offset_ms: None,
            warnings: Vec::new(),
            history: Vec::new(),
            pending_files: 0,
            pending_bytes: 0,
        },
    ]
}

fn event(seq: u64, age_s: i64, node: &str, kind: EventKind) -> Msg {
    Msg::Event(Event {
        epoch: 7,
        seq,
        time_ns: NOW - age_s * SEC,
        node: node.into(),
        kind,
    })
}

fn events() -> Vec<Msg> {
    vec![
        event(
            1,
            300,
            "beta",
            EventKind::NodeUp {
                name: "beta".into(),
            },
        ),
        event(
            2,
            240,
            "alpha",
            EventKind::ClientConnected {
                name: "ana@laptop".into(),
                addr: "127.0.0.1:50112".into(),
            },
        ),
        event(
            3,
            200,
            "beta",
            EventKind::Changed {
                path: p("docs/plan.md"),
                size: 1_536,
            },
        ),
        event(
            4,
            199,
            "alpha",
            EventKind::Transferred {
                path: p("docs/plan.md"),
                from: "beta".into(),
                to: "alpha".into(),
                size: 1_536,
                sent: 512,
                millis: 3,
            },
        ),
        event(
            5,
            120,
            "alpha",
            EventKind::Locked {
                path: p("src/main.rs"),
                owner: "ana@laptop".into(),
                via: "alpha".into(),
            },
        ),
        event(
            6,
            90,
            "beta",
            EventKind::Held {
                path: p("notes/todo.txt"),
                from: "beta".into(),
                kind: HeldKind::Modify,
            },
        ),
        event(
            7,
            60,
            "alpha",
            EventKind::Conflict {
                path: p("README.md"),
                winner: "alpha".into(),
                loser: "beta".into(),
                kept_as: "README.conflict-beta.md".into(),
            },
        ),
        event(
            8,
            30,
            "beta",
            EventKind::Deleted {
                path: p("old.txt"),
                by: "beta".into(),
            },
        ),
        event(
            9,
            10,
            "gamma",
            EventKind::NodeDown {
                name: "gamma".into(),
            },
        ),
    ]
}

/// A connected UI with the fixed table, nodes and feed.
fn state(w: u16, h: u16) -> AppState {
    let mut s = AppState::new(
        "127.0.0.1:7001",
        Zone::Utc,
        PathBuf::from("/home/ana/work"),
        NOW - 400 * SEC,
        (w, h),
    );
    s.start();
    update(
        &mut s,
        Msg::Connected {
            node_name: "alpha".into(),
            now: NOW - 400 * SEC,
        },
    );
    update(
        &mut s,
        Msg::ListLoaded {
            result: Ok(files().into()),
            now: NOW - 400 * SEC,
        },
    );
    update(&mut s, Msg::NodesLoaded(Ok(nodes(false))));
    for m in events() {
        update(&mut s, m);
    }
    update(
        &mut s,
        Msg::ListLoaded {
            result: Ok(files().into()),
            now: NOW,
        },
    );
    update(&mut s, Msg::Tick(NOW));
    s
}

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn draw(s: &AppState) -> String {
    let mut t = Terminal::new(TestBackend::new(s.size.0, s.size.1)).unwrap();
    t.draw(|f| ui::render(f, s)).unwrap();
    t.backend().to_string()
}

/// Snapshots `setup` at every size as `name_WxH`.
fn check(name: &str, setup: impl Fn(&mut AppState)) {
    for (w, h) in SIZES {
        let mut s = state(w, h);
        setup(&mut s);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), draw(&s));
    }
}

/// Short, long and wide-character names, and feed lines too long for
/// any feed.
fn long_and_wide_names(s: &mut AppState) {
    use FileState::*;
    let both = [("alpha", InSync), ("beta", InSync)];
    let mut v = vec![
        file("README.md", 2_048, 86_400 * 3, &both),
        file("notes/meeting.md", 640, 3_000, &both),
        file(
            "plan.txt",
            3_300,
            400,
            &[("alpha", InSync), ("beta", Stale)],
        ),
        file("ünïcödé-名前.txt", 12, 700, &both),
        file(
            "docs/設計/名前と長いファイル名の説明書-最終版-レビュー済み.txt",
            88_000,
            5_000,
            &both,
        ),
        file(
            "projects/2026/client-acme/deliverables/final/presentation-v3-reviewed.pptx",
            9_400_000,
            9_000,
            &[("alpha", InSync), ("beta", Syncing)],
        ),
        file(
            "a-file-name-so-long-that-no-column-on-any-screen-could-ever-hold-it-whole.txt",
            1,
            60,
            &both,
        ),
    ];
    v[2].locked_by = Some("ana@laptop".into());
    v.sort_by(|a, b| a.path.cmp(&b.path));
    update(
        s,
        Msg::ListLoaded {
            result: Ok(v.into()),
            now: NOW,
        },
    );
    update(
        s,
        event(
            20,
            5,
            "beta",
            EventKind::Conflict {
                path: p("plan.txt"),
                winner: "alpha".into(),
                loser: "beta".into(),
                kept_as: ".tandem/conflicts/plan.conflict-beta-20261124-115955.txt".into(),
            },
        ),
    );
    update(
        s,
        event(
            21,
            2,
            "alpha",
            EventKind::Transferred {
                path: p("docs/設計/名前と長いファイル名の説明書-最終版-レビュー済み.txt"),
                from: "beta".into(),
                to: "alpha".into(),
                size: 88_000,
                sent: 88_000,
                millis: 12,
            },
        ),
    );
    // Select the wide name.
    for _ in 0..5 {
        update(s, key('j'));
    }
}

#[test]
fn files_with_long_and_wide_names() {
    check("names", long_and_wide_names);
}

/// The feed showing transfers only, scrolled back one line with the keys.
#[test]
fn feed_kind_and_focus() {
    check("feed_transfers", |s| {
        long_and_wide_names(s);
        update(s, key('e'));
        update(s, key('['));
    });
}

#[test]
fn files_view() {
    check("files", |s| {
        for _ in 0..3 {
            update(s, key('j'));
        }
    });
}

fn typed(s: &mut AppState, text: &str) {
    for c in text.chars() {
        update(s, key(c));
    }
}

#[test]
fn feed_scrolled_back() {
    check("feed_scrolled", |s| {
        for i in 0..40 {
            update(
                s,
                event(
                    100 + i,
                    5,
                    "beta",
                    EventKind::Changed {
                        path: p("src/lib.rs"),
                        size: 1_000 + i,
                    },
                ),
            );
        }
        update(s, key('['));
        update(s, key('['));
    });
}

#[test]
fn filter_being_typed() {
    check("filter", |s| {
        update(s, key('/'));
        typed(s, "PHOTO");
    });
}

#[test]
fn filter_matching_nothing() {
    check("filter_empty", |s| {
        update(s, key('/'));
        typed(s, "zzz");
        update(s, code(KeyCode::Enter));
    });
}

#[test]
fn sorted_by_size() {
    check("sort_size", |s| {
        update(s, key('s'));
    });
}

#[test]
fn command_line() {
    check("command", |s| {
        update(s, key(':'));
        typed(s, "lock 3");
    });
}

#[test]
fn locked_with_status() {
    check("locked", |s| {
        update(s, key('l'));
        update(s, Msg::LockDone(Ok((p("README.md"), "ana@laptop".into()))));
    });
}

#[test]
fn command_error() {
    check("command_error", |s| {
        update(s, key(':'));
        typed(s, "lock 99");
        update(s, code(KeyCode::Enter));
    });
}

#[test]
fn fetch_prompt() {
    check("fetch_prompt", |s| {
        update(s, key('j'));
        update(s, key('f'));
    });
}

/// Fetches the selected row into the default folder: 4 MB from beta, of
/// which `done` bytes arrived in `secs` seconds.
fn fetching(s: &mut AppState, done: u64, secs: i64) {
    update(s, key('f'));
    update(s, code(KeyCode::Enter));
    update(
        s,
        Msg::FetchStarted {
            total: 4_000_000,
            from: "beta".into(),
            now: NOW,
        },
    );
    update(
        s,
        Msg::FetchProgress {
            done,
            now: NOW + secs * SEC,
        },
    );
}

/// Fetches the selected row, refused because `existing` is there.
fn refused(s: &mut AppState, existing: &str) {
    update(s, key('f'));
    update(s, code(KeyCode::Enter));
    update(
        s,
        Msg::FetchDone(Err(FetchError::Exists(PathBuf::from(existing)))),
    );
}

#[test]
fn fetch_progress() {
    check("fetch_progress", |s| fetching(s, 1_500_000, 2));
}

/// The question after a fetch was refused because the file is there: the
/// folder gives way at 80 columns, the name and "y/n" stay.
#[test]
fn overwrite_question() {
    check("overwrite_question", |s| {
        update(s, key('j'));
        update(s, key('j'));
        update(s, key('j'));
        refused(s, "/home/ana/work/projects/tandem-notes/data/batch-02.csv");
    });
}

/// Esc was pressed during the fetch: the gauge says it is stopping.
#[test]
fn fetch_cancelling() {
    check("fetch_cancelling", |s| {
        fetching(s, 0, 0);
        update(s, code(KeyCode::Esc));
    });
}

#[test]
fn help_overlay() {
    check("help", |s| {
        update(s, key('?'));
    });
}

/// On a short screen the help scrolls to its end (and no further).
#[test]
fn help_scrolled_to_the_end() {
    check("help_scrolled", |s| {
        update(s, key('?'));
        for _ in 0..30 {
            update(s, key('j'));
        }
    });
}

fn cache_report() -> CacheReport {
    CacheReport {
        node: "alpha".into(),
        policy: "lru".into(),
        capacity: 256 << 20,
        used: 35_000_000,
        hits: 1_234,
        misses: 56,
        entries: (0..30)
            .map(|i| CacheEntry {
                path: p(&format!("photos/2026/img-{i:03}.jpg")),
                size: 1_000_000 + i * 12_345,
                hits: 100 - i,
                last_access_ns: NOW - (i as i64) * 61 * SEC,
            })
            .collect(),
    }
}

#[test]
fn cache_view() {
    check("cache", |s| {
        update(s, Msg::NodesLoaded(Ok(nodes(false))));
        update(s, key('2'));
        update(s, Msg::CacheLoaded(Ok(cache_report())));
        update(s, key('j'));
    });
}

/// beta still has 12 files to apply: the header says how far along it is.
#[test]
fn header_while_a_node_syncs() {
    check("syncing", |s| {
        let mut n = nodes(false);
        n[1].pending_files = 12;
        n[1].pending_bytes = 300 << 20;
        update(s, Msg::NodesLoaded(Ok(n)));
    });
}

fn conflict_copies() -> Vec<ConflictCopy> {
    let copy = |node: &str, id: &str, path: Option<&str>, author: &str, kept_s: i64| ConflictCopy {
        node: node.into(),
        id: id.into(),
        path: path.map(p),
        author: author.into(),
        size: 2_048 + kept_s as u64,
        mtime_ns: NOW - (kept_s + 60) * SEC,
        kept_ns: NOW - kept_s * SEC,
    };
    vec![
        copy(
            "alpha",
            "README.conflict-20261124-115800-beta.md",
            Some("README.md"),
            "beta",
            120,
        ),
        copy(
            "beta",
            "docs/architecture/overview-of-the-sync-protocol.conflict-20261124-100000-alpha.md",
            Some("docs/architecture/overview-of-the-sync-protocol.md"),
            "alpha",
            7_200,
        ),
        copy("gamma", "interrupted-delete-f00012", None, "", 86_400),
    ]
}

#[test]
fn conflicts_view() {
    check("conflicts", |s| {
        update(s, key('4'));
        update(
            s,
            Msg::ConflictsLoaded(Ok((conflict_copies(), vec!["delta: timed out".into()]))),
        );
        update(s, key('j'));
    });
}

/// R on a copy: the question says what is replaced and kept.
#[test]
fn restore_question() {
    check("restore_question", |s| {
        update(s, key('4'));
        update(s, Msg::ConflictsLoaded(Ok((conflict_copies(), Vec::new()))));
        update(s, key('R'));
    });
}

/// README.md's detail: the lock with its queue, a held change, one kept
/// copy (gamma did not answer), and `versions`.
fn readme_detail(versions: Vec<KeptVersion>, versions_unanswered: Vec<String>) -> Msg {
    let copies: Vec<ConflictCopy> = conflict_copies().into_iter().take(1).collect();
    Msg::DetailLoaded {
        path: p("README.md"),
        result: Ok(FileDetail {
            lock: Some(LockInfo {
                path: p("README.md"),
                owner_name: "ana".into(),
                owner: uuid::Uuid::nil(),
                since_ns: NOW - 600 * SEC,
                via: "alpha".into(),
                waiting: vec!["bob".into(), "carol".into()],
            }),
            held: vec![HeldChange {
                path: p("README.md"),
                node: "beta".into(),
                kind: HeldKind::Modify,
                size: 2_100,
                mtime_ns: NOW - 300 * SEC,
                since_ns: NOW - 299 * SEC,
            }],
            conflicts: copies,
            unanswered: vec!["gamma: timed out".into()],
            versions,
            versions_unanswered,
        }),
    }
}

/// Opens README.md's detail pane.
fn open_readme(s: &mut AppState) {
    update(s, key('/'));
    typed(s, "README");
    update(s, code(KeyCode::Enter));
    update(s, code(KeyCode::Enter));
    assert!(matches!(&s.mode, Mode::Detail(d) if d.path == p("README.md")));
}

/// A version of `path` kept on `node` `kept_s` seconds ago, which
/// `cause`'s change replaced.
fn kept(node: &str, path: &str, cause: &str, kept_s: i64) -> KeptVersion {
    let stem = path.trim_end_matches(".md").trim_end_matches(".jpg");
    KeptVersion {
        node: node.into(),
        id: format!("{stem}.version-{kept_s}-{cause}"),
        path: p(path),
        cause: cause.into(),
        size: 1_000 + kept_s as u64 * 3,
        mtime_ns: NOW - (kept_s + 900) * SEC,
        kept_ns: NOW - kept_s * SEC,
    }
}

/// Enter on README.md: both nodes' states, the lock with its queue, a
/// held change, a kept copy, and no kept versions.
#[test]
fn detail_pane() {
    check("detail", |s| {
        open_readme(s);
        update(s, readme_detail(Vec::new(), Vec::new()));
    });
}

/// README.md's kept versions, newest first, under its copy; the second
/// version is selected (on short screens the pane scrolls to it), and
/// delta did not say what it keeps.
#[test]
fn detail_pane_with_versions() {
    check("detail_versions", |s| {
        open_readme(s);
        let versions = vec![
            kept("beta", "README.md", "alpha", 200),
            kept("alpha", "README.md", "beta", 3_700),
            kept("beta", "README.md", "alpha", 86_400 * 2),
            kept("alpha", "README.md", "beta", 86_400 * 9),
        ];
        update(s, readme_detail(versions, vec!["delta: timed out".into()]));
        update(s, key('j'));
        update(s, key('j'));
    });
}

/// V on a kept version: the question says what comes back, from where,
/// and that the current file is kept in turn.
#[test]
fn version_restore_question() {
    check("version_question", |s| {
        open_readme(s);
        let versions = vec![kept("beta", "README.md", "alpha", 200)];
        update(s, readme_detail(versions, Vec::new()));
        update(s, key('j'));
        update(s, key('V'));
    });
}

/// `:versions photos/2025` on a folder deleted everywhere: no row, the
/// versions of the files that were in it (each with its path).
#[test]
fn versions_of_a_deleted_folder() {
    check("versions_deleted", |s| {
        typed(s, ":versions photos/2025");
        update(s, code(KeyCode::Enter));
        update(
            s,
            Msg::DetailLoaded {
                path: p("photos/2025"),
                result: Ok(FileDetail {
                    lock: None,
                    held: Vec::new(),
                    conflicts: Vec::new(),
                    unanswered: Vec::new(),
                    versions: vec![
                        kept("beta", "photos/2025/dunes.jpg", "alpha", 1_200),
                        kept("beta", "photos/2025/beach.jpg", "alpha", 1_200),
                        kept("alpha", "photos/2025/beach.jpg", "beta", 86_400 * 3),
                    ],
                    versions_unanswered: Vec::new(),
                }),
            },
        );
    });
}

#[test]
fn cache_view_unavailable() {
    check("cache_unavailable", |s| {
        update(s, key('2'));
        update(
            s,
            Msg::CacheLoaded(Err("not available in this build yet".into())),
        );
    });
}

#[test]
fn nodes_view_with_clock_skew() {
    check("nodes", |s| {
        update(s, key('3'));
        update(s, Msg::NodesLoaded(Ok(nodes(true))));
        update(s, key('j'));
    });
}

#[test]
fn discover_popup() {
    check("discover", |s| {
        update(s, key('3'));
        update(s, key('j'));
        update(s, code(KeyCode::Enter));
        update(
            s,
            Msg::Discovered {
                node: "beta".into(),
                result: Ok(files().into_iter().skip(3).collect()),
            },
        );
    });
}

#[test]
fn disconnected() {
    check("disconnected", |s| {
        update(
            s,
            Msg::ConnectionLost {
                reason: "the node closed the connection".into(),
                now: NOW + 5 * SEC,
            },
        );
        update(
            s,
            Msg::ConnectFailed {
                reason: "Connection refused (os error 111)".into(),
                now: NOW + 6 * SEC,
            },
        );
    });
}

#[test]
fn never_connected() {
    for (w, h) in SIZES {
        let mut s = AppState::new(
            "127.0.0.1:7001",
            Zone::Utc,
            PathBuf::from("/tmp"),
            NOW,
            (w, h),
        );
        s.start();
        update(
            &mut s,
            Msg::ConnectFailed {
                reason: "Connection refused (os error 111)".into(),
                now: NOW,
            },
        );
        insta::assert_snapshot!(format!("never_connected_{w}x{h}"), draw(&s));
    }
}

#[test]
fn not_authorized() {
    for (w, h) in SIZES {
        let mut s = AppState::new(
            "127.0.0.1:7001",
            Zone::Utc,
            PathBuf::from("/tmp"),
            NOW,
            (w, h),
        );
        s.start();
        update(
            &mut s,
            Msg::Connected {
                node_name: "alpha".into(),
                now: NOW,
            },
        );
        let refusal = tandem_common::proto::ApiError::NotAuthorized {
            id: "EP35HE4-L366RAV-RKR5T2G-2WMF2EA".into(),
            have: None,
            need: tandem_common::proto::Access::Read,
            what: "list".into(),
        };
        update(
            &mut s,
            Msg::ListLoaded {
                result: Err(refusal.to_string()),
                now: NOW,
            },
        );
        let screen = draw(&s);
        assert!(
            screen.contains("tandem approve") && screen.contains("EP35HE4-L366RAV-RKR5T2G-2WMF2EA"),
            "the table says what to ask for:\n{screen}"
        );
        insta::assert_snapshot!(format!("not_authorized_{w}x{h}"), screen);
    }
}

/// Puts a state into a view or popup.
type Setup = Box<dyn Fn(&mut AppState)>;

/// Every view and popup draws at any size, down to a single cell, without
/// panicking (resizes can produce anything).
#[test]
fn any_size_draws() {
    let setups: Vec<(&str, Setup)> = vec![
        ("files", Box::new(|_| {})),
        (
            "help",
            Box::new(|s| {
                update(s, key('?'));
            }),
        ),
        (
            "fetch",
            Box::new(|s| {
                update(s, key('f'));
            }),
        ),
        (
            "command",
            Box::new(|s| {
                update(s, key(':'));
            }),
        ),
        (
            "overwrite question",
            Box::new(|s| refused(s, "/home/ana/work/README.md")),
        ),
        ("fetch gauge", Box::new(|s| fetching(s, 1_000_000, 1))),
        (
            "cache",
            Box::new(|s| {
                update(s, key('2'));
                update(s, Msg::CacheLoaded(Ok(cache_report())));
            }),
        ),
        (
            "nodes",
            Box::new(|s| {
                update(s, key('3'));
                update(s, Msg::NodesLoaded(Ok(nodes(true))));
                update(s, code(KeyCode::Enter));
                update(
                    s,
                    Msg::Discovered {
                        node: "alpha".into(),
                        result: Ok(files().into()),
                    },
                );
            }),
        ),
    ];
    for (name, setup) in &setups {
        for w in [0u16, 1, 2, 5, 13, 40, 79, 119, 120, 121] {
            for h in [0u16, 1, 2, 3, 5, 7, 12, 13, 24] {
                let mut s = state(w.max(1), h.max(1));
                setup(&mut s);
                update(&mut s, Msg::Resize(w, h));
                let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
                t.draw(|f| ui::render(f, &s))
                    .unwrap_or_else(|e| panic!("{name} at {w}x{h}: {e}"));
                for k in ['j', 'G', 'k'] {
                    update(&mut s, key(k));
                }
                t.draw(|f| ui::render(f, &s)).unwrap();
            }
        }
    }
}
