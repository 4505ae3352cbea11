//! Names that cannot coexist everywhere (issue 16, part 5), through real
//! `tandem-node` processes and the real `tandem` client.
//!
//! This machine cannot mount a case-insensitive file system (no
//! CONFIG_UNICODE for tmpfs/ext4 casefold, no vfat or exfat module, no
//! ciopfs), so the node that refuses is told what its file system does with
//! `--assume-fs` instead of probing it; everything else is the real path: the
//! check is made on the disk's listing, the engine blocks the entry, and the
//! list, the feed and the log say so. The probe itself is unit-tested on
//! this machine's file systems (`fsprobe`), the rules in `names`.
//!
//! "Was not written" is established causally: after the files, a barrier
//! file is written on A; once B has it, B has decided every entry A sent
//! before it.

mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::*;
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(20);
const NFC: &str = "caf\u{e9}.txt";
const NFD: &str = "cafe\u{301}.txt";

/// A and B, linked; `b_args` are extra arguments of B.
fn pair(b_args: &[&str]) -> (Node, Node) {
    let (aa, ba) = (free_addr(), free_addr());
    let mut bb = Node::builder("B").listen(ba).peer(aa);
    for x in b_args {
        bb = bb.arg(x);
    }
    let mut nodes = start_all(vec![Node::builder("A").listen(aa).peer(ba), bb]);
    let b = nodes.pop().expect("B");
    let a = nodes.pop().expect("A");
    wait_linked(&a, &b);
    (a, b)
}

fn read(node: &Node, rel: &str) -> Option<Vec<u8>> {
    std::fs::read(node.path(rel)).ok()
}

/// Writes `name` on `from` and waits until `to` has it: `to` has decided
/// everything `from` announced before.
fn barrier(from: &Node, to: &Node, name: &str) {
    put(from.path(name), name);
    wait_until(
        SYNC,
        &format!("{name} on {}", to.name()),
        &[from, to],
        || read(to, name).as_deref() == Some(name.as_bytes()),
    );
    // Files that came in the same batch are put in place one after the
    // other while the core handles that batch; a question to the core is
    // answered only after it is done with it.
    to.wait_list(&format!("{} answers after {name}", to.name()), |_| true);
}

/// The names in `b`'s folder once `enough` holds for them (files of one
/// index message may be put in place by more than one batch: the barrier
/// file can be first).
fn holding(a: &Node, b: &Node, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    wait_until(SYNC, "what B holds", &[a, b], || {
        let here = harness::dir_entries(b.dir());
        if enough(&here) {
            Ok(here)
        } else {
            Err(format!("B holds {here:?}"))
        }
    })
}

