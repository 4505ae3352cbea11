//! Node-to-node sync (issue 3), tested through real `tandem-node` processes
//! on temp dirs and free loopback ports, with the real `tandem` client.
//!
//! Every wait polls with a deadline (the harness's `wait_until`); nothing
//! sleeps to synchronise. Where a test needs mtimes to differ it sets them
//! explicitly. "Settled" is established causally with a barrier file: a
//! node writes a new file after the fact under test, and once the other
//! node has it, anything the first node did earlier (an echo, a stray
//! reconnect) has had its chance to show up too.
//!
//! `tandem list` shows the merged table of a node and its connected peers,
//! so "node X has the file" is read from the row's `nodes` (the nodes that
//! hold the newest version), and every convergence wait also compares the
//! directories themselves: files, empty directories, permission bits, exact
//! mtimes and content.
//!
//! Deadlines are generous for a loaded 2-core CI machine and stretch with
//! `TANDEM_TEST_TIMEOUT_SCALE`. The whole file takes well under a minute;
//! the big-file tests write about 1.7 GiB of temp files in all.

mod harness;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use filetime::FileTime;
use harness::*;
use serde_json::Value;

/// A change on one node must reach a linked peer within this.
const SYNC: Duration = Duration::from_secs(20);
/// A restarted node must be reconnected and merged within this (the dialing
/// side backs off up to 5 s between attempts).
const RECONNECT: Duration = Duration::from_secs(40);
/// Large transfers (hundreds of MiB in a debug build).
const BIG: Duration = Duration::from_secs(150);

const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers: trees on disk

/// What a synced directory holds at a path (outside `.tandem/`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Dir {
        mode: u32,
    },
    File {
        size: u64,
        /// RFC 3339 with nanoseconds: compared exactly.
        mtime: String,
        mode: u32,
        hash: String,
    },
}

type Tree = BTreeMap<String, Item>;

/// Every directory (empty ones too) and regular file under `dir`, with
/// permission bits, exact mtimes and BLAKE3 of the content. For small trees.
fn tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    walk_tree(dir, &mut |rel, path, meta| {
        if meta.is_dir() {
            out.insert(
                rel.to_string(),
                Item::Dir {
                    mode: meta.mode() & 0o7777,
                },
            );
        } else if meta.is_file() {
            let Ok(data) = fs::read(path) else {
                return;
            };
            out.insert(
                rel.to_string(),
                Item::File {
                    size: data.len() as u64,
                    mtime: mtime_rfc3339(meta),
                    mode: meta.mode() & 0o7777,
                    hash: blake3_hex(&data),
                },
            );
        }
    });
    out
}

/// The differences between two trees, one per line.
fn tree_diff(an: &str, a: &Tree, bn: &str, b: &Tree) -> String {
    let mut d = Vec::new();
    for (p, x) in a {
        match b.get(p) {
            None => d.push(format!("  only on {an}: {p} {x:?}")),
            Some(y) if x != y => d.push(format!("  {p}: on {an} {x:?}, on {bn} {y:?}")),
            Some(_) => {}
        }
    }
    for (p, y) in b {
        if !a.contains_key(p) {
            d.push(format!("  only on {bn}: {p} {y:?}"));
        }
    }
    d.join("\n")
}

/// Waits until every node's tree (files, empty dirs, modes, exact mtimes,
/// content) is the same, every node's `tandem list` equals its disk, and
/// `check` accepts the tree. Returns that tree.
fn wait_same_where(
    timeout: Duration,
    what: &str,
    nodes: &[&Node],
    check: impl Fn(&Tree) -> Result<(), String>,
) -> Tree {
    wait_until(timeout, what, nodes, || -> Result<Tree, String> {
        let first = tree(nodes[0].dir());
        for n in &nodes[1..] {
            let t = tree(n.dir());
            if t != first {
                return Err(format!(
                    "trees differ:\n{}",
                    tree_diff(nodes[0].name(), &first, n.name(), &t)
                ));
            }
        }
        check(&first)?;
        for n in nodes {
            let list = n.try_list()?;
            diff_list_disk(&list, n.dir()).map_err(|e| format!("node {}: {e}", n.name()))?;
            if let Some(r) = list.iter().find(|r| !held_by(r, n.name())) {
                return Err(format!(
                    "node {} does not hold the newest version of a listed file: {r}",
                    n.name()
                ));
            }
        }
        Ok(first)
    })
}

/// [`wait_same_where`] with [`SYNC`] and no extra check.
fn wait_same(what: &str, nodes: &[&Node]) -> Tree {
    wait_same_where(SYNC, what, nodes, |_| Ok(()))
}

/// Checks for [`wait_same_where`].
fn has_content(t: &Tree, rel: &str, data: &[u8]) -> Result<(), String> {
    match t.get(rel) {
        Some(Item::File { hash, .. }) if *hash == blake3_hex(data) => Ok(()),
        other => Err(format!(
            "{rel} should hold {:?}, found {other:?}",
            String::from_utf8_lossy(data)
        )),
    }
}

fn is_absent(t: &Tree, rel: &str) -> Result<(), String> {
    match t.get(rel) {
        None => Ok(()),
        Some(x) => Err(format!("{rel} should be gone, found {x:?}")),
    }
}

fn file_mode(t: &Tree, rel: &str) -> Option<u32> {
    match t.get(rel) {
        Some(Item::File { mode, .. }) | Some(Item::Dir { mode }) => Some(*mode),
        None => None,
    }
}

fn octal(m: Option<u32>) -> String {
    m.map_or_else(|| "absent".to_string(), |m| format!("{m:o}"))
}

fn file_mtime<'a>(t: &'a Tree, rel: &str) -> Option<&'a str> {
    match t.get(rel) {
        Some(Item::File { mtime, .. }) => Some(mtime),
        _ => None,
    }
}

fn set_mtime(path: impl AsRef<Path>, secs: i64, nanos: u32) {
    let path = path.as_ref();
    filetime::set_file_mtime(path, FileTime::from_unix_time(secs, nanos))
        .unwrap_or_else(|e| panic!("cannot set the mtime of {}: {e}", path.display()));
}

/// Writes `data` and gives the file the mtime `secs.nanos`.
fn put_at(path: impl AsRef<Path>, data: impl AsRef<[u8]>, secs: i64, nanos: u32) {
    let path = path.as_ref();
    put(path, data);
    set_mtime(path, secs, nanos);
}

fn chmod(path: impl AsRef<Path>, mode: u32) {
    let path = path.as_ref();
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
}

fn rename(from: impl AsRef<Path>, to: impl AsRef<Path>) {
    let (from, to) = (from.as_ref(), to.as_ref());
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    fs::rename(from, to)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", from.display(), to.display()));
}

fn remove(path: impl AsRef<Path>) {
    let path = path.as_ref();
    fs::remove_file(path).unwrap_or_else(|e| panic!("cannot remove {}: {e}", path.display()));
}

/// True when a row of `tandem list` names `node` among the nodes holding
/// the newest version (the list is the merged view of the node and its
/// connected peers).
fn held_by(row: &Value, node: &str) -> bool {
    row["nodes"]
        .as_array()
        .is_some_and(|v| v.iter().any(|n| n == node))
}

/// Waits until `node` itself holds `rel` with the content `data` according
/// to its `tandem list` (it has indexed a local change), or does not hold
/// it at all when `data` is `None`.
fn wait_indexed(node: &Node, rel: &str, data: Option<&[u8]>) {
    let want = data.map(blake3_hex);
    let me = node.name().to_string();
    node.wait_list(&format!("{rel} indexed on {me}"), |l| {
        let held = find(l, rel).filter(|r| held_by(r, &me));
        held.and_then(|r| r["hash"].as_str().map(str::to_string)) == want
    });
}

/// Writes a new file on `from` and waits until every node has it: after
/// that, whatever `from` did before has reached the others too.
fn barrier(from: &Node, nodes: &[&Node], tag: &str) {
    let rel = format!("barrier-{tag}-{}.txt", from.name());
    put(from.path(&rel), tag);
    wait_same_where(SYNC, &format!("barrier {rel} everywhere"), nodes, |t| {
        has_content(t, &rel, tag.as_bytes())
    });
}

