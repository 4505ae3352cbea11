//! The deterministic part of a run: topologies, the PRNG, and the plan of
//! operations derived from the seed alone.
//!
//! The plan is made up front from a model of what the cluster should hold
//! if every change had synced (which files and folders exist), never from
//! what the disks hold at run time; so a seed always replays the same
//! operations. What an operation finds when it runs (the file may not have
//! arrived yet on that node, or may be gone) is recorded by the executor.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

/// Which nodes exist and which pairs are linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topology {
    /// A–B.
    Pair,
    /// A–B, B–C, A–C.
    Mesh3,
    /// A–B–C: A and C are not linked, B passes changes on.
    Chain3,
}

impl Topology {
    pub const ALL: [Topology; 3] = [Topology::Pair, Topology::Mesh3, Topology::Chain3];

    pub fn parse(s: &str) -> Option<Topology> {
        match s {
            "pair" => Some(Topology::Pair),
            "mesh3" => Some(Topology::Mesh3),
            "chain3" => Some(Topology::Chain3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Topology::Pair => "pair",
            Topology::Mesh3 => "mesh3",
            Topology::Chain3 => "chain3",
        }
    }

    pub fn node_count(self) -> usize {
        match self {
            Topology::Pair => 2,
            Topology::Mesh3 | Topology::Chain3 => 3,
        }
    }

    /// Undirected links, `(i, j)` with `i < j`.
    pub fn links(self) -> Vec<(usize, usize)> {
        match self {
            Topology::Pair => vec![(0, 1)],
            Topology::Mesh3 => vec![(0, 1), (1, 2), (0, 2)],
            Topology::Chain3 => vec![(0, 1), (1, 2)],
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The node names, by index.
pub const NAMES: [&str; 3] = ["A", "B", "C"];

/// splitmix64: tiny, fast, and good enough to drive a test.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x7A4D_E3C1_5EED_0001)
    }

    /// An independent stream for another purpose (same seed).
    pub fn stream(seed: u64, purpose: u64) -> Rng {
        let mut r = Rng::new(seed.wrapping_add(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Folder names. No dots: file names always have an extension, so a path
/// is a file in every operation or a folder in every operation, never both.
const DIR_NAMES: [&str; 7] = ["docs", "ünï dir", "a b", "Ärger", "src", "日本語", "deep"];
const FILE_BASES: [&str; 7] = ["notes", "ünïcode", "a b c", "report 2024", "data", "x", "Ω"];
const EXTS: [&str; 4] = [".txt", ".md", ".bin", ".csv"];

/// One planned operation. Node indexes refer to [`NAMES`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Create or replace a file (atomically swapped in); with `old_mtime`,
    /// its mtime is set that many seconds in the past (plus some ns).
    Write {
        node: usize,
        path: String,
        size: usize,
        old_mtime: Option<u64>,
    },
    /// Append in place (`size` bytes).
    Append {
        node: usize,
        path: String,
        size: usize,
    },
    /// Truncate in place to about `keep_permille`/1000 of the size.
    Truncate {
        node: usize,
        path: String,
        keep_permille: u64,
    },
    Delete {
        node: usize,
        path: String,
    },
    DeleteDir {
        node: usize,
        path: String,
    },
    /// Rename or move a file (whatever is at `to` is deleted first).
    Rename {
        node: usize,
        from: String,
        to: String,
    },
    /// Rename or move a folder (whatever is at `to` is deleted first).
    RenameDir {
        node: usize,
        from: String,
        to: String,
    },
    Mkdir {
        node: usize,
        path: String,
    },
    /// Several writes in a row with no pause (same file several times too).
    Burst {
        node: usize,
        writes: Vec<(String, usize)>,
    },
    /// SIGTERM, then start again.
    Restart {
        node: usize,
    },
    /// Write a big file on `sender`; `kill -9` `receiver` once its download
    /// has started; start it again.
    KillMidTransfer {
        sender: usize,
        receiver: usize,
        path: String,
        size: usize,
    },
    /// SIGTERM; the node stays down (its folder may still be edited).
    Stop {
        node: usize,
    },
    /// Start a stopped node again.
    Start {
        node: usize,
    },
    /// Cut these links (both directions).
    Cut {
        links: Vec<(usize, usize)>,
    },
    Heal {
        links: Vec<(usize, usize)>,
    },
}

fn kib(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
    } else if n >= 1024 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn links_str(links: &[(usize, usize)]) -> String {
    links
        .iter()
        .map(|(a, b)| format!("{}–{}", NAMES[*a], NAMES[*b]))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write {
                node,
                path,
                size,
                old_mtime,
            } => {
                write!(f, "{} write {path:?} {}", NAMES[*node], kib(*size))?;
                if let Some(s) = old_mtime {
                    write!(f, " mtime {s} s ago")?;
                }
                Ok(())
            }
            Op::Append { node, path, size } => {
                write!(f, "{} append {} to {path:?}", NAMES[*node], kib(*size))
            }
            Op::Truncate {
                node,
                path,
                keep_permille,
            } => write!(
                f,
                "{} truncate {path:?} to {}‰",
                NAMES[*node], keep_permille
            ),
            Op::Delete { node, path } => write!(f, "{} delete {path:?}", NAMES[*node]),
            Op::DeleteDir { node, path } => write!(f, "{} delete folder {path:?}", NAMES[*node]),
            Op::Rename { node, from, to } => {
                write!(f, "{} rename {from:?} -> {to:?}", NAMES[*node])
            }
            Op::RenameDir { node, from, to } => {
                write!(f, "{} rename folder {from:?} -> {to:?}", NAMES[*node])
            }
            Op::Mkdir { node, path } => write!(f, "{} mkdir {path:?}", NAMES[*node]),
            Op::Burst { node, writes } => {
                write!(f, "{} burst of {} writes:", NAMES[*node], writes.len())?;
                for (p, s) in writes {
                    write!(f, " {p:?} {};", kib(*s))?;
                }
                Ok(())
            }
            Op::Restart { node } => write!(f, "{} restart (SIGTERM + start)", NAMES[*node]),
            Op::KillMidTransfer {
                sender,
                receiver,
                path,
                size,
            } => write!(
                f,
                "{} write {path:?} {}; kill -9 {} mid-transfer; restart it",
                NAMES[*sender],
                kib(*size),
                NAMES[*receiver]
            ),
            Op::Stop { node } => write!(f, "{} stop (SIGTERM), stays down", NAMES[*node]),
            Op::Start { node } => write!(f, "{} start", NAMES[*node]),
            Op::Cut { links } => write!(f, "cut {}", links_str(links)),
            Op::Heal { links } => write!(f, "heal {}", links_str(links)),
        }
    }
}

/// What the cluster should hold if everything had synced.
#[derive(Default)]
struct Model {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(d, _)| d)
}

fn is_inside(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Model {
    fn add_parents(&mut self, p: &str) {
        let mut cur = parent(p);
        while let Some(d) = cur {
            self.dirs.insert(d.to_string());
            cur = parent(d);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write { path, .. } | Op::Append { path, .. } | Op::Truncate { path, .. } => {
                self.add_parents(path);
                self.files.insert(path.clone());
            }
            Op::KillMidTransfer { path, .. } => {
                self.add_parents(path);
                self.files.insert(path.clone());
            }
            Op::Burst { writes, .. } => {
                for (p, _) in writes {
                    self.add_parents(p);
                    self.files.insert(p.clone());
                }
            }
            Op::Delete { path, .. } => {
                self.files.remove(path);
            }
            Op::DeleteDir { path, .. } => {
                self.files.retain(|f| !is_inside(f, path));
                self.dirs.retain(|d| d != path && !is_inside(d, path));
            }
            Op::Rename { from, to, .. } => {
                self.files.remove(from);
                self.add_parents(to);
                self.files.insert(to.clone());
            }
            Op::RenameDir { from, to, .. } => {
                let moved = |p: &String| -> Option<String> {
                    (p == from || is_inside(p, from)).then(|| format!("{to}{}", &p[from.len()..]))
                };
                let files: Vec<String> = self.files.iter().filter_map(moved).collect();
                let dirs: Vec<String> = self.dirs.iter().filter_map(moved).collect();
                // Whatever was at `to` is deleted first.
                self.files
                    .retain(|f| !is_inside(f, to) && !is_inside(f, from));
                self.dirs
                    .retain(|d| d != to && !is_inside(d, to) && d != from && !is_inside(d, from));
                self.add_parents(to);
                self.files.extend(files);
                self.dirs.extend(dirs);
            }
            Op::Mkdir { path, .. } => {
                self.add_parents(path);
                self.dirs.insert(path.clone());
            }
            _ => {}
        }
    }
}

/// Which nodes are down and which links are cut, and until when.
#[derive(Default)]
struct Faults {
    down: Option<(usize, usize)>,
    cut: Option<(Vec<(usize, usize)>, usize)>,
    kills: usize,
}

struct Planner {
    rng: Rng,
    topo: Topology,
    model: Model,
    faults: Faults,
    ops: Vec<Op>,
    /// Operations to emit next (the edits that go with a fault).
    queued: VecDeque<Op>,
    big_files: usize,
}

impl Planner {
    fn n(&self) -> usize {
        self.topo.node_count()
    }

    fn any_node(&mut self) -> usize {
        let n = self.n();
        self.rng.below(n)
    }

    fn up(&self, node: usize) -> bool {
        self.faults.down.is_none_or(|(d, _)| d != node)
    }

    fn linked_up(&self, a: usize, b: usize) -> bool {
        let l = (a.min(b), a.max(b));
        self.topo.links().contains(&l)
            && self.up(a)
            && self.up(b)
            && self
                .faults
                .cut
                .as_ref()
                .is_none_or(|(c, _)| !c.contains(&l))
    }

    fn size(&mut self) -> usize {
        match self.rng.below(100) {
            0..=59 => self.rng.range(40, 4096) as usize,
            60..=84 => self.rng.range(4097, 64 * 1024) as usize,
            // Beyond the small-file batch size, several 128 KiB blocks.
            _ => self.rng.range(64 * 1024 + 1, 700 * 1024) as usize,
        }
    }

    fn old_mtime(&mut self) -> Option<u64> {
        // An hour to 400 days in the past.
        self.rng
            .chance(20)
            .then(|| self.rng.range(3600, 400 * 86_400))
    }

    fn new_dir_path(&mut self) -> String {
        let name = *self.rng.pick(&DIR_NAMES);
        let dirs: Vec<String> = self
            .model
            .dirs
            .iter()
            .filter(|d| d.matches('/').count() < 2)
            .cloned()
            .collect();
        if !dirs.is_empty() && self.rng.chance(40) {
            format!("{}/{name}", self.rng.pick(&dirs))
        } else {
            name.to_string()
        }
    }

    fn new_file_path(&mut self) -> String {
        let base = *self.rng.pick(&FILE_BASES);
        let ext = *self.rng.pick(&EXTS);
        let name = match self.rng.below(4) {
            0 => format!("{base}{ext}"),
            n => format!("{base} {n}{ext}"),
        };
        let dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
        match self.rng.below(10) {
            0..=3 => name,
            4..=7 if !dirs.is_empty() => format!("{}/{name}", self.rng.pick(&dirs)),
            _ => format!("{}/{name}", self.new_dir_path()),
        }
    }

    fn existing_file(&mut self) -> Option<String> {
        let files: Vec<String> = self.model.files.iter().cloned().collect();
        (!files.is_empty()).then(|| self.rng.pick(&files).clone())
    }

    fn existing_dir(&mut self) -> Option<String> {
        let dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
        (!dirs.is_empty()).then(|| self.rng.pick(&dirs).clone())
    }

    /// An existing file most of the time, else a new one.
    fn some_file(&mut self) -> String {
        if self.rng.chance(70)
            && let Some(f) = self.existing_file()
        {
            return f;
        }
        self.new_file_path()
    }

    fn write(&mut self, node: usize, path: String) -> Op {
        let size = self.size();
        let old_mtime = self.old_mtime();
        Op::Write {
            node,
            path,
            size,
            old_mtime,
        }
    }

    /// An edit of `path` on `node`: a write or an append.
    fn edit(&mut self, node: usize, path: String) -> Op {
        if self.rng.chance(50) {
            self.write(node, path)
        } else {
            Op::Append {
                node,
                path,
                size: self.rng.range(1, 3000) as usize,
            }
        }
    }

    fn emit(&mut self, op: Op) {
        self.model.apply(&op);
        self.ops.push(op);
    }

    /// One random edit of the tree (no fault).
    fn random_edit(&mut self) -> Op {
        let node = self.any_node();
        loop {
            match self.rng.below(100) {
                0..=29 => {
                    let p = self.some_file();
                    return self.write(node, p);
                }
                30..=39 => {
                    if let Some(p) = self.existing_file() {
                        return Op::Append {
                            node,
                            path: p,
                            size: self.rng.range(1, 3000) as usize,
                        };
                    }
                }
                40..=44 => {
                    if let Some(p) = self.existing_file() {
                        return Op::Truncate {
                            node,
                            path: p,
                            keep_permille: self.rng.range(1, 900),
                        };
                    }
                }
                45..=53 => {
                    if let Some(p) = self.existing_file() {
                        return Op::Delete { node, path: p };
                    }
                }
                54..=56 => {
                    if let Some(p) = self.existing_dir() {
                        return Op::DeleteDir { node, path: p };
                    }
                }
                57..=65 => {
                    if let Some(from) = self.existing_file() {
                        let to = if self.rng.chance(50) {
                            // Same folder, another name.
                            let name = self.new_file_path();
                            let name = name.rsplit('/').next().unwrap_or(&name).to_string();
                            match parent(&from) {
                                Some(d) => format!("{d}/{name}"),
                                None => name,
                            }
                        } else {
                            self.new_file_path()
                        };
                        if to != from {
                            return Op::Rename { node, from, to };
                        }
                    }
                }
                66..=69 => {
                    if let Some(from) = self.existing_dir() {
                        let to = self.new_dir_path();
                        if to != from && !is_inside(&to, &from) && !is_inside(&from, &to) {
                            return Op::RenameDir { node, from, to };
                        }
                    }
                }
                70..=74 => {
                    let path = self.new_dir_path();
                    return Op::Mkdir { node, path };
                }
                _ => {
                    let k = self.rng.range(3, 8) as usize;
                    let mut writes = Vec::with_capacity(k);
                    for _ in 0..k {
                        let p = match writes.last() {
                            Some((last, _)) if self.rng.chance(40) => String::clone(last),
                            _ => self.some_file(),
                        };
                        let s = self.rng.range(20, 8192) as usize;
                        writes.push((p, s));
                    }
                    return Op::Burst { node, writes };
                }
            }
        }
    }

    /// A fault, if one fits now.
    fn random_fault(&mut self, i: usize, total: usize) -> Option<Op> {
        let left = total.saturating_sub(i);
        match self.rng.below(100) {
            // Restart a running node.
            0..=29 => {
                let node = self.any_node();
                self.up(node).then_some(Op::Restart { node })
            }
            // kill -9 a receiver mid-transfer (at most two per run).
            30..=49 if self.faults.kills < 2 => {
                let (s, r) = (self.any_node(), self.any_node());
                if s == r || !self.linked_up(s, r) {
                    return None;
                }
                self.faults.kills += 1;
                self.big_files += 1;
                let dirs: Vec<String> = self.model.dirs.iter().cloned().collect();
                let name = format!("big {}.bin", self.big_files);
                let path = if !dirs.is_empty() && self.rng.chance(50) {
                    format!("{}/{name}", self.rng.pick(&dirs))
                } else {
                    name
                };
                Some(Op::KillMidTransfer {
                    sender: s,
                    receiver: r,
                    path,
                    size: self.rng.range(6 << 20, 12 << 20) as usize,
                })
            }
            // Take a node down for a while; edit its folder offline and
            // the same file elsewhere.
            50..=69 if self.faults.down.is_none() && left > 4 => {
                let node = self.any_node();
                let until = i + self.rng.range(3, 10) as usize;
                let offline = self.some_file();
                let e = self.edit(node, offline.clone());
                self.queued.push_back(e);
                let other = (node + 1 + self.rng.below(self.n() - 1)) % self.n();
                let p = if self.rng.chance(50) {
                    offline
                } else {
                    self.some_file()
                };
                let e = self.edit(other, p);
                self.queued.push_back(e);
                self.faults.down = Some((node, until.max(i + self.queued.len())));
                Some(Op::Stop { node })
            }
            // Cut links for 1–8 operations, with edits on both sides:
            // delete on one side vs edit on the other, and sometimes edit
            // vs edit and folder delete vs a write into it.
            _ if self.faults.cut.is_none() && left > 3 => {
                let links = self.topo.links();
                let (cut, a, b): (Vec<(usize, usize)>, usize, usize) =
                    if self.topo == Topology::Mesh3 && self.rng.chance(60) {
                        // Isolate one node.
                        let x = self.any_node();
                        let cut = links
                            .iter()
                            .copied()
                            .filter(|(p, q)| *p == x || *q == x)
                            .collect();
                        (cut, x, (x + 1) % 3)
                    } else {
                        let l = *self.rng.pick(&links);
                        (vec![l], l.0, l.1)
                    };
                let until = i + self.rng.range(1, 8) as usize;
                let (del, ed) = if self.rng.chance(50) { (a, b) } else { (b, a) };
                if let Some(p) = self.existing_file() {
                    self.queued.push_back(Op::Delete {
                        node: del,
                        path: p.clone(),
                    });
                    let e = self.edit(ed, p);
                    self.queued.push_back(e);
                }
                if self.rng.chance(50)
                    && let Some(p) = self.existing_file()
                {
                    let e = self.write(a, p.clone());
                    self.queued.push_back(e);
                    let e = self.edit(b, p);
                    self.queued.push_back(e);
                }
                if self.rng.chance(30)
                    && let Some(d) = self.existing_dir()
                {
                    self.queued.push_back(Op::DeleteDir {
                        node: del,
                        path: d.clone(),
                    });
                    let name = self.new_file_path();
                    let name = name.rsplit('/').next().unwrap_or(&name).to_string();
                    let e = self.write(ed, format!("{d}/{name}"));
                    self.queued.push_back(e);
                }
                self.faults.cut = Some((cut.clone(), until.max(i + self.queued.len())));
                Some(Op::Cut { links: cut })
            }
            _ => None,
        }
    }

    fn end_windows(&mut self, i: usize, force: bool) {
        if let Some((node, until)) = self.faults.down
            && (force || i > until)
        {
            self.faults.down = None;
            self.emit(Op::Start { node });
        }
        if let Some((links, until)) = self.faults.cut.clone()
            && (force || i > until)
        {
            self.faults.cut = None;
            self.emit(Op::Heal { links });
        }
    }
}

/// The operations of a run: about `ops` of them, derived from `seed` only.
pub fn plan(seed: u64, topo: Topology, ops: usize) -> Vec<Op> {
    let mut p = Planner {
        rng: Rng::stream(seed, 1),
        topo,
        model: Model::default(),
        faults: Faults::default(),
        ops: Vec::with_capacity(ops + 16),
        queued: VecDeque::new(),
        big_files: 0,
    };
    // A few files first, so that early operations have something to edit.
    for _ in 0..4.min(ops) {
        let node = p.any_node();
        let path = p.new_file_path();
        let op = p.write(node, path);
        p.emit(op);
    }
    while p.ops.len() < ops {
        let i = p.ops.len();
        p.end_windows(i, false);
        if let Some(op) = p.queued.pop_front() {
            p.emit(op);
            continue;
        }
        let op = if p.rng.chance(12) {
            match p.random_fault(i, ops) {
                Some(op) => op,
                None => p.random_edit(),
            }
        } else {
            p.random_edit()
        };
        p.emit(op);
    }
    while let Some(op) = p.queued.pop_front() {
        p.emit(op);
    }
    let end = p.ops.len();
    p.end_windows(end, true);
    p.ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_balanced() {
        for topo in Topology::ALL {
            let a: Vec<String> = plan(7, topo, 150).iter().map(Op::to_string).collect();
            let b: Vec<String> = plan(7, topo, 150).iter().map(Op::to_string).collect();
            assert_eq!(a, b);
            assert!(a.len() >= 150, "{topo}: {} ops", a.len());
            let c: Vec<String> = plan(8, topo, 150).iter().map(Op::to_string).collect();
            assert_ne!(a, c);
        }
        // Every fault kind shows up across a few seeds.
        let all: Vec<String> = (1..=5)
            .flat_map(|s| plan(s, Topology::Pair, 150))
            .map(|o| o.to_string())
            .collect();
        for needle in [
            "restart",
            "kill -9",
            "stays down",
            "cut ",
            "heal ",
            "delete folder",
        ] {
            assert!(all.iter().any(|o| o.contains(needle)), "no {needle:?}");
        }
    }
}
