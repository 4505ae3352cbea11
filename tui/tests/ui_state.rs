//! State tests of the terminal UI: keys, filter, sort, selection stability,
//! feed patching, refresh scheduling and reconnection, all through the pure
//! `update` function (no terminal, no node).

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use tandem_common::proto::{
    ConflictAction, ConflictCopy, ConflictResolution, Event, EventKind, FeedCursor, FileState,
    HeldKind, KeptVersion, ListedFile, MirrorReport, NodeFileState, NodeStatus, VersionRestoration,
};
use tandem_common::{ContentHash, RelPath};
use tandem_tui::app::{
    AppState, Conn, DEBOUNCE_NS, DetailItem, Effect, FEED_CAP, FetchError, FileDetail, Level, Mode,
    Msg, RECONNECT_NS, REFRESH_NS, RestoreError, Saved, SortKey, View, Wanted, Zone, update,
};

const NOW: i64 = 1_795_521_600_000_000_000;
const SEC: i64 = 1_000_000_000;

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

fn file(path: &str, size: u64, mtime_s: i64) -> ListedFile {
    ListedFile {
        link: None,
        path: p(path),
        size,
        mtime_ns: NOW - mtime_s * SEC,
        hash: ContentHash::of(path.as_bytes()),
        nodes: vec!["alpha".into(), "beta".into()],
        locked_by: None,
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
    }
}

/// b.txt (30 B), d.txt (10 B), f.txt (20 B), h.txt (40 B).
fn four() -> Vec<ListedFile> {
    vec![
        file("b.txt", 30, 400),
        file("d.txt", 10, 100),
        file("f.txt", 20, 300),
        file("h.txt", 40, 200),
    ]
}

fn connected(files: Vec<ListedFile>) -> AppState {
    let mut s = AppState::new(
        "127.0.0.1:7001",
        Zone::Utc,
        PathBuf::from("/home/ana"),
        NOW,
        (80, 24),
    );
    assert_eq!(s.start(), vec![Effect::Connect]);
    let fx = update(
        &mut s,
        Msg::Connected {
            node_name: "alpha".into(),
            now: NOW,
        },
    );
    assert!(fx.contains(&Effect::Subscribe(None)), "{fx:?}");
    assert!(fx.contains(&Effect::RefreshList), "{fx:?}");
    update(
        &mut s,
        Msg::ListLoaded {
            result: Ok(files.into()),
            now: NOW,
        },
    );
    s
}

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn typed(s: &mut AppState, text: &str) -> Vec<Effect> {
    let mut fx = Vec::new();
    for c in text.chars() {
        fx.extend(update(s, key(c)));
    }
    fx
}

fn ev(seq: u64, kind: EventKind) -> Msg {
    Msg::Event(Event {
        epoch: 1,
        seq,
        time_ns: NOW + seq as i64 * 1_000_000,
        node: "beta".into(),
        kind,
    })
}

/// A fetch saved at `to` (no folder made).
fn saved(to: &str) -> Msg {
    Msg::FetchDone(Ok(Saved {
        to: PathBuf::from(to),
        made: None,
    }))
}

fn selected(s: &AppState) -> String {
    s.files
        .selected()
        .map(|f| f.path.to_string())
        .unwrap_or_default()
}

fn shown(s: &AppState) -> Vec<String> {
    (0..s.files.view_len())
        .map(|i| s.files.row(i).unwrap().path.to_string())
        .collect()
}

#[test]
fn moving_keys() {
    let names: Vec<ListedFile> = (0..100)
        .map(|i| file(&format!("f{i:03}"), i, i as i64))
        .collect();
    let mut s = connected(names);
    assert_eq!(selected(&s), "f000");
    update(&mut s, key('j'));
    update(&mut s, code(KeyCode::Down));
    assert_eq!(selected(&s), "f002");
    update(&mut s, key('k'));
    assert_eq!(selected(&s), "f001");
    let page = s.table_height();
    update(&mut s, code(KeyCode::PageDown));
    assert_eq!(s.files.selected_pos(), 1 + page);
    update(&mut s, code(KeyCode::End));
    assert_eq!(selected(&s), "f099");
    update(&mut s, key('j'));
    assert_eq!(selected(&s), "f099", "clamped at the end");
    update(&mut s, code(KeyCode::Home));
    assert_eq!(selected(&s), "f000");
    update(&mut s, code(KeyCode::PageUp));
    assert_eq!(selected(&s), "f000");
    update(&mut s, key('G'));
    assert_eq!(selected(&s), "f099");
    update(&mut s, key('g'));
    assert_eq!(selected(&s), "f000");
}

#[test]
fn quit_help_and_tabs() {
    let mut s = connected(four());
    assert_eq!(update(&mut s, key('q')), vec![Effect::Quit]);
    let ctrl_c = Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    update(&mut s, key('/'));
    assert_eq!(s.mode, Mode::Filter);
    assert_eq!(
        update(&mut s, ctrl_c.clone()),
        vec![Effect::Quit],
        "Ctrl-C quits even while typing"
    );

    let mut s = connected(four());
    update(&mut s, key('?'));
    assert_eq!(s.mode, Mode::Help);
    assert!(
        update(&mut s, key('q')).is_empty(),
        "q closes the help, not the UI"
    );
    assert_eq!(s.mode, Mode::Normal);

    let fx = update(&mut s, code(KeyCode::Tab));
    assert_eq!(s.view, View::Cache);
    assert_eq!(fx, vec![Effect::RefreshCache]);
    update(&mut s, code(KeyCode::Tab));
    assert_eq!(s.view, View::Nodes);
    update(&mut s, code(KeyCode::Tab));
    assert_eq!(s.view, View::Conflicts);
    update(&mut s, code(KeyCode::Tab));
    assert_eq!(s.view, View::Files);
    update(&mut s, code(KeyCode::BackTab));
    assert_eq!(s.view, View::Conflicts);
    update(&mut s, key('1'));
    assert_eq!(s.view, View::Files);
    update(&mut s, key('2'));
    assert_eq!(s.view, View::Cache);
    // l does nothing outside the Files view.
    assert!(update(&mut s, key('l')).is_empty());
}

#[test]
fn filter_is_a_case_insensitive_substring_and_keeps_the_selection() {
    let mut s = connected(vec![
        file("docs/Plan.md", 1, 1),
        file("docs/notes.txt", 1, 1),
        file("photos/plane.jpg", 1, 1),
        file("src/main.rs", 1, 1),
    ]);
    update(&mut s, key('j'));
    update(&mut s, key('j'));
    assert_eq!(selected(&s), "photos/plane.jpg");
    update(&mut s, key('/'));
    typed(&mut s, "PLAN");
    assert_eq!(shown(&s), ["docs/Plan.md", "photos/plane.jpg"]);
    assert_eq!(
        selected(&s),
        "photos/plane.jpg",
        "the selection stays on its file"
    );
    update(&mut s, code(KeyCode::Backspace));
    assert_eq!(s.files.filter(), "PLA");
    update(&mut s, code(KeyCode::Enter));
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(s.files.filter(), "PLA", "Enter keeps the filter");
    // A new file that matches appears in place; one that does not, not.
    update(
        &mut s,
        ev(
            1,
            EventKind::Added {
                path: p("a/planet.txt"),
                size: 3,
            },
        ),
    );
    update(
        &mut s,
        ev(
            2,
            EventKind::Added {
                path: p("zzz.txt"),
                size: 3,
            },
        ),
    );
    assert_eq!(
        shown(&s),
        ["a/planet.txt", "docs/Plan.md", "photos/plane.jpg"]
    );
    assert_eq!(selected(&s), "photos/plane.jpg");
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(s.files.filter(), "");
    assert_eq!(s.files.view_len(), 6);
    assert_eq!(selected(&s), "photos/plane.jpg");
}

#[test]
fn sort_cycles_and_keeps_the_selection() {
    let mut s = connected(four());
    update(&mut s, key('j'));
    assert_eq!(selected(&s), "d.txt");
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::Size);
    assert_eq!(shown(&s), ["h.txt", "b.txt", "f.txt", "d.txt"]);
    assert_eq!(selected(&s), "d.txt");
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::Modified);
    assert_eq!(
        shown(&s),
        ["d.txt", "h.txt", "f.txt", "b.txt"],
        "newest first"
    );
    assert_eq!(selected(&s), "d.txt");
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::State);
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::Lock);
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::Name);
    assert_eq!(shown(&s), ["b.txt", "d.txt", "f.txt", "h.txt"]);
}

#[test]
fn selection_stays_on_its_file_when_rows_come_and_go_above_it() {
    let mut s = connected(four());
    update(&mut s, key('j'));
    update(&mut s, key('j'));
    assert_eq!(selected(&s), "f.txt");
    let pos = s.files.selected_pos();
    update(
        &mut s,
        ev(
            1,
            EventKind::Added {
                path: p("a.txt"),
                size: 1,
            },
        ),
    );
    update(
        &mut s,
        ev(
            2,
            EventKind::Added {
                path: p("c.txt"),
                size: 1,
            },
        ),
    );
    assert_eq!(selected(&s), "f.txt");
    assert_eq!(s.files.selected_pos(), pos + 2);
    update(
        &mut s,
        ev(
            3,
            EventKind::Added {
                path: p("z.txt"),
                size: 1,
            },
        ),
    );
    assert_eq!(s.files.selected_pos(), pos + 2, "rows below do not move it");
    update(
        &mut s,
        ev(
            4,
            EventKind::Deleted {
                path: p("b.txt"),
                by: "beta".into(),
            },
        ),
    );
    assert_eq!(selected(&s), "f.txt");
    assert_eq!(s.files.selected_pos(), pos + 1);
    // Sorted by size, a change of size moves rows (and the selected one).
    update(&mut s, key('s'));
    update(
        &mut s,
        ev(
            5,
            EventKind::Changed {
                path: p("a.txt"),
                size: 1_000,
            },
        ),
    );
    assert_eq!(selected(&s), "f.txt");
    assert_eq!(shown(&s)[0], "a.txt");
    update(
        &mut s,
        ev(
            6,
            EventKind::Changed {
                path: p("f.txt"),
                size: 5_000,
            },
        ),
    );
    assert_eq!(selected(&s), "f.txt", "the selection follows its file");
    assert_eq!(s.files.selected_pos(), 0);
    // Deleting the selected file selects the row that takes its place.
    update(
        &mut s,
        ev(
            7,
            EventKind::Deleted {
                path: p("f.txt"),
                by: "beta".into(),
            },
        ),
    );
    assert_eq!(selected(&s), "a.txt");
    // A full reload keeps the selection on its path.
    update(&mut s, key('j'));
    let sel = selected(&s);
    let mut files = four();
    files.push(file("a.txt", 1_000, 1));
    files.push(file("c.txt", 1, 1));
    files.push(file("0-first.txt", 99_999, 1));
    update(
        &mut s,
        Msg::ListLoaded {
            result: Ok(files.into()),
            now: NOW,
        },
    );
    assert_eq!(selected(&s), sel);
}

