//! What the user asks of the node (lock, wait for a lock, unlock, fetch,
//! a path's kept versions), whether by a key on the selected row or by the
//! command line (`:lock 3`), which this module reads.

use std::path::PathBuf;

use tandem_common::RelPath;

use super::Wanted;
use super::{AppState, Effect, FetchProgress, Level, Mode};
use crate::keys;

impl AppState {
    /// The path at row number `n` as shown in the `#` column.
    fn path_at(&self, n: usize) -> Result<RelPath, String> {
        n.checked_sub(1)
            .and_then(|i| self.files.row(i))
            .map(|f| f.path.clone())
            .ok_or_else(|| {
                format!(
                    "there is no file #{n}: the table shows {} row(s)",
                    self.files.view_len()
                )
            })
    }

    /// Refuses a request while the node is away (it reconnects by itself).
    pub(super) fn not_connected(&mut self) -> Vec<Effect> {
        let addr = self.node_addr.clone();
        self.set_status(
            Level::Error,
            format!("not connected to {addr}; reconnecting by itself"),
        );
        Vec::new()
    }

    /// Sends `request` when connected, saying what is under way until the
    /// answer comes.
    fn ask(&mut self, doing: String, request: Effect) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        self.set_status(Level::Info, doing);
        vec![request]
    }

    /// Locks `path`.
    pub(super) fn lock(&mut self, path: RelPath) -> Vec<Effect> {
        self.ask(format!("locking {path}…"), Effect::Lock(path))
    }

    /// Locks `path`, or queues for it.
    pub(super) fn lock_wait(&mut self, path: RelPath) -> Vec<Effect> {
        let doing = format!("locking {path} (or waiting for it)…");
        self.ask(doing, Effect::LockWait(path))
    }

    /// Unlocks `path`; `force` for someone else's lock. Both forcing and
    /// releasing changes held meanwhile change other people's work: they
    /// are asked about first.
    pub(super) fn unlock(&mut self, path: RelPath, force: bool) -> Vec<Effect> {
        let row = self.files.get(path.as_str());
        let owner = row.as_ref().and_then(|f| f.locked_by.clone());
        let held = row.as_ref().map_or(0, |f| f.held);
        let mut question = Vec::new();
        if force {
            question.push(match &owner {
                Some(o) => format!(
                    "Unlock {path} by force? {o} holds the lock and may be editing it; they are not asked."
                ),
                None => format!("Unlock {path} by force?"),
            });
        }
        if held > 0 {
            question.push(format!(
                "{held} change(s) made on other nodes while it was locked are applied at once; a held delete removes the file on every node."
            ));
        }
        let doing = format!("unlocking {path}…");
        let effect = Effect::Unlock { path, force };
        if question.is_empty() {
            return self.ask(doing, effect);
        }
        if !self.is_up() {
            return self.not_connected();
        }
        self.mode = Mode::Confirm(super::Confirm {
            question: question.join(" "),
            doing,
            yes: vec![effect],
        });
        Vec::new()
    }

    /// Talks to the node at `addr` from now on: everything shown is asked
    /// of it again (its feed starts afresh).
    /// `expect` is the name of the node meant, when known (chosen on the
    /// Nodes view): the node that answers is checked against it.
    pub(super) fn switch_node(&mut self, addr: &str, expect: Option<String>) -> Vec<Effect> {
        if addr == self.node_addr && self.is_up() {
            self.set_status(Level::Info, format!("already connected to {addr}"));
            return Vec::new();
        }
        self.switching_to = expect;
        self.note(format!("switching to {addr}"));
        self.set_status(Level::Info, format!("connecting to {addr}…"));
        self.node_addr = addr.to_string();
        self.conn = super::Conn::Down {
            reason: format!("connecting to {addr}…"),
            since_ns: self.now_ns,
            was_up: false,
        };
        self.connecting = true;
        // Another node's feed has its own runs and sequences.
        self.cursor = None;
        self.cache = None;
        self.cache_of = None;
        self.conflicts = None;
        // What failed on the old node says nothing about the new one.
        self.list_error = None;
        self.cache_error = None;
        self.nodes_error = None;
        self.conflicts_error = None;
        self.abandon_requests();
        vec![Effect::SwitchNode(addr.to_string())]
    }

    /// Shows the cache of `node` (this node's when `None`) in the Cache view.
    pub(super) fn show_cache_of(&mut self, node: Option<String>) -> Vec<Effect> {
        let own = self.last_node_name.clone();
        self.cache_of = node.filter(|n| Some(n) != own.as_ref());
        self.cache = None;
        self.cache_error = None;
        self.cache_sel = 0;
        let mut fx = Vec::new();
        self.view = super::View::Cache;
        self.cache_refresh.answered();
        self.refresh_view(true, &mut fx);
        fx
    }

    /// The node after the one whose cache is shown, among those up.
    pub(super) fn next_cache_node(&mut self) -> Vec<Effect> {
        let up: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| n.name.clone())
            .collect();
        if up.len() < 2 {
            self.set_status(Level::Info, "no other node is up to show the cache of");
            return Vec::new();
        }
        let shown = self
            .cache_of
            .clone()
            .or_else(|| self.last_node_name.clone());
        let at = up.iter().position(|n| Some(n) == shown.as_ref());
        let next = up[at.map_or(0, |i| (i + 1) % up.len())].clone();
        self.show_cache_of(Some(next))
    }

    /// Fetches `path` into `dest`, one fetch at a time (the progress gauge
    /// shows one).
    pub(super) fn fetch(&mut self, what: Wanted, dest: PathBuf, force: bool) -> Vec<Effect> {
        if !self.is_up() {
            return self.not_connected();
        }
        if let Some(f) = &self.fetch {
            let p = f.what.clone();
            self.set_status(
                Level::Error,
                format!("{p} is still being fetched; wait for it to finish"),
            );
            return Vec::new();
        }
        self.fetch = Some(FetchProgress {
            what: what.clone(),
            dest: dest.clone(),
            done: 0,
            total: 0,
            from: None,
            meter: Default::default(),
            cancelling: false,
        });
        self.status = None;
        vec![Effect::Fetch { what, dest, force }]
    }
}