/// Files in `node`'s conflicts folder: (path under `conflicts/`, content).
fn conflict_files(node: &Node) -> Vec<(String, Vec<u8>)> {
    let root = node.path(".tandem/conflicts");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p
                    .strip_prefix(&root)
                    .expect("under conflicts/")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// Writes a `size`-byte file (a multiple of 1 MiB) whose every 4 KiB is
/// unique (so no block can be deduplicated), cheaply: one random MiB,
/// stamped with a counter every 4 KiB. Written outside the synced
/// directory first when `via` is given, then renamed into place, so the
/// node sees the whole file at once.
fn write_big(path: &Path, size: u64, seed: u64, via: Option<&Path>) {
    assert_eq!(size % MIB, 0);
    let tmp = via.map_or_else(|| path.to_path_buf(), |d| d.join("big.tmp"));
    if let Some(parent) = tmp.parent() {
        fs::create_dir_all(parent).expect("mkdir -p");
    }
    let mut f = File::create(&tmp).expect("create big file");
    let mut chunk = pattern(MIB as usize, seed);
    for i in 0..size / MIB {
        for (j, block) in chunk.chunks_mut(4096).enumerate() {
            block[..8].copy_from_slice(&(i * 256 + j as u64).to_le_bytes());
            block[8..16].copy_from_slice(&seed.to_le_bytes());
        }
        f.write_all(&chunk).expect("write big file");
    }
    f.sync_all().expect("fsync big file");
    drop(f);
    if via.is_some() {
        rename(&tmp, path);
    }
}

/// True when the two files hold the same bytes (compared a MiB at a time).
fn same_bytes(a: &Path, b: &Path) -> Result<(), String> {
    let open = |p: &Path| File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (la, lb) = (
        fa.metadata().map_err(|e| e.to_string())?.len(),
        fb.metadata().map_err(|e| e.to_string())?.len(),
    );
    if la != lb {
        return Err(format!(
            "{} has {la} bytes, {} has {lb}",
            a.display(),
            b.display()
        ));
    }
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut off = 0u64;
    loop {
        let n = fa.read(&mut ba).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        if ba[..n] != bb[..n] {
            return Err(format!(
                "{} and {} differ in the MiB at offset {off}",
                a.display(),
                b.display()
            ));
        }
        off += n as u64;
    }
}

/// The hash of `rel` in `list`, if `node` holds that version.
fn held_hash(list: &[Value], rel: &str, node: &str) -> Option<String> {
    find(list, rel)
        .filter(|r| held_by(r, node))
        .and_then(|r| r["hash"].as_str().map(str::to_string))
}

/// Waits until `node` holds `rel` with `hash` (by its `tandem list`).
fn wait_hash(timeout: Duration, node: &Node, rel: &str, hash: &str, nodes: &[&Node]) {
    wait_until(
        timeout,
        &format!("{rel} with hash {hash} on {}", node.name()),
        nodes,
        || -> Result<(), String> {
            let l = node.try_list()?;
            match held_hash(&l, rel, node.name()) {
                Some(h) if h == hash => Ok(()),
                h => Err(format!("{} lists {rel} with {h:?}", node.name())),
            }
        },
    );
}

/// Names of the regular files and dirs under `dir` outside `.tandem/`,
/// without reading them (for trees holding huge files).
fn names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if prefix.is_empty() && name == ".tandem" {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if e.path().is_dir() {
                stack.push((e.path(), format!("{rel}/")));
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// Waits until `node` has no temp files left in its state folder.
fn wait_tmp_empty(node: &Node, nodes: &[&Node]) {
    let tmp = node.path(".tandem/tmp");
    wait_until(SYNC, "no temp files left in .tandem/tmp/", nodes, || {
        let left = temp_files(&tmp);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left in .tandem/tmp: {left:?}"))
        }
    });
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) on a valid NUL-terminated path into a zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

// ---------------------------------------------------------------------------
// Helpers: nodes

/// Starts nodes called `names` that know each other's addresses: node `i`
/// gets a `--peer` for each `j` in `links[i]`.
fn cluster(names: &[&str], links: &[&[usize]]) -> Vec<Node> {
    let addrs: Vec<_> = names.iter().map(|_| free_addr()).collect();
    let builders = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut b = Node::builder(n).listen(addrs[i]);
            for &j in links[i] {
                b = b.peer(addrs[j]);
            }
            b
        })
        .collect();
    start_all(builders)
}

/// Two nodes, each with the other as `--peer` (both dial: one link must
/// come out of it).
fn pair() -> (Node, Node) {
    let mut v = cluster(&["a", "b"], &[&[1], &[0]]);
    let b = v.pop().expect("b");
    let a = v.pop().expect("a");
    (a, b)
}

