//! What the operations did to the trees, as observed by the operations
//! themselves: every content the test wrote (each one unique, labelled with
//! the operation that wrote it), and every (path, content) the test put in
//! place or took away on which node. The oracle judges the final trees
//! against this record only, never against a model of what "should" have
//! synced.

use std::collections::HashMap;
use std::fmt::Write as _;

pub type Hash = blake3::Hash;

/// A content the test wrote.
#[derive(Debug, Clone)]
pub struct Content {
    /// `w12` (operation 12) or `w12.3` (third write of burst 12).
    pub label: String,
    pub op: usize,
    pub node: usize,
    /// Where it was written.
    pub path: String,
    pub mtime_ns: i64,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ev {
    /// The test put this content at this path (write, append, truncate, or
    /// a rename that moved it there).
    Put,
    /// The test took this content away from this path: replaced it, changed
    /// it in place or deleted it (`destroyed`: the content itself is gone
    /// on that node), or renamed it away (not destroyed).
    Removed { destroyed: bool },
    /// The test created this folder (mkdir, a missing parent, a rename).
    PutDir,
    /// The test deleted or renamed away this folder.
    RemovedDir,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub op: usize,
    pub node: usize,
    pub path: String,
    /// The content (files only).
    pub hash: Option<Hash>,
    pub ev: Ev,
}

#[derive(Default)]
pub struct Record {
    pub contents: HashMap<Hash, Content>,
    pub events: Vec<Event>,
    /// Contents an operation found in a tree that the test never wrote.
    pub unknown: Vec<String>,
}

impl Record {
    /// `w12` for a content the test wrote, else a short hash.
    pub fn label(&self, h: &Hash) -> String {
        match self.contents.get(h) {
            Some(c) => c.label.clone(),
            None => format!("?{}", &h.to_hex()[..10]),
        }
    }

    pub fn event(&mut self, op: usize, node: usize, path: &str, hash: Option<Hash>, ev: Ev) {
        self.events.push(Event {
            op,
            node,
            path: path.to_string(),
            hash,
            ev,
        });
    }

    /// Notes a content found at `path` (replaced, deleted, moved): flags it
    /// if the test never wrote it.
    pub fn seen(&mut self, op: usize, node: usize, path: &str, data: &[u8]) -> Hash {
        let h = blake3::hash(data);
        if !self.contents.contains_key(&h) {
            let head: String = String::from_utf8_lossy(&data[..data.len().min(80)])
                .chars()
                .map(|c| if c.is_control() { '·' } else { c })
                .collect();
            let mut s = String::new();
            let _ = write!(
                s,
                "op #{op} found at {path:?} on {} a content the test never wrote ({} B, starts {head:?})",
                super::plan::NAMES[node],
                data.len()
            );
            self.unknown.push(s);
        }
        h
    }
}
