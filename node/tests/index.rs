//! The node's index (issue 2), tested through the real `tandem-node` and
//! `tandem` binaries: changes made while a node runs or while it is down
//! show in `tandem list`; the list's JSON and text forms; what a node does
//! with bad connections, bad arguments and names that are not UTF-8.
//!
//! A change on disk should show in `tandem list` within 2 s. The tests poll
//! with a 5 s deadline ([`CHANGE_TIMEOUT`]) so that a loaded 2-core CI
//! machine does not make them flaky; the latency of each step is printed
//! (`cargo test -- --nocapture`) to show the real figure.

mod harness;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use serde_json::Value;
use tandem_common::proto::{self, Hello, HelloReply, Refusal, Role};

// ---------------------------------------------------------------------------
// Helpers

/// The row for `path`; panics with the list and the log if it is missing.
fn row<'a>(node: &Node, list: &'a [Value], path: &str) -> &'a Value {
    find(list, path).unwrap_or_else(|| {
        panic!(
            "{}",
            node.fail(&format!("{path} is not listed: {}", pretty(list)))
        )
    })
}

fn assert_paths(node: &Node, list: &[Value], expected: &[&str]) {
    let got = paths(list);
    assert!(
        got == expected,
        "{}",
        node.fail(&format!("listed paths {got:?}, expected {expected:?}"))
    );
}

/// A scenario: each step acts on the disk, then waits until the node's list
/// equals the disk (path, size, mtime, hash), recording how long it took.
struct Steps<'a> {
    node: &'a Node,
    latencies: Vec<(String, Duration)>,
}

impl<'a> Steps<'a> {
    fn new(node: &'a Node) -> Self {
        Steps {
            node,
            latencies: Vec::new(),
        }
    }

    fn step(&mut self, what: &str, act: impl FnOnce()) -> Vec<Value> {
        let t = Instant::now();
        act();
        let list = self.node.wait_matches_disk(what);
        self.latencies.push((what.to_string(), t.elapsed()));
        list
    }
}

impl Drop for Steps<'_> {
    fn drop(&mut self) {
        let worst = self.latencies.iter().map(|(_, d)| *d).max();
        eprintln!(
            "latency of each step (change on disk -> visible in `tandem list`), worst {worst:.0?}:"
        );
        for (what, d) in &self.latencies {
            eprintln!("  {d:>8.0?}  {what}");
        }
    }
}

fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) {
    let (from, to) = (from.as_ref(), to.as_ref());
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", from.display(), to.display()));
}