/// Runs a command line (`lock 3`, `unlock 3`,
/// `fetch NAME [DIR] [--force] [--flat]`, `versions PATH`, `list`).
pub(super) fn run_command(s: &mut AppState, line: &str) -> Vec<Effect> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    // Options anywhere in a fetch: `--force` replaces a file already there
    // without asking, `--flat` saves under the file's name alone.
    let is_fetch = words.first() == Some(&"fetch");
    let force_fetch = is_fetch && words.contains(&"--force");
    let flat = is_fetch && words.contains(&"--flat");
    if is_fetch {
        words.retain(|w| !matches!(*w, "--force" | "--flat"));
    }
    let usage = || {
        let mut cmds: Vec<&str> = keys::COMMANDS.iter().map(|(c, _)| *c).collect();
        // One form per command (`fetch … --flat` is an option of `fetch`).
        cmds.dedup_by_key(|c| c.split(' ').next());
        format!("commands: {}", cmds.join(", "))
    };
    let target = |s: &AppState, w: &str| -> Result<RelPath, String> {
        match w.parse::<usize>() {
            Ok(n) => s.path_at(n),
            Err(_) => RelPath::new(w).map_err(|e| format!("invalid path {w:?}: {e}")),
        }
    };
    let result = match words.as_slice() {
        [] => return Vec::new(),
        ["lock", t] => target(s, t).map(|p| s.lock(p)),
        ["lock", "--wait" | "-w" | "wait", t] | ["lock", t, "--wait" | "-w" | "wait"] => {
            target(s, t).map(|p| s.lock_wait(p))
        }
        ["unlock", t] => target(s, t).map(|p| s.unlock(p, false)),
        ["unlock", t, "--force" | "-f" | "force"] | ["unlock", "--force" | "-f", t] => {
            target(s, t).map(|p| s.unlock(p, true))
        }
        ["fetch", t] => target(s, t).map(|p| {
            let folder = s.fetch_folder();
            s.fetch_into(Wanted::file(p), folder, flat, force_fetch)
        }),
        ["fetch", t, dir] => target(s, t)
            .map(|p| s.fetch_into(Wanted::file(p), PathBuf::from(dir), flat, force_fetch)),
        ["list"] => {
            let mut fx = Vec::new();
            if s.is_up() {
                s.set_status(Level::Info, "reloading the file list…");
                s.request_list(&mut fx);
                Ok(fx)
            } else {
                Ok(s.not_connected())
            }
        }
        // Any path, in the table or not: a file deleted everywhere has no
        // row, and its kept versions are what brings it back.
        ["versions", t] => target(s, t.trim_end_matches('/')).map(|p| s.open_detail_of(p)),
        ["versions"] => Ok(s.open_detail()),
        ["override"] => Ok(s.ask_mirror(false, None)),
        ["override", t] => target(s, t.trim_end_matches('/')).map(|p| s.ask_mirror(false, Some(p))),
        ["revert"] => Ok(s.ask_mirror(true, None)),
        ["revert", t] => target(s, t.trim_end_matches('/')).map(|p| s.ask_mirror(true, Some(p))),
        ["connect", addr] => Ok(s.switch_node(addr, None)),
        ["cache", node] => Ok(s.show_cache_of(Some(node.to_string()))),
        ["cache"] => Ok(s.show_cache_of(None)),
        ["quit" | "q"] => Ok(vec![Effect::Quit]),
        ["help"] => {
            s.mode = Mode::Help;
            Ok(Vec::new())
        }
        [cmd, ..] => Err(format!("unknown command {cmd:?}; {}", usage())),
    };
    result.unwrap_or_else(|e| {
        s.set_status(Level::Error, e);
        Vec::new()
    })
}