#[test]
fn feed_events_patch_rows_in_place() {
    let mut s = connected(four());
    let rebuilds = s.files.rebuilds;
    update(
        &mut s,
        ev(
            1,
            EventKind::Locked {
                path: p("d.txt"),
                owner: "ana".into(),
                via: "alpha".into(),
            },
        ),
    );
    assert_eq!(
        s.files.get("d.txt").unwrap().locked_by.as_deref(),
        Some("ana")
    );
    update(
        &mut s,
        ev(
            2,
            EventKind::Held {
                path: p("d.txt"),
                from: "beta".into(),
                kind: HeldKind::Modify,
            },
        ),
    );
    update(
        &mut s,
        ev(
            3,
            EventKind::Held {
                path: p("d.txt"),
                from: "beta".into(),
                kind: HeldKind::Delete,
            },
        ),
    );
    assert_eq!(s.files.get("d.txt").unwrap().held, 2);
    update(
        &mut s,
        ev(
            4,
            EventKind::Released {
                path: p("d.txt"),
                from: "beta".into(),
                kind: HeldKind::Modify,
            },
        ),
    );
    assert_eq!(s.files.get("d.txt").unwrap().held, 1);
    update(
        &mut s,
        ev(
            5,
            EventKind::Unlocked {
                path: p("d.txt"),
                by: "ana".into(),
                forced: false,
            },
        ),
    );
    let d = s.files.get("d.txt").unwrap();
    assert_eq!((d.locked_by.as_deref(), d.held), (None, 0));
    // A change made on beta: only beta holds the new version...
    update(
        &mut s,
        ev(
            6,
            EventKind::Changed {
                path: p("h.txt"),
                size: 41,
            },
        ),
    );
    let h = s.files.get("h.txt").unwrap();
    assert_eq!((h.size, h.nodes.clone()), (41, vec!["beta".to_string()]));
    assert!(
        h.states
            .iter()
            .any(|x| x.node == "alpha" && x.state == FileState::Stale)
    );
    // ...until it is copied to alpha.
    update(
        &mut s,
        Msg::Event(Event {
            epoch: 1,
            seq: 7,
            time_ns: NOW,
            node: "alpha".into(),
            kind: EventKind::Transferred {
                path: p("h.txt"),
                from: "beta".into(),
                to: "alpha".into(),
                size: 41,
                sent: 41,
                millis: 1,
            },
        }),
    );
    let h = s.files.get("h.txt").unwrap();
    assert_eq!(h.nodes, ["beta", "alpha"]);
    assert!(h.states.iter().all(|x| x.state == FileState::InSync));
    update(
        &mut s,
        ev(
            8,
            EventKind::Deleted {
                path: p("b.txt"),
                by: "beta".into(),
            },
        ),
    );
    assert!(s.files.get("b.txt").is_none());
    assert_eq!(s.files.len(), 3);
    assert_eq!(s.files.total_bytes(), 10 + 20 + 41);
    assert_eq!(s.files.rebuilds, rebuilds, "patches never rebuild the view");
    assert_eq!(s.cursor, Some(FeedCursor { epoch: 1, seq: 8 }));
    assert_eq!(s.feed.lines.len(), 8);
    assert_eq!(s.feed.lines[0].kind, "deleted", "newest first");
}

#[test]
fn changes_without_details_schedule_one_debounced_throttled_reload() {
    let mut s = connected(four());
    // The list was just requested (on connect): a change now waits for
    // the debounce and for REFRESH_NS after that request.
    update(
        &mut s,
        ev(
            1,
            EventKind::Added {
                path: p("new.txt"),
                size: 5,
            },
        ),
    );
    assert!(
        s.files.get("new.txt").is_some(),
        "shown at once, before the reload"
    );
    let mut refreshes = 0;
    let mut t = NOW;
    while t <= NOW + 5 * SEC {
        if t < NOW + 3 * SEC {
            update(
                &mut s,
                ev(
                    2 + ((t - NOW) / (100 * 1_000_000)) as u64,
                    EventKind::Changed {
                        path: p("new.txt"),
                        size: 6,
                    },
                ),
            );
        }
        let fx = update(&mut s, Msg::Tick(t));
        if fx.contains(&Effect::RefreshList) {
            refreshes += 1;
            assert!(t >= NOW + REFRESH_NS, "throttled: at most every 2 s ({t})");
            update(
                &mut s,
                Msg::ListLoaded {
                    result: Ok(four().into()),
                    now: t,
                },
            );
        }
        t += 100 * 1_000_000;
    }
    assert!(
        (1..=3).contains(&refreshes),
        "{refreshes} reloads for 30 changes in 3 s"
    );
    // Lock events carry everything: no reload.
    let mut s = connected(four());
    update(
        &mut s,
        ev(
            1,
            EventKind::Locked {
                path: p("d.txt"),
                owner: "ana".into(),
                via: "alpha".into(),
            },
        ),
    );
    for i in 0..40 {
        assert!(!update(&mut s, Msg::Tick(NOW + i * DEBOUNCE_NS)).contains(&Effect::RefreshList));
    }
}

#[test]
fn feed_is_bounded_and_scrolls() {
    let mut s = connected(four());
    for i in 0..(FEED_CAP as u64 + 50) {
        update(
            &mut s,
            ev(
                i,
                EventKind::NodeUp {
                    name: "beta".into(),
                },
            ),
        );
    }
    assert_eq!(s.feed.lines.len(), FEED_CAP);
    assert!(s.feed.lines[0].time_ns > s.feed.lines[1].time_ns);
    update(&mut s, key('['));
    update(&mut s, key('['));
    assert_eq!(s.feed.scroll, 2);
    // New events keep the reader's place.
    update(
        &mut s,
        ev(
            5_000,
            EventKind::NodeUp {
                name: "beta".into(),
            },
        ),
    );
    assert_eq!(s.feed.scroll, 3);
    update(&mut s, key(']'));
    assert_eq!(s.feed.scroll, 2);
}

#[test]
fn losing_the_node_greys_out_and_reconnects_every_second() {
    let mut s = connected(four());
    update(
        &mut s,
        ev(
            41,
            EventKind::NodeUp {
                name: "beta".into(),
            },
        ),
    );
    update(
        &mut s,
        Msg::ConnectionLost {
            reason: "closed".into(),
            now: NOW + SEC,
        },
    );
    assert!(matches!(s.conn, Conn::Down { was_up: true, .. }));
    assert_eq!(s.files.len(), 4, "the last table stays");
    assert!(update(&mut s, Msg::Tick(NOW + SEC + RECONNECT_NS / 2)).is_empty());
    assert_eq!(
        update(&mut s, Msg::Tick(NOW + SEC + RECONNECT_NS)),
        vec![Effect::Connect]
    );
    assert!(
        update(&mut s, Msg::Tick(NOW + SEC + RECONNECT_NS + 1)).is_empty(),
        "one attempt at a time"
    );
    update(
        &mut s,
        Msg::ConnectFailed {
            reason: "refused".into(),
            now: NOW + 2 * SEC,
        },
    );
    assert!(update(&mut s, Msg::Tick(NOW + 2 * SEC + RECONNECT_NS / 2)).is_empty());
    assert_eq!(
        update(&mut s, Msg::Tick(NOW + 3 * SEC)),
        vec![Effect::Connect]
    );
    // Actions while away say so instead of failing silently.
    assert!(update(&mut s, key('l')).is_empty());
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
    // Back: resume the feed after the last event, reload the table.
    let fx = update(
        &mut s,
        Msg::Connected {
            node_name: "alpha".into(),
            now: NOW + 3 * SEC,
        },
    );
    assert_eq!(
        fx[0],
        Effect::Subscribe(Some(FeedCursor { epoch: 1, seq: 41 }))
    );
    assert!(fx.contains(&Effect::RefreshList));
    assert!(s.is_up());
    // The node restarted meanwhile (another epoch): say so, start over.
    update(&mut s, Msg::Subscribed(Ok(2)));
    assert_eq!(s.cursor, None);
    assert!(s.feed.lines[0].text.contains("restarted"));
}

#[test]
fn missed_events_reload_the_table() {
    let mut s = connected(four());
    update(&mut s, Msg::Tick(NOW + 3 * SEC));
    update(
        &mut s,
        Msg::Missed {
            epoch: 1,
            from: 5,
            to: 90,
            now: NOW + 3 * SEC,
        },
    );
    assert_eq!(s.cursor, Some(FeedCursor { epoch: 1, seq: 89 }));
    let fx = update(&mut s, Msg::Tick(NOW + 3 * SEC + DEBOUNCE_NS));
    assert!(fx.contains(&Effect::RefreshList), "{fx:?}");
}

#[test]
fn lock_unlock_and_the_command_line() {
    let mut s = connected(four());
    update(&mut s, key('j'));
    assert_eq!(update(&mut s, key('l')), vec![Effect::Lock(p("d.txt"))]);
    update(&mut s, Msg::LockDone(Ok((p("d.txt"), "ana".into()))));
    assert_eq!(
        s.files.get("d.txt").unwrap().locked_by.as_deref(),
        Some("ana")
    );
    assert_eq!(s.status.as_ref().unwrap().level, Level::Ok);
    assert_eq!(
        update(&mut s, key('u')),
        vec![Effect::Unlock {
            path: p("d.txt"),
            force: false
        }]
    );
    update(&mut s, Msg::UnlockDone(Err("d.txt is locked by bo".into())));
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Error);
    assert!(st.text.contains("locked by bo"), "{}", st.text);

    let run = |s: &mut AppState, line: &str| {
        update(s, key(':'));
        typed(s, line);
        update(s, code(KeyCode::Enter))
    };
    assert_eq!(run(&mut s, "lock 3"), vec![Effect::Lock(p("f.txt"))]);
    // Forcing asks first (someone else's lock).
    assert!(run(&mut s, "unlock 4 --force").is_empty());
    assert!(matches!(s.mode, Mode::Confirm(_)), "{:?}", s.mode);
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::Unlock {
            path: p("h.txt"),
            force: true
        }]
    );
    assert_eq!(
        run(&mut s, "unlock 1"),
        vec![Effect::Unlock {
            path: p("b.txt"),
            force: false
        }]
    );
    assert_eq!(
        run(&mut s, "fetch 2 /tmp/x"),
        vec![Effect::Fetch {
            what: Wanted::file(p("d.txt")),
            dest: PathBuf::from("/tmp/x"),
            force: false
        }]
    );
    update(&mut s, saved("/tmp/x/d.txt"));
    // `--force` replaces a file already there, wherever it is typed.
    for line in ["fetch 2 /tmp/x --force", "fetch --force 2 /tmp/x"] {
        assert_eq!(
            run(&mut s, line),
            vec![Effect::Fetch {
                what: Wanted::file(p("d.txt")),
                dest: PathBuf::from("/tmp/x"),
                force: true
            }],
            "{line}"
        );
        update(&mut s, saved("/tmp/x/d.txt"));
    }
    update(&mut s, saved("/tmp/x/d.txt"));
    // The file's folders are kept under the folder (the last one used).
    assert_eq!(
        run(&mut s, "fetch docs/plan.md"),
        vec![Effect::Fetch {
            what: Wanted::file(p("docs/plan.md")),
            dest: PathBuf::from("/tmp/x/docs"),
            force: false
        }]
    );
    update(
        &mut s,
        Msg::FetchDone(Err(FetchError::Failed(
            "docs/plan.md does not exist".into(),
        ))),
    );
    assert!(s.status.as_ref().unwrap().text.contains("does not exist"));
    update(&mut s, Msg::Tick(NOW + 10 * SEC));
    assert_eq!(run(&mut s, "list"), vec![Effect::RefreshList]);
    assert!(run(&mut s, "lock 9").is_empty());
    assert!(s.status.as_ref().unwrap().text.contains("no file #9"));
    assert!(run(&mut s, "frobnicate").is_empty());
    assert!(s.status.as_ref().unwrap().text.contains("unknown command"));
    assert_eq!(run(&mut s, "quit"), vec![Effect::Quit]);
    // Esc abandons a command.
    update(&mut s, key(':'));
    typed(&mut s, "lock 1");
    assert!(update(&mut s, code(KeyCode::Esc)).is_empty());
    assert_eq!(s.mode, Mode::Normal);
}