/// Log lines of `node` that contain every one of `needles`.
fn log_lines(node: &Node, needles: &[&str]) -> Vec<String> {
    node.log()
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Prints how long each step took to propagate, worst first line.
struct Steps {
    latencies: Vec<(String, Duration)>,
}

impl Steps {
    fn new() -> Self {
        Steps {
            latencies: Vec::new(),
        }
    }

    /// Acts, then waits until all nodes agree and `check` holds.
    fn step(
        &mut self,
        nodes: &[&Node],
        what: &str,
        act: impl FnOnce(),
        check: impl Fn(&Tree) -> Result<(), String>,
    ) -> Tree {
        let t = Instant::now();
        act();
        let tree = wait_same_where(SYNC, what, nodes, check);
        self.latencies.push((what.to_string(), t.elapsed()));
        tree
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        let worst = self.latencies.iter().map(|(_, d)| *d).max();
        eprintln!("propagation of each step (until every node agrees), worst {worst:.0?}:");
        for (what, d) in &self.latencies {
            eprintln!("  {d:>8.0?}  {what}");
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Two nodes: everything propagates, both ways

#[test]
fn two_nodes_propagate_every_kind_of_change_both_ways() {
    let (a, b) = pair();
    let nodes = [&a, &b];
    let mut s = Steps::new();

    // Create, both ways.
    s.step(
        &nodes,
        "a.txt created on a",
        || put(a.path("a.txt"), "from a\n"),
        |t| has_content(t, "a.txt", b"from a\n"),
    );
    s.step(
        &nodes,
        "b.txt created on b",
        || put(b.path("b.txt"), "from b\n"),
        |t| has_content(t, "b.txt", b"from b\n"),
    );

    // Modify, both ways (longer, then same size).
    s.step(
        &nodes,
        "a.txt modified on a",
        || put(a.path("a.txt"), "from a, longer now\n"),
        |t| has_content(t, "a.txt", b"from a, longer now\n"),
    );
    s.step(
        &nodes,
        "b.txt modified on b (same size)",
        || put(b.path("b.txt"), "FROM B\n"),
        |t| has_content(t, "b.txt", b"FROM B\n"),
    );

    // An odd mtime, to the nanosecond, both ways (content unchanged).
    let t = s.step(
        &nodes,
        "a.txt mtime set on a",
        || set_mtime(a.path("a.txt"), 1_234_567_890, 123_456_789),
        |t| match file_mtime(t, "a.txt") {
            Some("2009-02-13T23:31:30.123456789Z") => Ok(()),
            m => Err(format!("a.txt mtime {m:?}")),
        },
    );
    has_content(&t, "a.txt", b"from a, longer now\n").unwrap();
    s.step(
        &nodes,
        "b.txt mtime set on b",
        || set_mtime(b.path("b.txt"), 987_654_321, 999_999_999),
        |t| match file_mtime(t, "b.txt") {
            Some("2001-04-19T04:25:21.999999999Z") => Ok(()),
            m => Err(format!("b.txt mtime {m:?}")),
        },
    );

    // Permission bits: chmod-only changes, both ways.
    s.step(
        &nodes,
        "a.txt chmod 0600 on a",
        || chmod(a.path("a.txt"), 0o600),
        |t| match file_mode(t, "a.txt") {
            Some(0o600) => Ok(()),
            m => Err(format!("a.txt mode {}", octal(m))),
        },
    );
    s.step(
        &nodes,
        "b.txt chmod 0755 on b",
        || chmod(b.path("b.txt"), 0o755),
        |t| match file_mode(t, "b.txt") {
            Some(0o755) => Ok(()),
            m => Err(format!("b.txt mode {}", octal(m))),
        },
    );
    // A new file that is executable from the start; content and mode at once.
    s.step(
        &nodes,
        "run.sh created 0755 on a",
        || {
            put(a.path("run.sh"), "#!/bin/sh\necho hi\n");
            chmod(a.path("run.sh"), 0o755);
        },
        |t| match file_mode(t, "run.sh") {
            Some(0o755) => has_content(t, "run.sh", b"#!/bin/sh\necho hi\n"),
            m => Err(format!("run.sh mode {}", octal(m))),
        },
    );
    // Back to 0644 from the other side.
    s.step(
        &nodes,
        "a.txt chmod 0644 on b",
        || chmod(b.path("a.txt"), 0o644),
        |t| match file_mode(t, "a.txt") {
            Some(0o644) => Ok(()),
            m => Err(format!("a.txt mode {}", octal(m))),
        },
    );

    // A file in a new nested directory; empty directories, both ways.
    s.step(
        &nodes,
        "n1/n2/n3/deep.txt created on a with its directories",
        || {
            fs::create_dir_all(a.path("n1/n2/n3")).unwrap();
            fs::write(a.path("n1/n2/n3/deep.txt"), "deep\n").unwrap();
        },
        |t| has_content(t, "n1/n2/n3/deep.txt", b"deep\n"),
    );
    s.step(
        &nodes,
        "empty-a/ created on a",
        || fs::create_dir(a.path("empty-a")).unwrap(),
        |t| match t.get("empty-a") {
            Some(Item::Dir { .. }) => Ok(()),
            x => Err(format!("empty-a is {x:?}")),
        },
    );
    s.step(
        &nodes,
        "empty-b/inner/ (nested, empty) created on b",
        || fs::create_dir_all(b.path("empty-b/inner")).unwrap(),
        |t| match t.get("empty-b/inner") {
            Some(Item::Dir { .. }) => Ok(()),
            x => Err(format!("empty-b/inner is {x:?}")),
        },
    );
    s.step(
        &nodes,
        "empty-a/ chmod 0700 on a",
        || chmod(a.path("empty-a"), 0o700),
        |t| match file_mode(t, "empty-a") {
            Some(0o700) => Ok(()),
            m => Err(format!("empty-a mode {}", octal(m))),
        },
    );

    // Rename, both ways: in place, and into another directory.
    let t = s.step(
        &nodes,
        "a.txt renamed to a-renamed.txt on a",
        || rename(a.path("a.txt"), a.path("a-renamed.txt")),
        |t| {
            is_absent(t, "a.txt")?;
            has_content(t, "a-renamed.txt", b"from a, longer now\n")
        },
    );
    assert_eq!(
        file_mtime(&t, "a-renamed.txt"),
        Some("2009-02-13T23:31:30.123456789Z"),
        "a rename keeps the mtime"
    );
    s.step(
        &nodes,
        "b.txt moved to n1/b-moved.txt on b",
        || rename(b.path("b.txt"), b.path("n1/b-moved.txt")),
        |t| {
            is_absent(t, "b.txt")?;
            has_content(t, "n1/b-moved.txt", b"FROM B\n")?;
            match file_mode(t, "n1/b-moved.txt") {
                Some(0o755) => Ok(()),
                m => Err(format!("n1/b-moved.txt mode {}", octal(m))),
            }
        },
    );
    // A directory with files renamed.
    s.step(
        &nodes,
        "n1/ renamed to m1/ on b",
        || rename(b.path("n1"), b.path("m1")),
        |t| {
            is_absent(t, "n1")?;
            has_content(t, "m1/n2/n3/deep.txt", b"deep\n")?;
            has_content(t, "m1/b-moved.txt", b"FROM B\n")
        },
    );

    // Delete, both ways.
    s.step(
        &nodes,
        "a-renamed.txt deleted on a",
        || remove(a.path("a-renamed.txt")),
        |t| is_absent(t, "a-renamed.txt"),
    );
    s.step(
        &nodes,
        "m1/b-moved.txt deleted on b",
        || remove(b.path("m1/b-moved.txt")),
        |t| is_absent(t, "m1/b-moved.txt"),
    );

    // Remove directories, both ways: empty ones and a tree (rm -r).
    s.step(
        &nodes,
        "empty-b/ (made on b) removed on a",
        || fs::remove_dir_all(a.path("empty-b")).unwrap(),
        |t| is_absent(t, "empty-b"),
    );
    s.step(
        &nodes,
        "empty-a/ (made on a) removed on b",
        || fs::remove_dir(b.path("empty-a")).unwrap(),
        |t| is_absent(t, "empty-a"),
    );
    let t = s.step(
        &nodes,
        "m1/ tree removed on b",
        || fs::remove_dir_all(b.path("m1")).unwrap(),
        |t| is_absent(t, "m1"),
    );
    let left: Vec<&String> = t.keys().collect();
    assert_eq!(left, ["run.sh"], "what is left on both");
}

// ---------------------------------------------------------------------------
// 2. History beats clocks

#[test]
fn sequential_edit_with_an_older_mtime_still_propagates() {
    let (a, b) = pair();
    let nodes = [&a, &b];
    put(a.path("notes.txt"), "first version\n");
    wait_same_where(SYNC, "notes.txt on b", &nodes, |t| {
        has_content(t, "notes.txt", b"first version\n")
    });

    // Edit on a on top of the synced version, but with an mtime in 2001.
    put_at(a.path("notes.txt"), "second, older mtime\n", 981_173_106, 5);
    let t = wait_same_where(SYNC, "the older-mtime edit on b", &nodes, |t| {
        has_content(t, "notes.txt", b"second, older mtime\n")
    });
    assert_eq!(
        file_mtime(&t, "notes.txt"),
        Some("2001-02-03T04:05:06.000000005Z")
    );
    // And the other way: b edits on top of that, older still.
    put_at(b.path("notes.txt"), "third, from b, 1990\n", 631_152_000, 0);
    wait_same_where(SYNC, "b's older-mtime edit on a", &nodes, |t| {
        has_content(t, "notes.txt", b"third, from b, 1990\n")
    });
    for n in nodes {
        assert!(
            conflict_files(n).is_empty(),
            "{}",
            n.fail("sequential edits are not conflicts")
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Concurrent edits: newer mtime wins, the loser is kept where it was

/// 2020-01-02T03:04:05.5Z and 2021-01-02T03:04:05.25Z.
const OLDER: (i64, u32) = (1_577_934_245, 500_000_000);
const NEWER: (i64, u32) = (1_609_556_645, 250_000_000);

fn concurrent_edit(newer_on_b: bool) {
    let (a, mut b) = pair();
    let nodes = [&a, &b];
    let rel = "docs/plan.txt";
    put(a.path(rel), "original\n");
    wait_same_where(SYNC, "docs/plan.txt on both", &nodes, |t| {
        has_content(t, rel, b"original\n")
    });

    b.stop();
    let (ta, tb) = if newer_on_b {
        (OLDER, NEWER)
    } else {
        (NEWER, OLDER)
    };
    let (ca, cb): (&[u8], &[u8]) = (b"edited on a\n", b"edited on b, differently\n");
    put_at(a.path(rel), ca, ta.0, ta.1);
    wait_indexed(&a, rel, Some(ca));
    put_at(b.path(rel), cb, tb.0, tb.1);
    b.restart();

    let nodes = [&a, &b];
    let (winner, loser, win_data, lose_data) = if newer_on_b {
        (&b, &a, cb, ca)
    } else {
        (&a, &b, ca, cb)
    };
    let t = wait_same_where(
        RECONNECT,
        "the newer edit everywhere after reconnecting",
        &nodes,
        |t| has_content(t, rel, win_data),
    );
    // The winner's mtime is the newer one either way.
    assert_eq!(file_mtime(&t, rel), Some("2021-01-02T03:04:05.250000000Z"));

    // The loser's version is in the loser's conflicts folder, named after
    // the file, its mtime and its author; nothing on the winner's side.
    let kept = conflict_files(loser);
    let want_name = format!("docs/plan.conflict-20200102-030405-{}.txt", loser.name());
    assert!(
        kept.len() == 1 && kept[0].0 == want_name && kept[0].1 == lose_data,
        "{}",
        fail_with_logs(
            &format!(
                "{} should keep its version as .tandem/conflicts/{want_name}; found {:?}",
                loser.name(),
                kept.iter()
                    .map(|(p, d)| (p, String::from_utf8_lossy(d)))
                    .collect::<Vec<_>>()
            ),
            &nodes
        )
    );
    assert!(kept[0].0.contains("plan") && kept[0].0.contains("conflict"));
    let extra = conflict_files(winner);
    assert!(
        extra.is_empty(),
        "{}",
        fail_with_logs(
            &format!(
                "{} held the winner and should keep no conflict copy; found {:?}",
                winner.name(),
                extra.iter().map(|(p, _)| p).collect::<Vec<_>>()
            ),
            &nodes
        )
    );
    // The loser logs where its version went.
    let lines = log_lines(loser, &["conflict on docs/plan.txt", &want_name]);
    assert!(
        !lines.is_empty(),
        "{}",
        loser.fail("no log line says where the losing version went")
    );
    // Nothing left to do: a barrier each way, and still the same.
    barrier(&a, &nodes, "after-conflict");
    barrier(&b, &nodes, "after-conflict");
    let t = wait_same("settled", &nodes);
    has_content(&t, rel, win_data).unwrap();
    assert_eq!(conflict_files(loser).len(), 1);
}

#[test]
fn concurrent_edits_newer_mtime_on_b_wins_and_a_keeps_its_loser() {
    concurrent_edit(true);
}

#[test]
fn concurrent_edits_newer_mtime_on_a_wins_and_b_keeps_its_loser() {
    concurrent_edit(false);
}

// ---------------------------------------------------------------------------
// 4. Delete against a concurrent modify

#[test]
fn modify_beats_concurrent_delete_both_ways() {
    let (a, mut b) = pair();
    put(a.path("del-on-a.txt"), "v0 a\n");
    put(a.path("del-on-b.txt"), "v0 b\n");
    wait_same_where(SYNC, "both files on both", &[&a, &b], |t| {
        has_content(t, "del-on-a.txt", b"v0 a\n")?;
        has_content(t, "del-on-b.txt", b"v0 b\n")
    });

    b.stop();
    // a deletes one file and modifies the other; b (offline) does the
    // opposite. The modifications carry old mtimes: an edit beats a
    // delete whatever its clock says.
    remove(a.path("del-on-a.txt"));
    put_at(a.path("del-on-b.txt"), "modified on a\n", 981_173_106, 0);
    wait_indexed(&a, "del-on-a.txt", None);
    wait_indexed(&a, "del-on-b.txt", Some(b"modified on a\n"));
    put_at(b.path("del-on-a.txt"), "modified on b\n", 981_173_106, 0);
    remove(b.path("del-on-b.txt"));
    b.restart();

    let nodes = [&a, &b];
    wait_same_where(RECONNECT, "both modified files everywhere", &nodes, |t| {
        has_content(t, "del-on-a.txt", b"modified on b\n")?;
        has_content(t, "del-on-b.txt", b"modified on a\n")
    });
    barrier(&a, &nodes, "settle");
    barrier(&b, &nodes, "settle");
    let t = wait_same("still both files", &nodes);
    has_content(&t, "del-on-a.txt", b"modified on b\n").unwrap();
    has_content(&t, "del-on-b.txt", b"modified on a\n").unwrap();
}

// ---------------------------------------------------------------------------
// 5. An offline node with changes on both sides

#[test]
fn offline_node_merges_changes_made_on_both_sides() {
    let (a, mut b) = pair();
    for f in ["keep", "edit-a", "edit-b", "del-a", "del-b"] {
        put(a.path(format!("{f}.txt")), format!("{f} v0\n"));
    }
    put(a.path("sub/keep.txt"), "sub keep\n");
    wait_same_where(SYNC, "initial files on both", &[&a, &b], |t| {
        has_content(t, "sub/keep.txt", b"sub keep\n")?;
        has_content(t, "del-b.txt", b"del-b v0\n")
    });

    b.stop();
    // On a, while b is away.
    put(a.path("new-a.txt"), "new on a\n");
    put(a.path("dir-a/x.txt"), "x on a\n");
    put(a.path("edit-a.txt"), "edit-a v1 (a)\n");
    remove(a.path("del-a.txt"));
    fs::create_dir(a.path("empty-a")).unwrap();
    wait_indexed(&a, "dir-a/x.txt", Some(b"x on a\n"));
    wait_indexed(&a, "del-a.txt", None);
    // On b's disk, while it is down.
    put(b.path("new-b.txt"), "new on b\n");
    put(b.path("dir-b/y.txt"), "y on b\n");
    put(b.path("edit-b.txt"), "edit-b v1 (b)\n");
    remove(b.path("del-b.txt"));
    fs::remove_dir_all(b.path("sub")).unwrap();
    b.restart();

    let nodes = [&a, &b];
    let t = wait_same_where(RECONNECT, "the union of both sides' changes", &nodes, |t| {
        has_content(t, "new-b.txt", b"new on b\n")?;
        has_content(t, "new-a.txt", b"new on a\n")?;
        is_absent(t, "del-a.txt")?;
        is_absent(t, "del-b.txt")?;
        is_absent(t, "sub")
    });
    let want: Tree = [
        ("dir-a", None),
        ("dir-a/x.txt", Some("x on a\n")),
        ("dir-b", None),
        ("dir-b/y.txt", Some("y on b\n")),
        ("edit-a.txt", Some("edit-a v1 (a)\n")),
        ("edit-b.txt", Some("edit-b v1 (b)\n")),
        ("empty-a", None),
        ("keep.txt", Some("keep v0\n")),
        ("new-a.txt", Some("new on a\n")),
        ("new-b.txt", Some("new on b\n")),
    ]
    .into_iter()
    .map(|(p, c)| {
        let item = match (c, t.get(p)) {
            (None, _) => Item::Dir { mode: 0o755 },
            (
                Some(c),
                Some(Item::File {
                    size, mtime, mode, ..
                }),
            ) => Item::File {
                size: *size,
                mtime: mtime.clone(),
                mode: *mode,
                hash: blake3_hex(c.as_bytes()),
            },
            (Some(_), x) => panic!("{p} is {x:?}"),
        };
        (p.to_string(), item)
    })
    .collect();
    assert!(
        t == want,
        "{}",
        fail_with_logs(
            &format!(
                "merged tree is not the union:\n{}",
                tree_diff("expected", &want, "merged", &t)
            ),
            &nodes
        )
    );
    for n in nodes {
        assert!(
            conflict_files(n).is_empty(),
            "{}",
            n.fail("no conflicts here")
        );
    }
}

// ---------------------------------------------------------------------------
// 6. No resurrection

#[test]
fn file_deleted_while_a_node_is_offline_stays_deleted() {
    let (mut a, mut b) = pair();
    put(a.path("doomed.txt"), "doomed\n");
    put(a.path("dir/doomed-too.txt"), "doomed too\n");
    put(a.path("stays.txt"), "stays\n");
    wait_same_where(SYNC, "files on both", &[&a, &b], |t| {
        has_content(t, "dir/doomed-too.txt", b"doomed too\n")?;
        has_content(t, "stays.txt", b"stays\n")
    });

    b.stop();
    remove(a.path("doomed.txt"));
    fs::remove_dir_all(a.path("dir")).unwrap();
    wait_indexed(&a, "doomed.txt", None);
    wait_indexed(&a, "dir/doomed-too.txt", None);
    b.restart();

    let nodes = [&a, &b];
    let gone = |t: &Tree| -> Result<(), String> {
        is_absent(t, "doomed.txt")?;
        is_absent(t, "dir")?;
        has_content(t, "stays.txt", b"stays\n")
    };
    wait_same_where(RECONNECT, "the deletions applied on b", &nodes, gone);
    assert!(
        !log_lines(&b, &["deleted doomed.txt (deleted on a)"]).is_empty(),
        "{}",
        b.fail("b should say it deleted doomed.txt because a did")
    );
    barrier(&b, &nodes, "one");
    barrier(&a, &nodes, "one");
    wait_same_where(SYNC, "still deleted after a barrier", &nodes, gone);

    // Tombstones are persisted: restart both (one after the other), and
    // the files stay gone.
    a.stop();
    a.restart();
    b.stop();
    b.restart();
    let nodes = [&a, &b];
    barrier(&a, &nodes, "two");
    barrier(&b, &nodes, "two");
    wait_same_where(SYNC, "still deleted after restarts", &nodes, gone);
}

/// A file moved into a new folder while its node was offline arrives as
/// one message: the folder, the file under its new name and the old
/// name's deletion. The receiver renames its copy into the folder; it
/// used to make the folder for the rename first, then record it as a
/// folder made here, a write of its own concurrent with the sender's. A
/// later delete of the folder on the sender did not cover that write, so
/// the folder came back on both (chaos chain3 seed 161).
#[test]
fn a_folder_a_file_was_moved_into_stays_deleted_when_deleted() {
    let (a, mut b) = pair();
    let body = "moved into a new folder\n";
    put(b.path("x.txt"), body);
    wait_same_where(SYNC, "x.txt on both", &[&a, &b], |t| {
        has_content(t, "x.txt", body.as_bytes())
    });
    b.stop();
    fs::create_dir(b.path("d")).unwrap();
    rename(b.path("x.txt"), b.path("d/x.txt"));
    b.restart();
    let nodes = [&a, &b];
    wait_same_where(RECONNECT, "the move on a", &nodes, |t| {
        is_absent(t, "x.txt")?;
        has_content(t, "d/x.txt", body.as_bytes())
    });
    assert!(
        a.log_count("renamed from x.txt") >= 1,
        "{}",
        a.fail("a must rename its copy (the path this test is about)")
    );
    assert_eq!(
        a.log_count("added directory d"),
        0,
        "{}",
        a.fail("a must take b's folder, not record one of its own")
    );
    fs::remove_dir_all(b.path("d")).unwrap();
    wait_same_where(SYNC, "the folder deleted on both", &nodes, |t| {
        is_absent(t, "d")
    });
    barrier(&b, &nodes, "after");
    barrier(&a, &nodes, "after");
    wait_same_where(SYNC, "still deleted after a barrier", &nodes, |t| {
        is_absent(t, "d")
    });
}

/// A peer's file can arrive before its folder's entry (a folder announced
/// again comes after its files). The receiver makes the folder for the
/// file; it used to record it as a folder made here, a write of its own
/// that the peer's later deletion of the folder did not cover, so the
/// folder stayed (and came back on the peer). Now the folder waits for the
/// peer's entry, which it takes as it is, and the peer's deletion then
/// removes it. A raw peer sends the file alone, then the folder's entry,
/// then the deletion of both; again with the node restarted while the
/// folder waits (the wait is written down in the journal, so it goes on);
/// and again where the node holds an older deletion of the folder (the
/// folder made then was recorded as made here, over that deletion).
#[test]
fn a_folder_made_for_a_peers_file_goes_when_the_peer_deletes_it() {
    for (restart, deleted_before) in [(false, false), (true, false), (false, true)] {
        a_folder_made_for_a_peers_file_goes(restart, deleted_before);
    }
}

fn a_folder_made_for_a_peers_file_goes(restart: bool, deleted_before: bool) {
    use tandem_common::model::Dot;
    use tandem_common::proto::{FileData, PeerMessage};
    use tandem_common::{ContentHash, EntryKind, FileEntry, RelPath, VersionVector};

    let mut node = Node::start("n");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let key = harness::fresh_key();
    let p = tandem_common::NodeId(key.id());
    let mut io = rt.block_on(harness::raw_peer_keyed(&node, "p", &key));
    let body = b"a file whose folder is announced later\n";
    let entry = |path: &str, kind: EntryKind, counter: u64, data: Option<&[u8]>| {
        let deleted = data.is_none() && kind != EntryKind::Dir;
        let mode = if kind == EntryKind::Dir { 0o755 } else { 0o644 };
        let mut version = VersionVector::new();
        version.set(p, counter);
        FileEntry {
            path: RelPath::new(path).expect("path"),
            kind,
            size: data.map_or(0, |d| d.len() as u64),
            mtime_ns: 1_700_000_000_000_000_000,
            mode,
            hash: data.map_or_else(ContentHash::default, ContentHash::of),
            blocks: Vec::new(),
            version,
            written: Dot {
                node: Some(p),
                counter,
            }
            .into(),
            losers: Default::default(),
            deleted,
        }
    };
    let send = |io: &mut harness::RawPeerIo, m: PeerMessage| {
        rt.block_on(io.send(&m)).expect("send");
    };
    send(&mut io, PeerMessage::Resume { since: 0 });
    let case = format!("restarted: {restart}, deleted before: {deleted_before}");
    if deleted_before {
        send(
            &mut io,
            PeerMessage::Index {
                entries: vec![(1, entry("d", EntryKind::Dir, 1, None))],
                contents: vec![],
            },
        );
        wait_until(SYNC, "the peer's first folder made", &[&node], || {
            node.path("d").is_dir()
        });
        let mut gone = entry("d", EntryKind::Dir, 2, None);
        gone.deleted = true;
        send(
            &mut io,
            PeerMessage::Index {
                entries: vec![(2, gone)],
                contents: vec![],
            },
        );
        wait_until(SYNC, "the peer's first folder deleted", &[&node], || {
            !node.path("d").exists()
        });
    }
    // Sequence numbers and counters from 10 on: after those above.
    send(
        &mut io,
        PeerMessage::Index {
            entries: vec![(11, entry("d/f.txt", EntryKind::File, 12, Some(body)))],
            contents: vec![(0, FileData(body.to_vec()))],
        },
    );
    wait_until(SYNC, "the peer's file installed", &[&node], || {
        fs::read(node.path("d/f.txt")).ok().as_deref() == Some(&body[..])
    });
    // Twice: the first start empties the journal it read once its scan is
    // saved, and must write the waiting folder down again for the second.
    for _ in 0..if restart { 2 } else { 0 } {
        drop(io);
        node.stop();
        node.restart();
        io = rt.block_on(harness::raw_peer_keyed(&node, "p", &key));
        send(&mut io, PeerMessage::Resume { since: 0 });
    }
    // Its folder's entry, then both deleted: the deletion covers the
    // folder only if the node took the peer's folder as it is.
    send(
        &mut io,
        PeerMessage::Index {
            entries: vec![(12, entry("d", EntryKind::Dir, 13, None))],
            contents: vec![],
        },
    );
    let mut gone_dir = entry("d", EntryKind::Dir, 15, None);
    gone_dir.deleted = true;
    send(
        &mut io,
        PeerMessage::Index {
            entries: vec![
                (13, entry("d/f.txt", EntryKind::File, 14, None)),
                (14, gone_dir),
            ],
            contents: vec![],
        },
    );
    let what = format!("the folder gone with the file ({case})");
    wait_until(SYNC, &what, &[&node], || !node.path("d").exists());
    assert_eq!(
        node.log_count("added directory d"),
        0,
        "{}",
        node.fail(&format!(
            "the folder made for the peer's file is not one made here ({case})"
        ))
    );
}

// ---------------------------------------------------------------------------
// 7. Chain A–B–C

#[test]
fn chain_of_three_relays_through_the_middle_node() {
    // b dials a, c dials b: a and c never talk.
    let mut v = cluster(&["a", "b", "c"], &[&[], &[0], &[1]]);
    let (a, b, c) = (&v[0], &v[1], &v[2]);
    let nodes = [a, b, c];

    put(a.path("from-a/hello.txt"), "hello from a\n");
    wait_same_where(SYNC, "a's file on c", &nodes, |t| {
        has_content(t, "from-a/hello.txt", b"hello from a\n")
    });
    // A file large enough to travel without its block list: b serves the
    // list it recorded to c, and c's edit travels back the same way.
    let mut big = pattern(3 * MIB as usize, 5);
    put(a.path("big.bin"), &big);
    wait_same_where(SYNC, "a's big file on c", &nodes, |t| {
        has_content(t, "big.bin", &big)
    });
    big[MIB as usize + 10..MIB as usize + 20].copy_from_slice(b"edit on c!");
    put(c.path("big.bin"), &big);
    wait_same_where(SYNC, "c's edit of the big file on a", &nodes, |t| {
        has_content(t, "big.bin", &big)
    });
    for n in [a, c] {
        assert!(
            n.log_count("got the block list of big.bin") >= 1,
            "{}",
            n.fail("the big file's block list must have been asked for")
        );
    }
    remove(a.path("big.bin"));
    wait_same_where(SYNC, "a's delete of the big file on c", &nodes, |t| {
        is_absent(t, "big.bin")
    });
    put(c.path("from-c.txt"), "hello from c\n");
    wait_same_where(SYNC, "c's file on a", &nodes, |t| {
        has_content(t, "from-c.txt", b"hello from c\n")
    });
    put(c.path("from-a/hello.txt"), "edited on c\n");
    wait_same_where(SYNC, "c's edit on a", &nodes, |t| {
        has_content(t, "from-a/hello.txt", b"edited on c\n")
    });
    fs::remove_dir_all(c.path("from-a")).unwrap();
    wait_same_where(SYNC, "c's delete on a", &nodes, |t| is_absent(t, "from-a"));
    remove(a.path("from-c.txt"));
    let t = wait_same_where(SYNC, "a's delete on c", &nodes, |t| {
        is_absent(t, "from-c.txt")
    });
    assert!(t.is_empty(), "everything was deleted: {t:?}");
    assert!(
        log_lines(a, &["peer c connected"]).is_empty(),
        "{}",
        a.fail("a and c must not be linked in a chain")
    );

    // Tombstones travel through the middle too: c is away while a deletes
    // a file; when c comes back (to b only), it deletes it as well.
    put(a.path("late.txt"), "late\n");
    wait_same_where(SYNC, "late.txt on c", &nodes, |t| {
        has_content(t, "late.txt", b"late\n")
    });
    v[2].stop();
    remove(v[0].path("late.txt"));
    wait_same_where(SYNC, "late.txt deleted on b", &[&v[0], &v[1]], |t| {
        is_absent(t, "late.txt")
    });
    v[2].restart();
    let nodes = [&v[0], &v[1], &v[2]];
    wait_same_where(RECONNECT, "late.txt deleted on c", &nodes, |t| {
        is_absent(t, "late.txt")
    });
    barrier(&v[2], &nodes, "back");
    wait_same_where(SYNC, "late.txt still gone", &nodes, |t| {
        is_absent(t, "late.txt")
    });
}

// ---------------------------------------------------------------------------
// 8. Full mesh of three; one link per pair

/// "x->y" and the (connected, disconnected) lines x logged about y.
type LinkCount = (String, (usize, usize));

/// (connected, disconnected) log lines of `node` about `peer`.
fn link_lines(node: &Node, peer: &str) -> (usize, usize) {
    (
        node.log_count(&format!("peer {peer} connected")),
        node.log_count(&format!("peer {peer} disconnected")),
    )
}

#[test]
fn mesh_of_three_converges_with_one_link_per_pair() {
    // Every node dials both others: each pair dials twice, at once.
    let v = cluster(&["a", "b", "c"], &[&[1, 2], &[0, 2], &[0, 1]]);
    let nodes: Vec<&Node> = v.iter().collect();

    for n in &nodes {
        put(
            n.path(format!("from-{}.txt", n.name())),
            format!("made on {}\n", n.name()),
        );
        put(n.path(format!("dir-{}/f.txt", n.name())), n.name());
    }
    wait_same_where(SYNC, "each node's files on all", &nodes, |t| {
        for n in ["a", "b", "c"] {
            has_content(
                t,
                &format!("from-{n}.txt"),
                format!("made on {n}\n").as_bytes(),
            )?;
            has_content(t, &format!("dir-{n}/f.txt"), n.as_bytes())?;
        }
        Ok(())
    });
    // An edit and a delete from one node reach both others directly.
    put(v[1].path("from-a.txt"), "edited on b\n");
    remove(v[2].path("from-b.txt"));
    wait_same_where(SYNC, "b's edit and c's delete on all", &nodes, |t| {
        has_content(t, "from-a.txt", b"edited on b\n")?;
        is_absent(t, "from-b.txt")
    });

    // Each node ends with exactly one live link to each other node.
    let settled = wait_until(
        SYNC,
        "one live link per pair (connected - disconnected == 1)",
        &nodes,
        || -> Result<Vec<LinkCount>, String> {
            let mut counts = Vec::new();
            for n in &nodes {
                for p in &nodes {
                    if n.name() == p.name() {
                        continue;
                    }
                    let (c, d) = link_lines(n, p.name());
                    if c != d + 1 {
                        return Err(format!(
                            "{} logged {c} connects and {d} disconnects of {}",
                            n.name(),
                            p.name()
                        ));
                    }
                    counts.push((format!("{}->{}", n.name(), p.name()), (c, d)));
                }
            }
            Ok(counts)
        },
    );
    // Two rounds of traffic later, no link has been redone: no reconnect
    // storm, and only a few connects per peer in all.
    for round in ["one", "two"] {
        for n in &nodes {
            barrier(n, &nodes, round);
        }
    }
    let mut after = Vec::new();
    for n in &nodes {
        for p in &nodes {
            if n.name() != p.name() {
                after.push((
                    format!("{}->{}", n.name(), p.name()),
                    link_lines(n, p.name()),
                ));
            }
        }
    }
    eprintln!("(connected, disconnected) log lines per link: {after:?}");
    assert!(
        after == settled && after.iter().all(|(_, (c, _))| *c <= 3),
        "{}",
        fail_with_logs(
            &format!("links kept changing: at convergence {settled:?}, later {after:?}"),
            &nodes
        )
    );
}

// ---------------------------------------------------------------------------
// 9. A rename does not resend content

#[test]
fn renaming_a_20_mib_file_sends_no_content() {
    let (a, mut b) = pair();
    let outside = tempfile::tempdir().expect("temp dir");
    // The outside dir is in the same temp dir as a's: the move is a rename.
    write_big(&a.path("big.bin"), 20 * MIB, 9, Some(outside.path()));
    let list = a.wait_list("big.bin indexed on a", |l| {
        held_hash(l, "big.bin", "a").is_some()
    });
    let hash = held_hash(&list, "big.bin", "a").expect("hash");
    wait_hash(SYNC, &b, "big.bin", &hash, &[&a, &b]);
    same_bytes(&a.path("big.bin"), &b.path("big.bin")).unwrap();

    rename(a.path("big.bin"), a.path("moved/renamed.bin"));
    wait_until(
        SYNC,
        "the rename on b",
        &[&a, &b],
        || -> Result<(), String> {
            let l = b.try_list()?;
            if held_hash(&l, "moved/renamed.bin", "b") == Some(hash.clone())
                && find(&l, "big.bin").is_none()
                && !b.path("big.bin").exists()
            {
                Ok(())
            } else {
                Err(format!("b lists {:?}", paths(&l)))
            }
        },
    );
    same_bytes(&a.path("moved/renamed.bin"), &b.path("moved/renamed.bin")).unwrap();
    let lines = log_lines(&b, &["received moved/renamed.bin from a:"]);
    assert!(
        lines.len() == 1 && lines[0].contains("(0 B over the network"),
        "{}",
        fail_with_logs(
            &format!(
                "the renamed file must be built from b's own copy (0 B over the network); b logged {lines:#?}"
            ),
            &[&a, &b]
        )
    );

    // a knew the content: it did not read the file again.
    a.wait_log("moved/renamed.bin: a file known here under another name; not read again");

    // The same while b is offline: the new name and the old name's
    // tombstone reach b together when it comes back.
    b.stop();
    rename(a.path("moved/renamed.bin"), a.path("again.bin"));
    wait_hash(SYNC, &a, "again.bin", &hash, &[&a]);
    a.wait_log("again.bin: a file known here under another name; not read again");
    b.restart();
    wait_until(RECONNECT, "the offline rename on b", &[&a, &b], || {
        let l = b.try_list()?;
        if held_hash(&l, "again.bin", "b") == Some(hash.clone())
            && find(&l, "moved/renamed.bin").is_none()
            && !b.path("moved/renamed.bin").exists()
        {
            Ok(())
        } else {
            Err(format!("b lists {:?}", paths(&l)))
        }
    });
    same_bytes(&a.path("again.bin"), &b.path("again.bin")).unwrap();
    let lines = log_lines(&b, &["received again.bin from a:"]);
    assert!(
        lines.len() == 1 && lines[0].contains("(0 B over the network"),
        "{}",
        fail_with_logs(
            &format!(
                "a file renamed while b was offline must be built from b's own copy; b logged {lines:#?}"
            ),
            &[&a, &b]
        )
    );
}

// ---------------------------------------------------------------------------
// 10. Crash in the middle of a transfer

#[test]
fn receiver_killed_mid_transfer_recovers_without_debris() {
    let adir = tempfile::Builder::new()
        .prefix("tandem-test-crash-a-")
        .tempdir()
        .expect("temp dir");
    const SIZE: u64 = 200 * MIB;
    write_big(&adir.path().join("big.bin"), SIZE, 10, None);
    let a = Node::builder("a").dir(adir.path()).start();
    let hash = held_hash(&a.list(), "big.bin", "a").expect("a indexed big.bin at start-up");

    let mut b = Node::builder("b").peer(a.addr()).start();
    let tmp = b.path(".tandem/tmp");
    let real = b.path("big.bin");
    let has_part = || !temp_files(&tmp).is_empty();
    // A tight poll: the window is the length of the transfer.
    let deadline = Instant::now() + scaled(BIG);
    let mut polls = 0u64;
    loop {
        if has_part() {
            break;
        }
        polls += 1;
        if polls.is_multiple_of(200) && b.log().contains("received big.bin") {
            panic!(
                "{}",
                fail_with_logs(
                    "the transfer finished before a temp file was seen in b's .tandem/tmp/",
                    &[&a, &b]
                )
            );
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            fail_with_logs("no transfer started into b's .tandem/tmp/", &[&a, &b])
        );
        thread::sleep(Duration::from_millis(1));
    }
    b.kill9();
    let parts = temp_files(&tmp);
    let received = b.log().contains("received big.bin");
    match fs::metadata(&real) {
        Err(_) => {}
        Ok(m) => assert!(
            m.len() == SIZE && received,
            "{}",
            fail_with_logs(
                &format!(
                    "after kill -9 mid-transfer, b has big.bin under its real name with {} of {SIZE} bytes",
                    m.len()
                ),
                &[&a, &b]
            )
        ),
    }
    eprintln!("killed b with {parts:?} in .tandem/tmp (transfer finished: {received})");
    assert!(
        names(b.dir()).is_empty() || received,
        "{}",
        b.fail(&format!(
            "a half-received file is visible in b's tree: {:?}",
            names(b.dir())
        ))
    );

    let t = Instant::now();
    b.restart();
    wait_hash(BIG, &b, "big.bin", &hash, &[&a, &b]);
    eprintln!("b converged {:.1?} after its restart", t.elapsed());
    assert_eq!(paths(&b.list()), ["big.bin"], "b lists no temp file");
    assert_eq!(names(b.dir()), ["big.bin"], "nothing else in b's tree");
    same_bytes(&a.path("big.bin"), &real).unwrap();
    assert_eq!(
        fs::metadata(&real).unwrap().len(),
        SIZE,
        "complete under its real name"
    );
    wait_tmp_empty(&b, &[&a, &b]);
}

#[test]
fn receiver_killed_mid_batches_of_small_files_keeps_only_whole_files() {
    const DIRS: usize = 40;
    const PER_DIR: usize = 100;
    let adir = tempfile::Builder::new()
        .prefix("tandem-test-crash-small-a-")
        .tempdir()
        .expect("temp dir");
    for d in 0..DIRS {
        let dir = adir.path().join(format!("d{d:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..PER_DIR {
            fs::write(
                dir.join(format!("f{i:03}")),
                pattern(3000 + i, (d * PER_DIR + i) as u64),
            )
            .expect("write");
        }
    }
    let a = Node::builder("a").dir(adir.path()).start();
    let mut b = Node::builder("b").peer(a.addr()).start();
    // Kill b as soon as the first batch has landed (a tight poll).
    let deadline = Instant::now() + scaled(SYNC);
    while b.log_count("received ") == 0 {
        assert!(
            Instant::now() < deadline,
            "{}",
            fail_with_logs("no small file arrived on b", &[&a, &b])
        );
        thread::sleep(Duration::from_millis(1));
    }
    b.kill9();
    let arrived = b.log_count("received ");
    eprintln!("killed b after {arrived} of {} files", DIRS * PER_DIR);
    // Whatever is under a real name is whole: the same bytes as on a.
    let mut seen = 0;
    for d in 0..DIRS {
        let Ok(rd) = fs::read_dir(b.path(format!("d{d:02}"))) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("d{d:02}/{name}");
            let theirs = fs::read(adir.path().join(&rel));
            assert_eq!(
                fs::read(e.path()).ok(),
                theirs.ok(),
                "{}",
                b.fail(&format!("{rel} on b after kill -9 is not a's whole file"))
            );
            seen += 1;
        }
    }
    eprintln!("{seen} whole files under their real names on b");
    b.restart();
    let tree = wait_same("b converges after its restart", &[&a, &b]);
    assert_eq!(tree.len(), DIRS * PER_DIR + DIRS, "every file and folder");
    wait_tmp_empty(&b, &[&a, &b]);
}

// ---------------------------------------------------------------------------
// 11. Large files stream

/// Small files come inside the index (or, when not, in batched requests),
/// never one round trip per file.
#[test]
fn many_small_files_arrive_in_few_messages() {
    const FOLDERS: usize = 6;
    const PER_FOLDER: usize = 100;
    let (a, b) = pair();
    wait_linked(&a, &b);
    for f in 0..FOLDERS {
        let dir = a.path(format!("batch/d{f}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..PER_FOLDER {
            let path = dir.join(format!("f{i:03}.txt"));
            put_at(
                &path,
                pattern(200 + 37 * i, (f * PER_FOLDER + i) as u64),
                1_600_000_000 + i as i64,
                7,
            );
            if i % 10 == 0 {
                chmod(&path, 0o600);
            }
        }
    }
    // One file too big for a batch, and an empty one, in the same burst.
    put_at(
        a.path("batch/big.bin"),
        pattern(300 * 1024, 99),
        1_600_000_000,
        0,
    );
    put_at(a.path("batch/empty.txt"), b"", 1_600_000_000, 0);
    let tree = wait_same("600 small files a -> b", &[&a, &b]);
    assert_eq!(
        tree.keys().filter(|k| k.ends_with(".txt")).count(),
        FOLDERS * PER_FOLDER + 1,
        "every file arrived"
    );
    assert_eq!(file_mode(&tree, "batch/d0/f010.txt"), Some(0o600));
    // (files, batches) per way they came.
    let counted = |needle: &str, split: &str| {
        log_lines(&b, &[needle]).iter().fold((0, 0), |(n, k), l| {
            let before = l.split(split).next().unwrap_or("");
            let files = before
                .split_whitespace()
                .last()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            (n + files, k + usize::from(files > 0))
        })
    };
    let (given, writes) = counted("files came with a's index", " files came with");
    let (asked, requests) = counted("files asked from a in one request", " files asked from");
    let small = FOLDERS * PER_FOLDER + 1;
    assert!(
        given + asked >= small && writes + requests <= small / 10,
        "{}",
        b.fail(&format!(
            "{small} small files: {given} came with the index in {writes} batches, {asked} were asked for in {requests} requests (expected at least 10 files per batch or request)"
        ))
    );
    assert!(
        given >= small / 2,
        "{}",
        b.fail(&format!(
            "only {given} of {small} small files came with the index"
        ))
    );
}

#[test]
fn large_file_sync_keeps_memory_bounded() {
    // Issue 3 asks for a 2 GiB file; 512 MiB keeps CI short and is still 8x
    // the 64 MB allowance, so a node that buffers the file cannot pass.
    const SIZE: u64 = 512 * MIB;
    const ALLOWED_KIB: u64 = 64 * 1024;
    let tmp = std::env::temp_dir();
    match free_bytes(&tmp) {
        Some(free) if free >= 3 * 1024 * MIB => {}
        free => {
            eprintln!(
                "SKIPPED large_file_sync_keeps_memory_bounded: needs 3 GiB free in {}, has {:?} MiB",
                tmp.display(),
                free.map(|f| f / MIB)
            );
            return;
        }
    }
    let (a, b) = pair();
    let nodes = [&a, &b];
    barrier(&a, &nodes, "linked");
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| n.peak_rss_kib().expect("VmHWM"))
        .collect();

    let outside = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    write_big(&a.path("huge.bin"), SIZE, 11, Some(outside.path()));
    let hash = wait_until(BIG, "huge.bin indexed on a", &nodes, || {
        a.try_list().and_then(|l| {
            held_hash(&l, "huge.bin", "a").ok_or_else(|| format!("a lists {:?}", paths(&l)))
        })
    });
    wait_hash(BIG, &b, "huge.bin", &hash, &nodes);
    eprintln!("512 MiB written, indexed and synced in {:.1?}", t.elapsed());
    let after: Vec<u64> = nodes
        .iter()
        .map(|n| n.peak_rss_kib().expect("VmHWM"))
        .collect();
    same_bytes(&a.path("huge.bin"), &b.path("huge.bin")).unwrap();
    for (i, n) in nodes.iter().enumerate() {
        let grew = after[i].saturating_sub(before[i]);
        eprintln!(
            "node {}: peak RSS {} KiB before, {} KiB after (+{grew} KiB)",
            n.name(),
            before[i],
            after[i]
        );
        assert!(
            grew <= ALLOWED_KIB,
            "{}",
            n.fail(&format!(
                "syncing {} MiB raised node {}'s peak RSS by {grew} KiB (allowed {ALLOWED_KIB})",
                SIZE / MIB,
                n.name()
            ))
        );
    }
}

// ---------------------------------------------------------------------------
// 12. No echo

#[test]
fn applied_changes_do_not_echo_back() {
    let (a, mut b) = pair();
    let nodes = [&a, &b];
    put(a.path("echo.txt"), "one\n");
    put(a.path("echodir/inner.txt"), "inner\n");
    wait_same_where(SYNC, "created on b", &nodes, |t| {
        has_content(t, "echo.txt", b"one\n")?;
        has_content(t, "echodir/inner.txt", b"inner\n")
    });
    put(a.path("echo.txt"), "two, longer\n");
    wait_same_where(SYNC, "modified on b", &nodes, |t| {
        has_content(t, "echo.txt", b"two, longer\n")
    });
    set_mtime(a.path("echo.txt"), 1_111_111_111, 111);
    chmod(a.path("echo.txt"), 0o640);
    wait_same_where(SYNC, "mtime and mode on b", &nodes, |t| {
        match (file_mode(t, "echo.txt"), file_mtime(t, "echo.txt")) {
            (Some(0o640), Some("2005-03-18T01:58:31.000000111Z")) => Ok(()),
            x => Err(format!("echo.txt mode and mtime {x:?}")),
        }
    });
    remove(a.path("echodir/inner.txt"));
    wait_same_where(SYNC, "delete on b", &nodes, |t| {
        is_absent(t, "echodir/inner.txt")
    });
    // Anything b would send about these paths, it would send before this.
    barrier(&b, &nodes, "echo");

    let paths = ["echo.txt", "echodir", "echodir/inner.txt"];
    let mut echoes = Vec::new();
    for line in b.log().lines() {
        for p in paths {
            let local_change = [
                format!("added {p} ("),
                format!("changed {p} ("),
                format!("added directory {p}"),
                format!("changed directory {p}"),
            ]
            .iter()
            .any(|n| line.contains(n.as_str()))
                || line.trim_end().ends_with(&format!("deleted {p}"));
            if local_change {
                echoes.push(format!("b: {line}"));
            }
        }
    }
    for line in a.log().lines() {
        if paths.iter().any(|p| line.contains(p))
            && (line.contains("from b") || line.contains("on b"))
        {
            echoes.push(format!("a: {line}"));
        }
    }
    assert!(
        echoes.is_empty(),
        "{}",
        fail_with_logs(
            &format!("changes applied on b came back as changes: {echoes:#?}"),
            &nodes
        )
    );
    // And a saw each change of its own exactly once.
    assert_eq!(log_lines(&a, &["added echo.txt ("]).len(), 1);

    // What b wrote is recorded as it is on disk: a restart finds nothing
    // changed (no echo after a restart either).
    b.stop();
    b.restart();
    let run = b.run_log();
    assert!(
        run.contains(" 0 changed since last run"),
        "{}",
        b.fail("b's start-up scan found changes in files it had received")
    );
    barrier(&b, &[&a, &b], "after-restart");
    assert!(
        log_lines(&a, &["echo.txt", "from b"]).is_empty(),
        "{}",
        fail_with_logs("a received echo.txt back after b restarted", &[&a, &b])
    );
}

// ---------------------------------------------------------------------------
// More of the rules: first contact, directories against new files, types

/// Two nodes that never talked start with different content at the same
/// path: their histories are concurrent, so it is a conflict like any
/// other (newer mtime wins, the loser is kept); the same content with
/// different mtimes is no conflict.
#[test]
fn first_contact_with_different_content_is_a_conflict() {
    let adir = tempfile::tempdir().expect("temp dir");
    let bdir = tempfile::tempdir().expect("temp dir");
    put_at(adir.path().join("same.cfg"), "a's own\n", OLDER.0, OLDER.1);
    put_at(bdir.path().join("same.cfg"), "b's own\n", NEWER.0, NEWER.1);
    put_at(adir.path().join("equal.txt"), "equal\n", NEWER.0, NEWER.1);
    put_at(bdir.path().join("equal.txt"), "equal\n", OLDER.0, OLDER.1);
    let aa = free_addr();
    let v = start_all(vec![
        Node::builder("a").dir(adir.path()).listen(aa),
        Node::builder("b").dir(bdir.path()).peer(aa),
    ]);
    let (a, b) = (&v[0], &v[1]);
    let nodes = [a, b];
    let t = wait_same_where(RECONNECT, "first contact merged", &nodes, |t| {
        has_content(t, "same.cfg", b"b's own\n")?;
        match file_mtime(t, "equal.txt") {
            Some("2021-01-02T03:04:05.250000000Z") => Ok(()),
            m => Err(format!("equal.txt mtime {m:?}")),
        }
    });
    has_content(&t, "equal.txt", b"equal\n").unwrap();
    let kept = conflict_files(a);
    assert!(
        kept == [(
            "same.conflict-20200102-030405-a.cfg".to_string(),
            b"a's own\n".to_vec()
        )],
        "{}",
        fail_with_logs(&format!("a's conflicts: {kept:?}"), &nodes)
    );
    assert!(
        conflict_files(b).is_empty(),
        "{}",
        fail_with_logs("b held every winner", &nodes)
    );
}

/// A directory deleted on one node while the offline other added a file
/// in it: the new file (and the directories holding it) survive
/// everywhere; the files that were deleted stay deleted.
#[test]
fn new_file_in_a_directory_deleted_elsewhere_survives() {
    let (a, mut b) = pair();
    put(a.path("proj/old.txt"), "old\n");
    put(a.path("proj/sub/old2.txt"), "old2\n");
    wait_same_where(SYNC, "proj/ on both", &[&a, &b], |t| {
        has_content(t, "proj/sub/old2.txt", b"old2\n")
    });
    b.stop();
    fs::remove_dir_all(a.path("proj")).unwrap();
    wait_indexed(&a, "proj/sub/old2.txt", None);
    put(b.path("proj/sub/new.txt"), "new on b\n");
    b.restart();
    let nodes = [&a, &b];
    wait_same_where(
        RECONNECT,
        "the new file kept, the old ones deleted",
        &nodes,
        |t| {
            has_content(t, "proj/sub/new.txt", b"new on b\n")?;
            is_absent(t, "proj/old.txt")?;
            is_absent(t, "proj/sub/old2.txt")
        },
    );
    barrier(&a, &nodes, "settle");
    let t = wait_same("settled", &nodes);
    let left: Vec<&String> = t.keys().filter(|k| !k.starts_with("barrier-")).collect();
    assert_eq!(left, ["proj", "proj/sub", "proj/sub/new.txt"]);
}

#[test]
fn file_replaced_by_a_directory_propagates() {
    let (a, b) = pair();
    let nodes = [&a, &b];
    put(a.path("x"), "file x\n");
    wait_same_where(SYNC, "file x on both", &nodes, |t| {
        has_content(t, "x", b"file x\n")
    });
    remove(a.path("x"));
    put(a.path("x/child.txt"), "child\n");
    let t = wait_same_where(SYNC, "x is a directory on both", &nodes, |t| {
        has_content(t, "x/child.txt", b"child\n")
    });
    assert!(matches!(t.get("x"), Some(Item::Dir { .. })));
}

#[test]
fn directory_replaced_by_a_file_propagates() {
    let (a, b) = pair();
    let nodes = [&a, &b];
    fs::create_dir(a.path("y")).unwrap();
    wait_same_where(SYNC, "directory y on both", &nodes, |t| match t.get("y") {
        Some(Item::Dir { .. }) => Ok(()),
        x => Err(format!("y is {x:?}")),
    });
    fs::remove_dir(a.path("y")).unwrap();
    put(a.path("y"), "now a file\n");
    wait_same_where(SYNC, "y is a file on both", &nodes, |t| {
        has_content(t, "y", b"now a file\n")
    });
}

/// Concurrent edits with exactly the same mtime: every node picks the same
/// winner (by hash), and the other version is kept on the node that wrote it.
#[test]
fn concurrent_edits_with_the_same_mtime_converge() {
    let (a, mut b) = pair();
    put(a.path("tie.txt"), "v0\n");
    wait_same_where(SYNC, "tie.txt on both", &[&a, &b], |t| {
        has_content(t, "tie.txt", b"v0\n")
    });
    b.stop();
    let (ca, cb): (&[u8], &[u8]) = (b"tie from a\n", b"tie from b\n");
    put_at(a.path("tie.txt"), ca, OLDER.0, OLDER.1);
    wait_indexed(&a, "tie.txt", Some(ca));
    put_at(b.path("tie.txt"), cb, OLDER.0, OLDER.1);
    b.restart();
    let nodes = [&a, &b];
    let t = wait_same_where(RECONNECT, "one of the two everywhere", &nodes, |t| {
        has_content(t, "tie.txt", ca).or_else(|_| has_content(t, "tie.txt", cb))
    });
    let (loser, lose_data) = if has_content(&t, "tie.txt", ca).is_ok() {
        (&b, cb)
    } else {
        (&a, ca)
    };
    let want = format!("tie.conflict-20200102-030405-{}.txt", loser.name());
    let (ka, kb) = (conflict_files(&a), conflict_files(&b));
    let kept = if loser.name() == "a" { &ka } else { &kb };
    assert!(
        ka.len() + kb.len() == 1
            && kept.len() == 1
            && kept[0] == (want.clone(), lose_data.to_vec()),
        "{}",
        fail_with_logs(
            &format!(
                "expected only {}'s {want}; a has {ka:?}, b has {kb:?}",
                loser.name()
            ),
            &nodes
        )
    );
}

// ---------------------------------------------------------------------------
// A file that changes while it is being sent

#[test]
fn file_rewritten_while_being_sent_is_fetched_again() {
    let (a, b) = pair();
    let nodes = [&a, &b];
    let outside = tempfile::tempdir().expect("temp dir");
    write_big(&a.path("moving.bin"), 100 * MIB, 1, Some(outside.path()));
    let tmp = b.path(".tandem/tmp");
    let deadline = Instant::now() + scaled(BIG);
    while temp_files(&tmp).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{}",
            fail_with_logs("b never started fetching moving.bin", &nodes)
        );
        thread::sleep(Duration::from_millis(1));
    }
    // Rewrite it in place (truncate, write a different 100 MiB) while b
    // is fetching the first version.
    write_big(&a.path("moving.bin"), 100 * MIB, 2, None);
    wait_until(
        BIG,
        "b holds exactly a's final version",
        &nodes,
        || -> Result<(), String> {
            let ha = held_hash(&a.try_list()?, "moving.bin", "a");
            let hb = held_hash(&b.try_list()?, "moving.bin", "b");
            if ha.is_some() && ha == hb {
                same_bytes(&a.path("moving.bin"), &b.path("moving.bin"))
            } else {
                Err(format!("a holds {ha:?}, b holds {hb:?}"))
            }
        },
    );
    let first = pattern(64, 1);
    let mut head = vec![0u8; 64];
    File::open(b.path("moving.bin"))
        .and_then(|mut f| f.read_exact(&mut head))
        .expect("read b's copy");
    assert_ne!(head[16..], first[16..], "b must not keep the first version");
}

/// A file changed in place with its stat kept (same inode, size, mode and
/// mtime: `touch -r`, or a tool that restores times) looks unchanged, so
/// the sender does not read it again and sends its blocks unchecked. The
/// receiver's check finds them wrong, its next try asks the sender to
/// check, and that makes the sender read the file again and send the
/// content it holds: both end with it. (Before, the sender checked every
/// block, refused, and looked at the file again by its stat, which had not
/// changed: the receiver asked for ever.)
#[test]
fn a_file_changed_with_its_stat_kept_is_read_again_and_synced() {
    let (mut a, mut b) = pair();
    b.stop();
    // Made while a is down, so a records it with the old mtime from the
    // start.
    a.stop();
    let rel = "kept-stat.bin";
    let old_time = (1_577_934_245, 0);
    write_big(&a.path(rel), 2 * MIB, 3, None);
    set_mtime(a.path(rel), old_time.0, old_time.1);
    let before = fs::read(a.path(rel)).expect("read");
    a.restart();
    wait_indexed(&a, rel, Some(&before));
    a.stop();
    // One block's bytes change in place; the stat is put back as it was.
    let meta = fs::metadata(a.path(rel)).expect("stat");
    let mut changed = before.clone();
    changed[MIB as usize + 100..MIB as usize + 200].fill(0xee);
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(a.path(rel))
            .expect("open for writing");
        f.write_all_at(&changed[MIB as usize..MIB as usize + 4096], MIB)
            .expect("write in place");
        f.sync_all().expect("fsync");
    }
    set_mtime(a.path(rel), old_time.0, old_time.1);
    let after = fs::metadata(a.path(rel)).expect("stat");
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()),
        "the stat must be as it was"
    );
    // a's start finds the stat it recorded, and does not read the file.
    a.restart();
    b.restart();
    let nodes = [&a, &b];
    wait_same_where(RECONNECT, "the changed content on both", &nodes, |t| {
        has_content(t, rel, &changed)
    });
}

// ---------------------------------------------------------------------------
// Bytes on the wire for edits and renames of large files

/// A TCP relay between a dialing node and the node it dials that counts
/// the bytes each way (payload, as the nodes write them).
struct CountingProxy {
    addr: std::net::SocketAddr,
    /// Bytes the dialed node sent.
    from_target: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes the dialing node sent.
    to_target: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    /// Relays every connection made to it to `target`.
    fn start(target: std::net::SocketAddr) -> CountingProxy {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (from_target, to_target) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (ft, tt) = (from_target.clone(), to_target.clone());
        // Pump threads end when the nodes close their sockets; the accept
        // thread lives as long as the test process.
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let pump = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            n: Arc<AtomicU64>| {
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(k) = from.read(&mut buf) {
                            if k == 0 || to.write_all(&buf[..k]).is_err() {
                                break;
                            }
                            n.fetch_add(k as u64, Ordering::Relaxed);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone socket"),
                    server.try_clone().expect("clone socket"),
                );
                pump(client, server, tt.clone());
                pump(s2, c2, ft.clone());
            }
        });
        CountingProxy {
            addr,
            from_target,
            to_target,
        }
    }

    /// (bytes from the dialed node, bytes to it) so far.
    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.from_target.load(Ordering::Relaxed),
            self.to_target.load(Ordering::Relaxed),
        )
    }

    /// Waits until nothing has crossed for `quiet`, then returns the counts
    /// (so a measurement starts after the previous step's stragglers).
    fn settled(&self, quiet: Duration) -> (u64, u64) {
        let deadline = Instant::now() + scaled(SYNC);
        let mut last = self.counts();
        loop {
            thread::sleep(quiet);
            let now = self.counts();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }
}