fn non_utf8(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

// ---------------------------------------------------------------------------
// 1. Changes while the node runs

#[test]
fn changes_while_running_show_in_list() {
    let node = Node::start("live");
    // In the same temp dir as the node's directory, so same filesystem:
    // moves between the two are renames, as `mv` would do.
    let outside = tempfile::tempdir().expect("temp dir");
    let out = |rel: &str| outside.path().join(rel);
    let mut s = Steps::new(&node);

    let list = s.step("nothing listed in an empty directory", || {});
    assert_paths(&node, &list, &[]);

    // Create.
    let list = s.step("hello.txt created", || {
        put(node.path("hello.txt"), "hello, world\n")
    });
    assert_paths(&node, &list, &["hello.txt"]);
    let r = row(&node, &list, "hello.txt");
    assert_eq!(r["size"], 13);
    assert_eq!(r["hash"], blake3_hex(b"hello, world\n"));
    let h1 = r["hash"].clone();

    // Modify: longer.
    let list = s.step("hello.txt rewritten longer", || {
        put(node.path("hello.txt"), "hello again, with a longer line\n")
    });
    let r = row(&node, &list, "hello.txt");
    assert_eq!(r["size"], 32);
    assert_ne!(r["hash"], h1, "the hash must change with the content");
    let h2 = r["hash"].clone();

    // Modify: same size, other bytes.
    let list = s.step("hello.txt rewritten, same size", || {
        put(node.path("hello.txt"), "HELLO AGAIN, WITH A LONGER LINE\n")
    });
    let r = row(&node, &list, "hello.txt");
    assert_eq!(r["size"], 32);
    assert_ne!(
        r["hash"], h2,
        "same size, other bytes: the hash must change"
    );
    let h3 = r["hash"].clone();

    // Modify: append through an open file.
    let list = s.step("hello.txt appended to", || {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(node.path("hello.txt"))
            .expect("open for append");
        f.write_all(b"one more\n").expect("append");
    });
    let r = row(&node, &list, "hello.txt");
    assert_eq!(r["size"], 41);
    assert_ne!(r["hash"], h3);
    let h4 = r["hash"].clone();

    // Only the mtime changes (`touch -d`): same hash, exact new mtime.
    let list = s.step("hello.txt mtime set to 2001-02-03", || {
        filetime::set_file_mtime(
            node.path("hello.txt"),
            filetime::FileTime::from_unix_time(981_173_106, 123_456_789),
        )
        .expect("set mtime")
    });
    let r = row(&node, &list, "hello.txt");
    assert_eq!(r["mtime"], "2001-02-03T04:05:06.123456789Z");
    assert_eq!(r["hash"], h4);

    // A file inside a new nested directory, written at once (before the
    // watcher can have seen the directories).
    let list = s.step("a/b/c/deep.txt created with its directories", || {
        fs::create_dir_all(node.path("a/b/c")).expect("mkdir -p");
        fs::write(node.path("a/b/c/deep.txt"), "deep\n").expect("write");
    });
    assert_paths(&node, &list, &["a/b/c/deep.txt", "hello.txt"]);

    let list = s.step("more files in the new directories", || {
        put(node.path("a/top.txt"), "top\n");
        put(node.path("a/b/mid.txt"), "mid\n");
        put(node.path("doomed.txt"), "doomed\n");
    });
    assert_paths(
        &node,
        &list,
        &[
            "a/b/c/deep.txt",
            "a/b/mid.txt",
            "a/top.txt",
            "doomed.txt",
            "hello.txt",
        ],
    );

    // Delete.
    let list = s.step("doomed.txt deleted", || {
        fs::remove_file(node.path("doomed.txt")).expect("rm")
    });
    assert!(find(&list, "doomed.txt").is_none());

    // Rename a file into another directory: same content, new path.
    let list = s.step("hello.txt renamed to a/b/renamed.txt", || {
        rename(node.path("hello.txt"), node.path("a/b/renamed.txt"))
    });
    assert!(find(&list, "hello.txt").is_none());
    assert_eq!(row(&node, &list, "a/b/renamed.txt")["hash"], h4);

    // Rename a whole directory with files.
    let list = s.step("directory a renamed to z", || {
        rename(node.path("a"), node.path("z"))
    });
    assert_paths(
        &node,
        &list,
        &[
            "z/b/c/deep.txt",
            "z/b/mid.txt",
            "z/b/renamed.txt",
            "z/top.txt",
        ],
    );

    // The renamed directory is still watched, under its new name.
    let list = s.step("changes inside the renamed directory", || {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(node.path("z/b/c/deep.txt"))
            .expect("open");
        f.write_all(b"deeper\n").expect("append");
        drop(f);
        put(node.path("z/b/c/new.txt"), "new\n");
    });
    assert_eq!(row(&node, &list, "z/b/c/deep.txt")["size"], 12);
    row(&node, &list, "z/b/c/new.txt");

    // A file moved in from outside the watched tree.
    put(out("in.txt"), "came from outside\n");
    let list = s.step("in.txt moved in from outside", || {
        rename(out("in.txt"), node.path("z/in.txt"))
    });
    assert_eq!(
        row(&node, &list, "z/in.txt")["hash"],
        blake3_hex(b"came from outside\n")
    );

    // A directory with files moved in from outside.
    put(out("pack/x.txt"), "x\n");
    put(out("pack/sub/y.txt"), "y\n");
    let list = s.step("directory pack moved in from outside", || {
        rename(out("pack"), node.path("z/pack"))
    });
    row(&node, &list, "z/pack/x.txt");
    row(&node, &list, "z/pack/sub/y.txt");

    // A file and a directory moved out of the tree.
    let list = s.step("z/top.txt moved out", || {
        rename(node.path("z/top.txt"), out("top.txt"))
    });
    assert!(find(&list, "z/top.txt").is_none());
    let list = s.step("directory z/pack moved out", || {
        rename(node.path("z/pack"), out("pack-out"))
    });
    assert!(paths(&list).iter().all(|p| !p.starts_with("z/pack/")));
    assert_paths(
        &node,
        &list,
        &[
            "z/b/c/deep.txt",
            "z/b/c/new.txt",
            "z/b/mid.txt",
            "z/b/renamed.txt",
            "z/in.txt",
        ],
    );

    // A directory removed with everything in it.
    let list = s.step("directory z removed recursively", || {
        fs::remove_dir_all(node.path("z")).expect("rm -r")
    });
    assert_paths(&node, &list, &[]);
}

#[test]
fn replacements_links_and_special_files() {
    let node = Node::start("special");
    let mut s = Steps::new(&node);

    // An editor's atomic save: write a temp file, rename it over the old.
    s.step("doc.txt created", || {
        put(node.path("doc.txt"), "version 1\n")
    });
    let list = s.step("doc.txt replaced by renaming a temp file over it", || {
        put(node.path(".doc.txt.tmp"), "version 2, saved atomically\n");
        rename(node.path(".doc.txt.tmp"), node.path("doc.txt"));
    });
    assert_paths(&node, &list, &["doc.txt"]);
    assert_eq!(
        row(&node, &list, "doc.txt")["hash"],
        blake3_hex(b"version 2, saved atomically\n")
    );

    // A file replaced by a directory of the same name, and back.
    s.step("thing created as a file", || {
        put(node.path("thing"), "file\n")
    });
    let list = s.step("thing replaced by a directory with a file", || {
        fs::remove_file(node.path("thing")).expect("rm");
        put(node.path("thing/inside.txt"), "inside\n");
    });
    assert_paths(&node, &list, &["doc.txt", "thing/inside.txt"]);
    let list = s.step("thing replaced by a file again", || {
        fs::remove_dir_all(node.path("thing")).expect("rm -r");
        put(node.path("thing"), "a file again\n");
    });
    assert_paths(&node, &list, &["doc.txt", "thing"]);

    // Listed as links (never followed): symlinks to files or directories.
    // Not listed: a FIFO, anything in the state folder. The sentinel
    // written after them is a barrier: once it is listed, the node has seen
    // the earlier events too.
    let list = s.step("links, a FIFO and .tandem/junk, then a sentinel", || {
        std::os::unix::fs::symlink("doc.txt", node.path("link-to-file")).expect("ln -s");
        fs::create_dir(node.path("realdir")).expect("mkdir");
        std::os::unix::fs::symlink("realdir", node.path("link-to-dir")).expect("ln -s");
        let fifo = std::ffi::CString::new(node.path("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        put(node.path(".tandem/junk.txt"), "never listed\n");
        put(node.path("sentinel-1"), "1\n");
    });
    assert_paths(
        &node,
        &list,
        &[
            "doc.txt",
            "link-to-dir",
            "link-to-file",
            "sentinel-1",
            "thing",
        ],
    );
    for (link, target) in [("link-to-dir", "realdir"), ("link-to-file", "doc.txt")] {
        let row = find(&list, link).expect("listed");
        assert_eq!(row["link"], target, "{row}");
    }

    // Only the top-level .tandem is the state folder; hidden files count.
    let list = s.step("sub/.tandem/x and .hidden", || {
        put(node.path("sub/.tandem/x"), "x\n");
        put(node.path(".hidden"), "h\n");
    });
    let links = ["link-to-dir", "link-to-file"];
    let mut want = vec![".hidden", "doc.txt"];
    want.extend(links);
    want.extend(["sentinel-1", "sub/.tandem/x", "thing"]);
    assert_paths(&node, &list, &want);

    // A listed file replaced by a symlink is a link now.
    let list = s.step("thing replaced by a symlink, then a sentinel", || {
        fs::remove_file(node.path("thing")).expect("rm");
        std::os::unix::fs::symlink("doc.txt", node.path("thing")).expect("ln -s");
        put(node.path("sentinel-2"), "2\n");
    });
    let mut want = vec![".hidden", "doc.txt"];
    want.extend(links);
    want.extend(["sentinel-1", "sentinel-2", "sub/.tandem/x", "thing"]);
    assert_paths(&node, &list, &want);
    assert_eq!(find(&list, "thing").expect("listed")["link"], "doc.txt");
}

/// A directory replaced by a symlink to a directory outside the tree: the
/// files behind the link must never be indexed, not even for a moment.
///
/// Fails today (about 4 runs in 5): the hint for `a/x` (a delete, due after
/// 3 ms) is looked at with `symlink_metadata("DIR/a/x")`, which follows the
/// symlink `a`, so the outside file is hashed and indexed as `a/x`; ~100 ms
/// later the settled hint for `a` tombstones it again. Enable once
/// `core::process_due` / `scan::stat` refuse paths whose parents are
/// symlinks.
#[test]
fn directory_replaced_by_a_symlink_is_not_followed() {
    let node = Node::start("symlinked-parent");
    let outside = tempfile::tempdir().expect("temp dir");
    let secret = b"outside the tree, 37 bytes long.....\n";
    put(outside.path().join("x"), secret);
    put(node.path("a/x"), "inside\n");
    node.wait_matches_disk("a/x");

    fs::remove_dir_all(node.path("a")).expect("rm -r");
    std::os::unix::fs::symlink(outside.path(), node.path("a")).expect("ln -s");
    put(node.path("sentinel"), "s\n");
    let list = node.wait_matches_disk("a/x gone, sentinel listed");
    // `a` is listed as the link it is now; nothing behind it.
    assert_paths(&node, &list, &["a", "sentinel"]);
    assert_eq!(
        find(&list, "a").expect("listed")["link"],
        outside.path().to_str().unwrap()
    );
    // No waiting needed: the sentinel's hint is due no earlier than the one
    // for a/x, so by now the node has looked at a/x (and logged it if it
    // indexed it).
    let followed: Vec<String> = node
        .log()
        .lines()
        .filter(|l| l.contains(&format!("a/x ({} B)", secret.len())))
        .map(str::to_string)
        .collect();
    assert!(
        followed.is_empty(),
        "{}",
        node.fail(&format!(
            "the node indexed a file outside its directory through the symlink a: {followed:#?}"
        ))
    );
}

// ---------------------------------------------------------------------------
// 2. Slow writers

#[test]
fn slowly_written_file_is_indexed_with_its_final_content() {
    let node = Node::start("slow");

    // Write a chunk, pause (longer than the node's 100 ms settle time: the
    // pause is the scenario, not synchronisation), write more, close.
    let first = pattern(200 * 1024, 1);
    let second = pattern(300 * 1024, 2);
    let mut f = File::create(node.path("slow.bin")).expect("create");
    f.write_all(&first).expect("write");
    f.flush().expect("flush");
    thread::sleep(Duration::from_millis(300));
    f.write_all(&second).expect("write");
    drop(f);
    let all = [first, second].concat();
    let want = blake3_hex(&all);
    node.wait_list("slow.bin with its final size and hash", |l| {
        find(l, "slow.bin").is_some_and(|r| r["size"] == all.len() && r["hash"] == want)
    });

    // A writer that never pauses long enough to settle: 16 KiB every 10 ms
    // for about a second, then close.
    let mut f = File::create(node.path("busy.bin")).expect("create");
    let mut written = Vec::new();
    let start = Instant::now();
    let mut seed = 10;
    while start.elapsed() < Duration::from_secs(1) {
        let chunk = pattern(16 * 1024, seed);
        seed += 1;
        f.write_all(&chunk).expect("write");
        written.extend_from_slice(&chunk);
        thread::sleep(Duration::from_millis(10));
    }
    drop(f);
    let want = blake3_hex(&written);
    let list = node.wait_list("busy.bin with its final size and hash", |l| {
        find(l, "busy.bin").is_some_and(|r| r["size"] == written.len() && r["hash"] == want)
    });
    if let Err(d) = diff_list_disk(&list, node.dir()) {
        panic!("{}", node.fail(&d));
    }
}

// ---------------------------------------------------------------------------
// 3. Changes while the node is down; kill -9

#[test]
fn changes_while_stopped_are_found_at_restart() {
    let mut node = Node::start("restart");
    put(node.path("keep.txt"), "kept\n");
    put(node.path("modify.txt"), "before\n");
    put(node.path("delete.txt"), "doomed\n");
    put(node.path("sub/nested.txt"), "nested\n");
    let before = node.wait_matches_disk("the initial files");

    node.stop();
    assert!(
        node.run_log().contains("index saved"),
        "{}",
        node.fail("a node stopped by SIGTERM should say it saved its index")
    );

    put(node.path("modify.txt"), "after, and longer\n");
    put(node.path("added.txt"), "added while down\n");
    put(node.path("sub/added2.txt"), "also added while down\n");
    fs::remove_file(node.path("delete.txt")).expect("rm");

    // The node answers only once its startup scan is done, so its very
    // first list must already show every change.
    let list = node.restart();
    if let Err(d) = diff_list_disk(&list, node.dir()) {
        panic!(
            "{}",
            node.fail(&format!("first list after the restart: {d}"))
        );
    }
    assert_paths(
        &node,
        &list,
        &[
            "added.txt",
            "keep.txt",
            "modify.txt",
            "sub/added2.txt",
            "sub/nested.txt",
        ],
    );
    let (now, then) = (listed_files(&list), listed_files(&before));
    for p in ["keep.txt", "sub/nested.txt"] {
        assert_eq!(now.get(p), then.get(p), "{p} did not change");
    }
    assert_ne!(
        row(&node, &list, "modify.txt")["hash"],
        row(&node, &before, "modify.txt")["hash"]
    );
    // Exactly the four changes are new versions; unchanged files are not.
    assert!(
        node.run_log().contains("4 changed since last run"),
        "{}",
        node.fail("expected the startup scan to report \"4 changed since last run\"")
    );

    // And it watches again.
    put(node.path("late.txt"), "late\n");
    node.wait_matches_disk("late.txt after the restart");
}

#[test]
fn many_files_found_at_start_are_saved_and_unchanged_at_the_next() {
    // More files than a scan reads at once (4,096), and more records than
    // the store is given at once (they are then encoded and written chunk
    // by chunk, in one transaction).
    let mut node = Node::start("many-at-start");
    node.stop();
    for i in 0..5_000 {
        put(
            node.path(format!("d{}/f{i:04}.txt", i % 10)),
            format!("file {i}\n"),
        );
    }
    let first = node.restart();
    if let Err(d) = diff_list_disk(&first, node.dir()) {
        panic!(
            "{}",
            node.fail(&format!("first list after the restart: {d}"))
        );
    }
    assert_eq!(listed_files(&first).len(), 5_000);
    node.stop();
    let second = node.restart();
    assert!(
        node.run_log().contains(" 0 changed since last run"),
        "{}",
        node.fail("every record found at the last start should have been saved")
    );
    assert_eq!(listed_files(&second), listed_files(&first));
}

#[test]
fn records_that_could_not_be_encoded_are_saved_at_the_next_try() {
    // Fail points (`TANDEM_FAIL_AT`) exist in debug builds of the node only.
    if !cfg!(debug_assertions) || std::env::var_os("TANDEM_BIN_DIR").is_some() {
        eprintln!("skipped: fail points exist in debug builds of the node only");
        return;
    }
    let mut node = Node::start("encode-fails");
    node.stop();
    for i in 0..20 {
        put(node.path(format!("f{i:02}.txt")), format!("file {i}\n"));
    }
    // The start-up scan's batch is the first the node encodes: it fails.
    node.env_mut()
        .push(("TANDEM_FAIL_AT".into(), "encode-batch".into()));
    let first = node.restart();
    assert_eq!(listed_files(&first).len(), 20);
    assert!(
        node.run_log().contains("cannot encode 20 index entries"),
        "{}",
        node.fail("the start-up scan's batch should have failed to encode")
    );
    // The running node tries again by itself (not only when it stops)...
    let db = node.dir().join(".tandem/index.db");
    wait_until(
        Duration::from_secs(30),
        "the 20 records in the store",
        &[&node],
        || -> Result<(), String> {
            let conn = rusqlite::Connection::open_with_flags(
                &db,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .map_err(|e| e.to_string())?;
            let n: i64 = conn
                .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if n == 20 {
                Ok(())
            } else {
                Err(format!("{n} records stored"))
            }
        },
    );
    // ...so a crash now loses nothing.
    node.kill9();
    node.env_mut().retain(|(k, _)| k != "TANDEM_FAIL_AT");
    let second = node.restart();
    assert!(
        node.run_log().contains(" 0 changed since last run"),
        "{}",
        node.fail("records whose first save failed should have been saved by a later one")
    );
    assert_eq!(listed_files(&second), listed_files(&first));
}

#[test]
fn index_matches_disk_after_kill9() {
    let mut node = Node::start("kill9");
    for round in 0..3 {
        // A burst of changes; the node is killed while it is still taking
        // them in (or just after: either way the index must be consistent).
        for i in 0..60 {
            put(
                node.path(format!("r{round}/f{i:03}.txt")),
                format!("round {round}, file {i}\n"),
            );
        }
        if round > 0 {
            for i in (0..60).step_by(6) {
                fs::remove_file(node.path(format!("r{}/f{i:03}.txt", round - 1))).expect("rm");
            }
        }
        node.kill9();

        // More changes while it is down.
        for i in (1..60).step_by(5) {
            put(
                node.path(format!("r{round}/f{i:03}.txt")),
                format!("round {round}, file {i}, changed while the node was down\n"),
            );
        }
        fs::remove_file(node.path(format!("r{round}/f002.txt"))).expect("rm");
        put(node.path(format!("down{round}.txt")), "added while down\n");

        let list = node.restart();
        if let Err(d) = diff_list_disk(&list, node.dir()) {
            panic!(
                "{}",
                node.fail(&format!(
                    "round {round}: first list after kill -9 and restart: {d}"
                ))
            );
        }
    }
    // Still watching after all that.
    put(node.path("final.txt"), "final\n");
    node.wait_matches_disk("final.txt after the kill -9 restarts");
}

// ---------------------------------------------------------------------------
// 4. JSON shape

#[test]
fn list_json_has_the_documented_shape() {
    let node = Node::start("shape-node");
    let out = node.tandem(&["list", "--json"]);
    assert!(out.status.success(), "{}", node.fail(&format!("{out:?}")));
    let empty: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        empty,
        serde_json::json!([]),
        "an empty directory lists as []"
    );

    let files: &[(&str, Vec<u8>)] = &[
        ("b.txt", b"bee".to_vec()),
        ("a.txt", Vec::new()),
        ("A.txt", b"upper".to_vec()),
        ("dir/x.bin", pattern(1536, 7)),
        ("dir.txt", b"d".to_vec()),
        ("\u{e9}.txt", b"accent".to_vec()),
        ("with space.txt", b"s p a c e".to_vec()),
    ];
    for (p, data) in files {
        put(node.path(p), data);
    }
    let list = node.wait_matches_disk("all the files listed");

    // Sorted by path, byte-wise (so "dir.txt" < "dir/x.bin": '.' < '/').
    assert_paths(
        &node,
        &list,
        &[
            "A.txt",
            "a.txt",
            "b.txt",
            "dir.txt",
            "dir/x.bin",
            "with space.txt",
            "\u{e9}.txt",
        ],
    );
    for (i, r) in list.iter().enumerate() {
        let obj = r.as_object().expect("each row is an object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "hash",
                "held",
                "index",
                "locked_by",
                "mtime",
                "nodes",
                "path",
                "size",
                "states",
            ],
            "{r}"
        );
        assert_eq!(r["index"], i + 1, "index is 1-based and follows the order");
        let path = r["path"].as_str().expect("path is a string");
        let (_, data) = files.iter().find(|(p, _)| *p == path).expect("known path");
        assert_eq!(r["size"].as_u64(), Some(data.len() as u64), "{r}");
        let hash = r["hash"].as_str().expect("hash is a string");
        assert!(
            hash.len() == 64
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "hash must be 64 lowercase hex digits: {r}"
        );
        assert_eq!(hash, blake3_hex(data), "hash is BLAKE3 of the content: {r}");
        let meta = fs::metadata(node.path(path)).expect("stat");
        assert_eq!(r["mtime"], mtime_rfc3339(&meta), "mtime: {r}");
        assert_eq!(r["nodes"], serde_json::json!(["shape-node"]), "{r}");
        assert!(r["locked_by"].is_null(), "{r}");
    }
    assert_eq!(
        row(&node, &list, "a.txt")["hash"],
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
        "BLAKE3 of the empty file"
    );
}

/// The harness computes RFC 3339 itself (not with the product's code).
#[test]
fn harness_rfc3339_matches_known_values() {
    assert_eq!(rfc3339_utc(0, 0), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(
        rfc3339_utc(1_500_000_000, 123_456_789),
        "2017-07-14T02:40:00.123456789Z"
    );
    assert_eq!(
        rfc3339_utc(981_173_106, 123_456_789),
        "2001-02-03T04:05:06.123456789Z"
    );
    assert_eq!(
        rfc3339_utc(951_782_400, 5),
        "2000-02-29T00:00:00.000000005Z"
    );
    assert_eq!(
        rfc3339_utc(1_795_554_640, 293_227_280),
        "2026-11-24T21:10:40.293227280Z"
    );
}

// ---------------------------------------------------------------------------
// 5. Text output

#[test]
fn list_text_has_a_header_and_human_sizes() {
    let node = Node::start("text-node");
    let out = node.tandem(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", node.fail(&format!("{out:?}")));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header and \"(no files)\":\n{text}");
    assert_eq!(lines[1].trim(), "(no files)", "{text}");

    put(node.path("big.bin"), pattern(1536, 3));
    put(node.path("small.txt"), "abc");
    node.wait_matches_disk("big.bin and small.txt");

    let out = node.tandem(&["list"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", node.fail(&format!("{out:?}")));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows:\n{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header[..3], ["#", "NAME", "SIZE"], "{text}");
    for (line, n, name, size) in [
        (lines[1], "1", "big.bin", "1.50 KiB"),
        (lines[2], "2", "small.txt", "3 B"),
    ] {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[..2], [n, name], "{text}");
        assert!(
            line.contains(&format!("  {size}  ")),
            "size {size}:\n{text}"
        );
        assert!(line.trim_end().ends_with("text-node"), "nodes:\n{text}");
        // The date of the MODIFIED column (local time).
        assert!(
            cols.iter()
                .any(|c| c.len() == 10 && c.as_bytes()[4] == b'-' && c.as_bytes()[7] == b'-'),
            "a YYYY-MM-DD date:\n{text}"
        );
    }
}

/// A table longer than the rows `list` sizes its columns from comes out
/// whole and in order, numbered on, though written as it arrives (the node
/// sends it in pages of 4,096 rows).
#[test]
fn list_text_streams_a_table_of_many_pages() {
    const FILES: usize = 4096 + 300;
    let dir = tempfile::Builder::new()
        .prefix("tandem-test-pages-")
        .tempdir()
        .expect("temp dir");
    fs::create_dir_all(dir.path().join("d")).expect("mkdir");
    for i in 0..FILES {
        fs::write(dir.path().join(format!("d/f{i:05}.txt")), b"x").expect("write");
    }
    // A longer name sorting last: it comes after the sizing rows.
    put(
        dir.path()
            .join("z-a-name-longer-than-every-name-before-it.txt"),
        "z",
    );
    let node = Node::builder("pages-node").dir(dir.path()).start();
    let long = "z-a-name-longer-than-every-name-before-it.txt";
    let listed = wait_until(
        Duration::from_secs(60),
        "every file indexed",
        &[&node],
        || {
            let list = node.try_list()?;
            let paths: Vec<String> = list
                .iter()
                .filter_map(|r| r["path"].as_str().map(String::from))
                .collect();
            if paths.len() > FILES && paths.last().map(String::as_str) == Some(long) {
                Ok(paths)
            } else {
                Err(format!("{} rows listed", paths.len()))
            }
        },
    );
    let out = node.tandem(&["list"]);
    assert!(out.status.success(), "{}", node.fail(&format!("{out:?}")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        listed.len() + 1,
        "{}",
        node.fail("a header and a line for each row of `list --json`")
    );
    for (i, (line, path)) in lines[1..].iter().zip(&listed).enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let n = (i + 1).to_string();
        assert_eq!(
            cols[..2],
            [n.as_str(), path.as_str()],
            "line {}: {line}",
            i + 1
        );
    }
}

// ---------------------------------------------------------------------------
// 6. Nothing listening

#[test]
fn list_against_a_closed_port_fails_with_one_clear_line() {
    let addr = free_addr(); // released at once: nothing listens there
    for args in [&["list"][..], &["list", "--json"][..]] {
        let out = tandem(addr, args).expect("run tandem");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "tandem {args:?}: {out:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line on stderr, got:\n{stderr}");
        assert!(
            lines[0].contains(&addr.to_string()) && lines[0].contains("cannot connect"),
            "the line should say it cannot connect and name {addr}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    }
}

// ---------------------------------------------------------------------------
// 7. Bad input on the wire

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads until the node closes the connection; returns what it sent.
fn read_until_closed(node: &Node, what: &str, s: &mut TcpStream) -> Vec<u8> {
    let timeout = scaled(CHANGE_TIMEOUT);
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            panic!(
                "{}",
                node.fail(&format!(
                    "{what}: the node kept the connection open for {timeout:.1?}; received {got:?}"
                ))
            );
        }
        s.set_read_timeout(Some(left)).expect("set timeout");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return got, // reset: closed too
        }
    }
}

/// Connects, sends `bytes` (then shuts down writing if `eof`), and waits for
/// the node to close the connection. Returns our address and the reply.
fn attack(node: &Node, what: &str, bytes: &[u8], eof: bool) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    let local = s.local_addr().expect("local addr");
    // The node may close before reading everything: a failed write is fine.
    let _ = s.write_all(bytes);
    if eof {
        let _ = s.shutdown(Shutdown::Write);
    }
    let reply = read_until_closed(node, what, &mut s);
    (local, reply)
}

/// Waits for the node's log line about closing the connection from `local`.
fn closing_line(node: &Node, what: &str, local: SocketAddr) -> String {
    let needle = format!("from {local}");
    wait_until(
        CHANGE_TIMEOUT,
        &format!("{what}: a log line about closing the connection from {local}"),
        &[node],
        || {
            node.log()
                .lines()
                .find(|l| l.contains("closing") && l.contains(&needle))
                .map(str::to_string)
        },
    )
}

fn still_serves(node: &Node, what: &str) {
    if let Err(e) = node.try_list() {
        panic!(
            "{}",
            node.fail(&format!("after {what}, `tandem list` failed: {e}"))
        );
    }
}

#[test]
fn malformed_connections_are_closed_and_others_still_served() {
    let node = Node::start("wire");
    put(node.path("f.txt"), "f\n");
    node.wait_matches_disk("f.txt");

    // (a) Text garbage (its first four bytes read as a huge length), and a
    // short frame of garbage.
    let what = "HTTP garbage";
    let (local, _) = attack(
        &node,
        what,
        b"GET / HTTP/1.1\r\nHost: tandem\r\n\r\n",
        false,
    );
    closing_line(&node, what, local);
    still_serves(&node, what);

    let what = "a 4-byte frame of garbage";
    let (local, _) = attack(&node, what, &frame(&[0xde, 0xad, 0xbe, 0xef]), false);
    closing_line(&node, what, local);
    still_serves(&node, what);

    // (b) A length prefix of 4 GiB - 1: refused before allocating.
    let what = "a 0xFFFFFFFF length prefix";
    let mut bytes = vec![0xff; 4];
    bytes.extend_from_slice(&[0x42; 64]);
    let (local, _) = attack(&node, what, &bytes, false);
    closing_line(&node, what, local);
    still_serves(&node, what);
    if let Some(kib) = node.peak_rss_kib() {
        assert!(
            kib < 512 * 1024,
            "{}",
            node.fail(&format!(
                "peak memory {kib} KiB: did the node allocate for the length?"
            ))
        );
    }

    // (c) A plain-text Tandem hello (an older release, or not TLS at
    // all): the TLS handshake fails and the node says so.
    let what = "a plain-text hello";
    let mut payload = proto::MAGIC.to_vec();
    payload.extend_from_slice(&4u32.to_be_bytes());
    payload.extend_from_slice(&[0; 8]);
    let (local, _) = attack(&node, what, &frame(&payload), false);
    let line = closing_line(&node, what, local);
    assert!(
        line.contains("TLS handshake failed"),
        "{}",
        node.fail(&line)
    );
    still_serves(&node, what);

    // Inside TLS, with a client key of its own.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use tandem_common::codec::FrameIo;
        let key_file = std::env::temp_dir().join(format!(
            "tandem-test-wire-{}.key",
            uuid::Uuid::new_v4().simple()
        ));
        let (key, _) = tandem_common::identity::KeyPair::load_or_create(&key_file).expect("key");
        let _ = std::fs::remove_file(&key_file);
        let tls = tandem_common::tls::Tls::client(&key).expect("tls");
        let connect = || async {
            let s = tokio::net::TcpStream::connect(node.addr())
                .await
                .expect("connect");
            let local = s.local_addr().expect("local addr");
            let (s, _) = tls.connect(s).await.expect("TLS");
            (FrameIo::new(s), local)
        };

        // (d) A hello speaking protocol version 99: the node answers with
        // its own version (so the other side can name the mismatch).
        let what = "a hello with protocol version 99";
        let (mut io, local) = connect().await;
        let mut payload = proto::MAGIC.to_vec();
        payload.extend_from_slice(&99u32.to_be_bytes());
        payload.extend_from_slice(b"from the future");
        io.send_raw(bytes::Bytes::from(payload))
            .await
            .expect("send");
        let reply = io.recv_raw().await.expect("reply").expect("a frame");
        match proto::decode_hello::<HelloReply>(&reply) {
            Ok((
                proto::PROTOCOL_VERSION,
                Some(HelloReply::Refused(Refusal::VersionMismatch {
                    node: proto::PROTOCOL_VERSION,
                    theirs: 99,
                })),
            )) => {}
            other => panic!(
                "{}",
                node.fail(&format!("{what}: reply decodes as {other:?}"))
            ),
        }
        let line = closing_line(&node, what, local);
        assert!(line.contains("99"), "{}", node.fail(&line));

        // (e) A correct client hello, then a request that does not decode.
        let what = "a garbage request after a good hello";
        let (mut io, local) = connect().await;
        let hello = Hello {
            role: Role::Client,
            name: "raw-test".into(),
        };
        let w = proto::connect_handshake(&mut io, &hello)
            .await
            .expect("welcome");
        assert_eq!(w.name, "wire");
        io.send_raw(bytes::Bytes::from_static(&[0xff, 0xff, 0xff]))
            .await
            .expect("send garbage");
        let closed = tokio::time::timeout(scaled(CHANGE_TIMEOUT), async {
            while let Ok(Some(_)) = io.recv_raw().await {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "{}",
            node.fail(&format!("{what}: not closed"))
        );
        let line = closing_line(&node, what, local);
        assert!(line.contains("malformed"), "{}", node.fail(&line));
    });
    still_serves(&node, "garbage inside TLS");

    // (f) Half a frame, then the client stops sending.
    let what = "a truncated frame";
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&proto::MAGIC);
    let (local, _) = attack(&node, what, &bytes, true);
    closing_line(&node, what, local);
    still_serves(&node, what);

    // (g) A connection that says nothing does not block other clients.
    let silent = TcpStream::connect(node.addr()).expect("connect");
    still_serves(&node, "a silent connection was opened");
    drop(silent);
    let list = node.list();
    assert_paths(&node, &list, &["f.txt"]);
}

