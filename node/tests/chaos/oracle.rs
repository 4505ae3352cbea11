//! The oracle: reads every node's folder (and conflicts folder and `tandem
//! list`), waits until the cluster has settled, and checks the invariants
//! against the [`Record`] of what the operations did.
//!
//! Invariants (each finding names its kind):
//! - `diverged`: every node has the same tree (path, file or folder,
//!   content, mtime to the ns, permission bits), `.tandem/` aside;
//! - `list-vs-disk`, `believe-agree`: each node's `tandem list --json`
//!   matches its disk and shows every file in sync; when the disks differ
//!   while every list says all is in sync, that is reported on its own;
//! - `temp-file`: no `.tandem-tmp-*` or `*.part` in a user's tree;
//! - `lost`: every content the test wrote that no operation destroyed is
//!   current somewhere or kept in some node's `.tandem/conflicts/`;
//! - `resurrected`, `resurrected-folder`: a (path, content) an operation
//!   took away is not current at that path again, unless an operation put
//!   it back there after the first removal; a deleted folder is not back
//!   unless something inside it is legitimately there;
//! - `misplaced`: every current (path, content) and folder is one that some
//!   operation put there;
//! - `edit-lost-to-delete`, `replaced-without-conflict`: a content the test
//!   put at P and never took away from P is either current at P or kept as
//!   a conflict copy of P;
//! - `older-won-conflict`: a conflict copy of P lost to something: some
//!   content put at P has an mtime at least as new (ties either way).
//!
//! The last two replace a naive "the final content at P is at least as new
//! as every content ever written at P": that one is wrong when the winner
//! of a conflict is later edited with an older mtime (a causal successor
//! wins whatever its mtime).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_node::scan::TEMP_PREFIX;

use super::plan::NAMES;
use super::record::{Ev, Hash, Record};
use crate::harness::{
    FileInfo, Node, diff_list_disk, listed_files, rfc3339_utc, try_list_json, walk_tree,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        mode: u32,
    },
    File {
        size: u64,
        mtime_ns: i64,
        hash: Hash,
        mode: u32,
    },
}

/// A conflict copy: its name under `.tandem/conflicts/`, the path it was a
/// version of, its content and mtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub name: String,
    pub of: Option<String>,
    pub hash: Hash,
    pub mtime_ns: i64,
}

/// One node's state as read from its disk and its `tandem list`.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub tree: BTreeMap<String, Entry>,
    pub conflicts: Vec<Conflict>,
    /// What is in `.tandem/versions/` (name, content): not counted as
    /// kept by the invariants, only named in a `lost` finding's text.
    pub versions: Vec<(String, Hash)>,
    pub temps: Vec<String>,
    pub list: Result<Vec<Value>, String>,
}

/// Hashes by (inode, size, mtime, ctime), so polling does not rehash.
#[derive(Default)]
pub struct HashCache(HashMap<(u64, u64, i64, i64), Hash>);

impl HashCache {
    fn hash(&mut self, path: &Path, m: &fs::Metadata) -> Option<Hash> {
        let key = (
            m.ino(),
            m.size(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            m.ctime() * 1_000_000_000 + m.ctime_nsec(),
        );
        if let Some(h) = self.0.get(&key) {
            return Some(*h);
        }
        let h = blake3::hash(&fs::read(path).ok()?);
        self.0.insert(key, h);
        Some(h)
    }
}

fn mtime_ns(m: &fs::Metadata) -> i64 {
    m.mtime() * 1_000_000_000 + m.mtime_nsec()
}

/// The path a conflict copy `dir/stem.conflict-YYYYMMDD-HHMMSS-author[-n].ext`
/// was a version of: `dir/stem.ext`.
pub fn conflict_original(name: &str) -> Option<String> {
    let (dir, file) = match name.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, name),
    };
    let i = file.rfind(".conflict-")?;
    let (stem, rest) = (&file[..i], &file[i + ".conflict-".len()..]);
    // Author names are sanitised to [alnum - _]: the extension starts at the
    // first dot after the timestamp.
    let tail = rest.get(16..)?;
    let ext = tail.find('.').map_or("", |j| &tail[j..]);
    let orig = format!("{stem}{ext}");
    Some(match dir {
        Some(d) => format!("{d}/{orig}"),
        None => orig,
    })
}