/// Waits until `node` has logged `needle` at least `n` times (reading its
/// log: unlike `tandem list`, this sends nothing over the link measured).
fn wait_log_count(node: &Node, needle: &str, n: usize, nodes: &[&Node]) {
    wait_until(
        SYNC,
        &format!("{n} log lines of {} containing {needle:?}", node.name()),
        nodes,
        || -> Result<(), String> {
            match node.log_count(needle) {
                k if k >= n => Ok(()),
                k => Err(format!("{k} so far")),
            }
        },
    );
}

#[test]
fn edits_and_renames_of_large_files_send_only_what_changed() {
    const SIZE: u64 = 64 * MIB;
    const KIB: u64 = 1024;
    // b dials a through the proxy; a dials no one, so every byte between
    // them crosses it. While bytes are measured, the test waits on the
    // nodes' logs, not on `tandem list` (which asks the peer for its files).
    // The lock cluster's heartbeats (a few hundred bytes every 500 ms)
    // would never let the link go quiet: one an hour here.
    let a = Node::builder("a").arg("--lock-heartbeat").arg("1h").start();
    let proxy = CountingProxy::start(a.addr());
    let b = Node::builder("b")
        .arg("--lock-heartbeat")
        .arg("1h")
        .peer(proxy.addr)
        .trusts(&a)
        .start();
    let nodes = [&a, &b];
    let outside = tempfile::tempdir().expect("temp dir");
    write_big(&a.path("big.bin"), SIZE, 12, Some(outside.path()));
    let list = a.wait_list("big.bin indexed on a", |l| {
        held_hash(l, "big.bin", "a").is_some()
    });
    let hash = held_hash(&list, "big.bin", "a").expect("hash");
    wait_hash(BIG, &b, "big.bin", &hash, &nodes);

    // A rename: b builds the new name from its own copy; only two entries
    // (the new name without its 16 KiB block list, the old name's
    // tombstone) and feed events cross.
    let before = proxy.settled(Duration::from_millis(300));
    rename(a.path("big.bin"), a.path("renamed.bin"));
    wait_log_count(&b, "deleted big.bin (deleted on a)", 1, &nodes);
    wait_log_count(&b, "received renamed.bin from a:", 1, &nodes);
    let after = proxy.settled(Duration::from_millis(300));
    let (down, up) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "rename of a {} MiB file: a->b {down} B, b->a {up} B",
        SIZE / MIB
    );
    assert!(
        down + up < 2 * KIB,
        "{}",
        fail_with_logs(
            &format!("a rename sent {down} B a->b and {up} B b->a (under 2 KiB in all expected)"),
            &nodes
        )
    );
    wait_hash(SYNC, &b, "renamed.bin", &hash, &nodes);
    assert!(!b.path("big.bin").exists(), "the old name is gone on b");

    // 4 KiB changed in place in the middle, across two 4 KiB chunks: those
    // two chunks of their block (b sends the chunk hashes of its own copy
    // of the block, 256 B), the group hashes (256 B) and one group's block
    // hashes (2 KiB); not the whole 128 KiB block (which made it 132 KiB),
    // nor the whole 16 KiB list (144 KiB and more).
    let before = proxy.settled(Duration::from_millis(300));
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(a.path("renamed.bin"))
            .expect("open for the edit");
        f.write_all_at(&pattern(4096, 77), 37 * MIB + 5000)
            .expect("edit");
    }
    wait_log_count(&b, "received renamed.bin from a:", 2, &nodes);
    let after = proxy.settled(Duration::from_millis(300));
    let (down, up) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "4 KiB edit in a {} MiB file: a->b {down} B, b->a {up} B",
        SIZE / MIB
    );
    assert!(
        down + up < 16 * KIB,
        "{}",
        fail_with_logs(
            &format!(
                "a 4 KiB edit sent {down} B a->b and {up} B b->a (under 16 KiB in all expected)"
            ),
            &nodes
        )
    );
    let lines = log_lines(&b, &["received renamed.bin from a:"]);
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("(8 KiB over the network")),
        "{}",
        fail_with_logs(
            &format!("the edit must fetch two chunks of one block; b logged {lines:#?}"),
            &nodes
        )
    );
    let edited = held_hash(&a.list(), "renamed.bin", "a").expect("hash");
    assert_ne!(edited, hash);
    wait_hash(SYNC, &b, "renamed.bin", &edited, &nodes);
    same_bytes(&a.path("renamed.bin"), &b.path("renamed.bin")).unwrap();
}