#[test]
fn fetch_prompts_for_the_destination() {
    let mut s = connected(four());
    update(&mut s, key('f'));
    assert_eq!(
        s.mode,
        Mode::FetchPrompt {
            what: Wanted::file(p("b.txt")),
            input: "/home/ana".into()
        }
    );
    for _ in 0.."ana".len() {
        update(&mut s, code(KeyCode::Backspace));
    }
    typed(&mut s, "bo");
    let fx = update(&mut s, code(KeyCode::Enter));
    assert_eq!(
        fx,
        vec![Effect::Fetch {
            what: Wanted::file(p("b.txt")),
            dest: PathBuf::from("/home/bo"),
            force: false
        }]
    );
    update(
        &mut s,
        Msg::FetchStarted {
            total: 100,
            from: "beta".into(),
            now: NOW,
        },
    );
    update(
        &mut s,
        Msg::FetchProgress {
            done: 40,
            now: NOW + SEC,
        },
    );
    let f = s.fetch.clone().unwrap();
    assert_eq!(
        (f.done, f.total, f.from.as_deref()),
        (40, 100, Some("beta"))
    );
    // One fetch at a time.
    update(&mut s, key('f'));
    assert!(update(&mut s, code(KeyCode::Enter)).is_empty());
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
    update(&mut s, saved("/home/bo/b.txt"));
    assert!(s.fetch.is_none());
    assert!(s.status.as_ref().unwrap().text.contains("/home/bo/b.txt"));
}

fn node(name: &str, skew: i64) -> NodeStatus {
    NodeStatus {
        id: None,
        name: name.into(),
        addr: "127.0.0.1:1".into(),
        up: true,
        rtt_us: Some(100),
        files: 4,
        bytes: 100,
        cpu_percent: 0.0,
        rss: 1,
        uptime_s: 1,
        clock_offset_ms: Some(skew),
        warnings: Vec::new(),
        history: Vec::new(),
        pending_files: 0,
        pending_bytes: 0,
    }
}

#[test]
fn cache_and_nodes_refresh_every_two_seconds_while_visible() {
    let mut s = connected(four());
    update(
        &mut s,
        Msg::NodesLoaded(Ok(vec![node("alpha", 0), node("beta", 1_500)])),
    );
    assert_eq!(s.node_counts(), (2, 0));
    // Not visible: not asked. The node list is kept fresh in every view
    // (the header's sync progress and the Cache view's hit rate come
    // from it).
    let fx = update(&mut s, Msg::Tick(NOW + 10 * SEC));
    assert!(!fx.contains(&Effect::RefreshCache), "{fx:?}");
    assert!(fx.contains(&Effect::RefreshNodes), "{fx:?}");
    assert_eq!(update(&mut s, key('2')), vec![Effect::RefreshCache]);
    update(
        &mut s,
        Msg::CacheLoaded(Err("not available in this build yet".into())),
    );
    assert!(
        s.status.as_ref().unwrap().text.contains("not available"),
        "errors show in the status line"
    );
    assert!(!update(&mut s, Msg::Tick(NOW + 11 * SEC)).contains(&Effect::RefreshCache));
    assert_eq!(
        update(&mut s, Msg::Tick(NOW + 10 * SEC + REFRESH_NS)),
        vec![Effect::RefreshCache]
    );
    // The node list asked for at 10 s has not come: switching to Nodes
    // asks nothing more until it does.
    assert_eq!(update(&mut s, key('3')), vec![]);
    update(
        &mut s,
        Msg::NodesLoaded(Ok(vec![node("alpha", 0), node("beta", 1_500)])),
    );
    update(&mut s, key('j'));
    assert_eq!(s.nodes_sel, 1);
    // Enter lists that node's own files in a popup.
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::Discover("beta".into())]
    );
    assert!(matches!(&s.mode, Mode::Discover(p) if p.node == "beta" && p.files.is_none()));
    update(
        &mut s,
        Msg::Discovered {
            node: "beta".into(),
            result: Ok(four().into()),
        },
    );
    assert!(matches!(&s.mode, Mode::Discover(p) if p.files == Some(Ok(four().into()))));
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(s.mode, Mode::Normal);
    // A node going down in the feed counts in the header at once.
    update(
        &mut s,
        ev(
            1,
            EventKind::NodeDown {
                name: "beta".into(),
            },
        ),
    );
    assert_eq!(s.node_counts(), (1, 1));
}

#[test]
fn mouse_wheel_moves_the_selection_or_scrolls_the_feed() {
    let names: Vec<ListedFile> = (0..50)
        .map(|i| file(&format!("f{i:03}"), i, i as i64))
        .collect();
    let mut s = connected(names);
    for i in 0..10 {
        update(
            &mut s,
            ev(
                i,
                EventKind::NodeUp {
                    name: "beta".into(),
                },
            ),
        );
    }
    let wheel = |kind, row| {
        Msg::Mouse(MouseEvent {
            kind,
            column: 10,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    let table = s.areas().main;
    update(&mut s, wheel(MouseEventKind::ScrollDown, table.y + 3));
    assert_eq!(selected(&s), "f003");
    update(&mut s, wheel(MouseEventKind::ScrollUp, table.y + 3));
    assert_eq!(selected(&s), "f000");
    let feed = s.areas().feed.unwrap();
    update(&mut s, wheel(MouseEventKind::ScrollDown, feed.y + 1));
    assert!(s.feed.scroll > 0);
    assert_eq!(selected(&s), "f000");
    // A click on a row selects it (border and header come first).
    update(
        &mut s,
        wheel(
            MouseEventKind::Down(crossterm::event::MouseButton::Left),
            table.y + 2 + 4,
        ),
    );
    assert_eq!(selected(&s), "f004");
}

/// 100,000 rows: load, filter, sort and patch stay correct (the benchmark,
/// `examples/ui_bench.rs`, measures the time).
#[test]
fn hundred_thousand_rows() {
    let n = 100_000u64;
    let files: Vec<ListedFile> = (0..n)
        .map(|i| {
            file(
                &format!("dir{:02}/file-{i:06}.dat", i % 97),
                (i * 7_919) % 1_000_003,
                (i * 31 % 100_000) as i64,
            )
        })
        .collect();
    let mut s = connected(files);
    assert_eq!(s.files.len(), n as usize);
    assert_eq!(s.files.view_len(), n as usize);
    update(&mut s, code(KeyCode::End));
    assert_eq!(selected(&s), "dir96/file-099909.dat");
    update(&mut s, key('/'));
    typed(&mut s, "file-0999");
    update(&mut s, code(KeyCode::Enter));
    assert_eq!(s.files.view_len(), 100);
    assert!(shown(&s).iter().all(|p| p.contains("file-0999")));
    update(&mut s, code(KeyCode::Esc));
    update(&mut s, key('s'));
    let sizes: Vec<u64> = (0..s.files.view_len())
        .map(|i| s.files.row(i).unwrap().size)
        .collect();
    assert!(
        sizes.windows(2).all(|w| w[0] >= w[1]),
        "sorted by size, largest first"
    );
    // Patches keep the order without a rebuild.
    let rebuilds = s.files.rebuilds;
    for i in 0..200u64 {
        update(
            &mut s,
            ev(
                i,
                EventKind::Changed {
                    path: p(&format!("dir{:02}/file-{i:06}.dat", i % 97)),
                    size: i * 13,
                },
            ),
        );
        update(
            &mut s,
            ev(
                1_000 + i,
                EventKind::Added {
                    path: p(&format!("new/{i}.dat")),
                    size: i,
                },
            ),
        );
    }
    for i in 0..100u64 {
        update(
            &mut s,
            ev(
                2_000 + i,
                EventKind::Deleted {
                    path: p(&format!("new/{i}.dat")),
                    by: "beta".into(),
                },
            ),
        );
    }
    assert_eq!(s.files.rebuilds, rebuilds);
    assert_eq!(s.files.view_len(), n as usize + 100);
    let rows: Vec<ListedFile> = (0..s.files.view_len())
        .map(|i| s.files.row(i).unwrap())
        .collect();
    assert!(
        rows.windows(2)
            .all(|w| s.files.cmp_rows(&w[0], &w[1]).is_lt())
    );
    let total: u64 = rows.iter().map(|f| f.size).sum();
    assert_eq!(s.files.total_bytes(), total);
}

#[test]
fn shift_l_waits_in_the_queue_and_says_where() {
    let mut s = connected(four());
    update(&mut s, key('j'));
    assert_eq!(update(&mut s, key('L')), vec![Effect::LockWait(p("d.txt"))]);
    update(
        &mut s,
        Msg::LockQueued {
            path: p("d.txt"),
            holder: "bo".into(),
            position: 2,
        },
    );
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Info);
    assert!(
        st.text.contains("locked by bo") && st.text.contains("number 2"),
        "{}",
        st.text
    );
    // Granted later: the same as a lock taken at once.
    update(&mut s, Msg::LockDone(Ok((p("d.txt"), "ana".into()))));
    assert_eq!(
        s.files.get("d.txt").unwrap().locked_by.as_deref(),
        Some("ana")
    );
    assert_eq!(s.status.as_ref().unwrap().level, Level::Ok);
    // And from the command line.
    update(&mut s, key(':'));
    for c in "lock --wait 2".chars() {
        update(&mut s, key(c));
    }
    let fx = update(
        &mut s,
        Msg::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE)),
    );
    assert_eq!(fx, vec![Effect::LockWait(p("d.txt"))], "row 2 is d.txt");
}

fn copy(node: &str, id: &str, path: Option<&str>, kept_s: i64) -> ConflictCopy {
    ConflictCopy {
        node: node.into(),
        id: id.into(),
        path: path.map(p),
        author: "beta".into(),
        size: 12,
        mtime_ns: NOW - 3_600 * SEC,
        kept_ns: NOW - kept_s * SEC,
    }
}