/// Reads one node's folder, conflicts and list.
pub fn view(node: &Node, cache: &mut HashCache) -> View {
    let mut tree = BTreeMap::new();
    let mut temps = Vec::new();
    walk_tree(node.dir(), &mut |rel, full, m| {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if name.starts_with(TEMP_PREFIX) || name.ends_with(".part") {
            temps.push(rel.to_string());
        }
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            tree.insert(rel.to_string(), Entry::Dir { mode });
        } else if m.is_file()
            && let Some(hash) = cache.hash(full, m)
        {
            tree.insert(
                rel.to_string(),
                Entry::File {
                    size: m.size(),
                    mtime_ns: mtime_ns(m),
                    hash,
                    mode,
                },
            );
        }
    });
    let mut conflicts = Vec::new();
    walk_tree(&node.path(".tandem/conflicts"), &mut |rel, full, m| {
        if m.is_file()
            && let Some(hash) = cache.hash(full, m)
        {
            conflicts.push(Conflict {
                name: rel.to_string(),
                of: conflict_original(rel),
                hash,
                mtime_ns: mtime_ns(m),
            });
        }
    });
    conflicts.sort_by(|a, b| a.name.cmp(&b.name));
    let mut versions = Vec::new();
    walk_tree(&node.path(".tandem/versions"), &mut |rel, full, m| {
        if m.is_file()
            && let Some(hash) = cache.hash(full, m)
        {
            versions.push((rel.to_string(), hash));
        }
    });
    let list = if node.is_running() {
        try_list_json(node.addr())
    } else {
        Err(format!("node {} is not running", node.name()))
    };
    View {
        tree,
        conflicts,
        versions,
        temps,
        list,
    }
}

fn all_in_sync(list: &[Value]) -> bool {
    list.iter().all(|r| {
        r["states"]
            .as_object()
            .is_some_and(|s| s.values().all(|v| v == "in sync"))
    })
}

/// The regular files of a view as `tandem list` describes them.
fn files(v: &View) -> BTreeMap<String, FileInfo> {
    v.tree
        .iter()
        .filter_map(|(p, e)| match e {
            Entry::File {
                size,
                mtime_ns,
                hash,
                ..
            } => Some((
                p.clone(),
                FileInfo {
                    size: *size,
                    mtime: ts(*mtime_ns),
                    hash: hash.to_hex().to_string(),
                },
            )),
            Entry::Dir { .. } => None,
        })
        .collect()
}

/// Trees equal, and every list matches its disk and is all in sync
/// (compared with the views already read: nothing is hashed again).
fn converged(views: &[View]) -> bool {
    views.windows(2).all(|w| w[0].tree == w[1].tree)
        && views.iter().all(|v| {
            v.list
                .as_ref()
                .is_ok_and(|l| all_in_sync(l) && listed_files(l) == files(v))
        })
}

/// How the wait for a settled cluster ended.
pub struct Settled {
    pub views: Vec<View>,
    pub how: String,
}

/// Polls every node until the trees are identical, every list agrees with
/// its disk, and nothing changed for `quiet`; gives up at `deadline`, or
/// earlier when nothing at all changed for `stuck` while not converged.
pub fn settle(
    nodes: &[Node],
    cache: &mut HashCache,
    deadline: Duration,
    quiet: Duration,
    stuck: Duration,
) -> Settled {
    let start = Instant::now();
    let mut last_change = start;
    let mut prev: Option<Vec<View>> = None;
    loop {
        let views: Vec<View> = nodes.iter().map(|n| view(n, cache)).collect();
        let now = Instant::now();
        if prev.as_ref() != Some(&views) {
            last_change = now;
        }
        let ok = converged(&views);
        let still = now - last_change;
        let waited = now - start;
        if ok && still >= quiet {
            return Settled {
                views,
                how: format!("settled after {waited:.1?}"),
            };
        }
        if !ok && still >= stuck {
            return Settled {
                views,
                how: format!(
                    "not converged: nothing changed for {still:.1?} (after {waited:.1?} in all)"
                ),
            };
        }
        if waited >= deadline {
            return Settled {
                views,
                how: format!("not settled within {deadline:.1?}"),
            };
        }
        prev = Some(views);
        // Polling interval (a condition is being polled, not waited out).
        thread::sleep(Duration::from_millis(250));
    }
}

/// One violated invariant.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: &'static str,
    pub paths: Vec<String>,
    pub text: String,
}