#[test]
fn many_new_large_files_get_their_block_lists() {
    // More files than block list requests may run at once, each too large
    // for its list to travel inline (10 blocks).
    const FILES: usize = 40;
    let (a, b) = pair();
    let nodes = [&a, &b];
    for i in 0..FILES {
        put(
            a.path(format!("large/f{i:02}.bin")),
            pattern(1280 * 1024, 1000 + i as u64),
        );
    }
    let tree = wait_same("40 large files a -> b", &nodes);
    assert_eq!(
        tree.keys().filter(|k| k.ends_with(".bin")).count(),
        FILES,
        "every file arrived"
    );
    assert_eq!(
        b.log_count("got the block list of large/"),
        FILES,
        "{}",
        b.fail("each file's list is asked for once")
    );
}

/// A node that took many new files from a peer makes its index's maps
/// whole again once things are still (memory: after a million, 489 -> 219
/// MiB), and everything still works after it: all files are there and
/// listed, and changes on either side still travel.
#[test]
fn a_node_that_took_many_files_compacts_its_index_and_keeps_syncing() {
    const FOLDERS: usize = 21;
    const PER_FOLDER: usize = 500;
    let (a, b) = pair();
    wait_linked(&a, &b);
    for f in 0..FOLDERS {
        let dir = a.path(format!("many/d{f:02}"));
        fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..PER_FOLDER {
            fs::write(dir.join(format!("f{i:03}")), format!("{f} {i}")).expect("write");
        }
    }
    let count = |n: &Node| {
        (0..FOLDERS)
            .map(|f| {
                fs::read_dir(n.path(format!("many/d{f:02}")))
                    .map_or(0, |d| d.filter(|e| e.is_ok()).count())
            })
            .sum::<usize>()
    };
    wait_until(BIG, "every file on b", &[&a, &b], || {
        let n = count(&b);
        (n == FOLDERS * PER_FOLDER)
            .then_some(())
            .ok_or(format!("{n} of {} files on b", FOLDERS * PER_FOLDER))
    });
    let line = wait_until(
        scaled(SYNC),
        "b making its index's maps whole",
        &[&a, &b],
        || log_lines(&b, &["made the index's maps whole again"]).pop(),
    );
    assert!(line.contains("records)"), "{line}");
    put(b.path("after/from-b.txt"), "made on b after");
    put(a.path("many/d03/f007"), "changed on a after");
    let tree = wait_same_where(scaled(SYNC), "both changes on both", &[&a, &b], |t| {
        has_content(t, "after/from-b.txt", b"made on b after")?;
        has_content(t, "many/d03/f007", b"changed on a after")
    });
    assert_eq!(
        tree.keys().filter(|k| k.starts_with("many/d")).count(),
        FOLDERS * PER_FOLDER + FOLDERS,
        "every file and folder"
    );
}