/// The Conflicts tab asks every 2 s while shown; R and x ask first, only
/// `y` goes ahead, and a result reloads the list.
#[test]
fn conflicts_are_restored_or_discarded_only_after_a_yes() {
    let mut s = connected(four());
    assert_eq!(update(&mut s, key('4')), vec![Effect::RefreshConflicts]);
    assert_eq!(s.view, View::Conflicts);
    update(
        &mut s,
        Msg::ConflictsLoaded(Ok((
            vec![
                copy(
                    "alpha",
                    "b.conflict-20261124-110000-beta.txt",
                    Some("b.txt"),
                    5,
                ),
                copy("gamma", "interrupted-delete-x", None, 9),
            ],
            vec!["delta: timed out".into()],
        ))),
    );
    assert!(
        update(&mut s, Msg::Tick(NOW + SEC)).is_empty(),
        "not stale yet"
    );
    assert!(update(&mut s, Msg::Tick(NOW + REFRESH_NS)).contains(&Effect::RefreshConflicts));

    // R: a question naming what is replaced; n cancels.
    assert!(update(&mut s, key('R')).is_empty());
    let Mode::Confirm(c) = &s.mode else {
        panic!("R asks first: {:?}", s.mode)
    };
    assert!(
        c.question
            .starts_with("Restore b.txt from beta's version (12 B, modified 2026-11-24 11:00:00)")
            && c.question.contains("The current b.txt (30 B")
            && c.question.contains("is kept as a conflict copy on alpha"),
        "{}",
        c.question
    );
    assert!(update(&mut s, key('n')).is_empty());
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(
        s.status.as_ref().unwrap().text,
        "cancelled; nothing was changed"
    );
    // Enter is not a yes either.
    update(&mut s, key('R'));
    assert!(update(&mut s, code(KeyCode::Enter)).is_empty());
    assert_eq!(s.mode, Mode::Normal);

    // y goes ahead.
    update(&mut s, key('R'));
    let restore = Effect::ResolveConflict {
        node: "alpha".into(),
        id: "b.conflict-20261124-110000-beta.txt".into(),
        action: ConflictAction::Restore,
    };
    assert_eq!(update(&mut s, key('y')), vec![restore]);
    assert_eq!(s.status.as_ref().unwrap().text, "restoring b.txt on alpha…");
    // The list asked for at the last tick comes; then the result, which
    // asks for it again (a copy went, maybe another came).
    let copies = vec![
        copy(
            "alpha",
            "b.conflict-20261124-110000-beta.txt",
            Some("b.txt"),
            5,
        ),
        copy("gamma", "interrupted-delete-x", None, 9),
    ];
    update(&mut s, Msg::ConflictsLoaded(Ok((copies, Vec::new()))));
    let fx = update(
        &mut s,
        Msg::ConflictResolved(Ok(ConflictResolution {
            node: "alpha".into(),
            id: "b.conflict-20261124-110000-beta.txt".into(),
            action: ConflictAction::Restore,
            path: Some(p("b.txt")),
            replaced_as: Some("b.conflict-20261124-115959-alpha.txt".into()),
        })),
    );
    assert!(fx.contains(&Effect::RefreshConflicts), "{fx:?}");
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Ok);
    assert!(
        st.text.starts_with("restored b.txt on alpha"),
        "{}",
        st.text
    );

    // A copy whose name does not say its file cannot be restored; x
    // deletes it after a question.
    update(&mut s, key('j'));
    assert!(update(&mut s, key('R')).is_empty());
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
    update(&mut s, key('x'));
    assert!(
        matches!(&s.mode, Mode::Confirm(c) if c.question.starts_with("Delete the conflict copy interrupted-delete-x on gamma"))
    );
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::ResolveConflict {
            node: "gamma".into(),
            id: "interrupted-delete-x".into(),
            action: ConflictAction::Discard,
        }]
    );
    update(
        &mut s,
        Msg::ConflictResolved(Err("gamma keeps no conflict copy".into())),
    );
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
}

/// Forcing someone's lock open and releasing held changes are asked about.
#[test]
fn force_unlock_and_releasing_held_changes_ask_first() {
    let mut s = connected(four());
    s.files.patch(&p("b.txt"), |f| {
        f.locked_by = Some("bob".into());
        f.held = 2;
    });
    // l on a locked row says what would happen instead of asking.
    assert!(update(&mut s, key('l')).is_empty());
    assert!(
        s.status
            .as_ref()
            .unwrap()
            .text
            .starts_with("b.txt is already locked by bob: L waits"),
        "{:?}",
        s.status
    );
    typed(&mut s, ":unlock 1 --force");
    assert!(update(&mut s, code(KeyCode::Enter)).is_empty());
    let Mode::Confirm(c) = &s.mode else {
        panic!("asks first: {:?}", s.mode)
    };
    assert!(
        c.question
            .starts_with("Unlock b.txt by force? bob holds the lock"),
        "{}",
        c.question
    );
    assert!(
        c.question.contains("2 change(s) made on other nodes"),
        "{}",
        c.question
    );
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::Unlock {
            path: p("b.txt"),
            force: true
        }]
    );
    // Nothing held: no question.
    s.files.patch(&p("b.txt"), |f| f.held = 0);
    assert_eq!(
        update(&mut s, key('u')),
        vec![Effect::Unlock {
            path: p("b.txt"),
            force: false
        }]
    );
}

/// Enter opens a file's detail pane, which asks for the lock, held changes
/// and conflict copies; its keys act on the file and its copies.
#[test]
fn enter_opens_the_detail_pane_and_its_keys_act_on_the_file() {
    let mut s = connected(four());
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
    assert!(matches!(&s.mode, Mode::Detail(d) if d.path == p("b.txt") && d.detail.is_none()));
    // An answer for another file (the user moved on) is dropped.
    update(
        &mut s,
        Msg::DetailLoaded {
            path: p("d.txt"),
            result: Err("late".into()),
        },
    );
    assert!(matches!(&s.mode, Mode::Detail(d) if d.detail.is_none()));
    let detail = FileDetail {
        lock: None,
        held: Vec::new(),
        conflicts: vec![
            copy(
                "alpha",
                "b.conflict-20261124-110000-beta.txt",
                Some("b.txt"),
                5,
            ),
            copy(
                "gamma",
                "b.conflict-20261124-100000-beta.txt",
                Some("b.txt"),
                50,
            ),
        ],
        unanswered: Vec::new(),
        versions: Vec::new(),
        versions_unanswered: Vec::new(),
    };
    update(
        &mut s,
        Msg::DetailLoaded {
            path: p("b.txt"),
            result: Ok(detail.clone()),
        },
    );
    update(&mut s, key('j'));
    update(&mut s, key('j'));
    assert!(
        matches!(&s.mode, Mode::Detail(d) if d.sel == 1 && d.detail == Some(Ok(detail.clone())))
    );
    // r reloads.
    assert_eq!(
        update(&mut s, key('r')),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
    update(
        &mut s,
        Msg::DetailLoaded {
            path: p("b.txt"),
            result: Ok(detail),
        },
    );
    // x on the second copy asks, y deletes it.
    assert!(update(&mut s, key('x')).is_empty());
    assert!(matches!(&s.mode, Mode::Confirm(c) if c.question.contains("on gamma")));
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::ResolveConflict {
            node: "gamma".into(),
            id: "b.conflict-20261124-100000-beta.txt".into(),
            action: ConflictAction::Discard,
        }]
    );
    // f fetches the file (the destination prompt), Esc closes.
    update(&mut s, code(KeyCode::Enter));
    assert!(update(&mut s, key('f')).is_empty());
    assert!(matches!(&s.mode, Mode::FetchPrompt { what, .. } if *what == Wanted::file(p("b.txt"))));
    update(&mut s, code(KeyCode::Esc));
    update(&mut s, code(KeyCode::Enter));
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(s.mode, Mode::Normal);
}

/// A conflict copy is fetched like a file (the destination asked first):
/// `f` on the Conflicts view, `F` on a copy in the detail pane. It lands
/// beside where its file would, under its own name.
#[test]
fn conflict_copies_are_fetched_from_the_conflicts_view_and_the_detail_pane() {
    let mut s = connected(four());
    update(&mut s, key('4'));
    let id = "media/clip.conflict-20261124-110000-beta.bin";
    let clip = copy("alpha", id, Some("media/clip.bin"), 5);
    update(
        &mut s,
        Msg::ConflictsLoaded(Ok((vec![clip.clone()], Vec::new()))),
    );
    let want = Wanted::Copy {
        node: "alpha".into(),
        id: p(id),
    };
    assert!(update(&mut s, key('f')).is_empty());
    assert_eq!(
        s.mode,
        Mode::FetchPrompt {
            what: want.clone(),
            input: "/home/ana".into()
        }
    );
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::Fetch {
            what: want.clone(),
            dest: PathBuf::from("/home/ana/media"),
            force: false
        }]
    );
    update(
        &mut s,
        saved("/home/ana/media/clip.conflict-20261124-110000-beta.bin"),
    );
    assert_eq!(
        s.status.as_ref().unwrap().text,
        format!(
            "fetched the conflict copy {id} kept on alpha to /home/ana/media/clip.conflict-20261124-110000-beta.bin (hash verified)"
        )
    );

    // The detail pane of b.txt: F fetches the selected copy, not the file.
    update(&mut s, key('1'));
    update(&mut s, code(KeyCode::Enter));
    let b_copy = copy(
        "gamma",
        "b.conflict-20261124-100000-beta.txt",
        Some("b.txt"),
        50,
    );
    let b_detail = |conflicts| Msg::DetailLoaded {
        path: p("b.txt"),
        result: Ok(FileDetail {
            lock: None,
            held: Vec::new(),
            conflicts,
            unanswered: Vec::new(),
            versions: Vec::new(),
            versions_unanswered: Vec::new(),
        }),
    };
    update(&mut s, b_detail(vec![b_copy]));
    assert!(update(&mut s, key('F')).is_empty());
    let want = Wanted::Copy {
        node: "gamma".into(),
        id: p("b.conflict-20261124-100000-beta.txt"),
    };
    assert!(
        matches!(&s.mode, Mode::FetchPrompt { what, .. } if *what == want),
        "{:?}",
        s.mode
    );
    // No copies: F says so and the pane stays.
    update(&mut s, code(KeyCode::Esc));
    update(&mut s, code(KeyCode::Enter));
    update(&mut s, b_detail(Vec::new()));
    update(&mut s, key('F'));
    assert!(matches!(s.mode, Mode::Detail(_)), "{:?}", s.mode);
    assert_eq!(
        s.status.as_ref().unwrap().text,
        "this file has no conflict copies"
    );
}