/// `node`'s warnings in `tandem nodes --json` (asked of `node` itself).
fn warnings(node: &Node) -> Result<Vec<String>, String> {
    let v = nodes_json(node)?;
    let me = v
        .iter()
        .find(|r| r["name"] == node.name())
        .ok_or_else(|| format!("{} not in {v:?}", node.name()))?;
    Ok(me["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// A `tandem feed --json` process, killed (by its PID) when dropped.
struct Feed {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Feed {
    /// Follows `node`'s feed; returns once it is subscribed (a barrier
    /// event shows up), so nothing after this call is missed.
    fn start(node: &Node) -> Feed {
        let mut child = tandem_command(node.addr(), &["feed", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tandem feed");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped stdout");
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let feed = Feed { child, lines };
        // Subscribed once a change made now is in it.
        let mark = format!("feed-mark-{}", std::process::id());
        for i in 0.. {
            put(node.path(&mark), format!("{i}"));
            let seen = wait_until_or(Duration::from_secs(2), || {
                feed.events().iter().any(|e| e["path"] == mark.as_str())
            });
            if seen {
                break;
            }
            assert!(i < 10, "{}", node.fail("the feed shows nothing"));
        }
        let _ = std::fs::remove_file(node.path(&mark));
        feed
    }

    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for an event that `pred` accepts; returns it.
    fn wait(&self, what: &str, nodes: &[&Node], pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(SYNC, what, nodes, || {
            let ev = self.events();
            ev.iter()
                .find(|e| pred(e))
                .cloned()
                .ok_or_else(|| format!("events: {ev:?}"))
        })
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` for at most `d` (scaled); true if it held.
fn wait_until_or(d: Duration, f: impl FnMut() -> bool) -> bool {
    harness::wait_until_or_timeout(scaled(d), f)
}

/// Of two spellings on A, B (case-insensitive) takes one; the other is
/// not written, stays on A, and B says why in its list, feed and log, for
/// files and for folders. Once the clash is renamed away on A, B takes it.
#[test]
fn a_case_insensitive_node_refuses_a_second_spelling_and_loses_nothing() {
    let (a, b) = pair(&["--assume-fs", "case-insensitive"]);
    b.wait_log("--assume-fs: treating the file system of");
    b.wait_log("does not tell apart names that differ only in case");
    a.wait_log("tells every spelling of a name apart (case and Unicode form), as probed at start");
    let feed = Feed::start(&b);

    put(a.path("Notes.txt"), "upper");
    put(a.path("notes.txt"), "lower");
    put(a.path("Docs/a.txt"), "in Docs");
    put(a.path("docs/b.txt"), "in docs");
    // On A a folder like any other; where case is folded, B's state folder.
    put(a.path(".TANDEM/forged.txt"), "forged");
    barrier(&a, &b, "barrier-1.txt");

    // B holds one spelling of each; which one is the order of arrival.
    let here = holding(&a, &b, |h| {
        (h.contains(&"Notes.txt".into()) || h.contains(&"notes.txt".into()))
            && (h.contains(&"Docs".into()) || h.contains(&"docs".into()))
    });
    let (kept, refused) = match (
        here.contains(&"Notes.txt".into()),
        here.contains(&"notes.txt".into()),
    ) {
        (true, false) => ("Notes.txt", "notes.txt"),
        (false, true) => ("notes.txt", "Notes.txt"),
        _ => panic!("{}", b.fail(&format!("B holds {here:?}"))),
    };
    let (kept_dir, refused_dir) =
        match (here.contains(&"Docs".into()), here.contains(&"docs".into())) {
            (true, false) => ("Docs", "docs"),
            (false, true) => ("docs", "Docs"),
            _ => panic!("{}", b.fail(&format!("B holds {here:?}"))),
        };
    let want = |n: &str| if n == "Notes.txt" { "upper" } else { "lower" };
    assert_eq!(read(&b, kept).unwrap(), want(kept).as_bytes());
    let inside = harness::dir_entries(&b.path(kept_dir));
    let kept_file = if kept_dir == "Docs" { "a.txt" } else { "b.txt" };
    assert_eq!(
        inside,
        [kept_file],
        "nothing of {refused_dir} went into {kept_dir}"
    );

    // The list on B: the refused ones are in error there, in sync on A.
    let refused_file = format!(
        "{refused_dir}/{}",
        if kept_dir == "Docs" { "b.txt" } else { "a.txt" }
    );
    let list = b.wait_list("the refused names in error on B", |l| {
        state_in(l, refused, "B").as_deref() == Some("error")
            && state_in(l, &refused_file, "B").as_deref() == Some("error")
    });
    assert_eq!(state_in(&list, refused, "A").as_deref(), Some("in sync"));
    assert_eq!(state_in(&list, kept, "B").as_deref(), Some("in sync"));

    // The log and the feed say what is in the way, and what to do.
    let why = format!(
        "{kept} is here, and this file system cannot hold {refused} beside it (the names differ only in case); rename one of them"
    );
    let line = b.wait_log(&format!("cannot apply {refused} (from A): {why}"));
    assert!(line.contains("ERROR"), "{line}");
    let ev = feed.wait("the refusal in B's feed", &[&a, &b], |e| {
        e["kind"] == "apply_failed" && e["node"] == "B" && e["path"] == refused
    });
    assert!(ev["text"].as_str().unwrap().contains(&why), "{ev}");
    b.wait_log(&format!(
        "{kept_dir} is here, and this file system cannot hold {refused_dir} beside it"
    ));
    b.wait_log(
        "cannot apply .TANDEM/forged.txt (from A): .tandem is here, and this file system cannot hold .TANDEM beside it",
    );
    assert!(!b.path(".tandem/forged.txt").exists() && !b.path(".TANDEM").exists());
    let w = wait_until(SYNC, "a warning on B", &[&b], || {
        let w = warnings(&b)?;
        if w.iter().any(|l| l.contains("cannot be applied here")) {
            Ok(w)
        } else {
            Err(format!("warnings: {w:?}"))
        }
    });
    assert!(!w.iter().any(|l| l.contains("pair(s) of names")), "{w:?}");

    // Nothing lost on A, and no loop on B: the refusal is logged once.
    barrier(&a, &b, "barrier-2.txt");
    assert_eq!(read(&a, "Notes.txt").unwrap(), b"upper");
    assert_eq!(read(&a, "notes.txt").unwrap(), b"lower");
    assert_eq!(read(&a, "Docs/a.txt").unwrap(), b"in Docs");
    assert_eq!(read(&a, "docs/b.txt").unwrap(), b"in docs");
    assert_eq!(read(&b, kept).unwrap(), want(kept).as_bytes());
    assert_eq!(b.log_count(&format!("cannot apply {refused} (from")), 1);

    // An upload of a third spelling through B is refused too.
    let outside = tempfile::tempdir().unwrap();
    let f = outside.path().join("upload.txt");
    put(&f, "third");
    let out = b.tandem(&["put", f.to_str().unwrap(), "--as", "NOTES.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains(&format!(
            "{kept} is here, and this file system cannot hold NOTES.txt beside it"
        )),
        "{err}"
    );
    assert_eq!(read(&b, kept).unwrap(), want(kept).as_bytes());

    // Renamed away on A: B takes it under the new name, and the error is gone.
    std::fs::rename(a.path(refused), a.path("notes-2.txt")).unwrap();
    wait_until(SYNC, "notes-2.txt on B", &[&a, &b], || {
        read(&b, "notes-2.txt").as_deref() == Some(want(refused).as_bytes())
    });
    b.wait_list("no error left for the renamed file", |l| {
        find(l, refused).is_none() && state_in(l, "notes-2.txt", "B").as_deref() == Some("in sync")
    });
    assert_eq!(read(&b, kept).unwrap(), want(kept).as_bytes());
}

/// A normalizing node takes `Notes.txt` and `notes.txt` (it keeps case
/// apart) but only one of the two Unicode forms of `café.txt`.
#[test]
fn a_normalizing_node_refuses_the_other_unicode_form_only() {
    let (a, b) = pair(&["--assume-fs", "normalizing"]);
    put(a.path(NFC), "nfc");
    put(a.path(NFD), "nfd");
    put(a.path("Notes.txt"), "upper");
    put(a.path("notes.txt"), "lower");
    barrier(&a, &b, "barrier-1.txt");
    let here = holding(&a, &b, |h| {
        h.contains(&"Notes.txt".into())
            && h.contains(&"notes.txt".into())
            && (h.contains(&NFC.into()) || h.contains(&NFD.into()))
    });
    let (kept, refused) = match (here.contains(&NFC.into()), here.contains(&NFD.into())) {
        (true, false) => (NFC, NFD),
        (false, true) => (NFD, NFC),
        _ => panic!("{}", b.fail(&format!("B holds {here:?}"))),
    };
    b.wait_list("the other form in error on B", |l| {
        state_in(l, refused, "B").as_deref() == Some("error")
    });
    b.wait_log(&format!(
        "cannot apply {refused} (from A): {kept} is here, and this file system cannot hold {refused} beside it (the names differ only in Unicode form"
    ));
    assert_eq!(read(&a, NFC).unwrap(), b"nfc");
    assert_eq!(read(&a, NFD).unwrap(), b"nfd");
}

/// Two nodes whose file systems keep spellings apart: both names sync, and
/// each node warns (log, feed, `tandem nodes`) until one is renamed.
#[test]
fn where_both_spellings_fit_both_sync_with_a_warning() {
    let (a, b) = pair(&[]);
    let feed = Feed::start(&a);
    put(a.path("Notes.txt"), "upper");
    put(a.path("notes.txt"), "lower");
    put(a.path(NFC), "nfc");
    put(a.path(NFD), "nfd");
    for (name, body) in [
        ("Notes.txt", "upper"),
        ("notes.txt", "lower"),
        (NFC, "nfc"),
        (NFD, "nfd"),
    ] {
        wait_until(SYNC, &format!("{name} on B"), &[&a, &b], || {
            read(&b, name).as_deref() == Some(body.as_bytes())
        });
    }
    for n in [&a, &b] {
        n.wait_log(
            "Notes.txt and notes.txt differ only in case: both are kept here, but a case-insensitive or normalizing file system (macOS, Windows) cannot hold both",
        );
        n.wait_log(&format!("{NFD} and {NFC} differ only in Unicode form"));
        let w = wait_until(SYNC, "the warning in tandem nodes", &[n], || {
            let w = warnings(n)?;
            w.iter()
                .find(|l| l.contains("2 pair(s) of names here differ only in case or Unicode form"))
                .cloned()
                .ok_or_else(|| format!("{}: {w:?}", n.name()))
        });
        assert!(w.contains("(e.g. Notes.txt and notes.txt)"), "{w}");
    }
    for node in ["A", "B"] {
        let ev = feed.wait(&format!("{node}'s warning in the feed"), &[&a, &b], |e| {
            e["kind"] == "names_collide" && e["node"] == node && e["path"] == "Notes.txt"
        });
        assert!(
            ev["text"]
                .as_str()
                .unwrap()
                .starts_with("Notes.txt and notes.txt differ only in case"),
            "{ev}"
        );
    }
    // Logged once per pair, not at every look.
    barrier(&a, &b, "barrier-1.txt");
    assert_eq!(a.log_count("Notes.txt and notes.txt differ"), 1);

    // One renamed: the warning goes, on both nodes.
    std::fs::rename(a.path("notes.txt"), a.path("notes-2.txt")).unwrap();
    std::fs::remove_file(a.path(NFD)).unwrap();
    for n in [&a, &b] {
        wait_until(SYNC, "no names warning left", &[&a, &b], || {
            let w = warnings(n)?;
            if w.iter().any(|l| l.contains("pair(s) of names")) {
                Err(format!("{}: {w:?}", n.name()))
            } else {
                Ok(())
            }
        });
    }
}