fn ts(ns: i64) -> String {
    rfc3339_utc(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// A file or folder for messages: `w12 3120 B 2026-…Z`, `folder`, `absent`.
pub fn describe(rec: &Record, e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(Entry::Dir { mode }) => format!("folder {mode:o}"),
        Some(Entry::File {
            size,
            mtime_ns,
            hash,
            mode,
        }) => format!("{} {size} B {} {mode:o}", rec.label(hash), ts(*mtime_ns)),
    }
}

fn nodes_str(ns: &[usize]) -> String {
    ns.iter().map(|i| NAMES[*i]).collect::<Vec<_>>().join(",")
}

/// Where an event is: (event number, op, node).
type At = (usize, usize, usize);

/// The record, indexed for the checks.
struct Index<'a> {
    rec: &'a Record,
    /// (path, content) -> (event number, op) that put it there.
    puts: HashMap<(&'a str, Hash), Vec<(usize, usize)>>,
    /// (path, content) -> (event number, op, node) that took it away.
    removals: HashMap<(&'a str, Hash), Vec<At>>,
    put_dirs: HashMap<&'a str, Vec<(usize, usize)>>,
    removed_dirs: HashMap<&'a str, Vec<At>>,
    /// path -> contents put there.
    at_path: HashMap<&'a str, Vec<Hash>>,
    destroyed: HashSet<Hash>,
}

impl<'a> Index<'a> {
    fn new(rec: &'a Record) -> Index<'a> {
        let mut ix = Index {
            rec,
            puts: HashMap::new(),
            removals: HashMap::new(),
            put_dirs: HashMap::new(),
            removed_dirs: HashMap::new(),
            at_path: HashMap::new(),
            destroyed: HashSet::new(),
        };
        for (n, e) in rec.events.iter().enumerate() {
            let p = e.path.as_str();
            match (e.ev, e.hash) {
                (Ev::Put, Some(h)) => {
                    ix.puts.entry((p, h)).or_default().push((n, e.op));
                    let v = ix.at_path.entry(p).or_default();
                    if !v.contains(&h) {
                        v.push(h);
                    }
                }
                (Ev::Removed { destroyed }, Some(h)) => {
                    ix.removals
                        .entry((p, h))
                        .or_default()
                        .push((n, e.op, e.node));
                    if destroyed {
                        ix.destroyed.insert(h);
                    }
                }
                (Ev::PutDir, _) => ix.put_dirs.entry(p).or_default().push((n, e.op)),
                (Ev::RemovedDir, _) => ix
                    .removed_dirs
                    .entry(p)
                    .or_default()
                    .push((n, e.op, e.node)),
                _ => {}
            }
        }
        ix
    }

    /// The removal of (path, content) that makes it a resurrection if it is
    /// current: the first one (in the order the operations observed them),
    /// unless a put came after it, or it was put there more than once (a
    /// rename back on another node may not have been seen by the remover):
    /// (op, node).
    fn removed_for_good(&self, path: &str, h: Hash) -> Option<(usize, usize)> {
        let (n, op, node) = *self.removals.get(&(path, h))?.iter().min()?;
        let puts = self.puts.get(&(path, h)).map_or(&[][..], Vec::as_slice);
        let again = puts.len() > 1 || puts.iter().any(|(m, _)| *m > n);
        (!again).then_some((op, node))
    }

    /// The deletion of folder `d` that makes it a resurrection if it is back
    /// with nothing legitimately inside: the first one, by node N, unless
    /// something may have been made there concurrently with it (an edit
    /// beats a delete, and a kept folder stays even if what kept it goes
    /// later): anything put at or inside `d` after the deletion; a file put
    /// inside by another node before it that N's deletion did not take
    /// away (N had not seen it); a folder at or inside `d` made by another
    /// node that N's deletion did not take away, or made by two nodes.
    fn dir_removed_for_good(&self, d: &str) -> Option<(usize, usize)> {
        let (n, op, node) = *self.removed_dirs.get(d)?.iter().min()?;
        let sub = format!("{d}/");
        let inside = |p: &str| p == d || p.starts_with(&sub);
        let evs = &self.rec.events;
        let taken_by_n = |path: &str, hash: Option<Hash>, dir: bool| {
            evs.iter().any(|e| {
                e.node == node
                    && e.op <= op
                    && e.path == path
                    && e.hash == hash
                    && if dir {
                        e.ev == Ev::RemovedDir
                    } else {
                        matches!(e.ev, Ev::Removed { .. })
                    }
            })
        };
        let mut makers: HashMap<&str, BTreeSet<usize>> = HashMap::new();
        for (k, e) in evs.iter().enumerate() {
            if !inside(&e.path) {
                continue;
            }
            match e.ev {
                Ev::Put | Ev::PutDir if k > n => return None,
                Ev::Put if e.node != node && !taken_by_n(&e.path, e.hash, false) => return None,
                Ev::PutDir => {
                    makers.entry(&e.path).or_default().insert(e.node);
                }
                _ => {}
            }
        }
        for (p, by) in &makers {
            let other = by.iter().any(|m| *m != node);
            if by.len() > 1 || (other && !taken_by_n(p, None, true)) {
                return None;
            }
        }
        Some((op, node))
    }

    fn mtime(&self, h: &Hash) -> Option<i64> {
        self.rec.contents.get(h).map(|c| c.mtime_ns)
    }

    /// Operations that deleted `path` (or renamed it away), or one of its
    /// folders (for messages).
    fn deletes_of(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        let put_by = |op: usize| {
            self.rec
                .events
                .iter()
                .any(|e| e.op == op && e.ev == Ev::Put && e.path == path)
        };
        for e in &self.rec.events {
            let hit = match e.ev {
                Ev::Removed { .. } => e.path == path && !put_by(e.op),
                Ev::RemovedDir => path.starts_with(&format!("{}/", e.path)),
                _ => false,
            };
            if hit {
                let s = format!("#{} on {}", e.op, NAMES[e.node]);
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        out
    }
}

/// Adds `node` to the finding with the same text, or a new finding.
fn merge(out: &mut Vec<(Finding, Vec<usize>)>, f: Finding, node: usize) {
    match out
        .iter_mut()
        .find(|(g, _)| g.kind == f.kind && g.text == f.text)
    {
        Some((_, ns)) => ns.push(node),
        None => out.push((f, vec![node])),
    }
}

/// Checks every invariant on the final views.
/// Checks every invariant on the final views of the nodes whose folders
/// are `dirs`.
pub fn check(dirs: &[&Path], views: &[View], rec: &Record) -> Vec<Finding> {
    let ix = Index::new(rec);
    let mut findings = Vec::new();
    let trees_differ = views.windows(2).any(|w| w[0].tree != w[1].tree);

    // Identical trees.
    if trees_differ {
        let all: BTreeSet<&String> = views.iter().flat_map(|v| v.tree.keys()).collect();
        let mut lines = Vec::new();
        let mut paths = Vec::new();
        for p in all {
            let es: Vec<Option<&Entry>> = views.iter().map(|v| v.tree.get(p)).collect();
            if es.windows(2).any(|w| w[0] != w[1]) {
                let per: Vec<String> = es
                    .iter()
                    .enumerate()
                    .map(|(i, e)| format!("{}={}", NAMES[i], describe(rec, *e)))
                    .collect();
                lines.push(format!("  {p:?}: {}", per.join("  ")));
                paths.push(p.clone());
            }
        }
        let n = lines.len();
        lines.truncate(40);
        findings.push(Finding {
            kind: "diverged",
            text: format!(
                "{n} path(s) differ between nodes, first{}\n{}",
                lines[0],
                lines.join("\n")
            ),
            paths,
        });
    }

    // Lists against disks.
    let mut every_list_in_sync = true;
    for (i, (dir, v)) in dirs.iter().zip(views).enumerate() {
        match &v.list {
            Err(e) => {
                every_list_in_sync = false;
                findings.push(Finding {
                    kind: "list-vs-disk",
                    paths: vec![],
                    text: format!("{}: `tandem list --json` failed: {e}", NAMES[i]),
                });
            }
            Ok(l) => {
                let not_in_sync: Vec<String> = l
                    .iter()
                    .filter(|r| !all_in_sync(std::slice::from_ref(r)))
                    .map(|r| format!("  {} {}", r["path"], r["states"]))
                    .collect();
                if !not_in_sync.is_empty() {
                    every_list_in_sync = false;
                    findings.push(Finding {
                        kind: "list-vs-disk",
                        paths: vec![],
                        text: format!(
                            "{}: the list shows files not in sync:\n{}",
                            NAMES[i],
                            not_in_sync.join("\n")
                        ),
                    });
                }
                if let Err(d) = diff_list_disk(l, dir) {
                    findings.push(Finding {
                        kind: "list-vs-disk",
                        paths: vec![],
                        text: format!("{}: {d}", NAMES[i]),
                    });
                }
            }
        }
    }
    if trees_differ && every_list_in_sync {
        findings.push(Finding {
            kind: "believe-agree",
            paths: vec![],
            text: "nodes believe they agree (every list shows every file in sync) while their disks differ".into(),
        });
    }

    let mut per_node: Vec<(Finding, Vec<usize>)> = Vec::new();
    let conflict_of: HashMap<Hash, Vec<(usize, Option<&str>)>> = {
        let mut m: HashMap<Hash, Vec<(usize, Option<&str>)>> = HashMap::new();
        for (i, v) in views.iter().enumerate() {
            for c in &v.conflicts {
                m.entry(c.hash).or_default().push((i, c.of.as_deref()));
            }
        }
        m
    };

    for (i, v) in views.iter().enumerate() {
        // Temp files.
        for t in &v.temps {
            merge(
                &mut per_node,
                Finding {
                    kind: "temp-file",
                    paths: vec![t.clone()],
                    text: format!("temp file {t:?} in the user's tree"),
                },
                i,
            );
        }
        // Resurrected files, misplaced and unknown contents.
        for (p, e) in &v.tree {
            let Entry::File { hash, .. } = e else {
                continue;
            };
            if let Some((op, by)) = ix.removed_for_good(p, *hash) {
                merge(
                    &mut per_node,
                    Finding {
                        kind: "resurrected",
                        paths: vec![p.clone()],
                        text: format!(
                            "{p:?} holds {} again, which op #{op} on {} took away from there (no later op put it back)",
                            rec.label(hash),
                            NAMES[by]
                        ),
                    },
                    i,
                );
            }
            if !ix.puts.contains_key(&(p.as_str(), *hash)) {
                let text = match rec.contents.get(hash) {
                    None => format!(
                        "{p:?} holds a content the test never wrote ({})",
                        rec.label(hash)
                    ),
                    Some(c) => format!(
                        "{p:?} holds {} (written at {:?} by op #{}), which no operation put at {p:?}",
                        c.label, c.path, c.op
                    ),
                };
                merge(
                    &mut per_node,
                    Finding {
                        kind: "misplaced",
                        paths: vec![p.clone()],
                        text,
                    },
                    i,
                );
            }
        }
        // Folders: resurrected (nothing legitimately inside) or never made.
        let legit_file = |p: &str, e: &Entry| match e {
            Entry::File { hash, .. } => ix.removed_for_good(p, *hash).is_none(),
            Entry::Dir { .. } => false,
        };
        let mut flagged: BTreeSet<&str> = BTreeSet::new();
        // Deepest first, so a folder sees whether its subfolders are flagged.
        let mut dirs: Vec<&String> = v
            .tree
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Dir { .. }))
            .map(|(p, _)| p)
            .collect();
        dirs.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
        for d in dirs {
            if !ix.put_dirs.contains_key(d.as_str()) {
                merge(
                    &mut per_node,
                    Finding {
                        kind: "misplaced",
                        paths: vec![d.clone()],
                        text: format!("folder {d:?} was never created by any operation"),
                    },
                    i,
                );
            }
            if ix.dir_removed_for_good(d).is_none() {
                continue;
            }
            let prefix = format!("{d}/");
            let legit_inside = v
                .tree
                .range(prefix.clone()..)
                .take_while(|(p, _)| p.starts_with(&prefix))
                .any(|(p, e)| match e {
                    Entry::File { .. } => legit_file(p, e),
                    Entry::Dir { .. } => !flagged.contains(p.as_str()),
                });
            if !legit_inside {
                flagged.insert(d.as_str());
            }
        }
        for d in &flagged {
            let top = !flagged
                .iter()
                .any(|o| d.len() > o.len() && d.starts_with(&format!("{o}/")));
            if top && let Some((op, by)) = ix.dir_removed_for_good(d) {
                merge(
                    &mut per_node,
                    Finding {
                        kind: "resurrected-folder",
                        paths: vec![d.to_string()],
                        text: format!(
                            "folder {d:?} is back, with nothing new inside; op #{op} on {} deleted or moved it",
                            NAMES[by]
                        ),
                    },
                    i,
                );
            }
        }
        // A content put at P and never taken away from P: current at P, or
        // a conflict copy of P.
        for ((p, h), ops) in &ix.puts {
            if ix.removals.contains_key(&(*p, *h)) || !rec.contents.contains_key(h) {
                continue;
            }
            let now = v.tree.get(*p);
            if let Some(Entry::File { hash, .. }) = now
                && hash == h
            {
                continue;
            }
            let kept = conflict_of
                .get(h)
                .is_some_and(|c| c.iter().any(|(_, of)| *of == Some(*p)));
            if kept {
                continue;
            }
            let y = rec.label(h);
            let first = ops.iter().map(|(_, op)| *op).min().unwrap_or(0);
            let f = match now {
                None | Some(Entry::Dir { .. }) => {
                    let dels = ix.deletes_of(p);
                    if dels.is_empty() {
                        Finding {
                            kind: "lost-from-path",
                            paths: vec![p.to_string()],
                            text: format!(
                                "{y} (put at {p:?} by op #{first}, never taken away by an operation) is gone from there, and not kept as a conflict copy"
                            ),
                        }
                    } else {
                        Finding {
                            kind: "edit-lost-to-delete",
                            paths: vec![p.to_string()],
                            text: format!(
                                "{p:?}: the edit {y} (op #{first}) lost to a concurrent delete (ops that deleted it: {}): it is not current and not kept as a conflict copy",
                                dels.join(", ")
                            ),
                        }
                    }
                }
                Some(Entry::File { hash: x, .. }) => {
                    let (my, mx) = (ix.mtime(h), ix.mtime(x));
                    let newer = matches!((my, mx), (Some(a), Some(b)) if a > b);
                    Finding {
                        kind: "replaced-without-conflict",
                        paths: vec![p.to_string()],
                        text: format!(
                            "{p:?}: {y} (op #{first}, mtime {}) is not there (it holds {}, mtime {}) nor kept as a conflict copy, and no operation replaced it{}",
                            my.map_or("?".into(), ts),
                            rec.label(x),
                            mx.map_or("?".into(), ts),
                            if newer {
                                "; the NEWER version lost"
                            } else {
                                ""
                            }
                        ),
                    }
                }
            };
            merge(&mut per_node, f, i);
        }
        // Conflict losers lost to something at least as new.
        for c in &v.conflicts {
            let (Some(of), Some(my)) = (c.of.as_deref(), ix.mtime(&c.hash)) else {
                continue;
            };
            let beaten = ix.at_path.get(of).is_some_and(|hs| {
                hs.iter()
                    .any(|h| *h != c.hash && ix.mtime(h).is_some_and(|m| m >= my))
            });
            if !beaten {
                merge(
                    &mut per_node,
                    Finding {
                        kind: "older-won-conflict",
                        paths: vec![of.to_string()],
                        text: format!(
                            "{} (mtime {}) was kept as a conflict loser of {of:?} ({}), but no content put at {of:?} is as new",
                            rec.label(&c.hash),
                            ts(my),
                            c.name
                        ),
                    },
                    i,
                );
            }
        }
    }
    for (mut f, ns) in per_node {
        f.text = format!("[{}] {}", nodes_str(&ns), f.text);
        findings.push(f);
    }

    // Nothing lost.
    let present: HashSet<Hash> = views
        .iter()
        .flat_map(|v| {
            v.tree
                .values()
                .filter_map(|e| match e {
                    Entry::File { hash, .. } => Some(*hash),
                    Entry::Dir { .. } => None,
                })
                .chain(v.conflicts.iter().map(|c| c.hash))
        })
        .collect();
    let mut lost: Vec<_> = rec
        .contents
        .iter()
        .filter(|(h, _)| !ix.destroyed.contains(*h) && !present.contains(*h))
        .collect();
    lost.sort_by_key(|(_, c)| c.op);
    for (lost_hash, c) in lost {
        let dels = ix.deletes_of(&c.path);
        // Where it is all the same, if only as a replaced version.
        let as_version: Vec<String> = views
            .iter()
            .enumerate()
            .flat_map(|(i, v)| {
                v.versions
                    .iter()
                    .filter(|(_, h)| h == lost_hash)
                    .map(move |(name, _)| format!("{}:versions/{name}", NAMES[i]))
            })
            .collect();
        findings.push(Finding {
            kind: "lost",
            paths: vec![c.path.clone()],
            text: format!(
                "{} ({} B, written at {:?} on {} by op #{}) is nowhere: not current on any node, not in any conflicts folder, and no operation destroyed it{}{}",
                c.label,
                c.size,
                c.path,
                NAMES[c.node],
                c.op,
                if dels.is_empty() {
                    String::new()
                } else {
                    format!(" (ops that deleted that path: {})", dels.join(", "))
                },
                if as_version.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; kept only as a version replaced by a peer's change: {}",
                        as_version.join(", ")
                    )
                }
            ),
        });
    }
    for u in &rec.unknown {
        findings.push(Finding {
            kind: "unknown-content",
            paths: vec![],
            text: u.clone(),
        });
    }
    findings
}

/// Each node's view of `paths` (file, conflicts of it), for the report.
pub fn disk_views(views: &[View], rec: &Record, paths: &BTreeSet<String>) -> String {
    let mut s = String::new();
    for p in paths.iter().take(30) {
        let _ = writeln!(s, "  {p:?}");
        for (i, v) in views.iter().enumerate() {
            let conflicts: Vec<String> = v
                .conflicts
                .iter()
                .filter(|c| c.of.as_deref() == Some(p.as_str()))
                .map(|c| format!("{} {}", rec.label(&c.hash), ts(c.mtime_ns)))
                .collect();
            let _ = write!(s, "    {}: {}", NAMES[i], describe(rec, v.tree.get(p)));
            if !conflicts.is_empty() {
                let _ = write!(s, "; conflict copies: {}", conflicts.join(", "));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::record::Content;

    /// A record and final views built by hand.
    #[derive(Default)]
    struct Case {
        rec: Record,
    }

    impl Case {
        /// A content `label` written at `path` on `node` by `op`.
        fn wrote(&mut self, label: &str, op: usize, node: usize, path: &str, mtime: i64) -> Hash {
            let h = blake3::hash(label.as_bytes());
            self.rec.contents.insert(
                h,
                Content {
                    label: label.into(),
                    op,
                    node,
                    path: path.into(),
                    mtime_ns: mtime,
                    size: 1,
                },
            );
            self.rec.event(op, node, path, Some(h), Ev::Put);
            h
        }

        fn removed(&mut self, op: usize, node: usize, path: &str, h: Hash, destroyed: bool) {
            self.rec
                .event(op, node, path, Some(h), Ev::Removed { destroyed });
        }

        fn kinds(&self, views: &[View]) -> Vec<&'static str> {
            let dirs: Vec<&Path> = views.iter().map(|_| Path::new("/nonexistent")).collect();
            let mut k: Vec<_> = check(&dirs, views, &self.rec)
                .iter()
                .map(|f| f.kind)
                .collect();
            k.sort();
            k.dedup();
            k
        }
    }

    fn file(h: Hash, mtime: i64) -> Entry {
        Entry::File {
            size: 1,
            mtime_ns: mtime,
            hash: h,
            mode: 0o644,
        }
    }

    fn dir() -> Entry {
        Entry::Dir { mode: 0o755 }
    }

    fn view(entries: &[(&str, Entry)], conflicts: &[(&str, Hash, i64)]) -> View {
        View {
            tree: entries
                .iter()
                .map(|(p, e)| (p.to_string(), e.clone()))
                .collect(),
            conflicts: conflicts
                .iter()
                .map(|(name, h, m)| Conflict {
                    name: name.to_string(),
                    of: conflict_original(name),
                    hash: *h,
                    mtime_ns: *m,
                })
                .collect(),
            versions: vec![],
            temps: vec![],
            list: Ok(vec![]),
        }
    }

    #[test]
    fn an_edit_gone_after_a_concurrent_delete_is_reported() {
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 0, "p.txt", 100);
        // B deletes w0 while A replaces it with w2: w2 must survive.
        c.removed(1, 1, "p.txt", w0, true);
        c.removed(2, 0, "p.txt", w0, true);
        c.wrote("w2", 2, 0, "p.txt", 200);
        let v = view(&[], &[]);
        assert_eq!(c.kinds(&[v.clone(), v]), ["edit-lost-to-delete", "lost"]);
    }

    /// Content found only in a versions folder is still lost (a version
    /// is what a peer's change replaced, not a kept conflict), and the
    /// finding says where it is.
    #[test]
    fn lost_content_kept_as_a_version_is_named() {
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 1, "p.txt", 100);
        let mut b = view(&[], &[]);
        b.versions
            .push(("p.version-19700101-000000-A.txt".into(), w0));
        let dirs = [Path::new("/nonexistent"), Path::new("/nonexistent")];
        let found = check(&dirs, &[view(&[], &[]), b], &c.rec);
        let lost: Vec<_> = found.iter().filter(|f| f.kind == "lost").collect();
        assert_eq!(lost.len(), 1, "{found:?}");
        assert!(
            lost[0].text.contains(
                "kept only as a version replaced by a peer's change: B:versions/p.version-"
            ),
            "{}",
            lost[0].text
        );
    }

    #[test]
    fn a_conflict_winner_edited_with_an_older_mtime_is_fine() {
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 0, "p.txt", 10);
        // A: w1 (mtime 100) over w0; B, concurrently: w2 (mtime 200) over w0.
        c.removed(1, 0, "p.txt", w0, true);
        let w1 = c.wrote("w1", 1, 0, "p.txt", 100);
        c.removed(2, 1, "p.txt", w0, true);
        let w2 = c.wrote("w2", 2, 1, "p.txt", 200);
        // w2 won, w1 was kept on A; then B writes w3 (mtime 50) over w2.
        c.removed(3, 1, "p.txt", w2, true);
        let w3 = c.wrote("w3", 3, 1, "p.txt", 50);
        let kept = [("p.conflict-19700101-000000-A.txt", w1, 100)];
        let a = view(&[("p.txt", file(w3, 50))], &kept);
        let b = view(&[("p.txt", file(w3, 50))], &[]);
        assert_eq!(c.kinds(&[a, b]), Vec::<&str>::new());
        // Had w2 lost to w1 instead (older wins), that is reported.
        let kept = [("p.conflict-19700101-000000-B.txt", w2, 200)];
        let mut c2 = Case::default();
        let w1 = c2.wrote("w1", 1, 0, "p.txt", 100);
        let w2 = c2.wrote("w2", 2, 1, "p.txt", 200);
        let a = view(&[("p.txt", file(w1, 100))], &[]);
        let b = view(&[("p.txt", file(w1, 100))], &kept);
        let _ = w2;
        assert_eq!(c2.kinds(&[a, b]), ["older-won-conflict"]);
    }

    #[test]
    fn resurrections_of_files_and_folders() {
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 0, "d/p.txt", 100);
        c.rec.event(0, 0, "d", None, Ev::PutDir);
        c.rec.event(1, 1, "d", None, Ev::RemovedDir);
        c.removed(1, 1, "d/p.txt", w0, true);
        let back = view(&[("d", dir()), ("d/p.txt", file(w0, 100))], &[]);
        assert_eq!(
            c.kinds(&[back.clone(), back]),
            ["resurrected", "resurrected-folder"]
        );
        let empty = view(&[("d", dir())], &[]);
        assert_eq!(c.kinds(&[empty.clone(), empty]), ["resurrected-folder"]);
        // Something new inside keeps the folder (an edit beats a delete).
        let w2 = c.wrote("w2", 2, 0, "d/new.txt", 300);
        let kept = view(&[("d", dir()), ("d/new.txt", file(w2, 300))], &[]);
        assert_eq!(c.kinds(&[kept.clone(), kept]), Vec::<&str>::new());
        // A write inside on another node after the delete kept the folder,
        // even if that file is deleted later.
        let mut c = Case::default();
        c.rec.event(0, 0, "d", None, Ev::PutDir);
        c.rec.event(1, 0, "d", None, Ev::RemovedDir);
        let w2 = c.wrote("w2", 2, 1, "d/new.txt", 300);
        c.removed(3, 1, "d/new.txt", w2, true);
        let empty = view(&[("d", dir())], &[]);
        assert_eq!(c.kinds(&[empty.clone(), empty.clone()]), Vec::<&str>::new());
        // Two nodes made the folder: the deleting one may not have seen the
        // other's.
        let mut c = Case::default();
        c.rec.event(0, 1, "d", None, Ev::PutDir);
        c.rec.event(1, 0, "d", None, Ev::PutDir);
        c.rec.event(2, 1, "d", None, Ev::RemovedDir);
        assert_eq!(c.kinds(&[empty.clone(), empty.clone()]), Vec::<&str>::new());
        // ... but one that only one node made and the other deleted is not back.
        let mut c = Case::default();
        c.rec.event(0, 1, "d", None, Ev::PutDir);
        c.rec.event(2, 0, "d", None, Ev::RemovedDir);
        assert_eq!(c.kinds(&[empty.clone(), empty]), ["resurrected-folder"]);
        // A rename back after the delete puts (path, content) there again.
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 0, "p.txt", 100);
        c.removed(1, 0, "p.txt", w0, false);
        c.rec.event(1, 0, "q.txt", Some(w0), Ev::Put);
        c.removed(2, 1, "p.txt", w0, true);
        c.removed(3, 0, "q.txt", w0, false);
        c.rec.event(3, 0, "p.txt", Some(w0), Ev::Put);
        let v = view(&[("p.txt", file(w0, 100))], &[]);
        assert_eq!(c.kinds(&[v.clone(), v]), Vec::<&str>::new());
    }

    #[test]
    fn divergence_and_misplaced_content() {
        let mut c = Case::default();
        let w0 = c.wrote("w0", 0, 0, "p.txt", 100);
        let a = view(&[("p.txt", file(w0, 100))], &[]);
        let b = view(&[("q.txt", file(w0, 100))], &[]);
        assert_eq!(
            c.kinds(&[a, b]),
            ["believe-agree", "diverged", "lost-from-path", "misplaced"]
        );
    }

    #[test]
    fn conflict_names_map_back_to_their_path() {
        assert_eq!(
            conflict_original("docs/notes 2.conflict-20261202-154420-B.txt").as_deref(),
            Some("docs/notes 2.txt")
        );
        assert_eq!(
            conflict_original("a b/Ω.conflict-20261202-154420-A-3.md").as_deref(),
            Some("a b/Ω.md")
        );
        assert_eq!(
            conflict_original("x.conflict-20261202-154420-C").as_deref(),
            Some("x")
        );
        assert_eq!(conflict_original("x.txt"), None);
    }
}