/// `c` on the Nodes view talks to the selected node instead (a far node by
/// its own address); `o` on the Cache view shows the next node's cache.
#[test]
fn switching_the_node_and_showing_another_nodes_cache() {
    let mut s = connected(four());
    let mut far = node("gamma", 0);
    far.addr = "127.0.0.1:7003 (through other nodes)".into();
    let mut lost = node("delta", 0);
    lost.addr = "(not reached)".into();
    lost.up = false;
    update(
        &mut s,
        Msg::NodesLoaded(Ok(vec![node("alpha", 0), node("beta", 0), far, lost])),
    );

    // The cache of the next node up, round and round.
    update(&mut s, key('2'));
    update(&mut s, Msg::CacheLoaded(Err("x".into())));
    assert_eq!(
        update(&mut s, key('o')),
        vec![Effect::RefreshCacheOf("beta".into())]
    );
    assert_eq!(s.cache_of.as_deref(), Some("beta"));
    update(&mut s, Msg::CacheLoaded(Err("x".into())));
    assert_eq!(
        update(&mut s, key('o')),
        vec![Effect::RefreshCacheOf("gamma".into())]
    );
    update(&mut s, Msg::CacheLoaded(Err("x".into())));
    assert_eq!(
        update(&mut s, key('o')),
        vec![Effect::RefreshCache],
        "back to alpha's own"
    );
    assert_eq!(s.cache_of, None);
    update(&mut s, Msg::CacheLoaded(Err("x".into())));
    // And by command.
    update(&mut s, key(':'));
    typed(&mut s, "cache beta");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::RefreshCacheOf("beta".into())]
    );

    // A node no address is known for cannot be switched to.
    update(&mut s, key('3'));
    for _ in 0..3 {
        update(&mut s, key('j'));
    }
    assert!(update(&mut s, key('c')).is_empty());
    assert!(
        s.status
            .as_ref()
            .unwrap()
            .text
            .starts_with("no address is known for delta")
    );
    // gamma, by its own address.
    update(&mut s, key('k'));
    assert_eq!(
        update(&mut s, key('c')),
        vec![Effect::SwitchNode("127.0.0.1:7003".into())]
    );
    assert_eq!(s.node_addr, "127.0.0.1:7003");
    assert!(!s.is_up());
    // The new node's feed starts afresh; everything is asked again.
    let fx = update(
        &mut s,
        Msg::Connected {
            node_name: "gamma".into(),
            now: NOW + SEC,
        },
    );
    assert!(fx.contains(&Effect::Subscribe(None)), "{fx:?}");
    assert!(fx.contains(&Effect::RefreshList), "{fx:?}");
    assert!(matches!(&s.conn, Conn::Up { name } if name == "gamma"));
    assert_eq!(s.status.as_ref().unwrap().text, "connected to gamma");
    // An address that reaches another node from here is said to.
    update(&mut s, key('3'));
    update(
        &mut s,
        Msg::NodesLoaded(Ok(vec![node("alpha", 0), node("beta", 0)])),
    );
    update(&mut s, key('j'));
    assert_eq!(
        update(&mut s, key('c')),
        vec![Effect::SwitchNode("127.0.0.1:1".into())]
    );
    update(
        &mut s,
        Msg::Connected {
            node_name: "alpha".into(),
            now: NOW + 2 * SEC,
        },
    );
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Error);
    assert!(
        st.text
            .starts_with("127.0.0.1:1 answered as alpha, not beta"),
        "{}",
        st.text
    );
    // :connect back.
    update(&mut s, key(':'));
    typed(&mut s, "connect 127.0.0.1:7001");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::SwitchNode("127.0.0.1:7001".into())]
    );
}

fn node_up(seq: u64) -> Msg {
    ev(
        seq,
        EventKind::NodeUp {
            name: "beta".into(),
        },
    )
}

fn client(seq: u64, connected: bool) -> Msg {
    let (name, addr) = ("ana@laptop".to_string(), "127.0.0.1:5000".to_string());
    ev(
        seq,
        if connected {
            EventKind::ClientConnected { name, addr }
        } else {
            EventKind::ClientDisconnected { name, addr }
        },
    )
}

/// The shown feed lines' kinds, newest first.
fn feed_kinds(s: &AppState) -> Vec<&'static str> {
    s.feed.shown().map(|l| l.kind).collect()
}

#[test]
fn end_or_g_in_the_feed_returns_to_live() {
    let mut s = connected(four());
    for i in 0..20 {
        update(&mut s, node_up(i));
    }
    update(&mut s, key('j'));
    assert_eq!(selected(&s), "d.txt");
    assert!(!s.feed.focused, "the table has the keys at first");
    for _ in 0..5 {
        update(&mut s, key('['));
    }
    assert_eq!(s.feed.scroll, 5);
    assert!(s.feed.focused, "[ gives the feed the keys");
    // The moving keys now scroll the feed, not the table.
    update(&mut s, key('j'));
    assert_eq!(s.feed.scroll, 6);
    update(&mut s, code(KeyCode::Up));
    update(&mut s, key('k'));
    assert_eq!(s.feed.scroll, 4);
    assert_eq!(selected(&s), "d.txt");
    // One key back to live, however far back (not one `]` per line).
    update(&mut s, code(KeyCode::End));
    assert_eq!(s.feed.scroll, 0);
    assert!(!s.feed.focused, "live again: the keys go back to the table");
    assert_eq!(selected(&s), "d.txt", "End went to the feed, not the table");
    for _ in 0..7 {
        update(&mut s, key('['));
    }
    update(&mut s, key('G'));
    assert_eq!(s.feed.scroll, 0, "G in the feed is End");
    // Home/g in the feed: the oldest line; PgDn pages.
    update(&mut s, key('['));
    update(&mut s, key('g'));
    assert_eq!(s.feed.scroll, 19);
    update(&mut s, code(KeyCode::PageUp));
    assert!(s.feed.scroll < 19);
    // Esc gives the keys back without moving the feed: then End and G
    // are the table's again.
    let kept = s.feed.scroll;
    update(&mut s, code(KeyCode::Esc));
    assert!(!s.feed.focused);
    update(&mut s, key('G'));
    assert_eq!(selected(&s), "h.txt");
    assert_eq!(s.feed.scroll, kept);
}

#[test]
fn the_feed_shows_one_kind_at_a_time() {
    let mut s = connected(four());
    let path = || p("d.txt");
    let events = [
        EventKind::Changed {
            path: path(),
            size: 1,
        },
        EventKind::Conflict {
            path: path(),
            winner: "alpha".into(),
            loser: "beta".into(),
            kept_as: "d.conflict.txt".into(),
        },
        EventKind::Locked {
            path: path(),
            owner: "ana".into(),
            via: "alpha".into(),
        },
        EventKind::ApplyFailed {
            path: path(),
            from: "beta".into(),
            error: "disk full".into(),
        },
        EventKind::NodeDown {
            name: "gamma".into(),
        },
    ];
    for (i, e) in events.into_iter().enumerate() {
        update(&mut s, ev(i as u64, e));
    }
    update(
        &mut s,
        Msg::ConnectionLost {
            reason: "gone".into(),
            now: NOW + SEC,
        },
    );
    let all = feed_kinds(&s);
    assert_eq!(
        all,
        [
            "note",
            "node_down",
            "apply_failed",
            "locked",
            "conflict",
            "changed"
        ]
    );
    let expect = [
        ("transfers", "changed"),
        ("conflicts", "conflict"),
        ("locks", "locked"),
        ("errors", "apply_failed"),
        ("nodes", "node_down"),
    ];
    for (label, kind) in expect {
        update(&mut s, key('e'));
        assert_eq!(s.feed.only.map(|g| g.label()), Some(label));
        // The UI's own notes (a lost connection) show under every kind.
        assert_eq!(feed_kinds(&s), ["note", kind], "{label}");
    }
    update(&mut s, key('e'));
    assert_eq!(s.feed.only, None, "after nodes: all again");
    assert_eq!(feed_kinds(&s), all);
}

#[test]
fn a_kind_filter_scrolls_among_its_own_lines() {
    let mut s = connected(four());
    for i in 0..10 {
        update(&mut s, node_up(i));
    }
    update(
        &mut s,
        ev(
            50,
            EventKind::Locked {
                path: p("d.txt"),
                owner: "ana".into(),
                via: "alpha".into(),
            },
        ),
    );
    for _ in 0..3 {
        update(&mut s, key('e'));
    }
    assert_eq!(feed_kinds(&s), ["locked"]);
    update(&mut s, key('['));
    assert_eq!(s.feed.scroll, 0, "one line shown: nowhere older to go");
    // Changing the kind follows the newest again.
    update(&mut s, key('e'));
    update(&mut s, key('e'));
    update(&mut s, key('e'));
    assert_eq!(s.feed.only, None);
    update(&mut s, key('['));
    update(&mut s, key('['));
    assert_eq!(s.feed.scroll, 2);
    update(&mut s, key('e'));
    assert_eq!(s.feed.scroll, 0);
}

#[test]
fn client_lines_are_hidden_until_asked_for() {
    let mut s = connected(four());
    update(&mut s, node_up(1));
    update(&mut s, client(2, true));
    update(&mut s, client(3, false));
    assert_eq!(s.feed.lines.len(), 3, "kept, to show on demand");
    assert_eq!(feed_kinds(&s), ["node_up"]);
    // Hidden lines arriving do not move what a scrolled-back reader sees.
    update(&mut s, node_up(4));
    update(&mut s, key('['));
    assert_eq!(s.feed.scroll, 1);
    update(&mut s, client(5, true));
    assert_eq!(s.feed.scroll, 1);
    update(&mut s, node_up(6));
    assert_eq!(s.feed.scroll, 2);
    update(&mut s, key('c'));
    assert!(s.feed.show_clients);
    assert_eq!(
        feed_kinds(&s),
        [
            "node_up",
            "client_connected",
            "node_up",
            "client_disconnected",
            "client_connected",
            "node_up"
        ]
    );
    // Clients are about nodes: shown with them, not with locks.
    for _ in 0..3 {
        update(&mut s, key('e'));
    }
    assert!(!feed_kinds(&s).contains(&"client_connected"));
    update(&mut s, key('e'));
    update(&mut s, key('e'));
    assert_eq!(s.feed.only.map(|g| g.label()), Some("nodes"));
    assert!(feed_kinds(&s).contains(&"client_connected"));
    update(&mut s, key('c'));
    assert_eq!(feed_kinds(&s), ["node_up", "node_up", "node_up"]);
}

#[test]
fn clicks_and_the_wheel_give_the_feed_the_keys() {
    let mut s = connected(four());
    for i in 0..10 {
        update(&mut s, node_up(i));
    }
    let click = |column, row| {
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        })
    };
    let feed = s.areas().feed.unwrap();
    let table = s.areas().main;
    update(&mut s, click(feed.x + 3, feed.y + 1));
    assert!(s.feed.focused);
    update(&mut s, key('j'));
    assert_eq!(s.feed.scroll, 1);
    assert_eq!(selected(&s), "b.txt");
    update(&mut s, click(table.x + 3, table.y + 3));
    assert!(!s.feed.focused, "a click on the table takes the keys back");
    assert_eq!(selected(&s), "d.txt");
    update(&mut s, key('/'));
    assert!(!s.feed.focused);
}