// ---------------------------------------------------------------------------
// 8. The --dir argument

#[test]
fn missing_dir_is_created() {
    let parent = tempfile::tempdir().expect("temp dir");
    let dir = parent.path().join("not/there/yet");
    let node = Node::builder("created").dir(&dir).untrusted().start();
    assert!(dir.is_dir(), "{}", node.fail("--dir was not created"));
    let line = node.wait_log("created directory");
    assert!(line.contains("not/there/yet"), "{}", node.fail(&line));
    assert_paths(&node, &node.list(), &[]);
    put(dir.join("first.txt"), "first\n");
    node.wait_matches_disk("first.txt in the created directory");
}

#[test]
fn dir_that_is_a_file_is_refused() {
    let parent = tempfile::tempdir().expect("temp dir");
    let file = parent.path().join("plain.txt");
    fs::write(&file, "not a directory\n").expect("write");
    let mut node = Node::builder("file").dir(&file).spawn();
    let st = node.wait_exit();
    let log = node.run_log();
    assert!(!st.success(), "{}", node.fail(&format!("exited with {st}")));
    assert!(
        log.contains("is not a directory") && log.contains(&file.display().to_string()),
        "{}",
        node.fail("expected a message naming the file and saying it is not a directory")
    );
    assert_eq!(
        fs::read(&file).expect("read"),
        b"not a directory\n",
        "the file must be left alone"
    );
}