fn left_click(column: u16, row: u16) -> Msg {
    Msg::Mouse(MouseEvent {
        kind: MouseEventKind::Down(crossterm::event::MouseButton::Left),
        column,
        row,
        modifiers: KeyModifiers::NONE,
    })
}

/// The screen as text, one string per row.
fn screen(s: &AppState) -> Vec<String> {
    let mut t =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(s.size.0, s.size.1)).unwrap();
    t.draw(|f| tandem_tui::ui::render(f, s)).unwrap();
    let buf = t.backend().buffer();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect()
        })
        .collect()
}

/// A click on the header word `word` of the file table, found on screen.
fn click_header(s: &mut AppState, word: &str) -> Vec<Effect> {
    let y = s.areas().main.y + 1;
    let row = &screen(s)[usize::from(y)];
    let x = row.find(word).unwrap_or_else(|| panic!("{word} in {row}"));
    let x = row[..x].chars().count() as u16;
    update(s, left_click(x + 1, y))
}

#[test]
fn clicking_a_tab_switches_to_it() {
    let mut s = connected(four());
    let y = s.areas().tabs.y;
    // "[1 Files]  2 Cache   3 Nodes ": each tab's cells, then a space.
    let fx = update(&mut s, left_click(13, y));
    assert_eq!(s.view, View::Cache);
    assert_eq!(
        fx,
        vec![Effect::RefreshCache],
        "the new tab's report is asked for"
    );
    update(&mut s, left_click(21, y));
    assert_eq!(s.view, View::Nodes);
    update(&mut s, left_click(9, y));
    assert_eq!(s.view, View::Nodes, "the space between tabs is no tab");
    update(&mut s, left_click(70, y));
    assert_eq!(s.view, View::Nodes);
    update(&mut s, left_click(0, y));
    assert_eq!(s.view, View::Files);
    // Not while a popup is open.
    update(&mut s, key('?'));
    update(&mut s, left_click(13, y));
    assert_eq!(s.view, View::Files);
}

#[test]
fn clicking_a_header_sorts_and_a_second_click_reverses() {
    let mut s = connected(four());
    update(&mut s, key('j'));
    click_header(&mut s, "Size");
    assert_eq!(s.files.sort(), SortKey::Size);
    assert!(!s.files.reversed());
    assert_eq!(shown(&s), ["h.txt", "b.txt", "f.txt", "d.txt"]);
    assert_eq!(selected(&s), "d.txt", "the selection follows its file");
    click_header(&mut s, "Size");
    assert!(s.files.reversed());
    assert_eq!(shown(&s), ["d.txt", "f.txt", "b.txt", "h.txt"]);
    assert_eq!(s.files.sort_label(), "size ↑");
    // The header marks the sorted column and its direction.
    assert!(screen(&s)[usize::from(s.areas().main.y + 1)].contains("Size ↑"));
    click_header(&mut s, "Modified");
    assert_eq!(s.files.sort(), SortKey::Modified);
    assert!(!s.files.reversed(), "another column starts the natural way");
    assert_eq!(shown(&s), ["d.txt", "h.txt", "f.txt", "b.txt"]);
    click_header(&mut s, "Name");
    assert_eq!(shown(&s), ["b.txt", "d.txt", "f.txt", "h.txt"]);
    click_header(&mut s, "Name");
    assert_eq!(shown(&s), ["h.txt", "f.txt", "d.txt", "b.txt"]);
    click_header(&mut s, "State");
    assert_eq!(s.files.sort(), SortKey::State);
    click_header(&mut s, "Lock");
    assert_eq!(s.files.sort(), SortKey::Lock);
    // `#` and Replicas do not sort; `s` goes on from here, unreversed.
    click_header(&mut s, "Lock");
    assert!(s.files.reversed());
    click_header(&mut s, "Replicas");
    assert_eq!(s.files.sort(), SortKey::Lock);
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::Name);
    assert!(!s.files.reversed());
}

fn with_state(path: &str, states: &[FileState]) -> ListedFile {
    let mut f = file(path, 1, 1);
    f.states = states
        .iter()
        .zip(["alpha", "beta"])
        .map(|(st, n)| NodeFileState {
            node: n.into(),
            state: *st,
        })
        .collect();
    f
}

#[test]
fn sorting_by_state_and_by_lock() {
    use FileState::*;
    let mut held = with_state("held.txt", &[InSync, Held]);
    held.held = 1;
    let mut s = connected(vec![
        with_state("ok.txt", &[InSync, InSync]),
        with_state("stale.txt", &[InSync, Stale]),
        with_state("missing.txt", &[InSync, Missing]),
        with_state("syncing.txt", &[InSync, Syncing]),
        held,
        with_state("fine.txt", &[InSync, InSync]),
    ]);
    update(&mut s, key('s'));
    update(&mut s, key('s'));
    update(&mut s, key('s'));
    assert_eq!(s.files.sort(), SortKey::State);
    assert_eq!(
        shown(&s),
        [
            "held.txt",
            "stale.txt",
            "missing.txt",
            "syncing.txt",
            "fine.txt",
            "ok.txt"
        ]
    );
    // A conflict reported on a row moves it to the top at once.
    update(
        &mut s,
        ev(
            1,
            EventKind::Conflict {
                path: p("ok.txt"),
                winner: "alpha".into(),
                loser: "beta".into(),
                kept_as: "ok.conflict.txt".into(),
            },
        ),
    );
    assert_eq!(shown(&s)[0], "ok.txt");
    // …and a change after it puts it back among the rest.
    update(
        &mut s,
        ev(
            2,
            EventKind::Changed {
                path: p("ok.txt"),
                size: 5,
            },
        ),
    );
    assert_ne!(shown(&s)[0], "ok.txt");
    assert!(s.files.row(0).is_some());

    // Lock: locked first, by owner ignoring case, then the rest by name.
    let mut s = connected(four());
    for (i, (path, owner)) in [("h.txt", "Bo"), ("f.txt", "ana")].into_iter().enumerate() {
        update(
            &mut s,
            ev(
                i as u64,
                EventKind::Locked {
                    path: p(path),
                    owner: owner.into(),
                    via: "alpha".into(),
                },
            ),
        );
    }
    for _ in 0..4 {
        update(&mut s, key('s'));
    }
    assert_eq!(s.files.sort(), SortKey::Lock);
    assert_eq!(shown(&s), ["f.txt", "h.txt", "b.txt", "d.txt"]);
    // Locking a row while sorted by lock moves it among the locked.
    update(
        &mut s,
        ev(
            9,
            EventKind::Locked {
                path: p("d.txt"),
                owner: "Carl".into(),
                via: "alpha".into(),
            },
        ),
    );
    assert_eq!(shown(&s), ["f.txt", "h.txt", "d.txt", "b.txt"]);
    update(
        &mut s,
        ev(
            10,
            EventKind::Unlocked {
                path: p("f.txt"),
                by: "ana".into(),
                forced: false,
            },
        ),
    );
    assert_eq!(shown(&s), ["h.txt", "d.txt", "b.txt", "f.txt"]);
}

#[test]
fn names_sort_ignoring_case() {
    let mut s = connected(vec![
        file("b.txt", 1, 1),
        file("C.txt", 1, 1),
        file("a.txt", 1, 1),
        file("A.txt", 1, 1),
        file("docs/Zeta.md", 1, 1),
        file("Docs/alpha.md", 1, 1),
    ]);
    assert_eq!(
        shown(&s),
        [
            "A.txt",
            "a.txt",
            "b.txt",
            "C.txt",
            "Docs/alpha.md",
            "docs/Zeta.md"
        ]
    );
    // A new file finds its place by the same order.
    update(
        &mut s,
        ev(
            1,
            EventKind::Added {
                path: p("B.txt"),
                size: 3,
            },
        ),
    );
    assert_eq!(
        &shown(&s)[..5],
        ["A.txt", "a.txt", "B.txt", "b.txt", "C.txt"]
    );
    // And it can be found again (binary search agrees with the sort).
    update(
        &mut s,
        ev(
            2,
            EventKind::Deleted {
                path: p("B.txt"),
                by: "beta".into(),
            },
        ),
    );
    assert_eq!(s.files.view_len(), 6);
    assert!(!shown(&s).contains(&"B.txt".to_string()));
}

#[test]
fn n_and_shift_n_jump_between_filter_matches() {
    let mut s = connected(vec![
        file("a.txt", 1, 1),
        file("docs/one.md", 1, 1),
        file("m.txt", 1, 1),
        file("Docs/two.md", 1, 1),
        file("z.txt", 1, 1),
    ]);
    // Order: a.txt, docs/one.md, Docs/two.md, m.txt, z.txt.
    update(&mut s, key('n'));
    assert_eq!(selected(&s), "a.txt", "nothing to look for yet");
    assert_eq!(s.status.as_ref().unwrap().level, Level::Info);
    update(&mut s, key('/'));
    typed(&mut s, "docs/");
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(s.files.filter(), "", "the filter is gone…");
    assert_eq!(s.files.search(), "docs/", "…but n still knows what to find");
    assert_eq!(
        selected(&s),
        "docs/one.md",
        "filtering moved to the first match"
    );
    update(&mut s, key('g'));
    update(&mut s, key('n'));
    assert_eq!(selected(&s), "docs/one.md");
    assert!(s.status.is_none());
    update(&mut s, key('n'));
    assert_eq!(selected(&s), "Docs/two.md", "matches ignore case");
    update(&mut s, key('n'));
    assert_eq!(selected(&s), "docs/one.md", "round the end, as in vi");
    assert!(s.status.as_ref().unwrap().text.contains("top"));
    update(&mut s, key('N'));
    assert_eq!(selected(&s), "Docs/two.md", "N goes back, round the start");
    assert!(s.status.as_ref().unwrap().text.contains("bottom"));
    update(&mut s, key('G'));
    update(&mut s, key('N'));
    assert_eq!(selected(&s), "Docs/two.md");
    // Typing a filter that matches nothing: n says so and stays.
    update(&mut s, key('/'));
    typed(&mut s, "zzz");
    update(&mut s, code(KeyCode::Esc));
    let before = selected(&s);
    update(&mut s, key('n'));
    assert_eq!(selected(&s), before);
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
    // In the filter box n is a letter, not a jump.
    update(&mut s, key('/'));
    typed(&mut s, "n");
    assert_eq!(s.files.filter(), "n");
}

/// `f` on row `n` (1-based), then Enter on the prompt's default folder.
fn fetch_row(s: &mut AppState, n: usize) -> Vec<Effect> {
    update(s, key('g'));
    for _ in 1..n {
        update(s, key('j'));
    }
    update(s, key('f'));
    update(s, code(KeyCode::Enter))
}

fn exists(path: &str) -> Msg {
    Msg::FetchDone(Err(FetchError::Exists(PathBuf::from(path))))
}