#[test]
fn second_node_on_the_same_dir_is_refused() {
    let first = Node::start("first");
    put(first.path("mine.txt"), "mine\n");
    first.wait_matches_disk("mine.txt");

    let mut second = Node::builder("second").dir(first.dir()).spawn();
    let st = second.wait_exit();
    assert!(
        !st.success(),
        "{}",
        second.fail(&format!("exited with {st}"))
    );
    assert!(
        second.run_log().contains("already using"),
        "{}",
        second.fail("expected \"already using\"")
    );

    // The first node is unharmed.
    put(first.path("more.txt"), "more\n");
    let list = first.wait_matches_disk("more.txt, after the second node gave up");
    assert_paths(&first, &list, &["mine.txt", "more.txt"]);
}

// ---------------------------------------------------------------------------
// 9. Names that are not UTF-8

fn utf8_warnings(node: &Node) -> usize {
    node.log()
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("skipping") && l.contains("UTF-8"))
        .count()
}

#[test]
fn non_utf8_names_are_skipped_with_a_warning() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    put(dir.join("ok.txt"), "fine\n");
    put(non_utf8(dir, b"bad\xff.txt"), "bad name\n");
    put(non_utf8(dir, b"dir\xfe").join("inner.txt"), "inner\n");

    let node = Node::builder("utf8").dir(dir).start();
    let list = node.list();
    assert_paths(&node, &list, &["ok.txt"]);
    let warned = utf8_warnings(&node);
    assert!(
        warned >= 2,
        "{}",
        node.fail("expected warnings for bad\\xff.txt and dir\\xfe")
    );

    // One created while the node runs.
    put(non_utf8(dir, b"late\xff.txt"), "late\n");
    wait_until(
        CHANGE_TIMEOUT,
        "a warning about late\\xff.txt",
        &[&node],
        || utf8_warnings(&node) > warned,
    );

    // The node keeps working.
    put(dir.join("after.txt"), "after\n");
    let list = node.wait_matches_disk("after.txt next to bad names");
    assert_paths(&node, &list, &["after.txt", "ok.txt"]);

    // Renamed to a good name: listed. Renamed to a bad name: gone.
    rename(non_utf8(dir, b"bad\xff.txt"), dir.join("renamed.txt"));
    let list = node.wait_matches_disk("bad\\xff.txt renamed to renamed.txt");
    assert_eq!(
        row(&node, &list, "renamed.txt")["hash"],
        blake3_hex(b"bad name\n")
    );
    rename(dir.join("ok.txt"), non_utf8(dir, b"ok\xff.txt"));
    let list = node.wait_matches_disk("ok.txt renamed to ok\\xff.txt");
    assert_paths(&node, &list, &["after.txt", "renamed.txt"]);
}