#[test]
fn a_refused_fetch_asks_and_y_fetches_again_with_force() {
    let mut s = connected(four());
    let fx = fetch_row(&mut s, 1);
    let first = Effect::Fetch {
        what: Wanted::file(p("b.txt")),
        dest: PathBuf::from("/home/ana"),
        force: false,
    };
    assert_eq!(fx, vec![first]);
    update(&mut s, exists("/home/ana/b.txt"));
    assert!(s.fetch.is_none(), "the refused fetch is over");
    let Mode::Overwrite(q) = s.mode.clone() else {
        panic!("no question: {:?}", s.mode)
    };
    assert_eq!(q.text(), "b.txt exists in /home/ana — replace it? y/n");
    // Other keys do not answer it.
    for k in [key('j'), key('x'), code(KeyCode::Enter)] {
        assert!(update(&mut s, k).is_empty());
        assert!(matches!(s.mode, Mode::Overwrite(_)), "{:?}", s.mode);
    }
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::Fetch {
            what: Wanted::file(p("b.txt")),
            dest: PathBuf::from("/home/ana"),
            force: true,
        }]
    );
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(
        s.fetch.as_ref().map(|f| f.what.clone()),
        Some(Wanted::file(p("b.txt")))
    );
    update(&mut s, saved("/home/ana/b.txt"));
    assert_eq!(s.status.as_ref().unwrap().level, Level::Ok);
}

#[test]
fn n_or_esc_keeps_the_file_and_says_nothing_changed() {
    for answer in [key('n'), code(KeyCode::Esc)] {
        let mut s = connected(four());
        fetch_row(&mut s, 2);
        update(&mut s, exists("/home/ana/d.txt"));
        assert!(matches!(s.mode, Mode::Overwrite(_)));
        assert!(update(&mut s, answer.clone()).is_empty(), "{answer:?}");
        assert_eq!(s.mode, Mode::Normal);
        assert!(s.fetch.is_none());
        let st = s.status.clone().unwrap();
        assert_eq!(
            (st.level, st.text.as_str()),
            (Level::Info, "kept /home/ana/d.txt; nothing was changed")
        );
    }
}

#[test]
fn a_refusal_while_typing_does_not_take_the_keyboard() {
    let mut s = connected(four());
    fetch_row(&mut s, 1);
    update(&mut s, key('/'));
    update(&mut s, exists("/home/ana/b.txt"));
    assert_eq!(s.mode, Mode::Filter);
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Error);
    assert!(
        st.text
            .starts_with("/home/ana/b.txt is there already; nothing was fetched"),
        "{}",
        st.text
    );
}

#[test]
fn the_default_folder_is_the_last_one_used_and_paths_keep_their_folders() {
    let mut s = connected(vec![
        file("docs/notes/meeting.md", 10, 100),
        file("top.txt", 5, 100),
    ]);
    let run = |s: &mut AppState, line: &str| {
        update(s, key(':'));
        typed(s, line);
        update(s, code(KeyCode::Enter))
    };
    let fetch = |path: &str, dest: &str, force: bool| Effect::Fetch {
        what: Wanted::file(p(path)),
        dest: PathBuf::from(dest),
        force,
    };
    // The first time: the working directory, in the prompt and for `:fetch`.
    update(&mut s, key('f'));
    assert_eq!(
        s.mode,
        Mode::FetchPrompt {
            what: Wanted::file(p("docs/notes/meeting.md")),
            input: "/home/ana".into()
        }
    );
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(s.fetch_folder(), PathBuf::from("/home/ana"));
    // A folder typed at the prompt: the file keeps docs/notes/ under it.
    update(&mut s, key('f'));
    update(
        &mut s,
        Msg::Key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
    );
    typed(&mut s, "/tmp/dl");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![fetch("docs/notes/meeting.md", "/tmp/dl/docs/notes", false)]
    );
    update(&mut s, saved("/tmp/dl/docs/notes/meeting.md"));
    // Next time the prompt offers /tmp/dl, and `:fetch NAME` uses it.
    update(&mut s, key('f'));
    assert_eq!(
        s.mode,
        Mode::FetchPrompt {
            what: Wanted::file(p("docs/notes/meeting.md")),
            input: "/tmp/dl".into()
        }
    );
    update(&mut s, code(KeyCode::Esc));
    assert_eq!(
        run(&mut s, "fetch top.txt"),
        vec![fetch("top.txt", "/tmp/dl", false)]
    );
    update(&mut s, saved("/tmp/dl/top.txt"));
    // `--flat` saves under the name alone; the folder is remembered too.
    assert_eq!(
        run(&mut s, "fetch docs/notes/meeting.md /srv/x --flat"),
        vec![fetch("docs/notes/meeting.md", "/srv/x", false)]
    );
    update(&mut s, saved("/srv/x/meeting.md"));
    assert_eq!(s.fetch_folder(), PathBuf::from("/srv/x"));
    // A fetch that was not started (one is under way) is not "used".
    assert_eq!(
        run(&mut s, "fetch top.txt /a"),
        vec![fetch("top.txt", "/a", false)]
    );
    assert!(run(&mut s, "fetch top.txt /b").is_empty());
    assert_eq!(s.fetch_folder(), PathBuf::from("/a"));
}

#[test]
fn a_made_folder_is_named_in_the_status_line() {
    let mut s = connected(four());
    fetch_row(&mut s, 1);
    update(
        &mut s,
        Msg::FetchDone(Ok(Saved {
            to: PathBuf::from("/home/ana/new/b.txt"),
            made: Some(PathBuf::from("/home/ana/new")),
        })),
    );
    let st = s.status.clone().unwrap();
    assert_eq!(
        (st.level, st.text.as_str()),
        (
            Level::Ok,
            "fetched b.txt to /home/ana/new/b.txt (hash verified); made the folder /home/ana/new"
        )
    );
}

#[test]
fn esc_during_a_fetch_cancels_it() {
    let mut s = connected(four());
    // Without a fetch Esc clears the filter, as before.
    update(&mut s, key('/'));
    typed(&mut s, "b");
    update(&mut s, code(KeyCode::Enter));
    assert!(update(&mut s, code(KeyCode::Esc)).is_empty());
    assert_eq!(s.files.filter(), "");

    fetch_row(&mut s, 4);
    assert_eq!(
        update(&mut s, code(KeyCode::Esc)),
        vec![Effect::CancelFetch]
    );
    assert!(s.fetch.as_ref().unwrap().cancelling);
    // Once is enough: a second Esc asks nothing more.
    assert!(update(&mut s, code(KeyCode::Esc)).is_empty());
    // Still one fetch at a time until the cancelled one has stopped.
    assert!(fetch_row(&mut s, 1).is_empty());
    update(&mut s, Msg::FetchDone(Err(FetchError::Cancelled)));
    assert!(s.fetch.is_none());
    let st = s.status.clone().unwrap();
    assert_eq!(
        (st.level, st.text.as_str()),
        (Level::Info, "fetch of h.txt cancelled; nothing was saved")
    );
    // Esc works in the other views too.
    update(&mut s, key('3'));
    fetch_row_from_command(&mut s);
    assert_eq!(
        update(&mut s, code(KeyCode::Esc)),
        vec![Effect::CancelFetch]
    );
}

fn fetch_row_from_command(s: &mut AppState) {
    update(s, key(':'));
    typed(s, "fetch 1");
    assert_eq!(update(s, code(KeyCode::Enter)).len(), 1);
}

#[test]
fn the_rate_and_time_left_follow_the_last_seconds() {
    let mut s = connected(four());
    fetch_row(&mut s, 1);
    let total = 100 << 20;
    update(
        &mut s,
        Msg::FetchStarted {
            total,
            from: "beta".into(),
            now: NOW,
        },
    );
    let at = |s: &mut AppState, ms: i64, done: u64| {
        update(
            s,
            Msg::FetchProgress {
                done,
                now: NOW + ms * 1_000_000,
            },
        );
        let f = s.fetch.as_ref().unwrap();
        (f.per_sec(), f.eta_secs())
    };
    // Too soon to tell.
    assert_eq!(at(&mut s, 200, 1 << 20), (None, None));
    // 10 MiB/s for 4 s: 60 MiB left is 6 s.
    assert_eq!(at(&mut s, 4_000, 40 << 20), (Some(10 << 20), Some(6)));
    // Then 2 MiB/s: after 5 s more, only the last 5 s count.
    at(&mut s, 6_000, 44 << 20);
    at(&mut s, 8_000, 48 << 20);
    let (rate, left) = at(&mut s, 9_000, 50 << 20);
    assert_eq!(rate, Some(2 << 20));
    assert_eq!(left, Some(25));
    // A retry starts counting again.
    update(
        &mut s,
        Msg::FetchStarted {
            total,
            from: "beta".into(),
            now: NOW + 10 * SEC,
        },
    );
    let f = s.fetch.as_ref().unwrap();
    assert_eq!((f.done, f.per_sec()), (0, None));
}

/// A version of `path` kept on `node` `kept_s` seconds ago, which
/// alpha's change replaced.
fn version(node: &str, path: &str, kept_s: i64) -> KeptVersion {
    KeptVersion {
        node: node.into(),
        id: format!("{path}.version-{kept_s}-alpha"),
        path: p(path),
        cause: "alpha".into(),
        size: 12_288,
        mtime_ns: NOW - 3_600 * SEC,
        kept_ns: NOW - kept_s * SEC,
    }
}

/// What the pane of `path` shows: the copies, then the versions.
fn detail(path: &str, conflicts: Vec<ConflictCopy>, versions: Vec<KeptVersion>) -> Msg {
    Msg::DetailLoaded {
        path: p(path),
        result: Ok(FileDetail {
            lock: None,
            held: Vec::new(),
            conflicts,
            unanswered: Vec::new(),
            versions,
            versions_unanswered: Vec::new(),
        }),
    }
}

/// The id of the selected line (copy or version) of the pane.
fn pane_selection(s: &AppState) -> Option<String> {
    match &s.mode {
        Mode::Detail(d) => d.selected().map(|i| match i {
            DetailItem::Copy(c) => c.id.clone(),
            DetailItem::Version(v) => v.id.clone(),
        }),
        _ => None,
    }
}

fn loads_detail(fx: &[Effect]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::LoadDetail(_)))
        .count()
}

/// The pane asks for the kept versions with the rest; one selection runs
/// over the copies, then the versions, and stays on its line when the
/// lists change; a change to the file (per the feed) loads the pane again,
/// debounced, one load at a time.
#[test]
fn the_detail_pane_lists_kept_versions_and_loads_again_when_the_file_changes() {
    let mut s = connected(four());
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
    let b_copy = copy(
        "gamma",
        "b.conflict-20261124-100000-beta.txt",
        Some("b.txt"),
        50,
    );
    let (older, newer) = (
        version("beta", "b.txt", 600),
        version("gamma", "b.txt", 180),
    );
    update(
        &mut s,
        detail(
            "b.txt",
            vec![b_copy.clone()],
            vec![newer.clone(), older.clone()],
        ),
    );
    assert_eq!(pane_selection(&s), Some(b_copy.id.clone()));
    update(&mut s, key('j'));
    assert_eq!(pane_selection(&s), Some(newer.id.clone()));
    update(&mut s, key('j'));
    update(&mut s, key('j'));
    assert_eq!(
        pane_selection(&s),
        Some(older.id.clone()),
        "stops at the last"
    );
    update(&mut s, key('g'));
    assert_eq!(pane_selection(&s), Some(b_copy.id.clone()));
    update(&mut s, key('G'));
    assert_eq!(pane_selection(&s), Some(older.id.clone()));

    // Another file's change: nothing to load.
    update(
        &mut s,
        ev(
            1,
            EventKind::Changed {
                path: p("d.txt"),
                size: 3,
            },
        ),
    );
    assert_eq!(loads_detail(&update(&mut s, Msg::Tick(NOW + SEC))), 0);
    // b.txt arrived on beta (which kept what it replaced): once the
    // debounce is over, the pane loads again, once.
    update(
        &mut s,
        ev(
            2,
            EventKind::Transferred {
                path: p("b.txt"),
                from: "alpha".into(),
                to: "beta".into(),
                size: 31,
                sent: 31,
                millis: 2,
            },
        ),
    );
    let t = s.now_ns;
    assert_eq!(loads_detail(&update(&mut s, Msg::Tick(t + 1))), 0);
    assert_eq!(
        update(&mut s, Msg::Tick(t + DEBOUNCE_NS))
            .into_iter()
            .filter(|e| matches!(e, Effect::LoadDetail(_)))
            .collect::<Vec<_>>(),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
    // A change while it loads: it waits for the answer (which may predate
    // the change), then loads again.
    update(
        &mut s,
        ev(
            3,
            EventKind::Locked {
                path: p("b.txt"),
                owner: "bob".into(),
                via: "beta".into(),
            },
        ),
    );
    assert_eq!(
        loads_detail(&update(&mut s, Msg::Tick(t + 3 * DEBOUNCE_NS))),
        0
    );
    let newest = version("beta", "b.txt", 1);
    update(
        &mut s,
        detail(
            "b.txt",
            vec![b_copy.clone()],
            vec![newest, newer, older.clone()],
        ),
    );
    assert!(
        matches!(&s.mode, Mode::Detail(d) if d.sel == 3),
        "the selection stays on its version: {:?}",
        s.mode
    );
    assert_eq!(pane_selection(&s), Some(older.id.clone()));
    assert_eq!(
        loads_detail(&update(&mut s, Msg::Tick(t + 4 * DEBOUNCE_NS))),
        1
    );
    // A version gone from the list: the selection stays in the list.
    update(&mut s, detail("b.txt", vec![b_copy], Vec::new()));
    assert!(matches!(&s.mode, Mode::Detail(d) if d.sel == 0));
    // r loads again at once.
    assert_eq!(
        update(&mut s, key('r')),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
}

/// V on a kept version asks first, saying what happens; only a plain `y`
/// sends the restore (to the node that keeps it); the result or the error
/// is said in the status line. The copies' keys refuse a version and V a
/// copy, saying which key does what.
#[test]
fn a_kept_version_is_restored_only_after_a_yes() {
    let mut s = connected(four());
    let b_copy = copy(
        "gamma",
        "b.conflict-20261124-100000-beta.txt",
        Some("b.txt"),
        50,
    );
    let v = version("beta", "b.txt", 180);
    let open = |s: &mut AppState| {
        update(s, code(KeyCode::Enter));
        update(s, detail("b.txt", vec![b_copy.clone()], vec![v.clone()]));
    };
    open(&mut s);
    // On the copy, V says what it is for; the pane stays.
    assert!(update(&mut s, key('V')).is_empty());
    assert!(matches!(s.mode, Mode::Detail(_)));
    assert_eq!(
        s.status.as_ref().unwrap().text,
        "that is a conflict copy: R restores it; V restores a kept version (below the copies)"
    );
    update(&mut s, key('j'));
    for (k, says) in [
        ('R', "that is a kept version: V restores it"),
        ('x', "kept versions are not deleted by hand"),
        ('F', "a kept version cannot be fetched"),
    ] {
        assert!(update(&mut s, key(k)).is_empty());
        assert!(matches!(s.mode, Mode::Detail(_)), "{k}: {:?}", s.mode);
        let st = s.status.as_ref().unwrap();
        assert!(st.text.starts_with(says), "{k}: {}", st.text);
        assert_eq!(st.level, Level::Error);
    }

    // V: the question says what is restored and what becomes of the
    // current file.
    assert!(update(&mut s, key('V')).is_empty());
    let Mode::Confirm(c) = &s.mode else {
        panic!("V asks first: {:?}", s.mode)
    };
    assert_eq!(
        c.question,
        "Restore b.txt as kept on beta 3 min ago (12 KiB, modified 2026-11-24 11:00:00, replaced by alpha's change)? It becomes the current version on every node. The current b.txt (30 B, modified 2026-11-24 11:53:20) is kept as a version on beta."
    );
    // n, Enter and Ctrl-Y are no.
    for no in [
        key('n'),
        code(KeyCode::Enter),
        Msg::Key(KeyEvent::new(KeyCode::Char('y'), KeyModifiers::CONTROL)),
    ] {
        assert!(update(&mut s, no).is_empty());
        assert_eq!(s.mode, Mode::Normal);
        assert_eq!(
            s.status.as_ref().unwrap().text,
            "cancelled; nothing was changed"
        );
        open(&mut s);
        update(&mut s, key('j'));
        update(&mut s, key('V'));
        assert!(matches!(s.mode, Mode::Confirm(_)));
    }
    // y restores it, on the node that keeps it.
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::RestoreVersion {
            node: "beta".into(),
            id: v.id.clone(),
            path: p("b.txt"),
        }]
    );
    assert_eq!(s.status.as_ref().unwrap().text, "restoring b.txt on beta…");
    let restored = |result| Msg::VersionRestored {
        node: "beta".into(),
        path: p("b.txt"),
        result,
    };
    update(
        &mut s,
        restored(Ok(VersionRestoration {
            node: "beta".into(),
            id: v.id.clone(),
            path: p("b.txt"),
            replaced_as: Some("b.version-20261124-115320-beta.txt".into()),
        })),
    );
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Ok);
    assert_eq!(
        st.text,
        format!(
            "restored b.txt on beta from the version {}; the version it replaced is kept as b.version-20261124-115320-beta.txt on beta",
            v.id
        )
    );
    // The version was cleaned up (or restored) meanwhile: said so.
    update(&mut s, restored(Err(RestoreError::Gone)));
    let st = s.status.clone().unwrap();
    assert_eq!(st.level, Level::Error);
    assert_eq!(
        st.text,
        "beta no longer keeps that version of b.txt: it was cleaned up meanwhile (versions go by age and size) or restored already; :versions b.txt shows what is kept now"
    );
    update(
        &mut s,
        restored(Err(RestoreError::Failed(
            "b.txt is locked by bob since 11:58".into(),
        ))),
    );
    assert_eq!(
        s.status.as_ref().unwrap().text,
        "cannot restore b.txt from beta: b.txt is locked by bob since 11:58"
    );
}

/// A file deleted everywhere has no row: `:versions PATH` opens the pane
/// on it, and V brings it back (the question says so). `:versions` alone
/// opens the selected file's.
#[test]
fn versions_of_a_file_deleted_everywhere_open_from_the_command_line() {
    let mut s = connected(four());
    typed(&mut s, ":versions notes/gone.txt");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::LoadDetail(p("notes/gone.txt"))]
    );
    assert!(matches!(&s.mode, Mode::Detail(d) if d.path == p("notes/gone.txt")));
    update(
        &mut s,
        detail(
            "notes/gone.txt",
            Vec::new(),
            vec![version("gamma", "notes/gone.txt", 7_200)],
        ),
    );
    update(&mut s, key('V'));
    let Mode::Confirm(c) = &s.mode else {
        panic!("V asks first: {:?}", s.mode)
    };
    assert!(
        c.question.starts_with(
            "Restore notes/gone.txt as kept on gamma 2 h ago (12 KiB, modified 2026-11-24 11:00:00, replaced by alpha's change)?"
        ) && c
            .question
            .ends_with("There is no current notes/gone.txt: it comes back."),
        "{}",
        c.question
    );
    update(&mut s, key('n'));
    // A folder's path may end in a slash; alone, the selected file.
    typed(&mut s, ":versions notes/");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::LoadDetail(p("notes"))]
    );
    update(&mut s, code(KeyCode::Esc));
    typed(&mut s, ":versions");
    assert_eq!(
        update(&mut s, code(KeyCode::Enter)),
        vec![Effect::LoadDetail(p("b.txt"))]
    );
    update(&mut s, code(KeyCode::Esc));
    // Away from the node: said, nothing opened.
    update(
        &mut s,
        Msg::ConnectionLost {
            reason: "reset".into(),
            now: NOW + SEC,
        },
    );
    typed(&mut s, ":versions notes/gone.txt");
    assert!(update(&mut s, code(KeyCode::Enter)).is_empty());
    assert_eq!(s.mode, Mode::Normal);
    assert_eq!(s.status.as_ref().unwrap().level, Level::Error);
}

#[test]
fn override_and_revert_ask_first_and_say_what_came_of_them() {
    let mut s = connected(four());
    update(&mut s, key(':'));
    typed(&mut s, "override docs/");
    assert!(update(&mut s, code(KeyCode::Enter)).is_empty());
    let Mode::Confirm(c) = &s.mode else {
        panic!(":override asks first: {:?}", s.mode)
    };
    assert_eq!(
        c.question,
        "Push alpha's version over every change of the others it did not take under docs? Its files win on every node; files only the others have are deleted there (kept as versions)."
    );
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::Mirror {
            revert: false,
            path: Some(p("docs"))
        }]
    );
    update(
        &mut s,
        Msg::Mirrored {
            revert: false,
            result: Ok(MirrorReport {
                node: "alpha".into(),
                paths: vec![p("docs/a.txt")],
                count: 1,
                not_done: vec![],
            }),
        },
    );
    let st = s.status.clone().unwrap();
    assert_eq!(
        st.text,
        "1 path(s) on alpha pushed over the others' version"
    );
    assert_eq!(st.level, Level::Ok);

    // No is no; the node's refusal is shown.
    update(&mut s, key(':'));
    typed(&mut s, "revert");
    update(&mut s, code(KeyCode::Enter));
    assert!(
        matches!(&s.mode, Mode::Confirm(c) if c.question.starts_with("Throw away the changes made on alpha?"))
    );
    assert!(update(&mut s, key('n')).is_empty());
    assert_eq!(s.mode, Mode::Normal);
    update(&mut s, key(':'));
    typed(&mut s, "revert");
    update(&mut s, code(KeyCode::Enter));
    assert_eq!(
        update(&mut s, key('y')),
        vec![Effect::Mirror {
            revert: true,
            path: None
        }]
    );
    update(
        &mut s,
        Msg::Mirrored {
            revert: true,
            result: Err("alpha is send-receive; `tandem revert` is for a receive-only node".into()),
        },
    );
    let st = s.status.clone().unwrap();
    assert_eq!(
        st.text,
        "cannot revert: alpha is send-receive; `tandem revert` is for a receive-only node"
    );
    assert_eq!(st.level, Level::Error);
}
