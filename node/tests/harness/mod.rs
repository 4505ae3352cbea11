//! Real-binary test harness shared by the integration tests (`mod harness;`).
//!
//! It starts real `tandem-node` processes on free loopback ports, each with
//! its directory and its log in temp dirs, runs the real `tandem` client
//! against them, and waits for conditions by polling them with a deadline:
//! nothing here (or in a test using it) sleeps to synchronise.
//!
//! ```ignore
//! let mut a = Node::start("a");                               // waits until `tandem list` answers
//! let b = Node::builder("b").peer(a.addr()).start();         // options: dir, listen, peer, arg, env
//! std::fs::write(a.path("x.txt"), b"hi").unwrap();
//! let list = a.wait_matches_disk("x.txt indexed");           // list == files on disk (path, size, mtime, hash)
//! let row = find(&list, "x.txt").unwrap();
//! wait_until(CHANGE_TIMEOUT, "x.txt on b", &[&a, &b], || find(&b.list(), "x.txt").is_some());
//! a.stop();        // SIGTERM, at most 10 s, must exit 0
//! a.restart();     // same dir, port, name, peers and arguments
//! ```
//!
//! Every failure message carries the node logs; a node that is dropped while
//! its thread panics prints its log too (unless a message already did).
//! Dropping a `Node` kills its process (SIGKILL by PID) and reaps it, so no
//! process outlives a test, even a failing one.
//!
//! Timeouts are generous for loaded CI machines, and can be stretched further
//! with `TANDEM_TEST_TIMEOUT_SCALE` (e.g. `3`). The node's log level is
//! `TANDEM_TEST_LOG` (default `info,tandem_node=debug`). `TANDEM_BIN_DIR`
//! runs the `tandem-node` and `tandem` binaries of that folder instead of
//! the ones cargo built for this test.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod locking;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a node may take to answer its first `tandem list`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM (or to exit by itself).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a change on disk may take to show in `tandem list`. The product
/// aims at well under 2 s; 5 s leaves room for a loaded 2-core CI machine.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one run of the `tandem` client may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between two polls of a condition.
pub const POLL: Duration = Duration::from_millis(25);

/// `timeout` stretched by `TANDEM_TEST_TIMEOUT_SCALE` (default 1).
pub fn scaled(timeout: Duration) -> Duration {
    static SCALE: OnceLock<f64> = OnceLock::new();
    let scale = *SCALE.get_or_init(|| {
        std::env::var("TANDEM_TEST_TIMEOUT_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(1.0)
    });
    timeout.mul_f64(scale)
}

// ---------------------------------------------------------------------------
// Binaries

/// The `tandem-node` binary under test.
/// `TANDEM_BIN_DIR`, when set, holds both binaries under test instead
/// (e.g. another checkout's `target/release`); nothing is built then.
pub fn node_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match bin_dir_override() {
        Some(dir) => existing(dir.join("tandem-node")),
        None => PathBuf::from(env!("CARGO_BIN_EXE_tandem-node")),
    })
}

fn bin_dir_override() -> Option<PathBuf> {
    std::env::var_os("TANDEM_BIN_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

fn existing(bin: PathBuf) -> PathBuf {
    assert!(
        bin.is_file(),
        "TANDEM_BIN_DIR is set but {} does not exist; build it (cargo build --release) or unset TANDEM_BIN_DIR",
        bin.display()
    );
    bin
}

/// The `tandem` client binary, next to `tandem-node`. It belongs to another
/// package, so `cargo test -p tandem-node` does not build it: it is built
/// here (once per test process) when it is missing or older than the client
/// or common sources (unless `TANDEM_BIN_DIR` is set).
pub fn client_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = node_bin().with_file_name("tandem");
        if bin_dir_override().is_some() {
            return existing(bin);
        }
        if let Some(why) = client_needs_build(&bin) {
            build_client(&bin, &why);
        }
        bin
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

fn newest_mtime(path: &Path, newest: &mut Option<std::time::SystemTime>) {
    let Ok(meta) = fs::metadata(path) else { return };
    if meta.is_dir() {
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                newest_mtime(&e.path(), newest);
            }
        }
    } else if let Ok(m) = meta.modified() {
        *newest = Some(newest.map_or(m, |n| n.max(m)));
    }
}

fn client_needs_build(bin: &Path) -> Option<String> {
    let Ok(built) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return Some(format!("{} does not exist", bin.display()));
    };
    let root = workspace_root();
    let mut newest = None;
    for p in [
        "tui/src",
        "tui/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
        "Cargo.lock",
    ] {
        newest_mtime(&root.join(p), &mut newest);
    }
    match newest {
        Some(n) if n > built => Some(format!(
            "{} is older than the tandem-tui / tandem-common sources",
            bin.display()
        )),
        _ => None,
    }
}

fn build_client(bin: &Path, why: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "-p", "tandem-tui", "--bin", "tandem"]);
    // Build into the same profile and target directory as tandem-node.
    let bin_dir = bin.parent().expect("binary has a directory");
    match bin_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    if let Some(up) = bin_dir.parent() {
        if up.join("CACHEDIR.TAG").exists() {
            cmd.arg("--target-dir").arg(up);
        } else if let (Some(target_dir), Some(triple)) = (up.parent(), up.file_name())
            && target_dir.join("CACHEDIR.TAG").exists()
        {
            cmd.arg("--target-dir")
                .arg(target_dir)
                .arg("--target")
                .arg(triple);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} to build the tandem client: {e}"));
    if !out.status.success() {
        panic!(
            "the tandem client is needed by these tests ({why}), but {cmd:?} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        bin.is_file(),
        "{cmd:?} succeeded but {} still does not exist; build it with `cargo build -p tandem-tui --bin tandem` into the same target directory as tandem-node",
        bin.display()
    );
}

// ---------------------------------------------------------------------------
// Processes and the client

/// A loopback address whose port was free a moment ago (bound, read and
/// released: another process may take it meanwhile, which
/// [`NodeBuilder::start`] handles by retrying once with another port; the
/// nodes of a cluster, whose addresses are given to each other first,
/// cannot retry).
///
/// Chosen at random below the kernel's ephemeral range
/// (`ip_local_port_range`), where every outgoing connection takes its local
/// port: a port chosen there (as port 0 gives) could be taken by any
/// connection on the machine before the node binds it, which failed a CI
/// run while another test run was busy beside it. Never a port this
/// process handed out before. Port 0's choice when nothing below is free.
pub fn free_addr() -> SocketAddr {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const FROM: u16 = 10_000;
    let below = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if below > FROM + 1_000 {
        use std::hash::BuildHasher;
        let random = std::hash::RandomState::new();
        let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
        for i in 0..200u64 {
            let port = FROM + (random.hash_one(i) % u64::from(below - FROM)) as u16;
            if given.contains(&port) {
                continue;
            }
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                given.insert(port);
                return l.local_addr().expect("bound listener has an address");
            }
        }
    }
    let l = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    l.local_addr().expect("bound listener has an address")
}

/// Sends `sig` to `child` by PID unless it has already been reaped (a reaped
/// child's PID may belong to another process by now). Only we reap our
/// children, so between the check and kill(2) the PID stays ours.
fn signal(child: &mut Child, sig: libc::c_int) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the PID of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    }
}

/// Runs `cmd` to completion with its output captured; kills it (by PID) and
/// returns an error when it takes longer than `timeout` (scaled).
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let timeout = scaled(timeout);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                signal(&mut child, libc::SIGKILL);
                let _ = child.wait();
                let (_, e) = (out.join(), err.join().unwrap_or_default());
                return Err(format!(
                    "{cmd:?} did not finish within {timeout:?} (killed); stderr: {}",
                    String::from_utf8_lossy(&e)
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for {cmd:?}: {e}"));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The key file of the harness's own client: the first client of every
/// test cluster, so it becomes admin there (over loopback), and one per
/// test process, never the user's.
pub fn harness_identity() -> &'static Path {
    static KEY: OnceLock<PathBuf> = OnceLock::new();
    KEY.get_or_init(|| {
        // In cargo's scratch folder for tests (under target/), not /tmp:
        // one small file per test process, gone with `cargo clean`.
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tandem-test-admin-{}.key", std::process::id()))
    })
}

/// A `tandem` command against `addr`. It runs as the harness's admin unless
/// `args` give `--identity`. Node ids are not pinned between runs
/// (ports are reused by later tests with other nodes).
pub fn tandem_command(addr: SocketAddr, args: &[&str]) -> Command {
    let mut cmd = Command::new(client_bin());
    cmd.arg("--node")
        .arg(addr.to_string())
        .args(args)
        .env_remove("TANDEM_NODE")
        .env("TANDEM_KNOWN_NODES", "/dev/null");
    if !args.contains(&"--identity") {
        cmd.env("TANDEM_IDENTITY", harness_identity());
    }
    cmd
}

/// Runs `tandem --node ADDR ARGS...` (the real client).
pub fn tandem(addr: SocketAddr, args: &[&str]) -> Result<Output, String> {
    run_with_timeout(tandem_command(addr, args), CLIENT_TIMEOUT)
}

/// The id of the client whose key is `identity` (made on first use).
pub fn client_id(addr: SocketAddr, identity: &str) -> String {
    let out = tandem(addr, &["--identity", identity, "whoami"]).expect("tandem whoami");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tandem whoami failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split_whitespace().next().expect("an id").to_string()
}

/// Gives the client whose key is `identity` the `role` (as the harness's
/// admin, through the node at `addr`).
pub fn approve(addr: SocketAddr, identity: &str, role: &str) {
    let id = client_id(addr, identity);
    let out = tandem(addr, &["approve", &id, "--role", role]).expect("tandem approve");
    assert!(
        out.status.success(),
        "tandem approve failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Trust between the nodes of a test

/// A node the harness started: where it listens, its id and state folder,
/// and the peers it dials.
struct Known {
    key: u64,
    /// Where it listens, and addresses that forward to it (proxies).
    addrs: Vec<SocketAddr>,
    id: String,
    state_dir: PathBuf,
    peers: Vec<SocketAddr>,
}

fn known_nodes() -> MutexGuard<'static, Vec<Known>> {
    static KNOWN: OnceLock<Mutex<Vec<Known>>> = OnceLock::new();
    KNOWN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Adds `id` to the trust list in `state_dir` unless it is there. Written
/// directly (the format is two lines per node) to keep test start-up fast;
/// the `trust` command itself is tested in `security.rs`.
pub fn trust_in(state_dir: &Path, id: &str) {
    let file = state_dir.join("trust.toml");
    let text = fs::read_to_string(&file).unwrap_or_default();
    if text.contains(id) {
        return;
    }
    let _ = fs::create_dir_all(state_dir);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .expect("cannot write a trust list");
    writeln!(f, "\n[[node]]\nid = \"{id}\"").expect("cannot write a trust list");
}

/// Makes the node `key` (at `addr`, state in `state_dir`, dialing `peers`)
/// and every node it dials or that dials it trust each other. Returns its
/// id, or `None` when it has no usable state folder (a node expected to fail).
fn register_trust(
    key: u64,
    addrs: &[SocketAddr],
    dir: &Path,
    state_dir: &Path,
    peers: &[SocketAddr],
) -> Option<String> {
    // Not a folder (a node expected to fail).
    if !dir.is_dir() {
        return None;
    }
    let out = Command::new(node_bin())
        .arg("--dir")
        .arg(dir)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("id")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut known = known_nodes();
    // The newest node at an address is the one there now.
    known.retain(|k| k.key != key && !k.addrs.iter().any(|a| addrs.contains(a)));
    for k in known.iter() {
        if k.addrs.iter().any(|a| peers.contains(a)) || addrs.iter().any(|a| k.peers.contains(a)) {
            trust_in(state_dir, &k.id);
            trust_in(&k.state_dir, &id);
        }
    }
    known.push(Known {
        key,
        addrs: addrs.to_vec(),
        id: id.clone(),
        state_dir: state_dir.to_path_buf(),
        peers: peers.to_vec(),
    });
    Some(id)
}

/// `tandem --node ADDR list --json`, parsed; the error says why it failed.
pub fn try_list_json(addr: SocketAddr) -> Result<Vec<Value>, String> {
    let out = tandem(addr, &["list", "--json"])?;
    if !out.status.success() {
        return Err(format!(
            "`tandem --node {addr} list --json` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "`tandem list --json` printed something that is not a JSON array ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `node`'s state in `row` of a merged `tandem list --json` (`states` is
/// an object node → state).
pub fn row_state(row: &Value, node: &str) -> Option<String> {
    row["states"].get(node)?.as_str().map(str::to_string)
}

/// `node`'s state for `path` in a merged `tandem list --json`.
pub fn state_in(list: &[Value], path: &str, node: &str) -> Option<String> {
    row_state(find(list, path)?, node)
}

/// True when `unshare -U -r` works here and lets a test lower the inotify
/// watch limit in a user namespace of its own (see
/// [`NodeBuilder::watch_limit`]).
pub fn user_namespaces_work() -> bool {
    Command::new("unshare")
        .args([
            "-U",
            "-r",
            "sh",
            "-c",
            "echo 20 > /proc/sys/user/max_inotify_watches",
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// `tandem --node ADDR list --json`, parsed; panics when it fails.
pub fn list_json(addr: SocketAddr) -> Vec<Value> {
    try_list_json(addr).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// Waiting

/// What a polled condition returns: `bool`, `Option<T>` or `Result<T, E>`
/// (the error describes the last observed state, for the failure message).
pub trait Check {
    /// What the wait returns once the condition holds.
    type Output;
    /// `Ok` when the condition holds, else a description of what was seen.
    fn check(self) -> Result<Self::Output, String>;
}

impl Check for bool {
    type Output = ();
    fn check(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the condition was still false".into())
        }
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.ok_or_else(|| "the condition was still None".into())
    }
}

impl<T, E: fmt::Display> Check for Result<T, E> {
    type Output = T;
    fn check(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls `f` every [`POLL`] until it holds, for at most `timeout` (scaled).
/// Panics on timeout with `what`, the last observed state and the logs of
/// `nodes`; panics at once if one of `nodes` exited on its own.
pub fn wait_until<C: Check>(
    timeout: Duration,
    what: &str,
    nodes: &[&Node],
    mut f: impl FnMut() -> C,
) -> C::Output {
    let timeout = scaled(timeout);
    let start = Instant::now();
    loop {
        let last = match f().check() {
            Ok(v) => return v,
            Err(last) => last,
        };
        for n in nodes {
            if let Some(st) = n.unexpected_exit() {
                panic!(
                    "{}",
                    fail_with_logs(
                        &format!(
                            "while waiting for {what}: node {} exited on its own with {st}\nlast observed: {last}",
                            n.name
                        ),
                        nodes
                    )
                );
            }
        }
        if start.elapsed() >= timeout {
            panic!(
                "{}",
                fail_with_logs(
                    &format!(
                        "timed out after {timeout:.1?} waiting for {what}\nlast observed: {last}"
                    ),
                    nodes
                )
            );
        }
        thread::sleep(POLL);
    }
}

/// Waits until `node` answers `tandem list --json` (at most 30 s); returns
/// that first list. Same as [`Node::wait_ready`].
pub fn wait_ready(node: &Node) -> Vec<Value> {
    node.wait_ready()
}

/// Polls `f` until it holds (true) or `d` has passed (false).
pub fn wait_until_or_timeout(d: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + d;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// `msg` followed by the logs of `nodes`.
pub fn fail_with_logs(msg: &str, nodes: &[&Node]) -> String {
    let mut s = msg.to_string();
    for n in nodes {
        s.push('\n');
        s.push_str(&n.log_report());
    }
    s
}

// ---------------------------------------------------------------------------
// Nodes

/// Options of a node to start; see [`Node::builder`].
#[derive(Debug, Clone)]
pub struct NodeBuilder {
    name: String,
    dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    peers: Vec<SocketAddr>,
    aliases: Vec<SocketAddr>,
    untrusted: bool,
    trust_with: Vec<(String, PathBuf)>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    wrapper: Vec<OsString>,
}

impl NodeBuilder {
    /// A node called `name`, with a fresh temp dir and a free port.
    pub fn new(name: &str) -> Self {
        NodeBuilder {
            name: name.to_string(),
            dir: None,
            listen: None,
            peers: Vec::new(),
            aliases: Vec::new(),
            untrusted: false,
            trust_with: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Starts the node through `program args... tandem-node ...` (e.g.
    /// `unshare`), which must `exec` it, so the PID stays the node's.
    pub fn wrapper(mut self, program: &[&str]) -> Self {
        self.wrapper = program.iter().map(OsString::from).collect();
        self
    }

    /// Starts the node in a user namespace of its own whose inotify watch
    /// limit is `limit` (the host's limit is left alone).
    pub fn watch_limit(self, limit: u32) -> Self {
        let script =
            format!("echo {limit} > /proc/sys/user/max_inotify_watches && exec \"$0\" \"$@\"");
        self.wrapper(&["unshare", "-U", "-r", "sh", "-c", &script])
    }

    /// Uses `dir` as `--dir` (the caller owns it; it may be missing or not
    /// even a directory) instead of a fresh temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Listens on `addr` (e.g. from [`free_addr`], so that peers can be told
    /// about each other before either starts) instead of a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Adds a `--peer`.
    pub fn peer(mut self, addr: SocketAddr) -> Self {
        self.peers.push(addr);
        self
    }

    /// Says that `addr` forwards to this node (a proxy), so nodes dialing
    /// `addr` and this node trust each other.
    pub fn alias(mut self, addr: SocketAddr) -> Self {
        self.aliases.push(addr);
        self
    }

    /// Makes this node and `other` (already started) trust each other, for
    /// links the harness cannot see (through a proxy started later).
    pub fn trusts(mut self, other: &Node) -> Self {
        if let Some(id) = other.id() {
            self.trust_with.push((id.to_string(), other.state_dir()));
        }
        self
    }

    /// Leaves the node out of the harness's trust setup (no `id` run before
    /// it starts, so a missing `--dir` is still the node's to create).
    pub fn untrusted(mut self) -> Self {
        self.untrusted = true;
        self
    }

    /// Adds an extra command-line argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Sets an environment variable of the node process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Starts the process and returns at once (for nodes expected to fail:
    /// see [`Node::wait_exit`]).
    pub fn spawn(self) -> Node {
        let safe: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let scratch = tempfile::Builder::new()
            .prefix(&format!("tandem-test-{safe}-log-"))
            .tempdir()
            .expect("cannot create a temp dir");
        let (dir, dir_tmp) = match self.dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("tandem-test-{safe}-"))
                    .tempdir()
                    .expect("cannot create a temp dir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        static NEXT_KEY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut node = Node {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            aliases: self.aliases,
            untrusted: self.untrusted,
            trust_with: self.trust_with,
            id: None,
            name: self.name,
            addr: self.listen.unwrap_or_else(free_addr),
            port_chosen: self.listen.is_none(),
            dir,
            peers: self.peers,
            args: self.args,
            env: self.env,
            wrapper: self.wrapper,
            log_path: scratch.path().join("node.log"),
            run_log_start: 0,
            runs: 0,
            child: Mutex::new(None),
            log_shown: AtomicBool::new(false),
            _dir_tmp: dir_tmp,
            _scratch: scratch,
        };
        node.spawn_process();
        node
    }

    /// Starts the node and waits until `tandem list` answers (retrying once
    /// with another port if the chosen one was taken meanwhile).
    pub fn start(self) -> Node {
        let mut node = self.spawn();
        node.finish_start();
        node
    }
}

/// Starts several nodes at once (they boot in parallel), then waits until
/// each answers.
pub fn start_all(builders: Vec<NodeBuilder>) -> Vec<Node> {
    let mut nodes: Vec<Node> = builders.into_iter().map(NodeBuilder::spawn).collect();
    for n in &mut nodes {
        n.finish_start();
    }
    nodes
}

/// A running (or stopped) `tandem-node` process, its directory and its log.
pub struct Node {
    /// Unique in this test process.
    key: u64,
    /// Addresses that forward to this node.
    aliases: Vec<SocketAddr>,
    /// Left out of the trust setup.
    untrusted: bool,
    /// Nodes (id, state folder) this one trusts both ways.
    trust_with: Vec<(String, PathBuf)>,
    /// Its node id, once known.
    id: Option<String>,
    name: String,
    addr: SocketAddr,
    /// The port was picked by the harness, so it may be changed if taken.
    port_chosen: bool,
    dir: PathBuf,
    peers: Vec<SocketAddr>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    wrapper: Vec<OsString>,
    log_path: PathBuf,
    /// Offset in the log where the current run starts.
    run_log_start: u64,
    runs: u32,
    child: Mutex<Option<Child>>,
    log_shown: AtomicBool,
    _dir_tmp: Option<TempDir>,
    _scratch: TempDir,
}

enum NotReady {
    Exited(ExitStatus),
    Timeout(String),
}

impl Node {
    /// Options for a node called `name`.
    pub fn builder(name: &str) -> NodeBuilder {
        NodeBuilder::new(name)
    }

    /// Starts a node called `name` on a fresh temp dir and a free port, and
    /// waits until it answers.
    pub fn start(name: &str) -> Node {
        NodeBuilder::new(name).start()
    }

    /// The `--name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `--listen` address (clients and peers connect here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The synced directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `rel` inside the synced directory.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.join(rel)
    }

    /// The state folder: `--state-dir` if given, else DIR/.tandem.
    pub fn state_dir(&self) -> PathBuf {
        let mut it = self.args.iter();
        while let Some(a) = it.next() {
            if a == "--state-dir"
                && let Some(v) = it.next()
            {
                return PathBuf::from(v);
            }
        }
        self.dir.join(".tandem")
    }

    /// The node's id (known once it has started).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The `--peer`s.
    pub fn peers(&self) -> &[SocketAddr] {
        &self.peers
    }

    /// Where the node's stdout and stderr go (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    fn spawn_process(&mut self) {
        assert!(
            self.child().is_none(),
            "node {} is already running",
            self.name
        );
        self.runs += 1;
        let mut addrs = vec![self.addr];
        addrs.extend(&self.aliases);
        if !self.untrusted && !self.dir.exists() {
            let _ = fs::create_dir_all(&self.dir);
        }
        self.id = if self.untrusted {
            None
        } else {
            register_trust(self.key, &addrs, &self.dir, &self.state_dir(), &self.peers)
        }
        .or(self.id.take());
        if let Some(me) = &self.id {
            for (id, state) in &self.trust_with {
                trust_in(&self.state_dir(), id);
                trust_in(state, me);
            }
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("cannot open the node log");
        self.run_log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(node_bin());
                c
            }
            None => Command::new(node_bin()),
        };
        cmd.arg("--dir")
            .arg(&self.dir)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--name")
            .arg(&self.name);
        for p in &self.peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        cmd.args(&self.args);
        let level = std::env::var("TANDEM_TEST_LOG")
            .unwrap_or_else(|_| "info,tandem_node=debug".to_string());
        cmd.env("RUST_LOG", level)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let _ = writeln!(log, "==== harness: run #{} of {cmd:?} ====", self.runs);
        let err = log.try_clone().expect("cannot clone the log file handle");
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", node_bin().display()));
        *self.child() = Some(child);
    }

    /// The exit status if the process exited although nobody stopped it.
    pub fn unexpected_exit(&self) -> Option<ExitStatus> {
        let mut guard = self.child();
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => Some(st),
            _ => None,
        }
    }

    /// True while the process runs.
    pub fn is_running(&self) -> bool {
        self.child().is_some() && self.unexpected_exit().is_none()
    }

    fn try_wait_ready(&self) -> Result<Vec<Value>, NotReady> {
        let timeout = scaled(READY_TIMEOUT);
        let start = Instant::now();
        loop {
            if let Some(st) = self.unexpected_exit() {
                return Err(NotReady::Exited(st));
            }
            match try_list_json(self.addr) {
                Ok(list) => return Ok(list),
                Err(e) if start.elapsed() >= timeout => return Err(NotReady::Timeout(e)),
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    fn finish_start(&mut self) -> Vec<Value> {
        let mut retried = false;
        loop {
            match self.try_wait_ready() {
                Ok(list) => return list,
                Err(NotReady::Exited(_))
                    if self.port_chosen && !retried && self.run_log().contains("cannot listen") =>
                {
                    // Someone took the port between free_addr() and the bind.
                    retried = true;
                    self.reap();
                    self.addr = free_addr();
                    self.spawn_process();
                }
                Err(NotReady::Exited(st)) => {
                    panic!(
                        "{}",
                        self.fail(&format!(
                            "node {} exited with {st} before answering `tandem list`",
                            self.name
                        ))
                    )
                }
                Err(NotReady::Timeout(last)) => panic!(
                    "{}",
                    self.fail(&format!(
                        "node {} did not answer `tandem list` within {:.1?}; last error: {last}",
                        self.name,
                        scaled(READY_TIMEOUT)
                    ))
                ),
            }
        }
    }

    /// Waits until `tandem list --json` succeeds (at most 30 s); returns
    /// that first list. Panics with the log if the node exits or times out.
    pub fn wait_ready(&self) -> Vec<Value> {
        match self.try_wait_ready() {
            Ok(list) => list,
            Err(NotReady::Exited(st)) => panic!(
                "{}",
                self.fail(&format!("node {} exited with {st}", self.name))
            ),
            Err(NotReady::Timeout(last)) => panic!(
                "{}",
                self.fail(&format!(
                    "node {} did not answer within {:.1?}; last error: {last}",
                    self.name,
                    scaled(READY_TIMEOUT)
                ))
            ),
        }
    }

    /// Takes the exited child out, reaping it.
    fn reap(&self) -> Option<ExitStatus> {
        let mut child = self.child().take()?;
        child.wait().ok()
    }

    fn wait_for_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let timeout = scaled(timeout);
        let start = Instant::now();
        loop {
            {
                let mut guard = self.child();
                let child = guard.as_mut()?;
                if let Ok(Some(st)) = child.try_wait() {
                    *guard = None;
                    return Some(st);
                }
            }
            if start.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (at most 10 s) for a node expected to exit by itself, e.g. on
    /// bad arguments; returns its exit status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        assert!(self.child().is_some(), "node {} is not running", self.name);
        match self.wait_for_exit(STOP_TIMEOUT) {
            Some(st) => st,
            None => {
                self.kill_now();
                panic!(
                    "{}",
                    self.fail(&format!(
                        "node {} was expected to exit by itself but still ran after {:.1?} (killed)",
                        self.name,
                        scaled(STOP_TIMEOUT)
                    ))
                )
            }
        }
    }

    /// Stops the node with SIGTERM and waits for it (at most 10 s; then it
    /// is killed with SIGKILL). Panics, with the log, unless it exited with
    /// status 0 on its own in time.
    pub fn stop(&mut self) -> ExitStatus {
        assert!(
            self.child().is_some(),
            "stop(): node {} is not running",
            self.name
        );
        if let Some(st) = self.unexpected_exit() {
            self.reap();
            panic!(
                "{}",
                self.fail(&format!(
                    "stop(): node {} had already exited on its own with {st}",
                    self.name
                ))
            );
        }
        if let Some(child) = self.child().as_mut() {
            signal(child, libc::SIGTERM);
        }
        match self.wait_for_exit(STOP_TIMEOUT) {
            Some(st) if st.success() => st,
            Some(st) => panic!(
                "{}",
                self.fail(&format!(
                    "node {} exited with {st} after SIGTERM (expected 0)",
                    self.name
                ))
            ),
            None => {
                self.kill_now();
                panic!(
                    "{}",
                    self.fail(&format!(
                        "node {} did not exit within {:.1?} of SIGTERM (killed with SIGKILL)",
                        self.name,
                        scaled(STOP_TIMEOUT)
                    ))
                )
            }
        }
    }

    /// Kills the node with SIGKILL (like `kill -9`) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(st) = self.unexpected_exit() {
            self.reap();
            panic!(
                "{}",
                self.fail(&format!(
                    "kill9(): node {} had already exited on its own with {st}",
                    self.name
                ))
            );
        }
        assert!(
            self.kill_now(),
            "kill9(): node {} is not running",
            self.name
        );
    }

    /// `kill -9` through a shared reference (from a thread racing others
    /// that use the node list); panics if the node is not running.
    pub fn kill9_shared(&self) {
        assert!(self.kill_now(), "kill9: node {} is not running", self.name);
    }

    /// SIGKILL and reap, if running; true if there was a process.
    fn kill_now(&self) -> bool {
        let Some(mut child) = self.child().take() else {
            return false;
        };
        signal(&mut child, libc::SIGKILL);
        let _ = child.wait();
        true
    }

    /// The extra arguments it runs with, to change before a restart.
    pub fn args_mut(&mut self) -> &mut Vec<OsString> {
        &mut self.args
    }

    /// The extra environment it runs with, to change before a restart.
    pub fn env_mut(&mut self) -> &mut Vec<(OsString, OsString)> {
        &mut self.env
    }

    /// Starts the stopped node again with the same directory, port, name,
    /// peers and arguments, and waits until it answers; returns its first
    /// list (which reflects the startup scan: the node answers only after).
    pub fn restart(&mut self) -> Vec<Value> {
        assert!(
            self.child().is_none(),
            "restart(): node {} is still running; stop() or kill9() it first",
            self.name
        );
        // While the node was down, another process's outgoing connection
        // may have taken its port as its own end (the ports tests pick are
        // in the ephemeral range): wait for it to be free, as an operator
        // would, and start again (bounded).
        for _ in 0..10 {
            self.spawn_process();
            match self.try_wait_ready() {
                Ok(list) => return list,
                Err(NotReady::Exited(_)) if self.run_log().contains("Address already in use") => {
                    self.child().take();
                    let addr = self.addr;
                    let free = wait_until_or_timeout(scaled(Duration::from_secs(30)), || {
                        std::net::TcpListener::bind(addr).is_ok()
                    });
                    assert!(free, "{}", self.fail(&format!("port {addr} stayed in use")));
                }
                Err(_) => break,
            }
        }
        self.wait_ready()
    }

    /// Starts the stopped node again like [`Node::restart`], but returns at
    /// once (for a run expected to end by itself, e.g. at a crash point).
    pub fn respawn(&mut self) {
        assert!(
            self.child().is_none(),
            "respawn(): node {} is still running; stop() or kill9() it first",
            self.name
        );
        self.spawn_process();
    }

    /// The whole log: every run's stdout and stderr.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The log of the current (or last) run only.
    pub fn run_log(&self) -> String {
        let b = fs::read(&self.log_path).unwrap_or_default();
        let start = (self.run_log_start as usize).min(b.len());
        String::from_utf8_lossy(&b[start..]).into_owned()
    }

    /// The log, framed for a failure message (and marked as shown, so the
    /// drop of a panicking test does not print it again).
    pub fn log_report(&self) -> String {
        self.log_shown.store(true, Ordering::Relaxed);
        format!(
            "----- log of node {} ({}, {}) -----\n{}\n----- end of log of node {} -----",
            self.name,
            self.addr,
            self.log_path.display(),
            self.log().trim_end(),
            self.name
        )
    }

    /// `msg` followed by this node's log.
    pub fn fail(&self, msg: &str) -> String {
        fail_with_logs(msg, &[self])
    }

    /// Waits (at most [`CHANGE_TIMEOUT`]) for a log line containing
    /// `needle`; returns the line.
    pub fn wait_log(&self, needle: &str) -> String {
        wait_until(
            CHANGE_TIMEOUT,
            &format!("a log line containing {needle:?}"),
            &[self],
            || {
                self.log()
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            },
        )
    }

    /// How many log lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Runs `tandem --node <this node> ARGS...`; panics if it cannot run.
    pub fn tandem(&self, args: &[&str]) -> Output {
        tandem(self.addr, args).unwrap_or_else(|e| panic!("{}", self.fail(&e)))
    }

    /// `tandem list --json` against this node.
    pub fn try_list(&self) -> Result<Vec<Value>, String> {
        try_list_json(self.addr)
    }

    /// `tandem list --json` against this node; panics with the log if it fails.
    pub fn list(&self) -> Vec<Value> {
        self.try_list()
            .unwrap_or_else(|e| panic!("{}", self.fail(&e)))
    }

    /// Polls the list until `pred` accepts it (at most [`CHANGE_TIMEOUT`]).
    pub fn wait_list(&self, what: &str, mut pred: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        wait_until(CHANGE_TIMEOUT, what, &[self], || {
            let list = self.try_list()?;
            if pred(&list) {
                Ok(list)
            } else {
                Err(format!("list: {}", pretty(&list)))
            }
        })
    }

    /// Polls until the list equals the regular files on disk (path, size,
    /// mtime and hash; at most [`CHANGE_TIMEOUT`]); returns that list.
    pub fn wait_matches_disk(&self, what: &str) -> Vec<Value> {
        wait_until(CHANGE_TIMEOUT, what, &[self], || {
            let list = self.try_list()?;
            diff_list_disk(&list, &self.dir).map(|()| list)
        })
    }

    /// Peak resident memory of the running process (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_now();
        if thread::panicking() && !self.log_shown.load(Ordering::Relaxed) {
            eprintln!("{}", self.log_report());
        }
    }
}

// ---------------------------------------------------------------------------
// Files, lists and comparisons

/// A regular file as `tandem list --json` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// RFC 3339, UTC, nanoseconds.
    pub mtime: String,
    /// BLAKE3 of the content, 64 lowercase hex digits.
    pub hash: String,
}

/// BLAKE3 of `data`, lowercase hex.
pub fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// Seconds and nanoseconds since the epoch as RFC 3339 in UTC with nine
/// fractional digits (computed here independently of the product's code).
pub fn rfc3339_utc(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The mtime of `meta` as [`rfc3339_utc`].
pub fn mtime_rfc3339(meta: &fs::Metadata) -> String {
    rfc3339_utc(meta.mtime(), meta.mtime_nsec() as u32)
}

/// Writes `data` to `path`, creating missing parent directories.
pub fn put(path: impl AsRef<Path>, data: impl AsRef<[u8]>) {
    let path = path.as_ref();
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
    }
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Calls `visit(relative path, full path, metadata)` for every entry under
/// `dir` as a node sees the tree: `/`-separated relative paths, `.tandem` at
/// the top and names that are not UTF-8 skipped, directories (not symlinks
/// to them) entered after their own visit.
pub fn walk_tree(dir: &Path, visit: &mut impl FnMut(&str, &Path, &fs::Metadata)) {
    fn walk(dir: &Path, prefix: &str, visit: &mut impl FnMut(&str, &Path, &fs::Metadata)) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if prefix.is_empty() && name == ".tandem" {
                continue;
            }
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(meta) = fs::symlink_metadata(e.path()) else {
                continue; // vanished meanwhile
            };
            visit(&rel, &e.path(), &meta);
            if meta.is_dir() {
                walk(&e.path(), &rel, visit);
            }
        }
    }
    walk(dir, "", visit)
}

/// The regular files and links under `dir` as a node should list them
/// (see [`walk_tree`]; special files are skipped; a link is listed with
/// size 0 and its target's hash).
pub fn disk_files(dir: &Path) -> BTreeMap<String, FileInfo> {
    let mut out = BTreeMap::new();
    walk_tree(dir, &mut |rel, path, meta| {
        if meta.file_type().is_symlink() {
            let Ok(target) = fs::read_link(path) else {
                return;
            };
            let info = FileInfo {
                size: 0,
                mtime: mtime_rfc3339(meta),
                hash: blake3_hex(target.as_os_str().as_encoded_bytes()),
            };
            out.insert(rel.to_string(), info);
            return;
        }
        if !meta.is_file() {
            return;
        }
        let Ok(data) = fs::read(path) else {
            return;
        };
        out.insert(
            rel.to_string(),
            FileInfo {
                size: data.len() as u64,
                mtime: mtime_rfc3339(meta),
                hash: blake3_hex(&data),
            },
        );
    });
    out
}

/// The sorted names of the entries of `dir` itself (to check what was left).
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The files in a node's temp folder (`.tandem/tmp`) and in its folders
/// of downloads (`parts-N`), as `name` or `parts-N/name`: what a transfer
/// under way, or one cut off, leaves there.
pub fn temp_files(tmp: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            for f in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                out.push(format!("{name}/{}", f.file_name().to_string_lossy()));
            }
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

/// The rows of a `tandem list --json` by path. Panics on a malformed row.
pub fn listed_files(list: &[Value]) -> BTreeMap<String, FileInfo> {
    list.iter()
        .map(|row| {
            let field = |k: &str| {
                row.get(k)
                    .unwrap_or_else(|| panic!("row without {k:?}: {row}"))
            };
            let s = |k: &str| {
                field(k)
                    .as_str()
                    .unwrap_or_else(|| panic!("{k:?} is not a string: {row}"))
                    .to_string()
            };
            let size = field("size")
                .as_u64()
                .unwrap_or_else(|| panic!("\"size\" is not an unsigned integer: {row}"));
            (
                s("path"),
                FileInfo {
                    size,
                    mtime: s("mtime"),
                    hash: s("hash"),
                },
            )
        })
        .collect()
}

/// `Ok` when the list describes exactly the files on disk under `dir`;
/// otherwise every difference, one per line.
pub fn diff_list_disk(list: &[Value], dir: &Path) -> Result<(), String> {
    let listed = listed_files(list);
    let disk = disk_files(dir);
    if listed == disk {
        return Ok(());
    }
    let mut diff = vec![format!("list and disk ({}) differ:", dir.display())];
    for (p, d) in &disk {
        match listed.get(p) {
            None => diff.push(format!("  on disk, not listed: {p} {d:?}")),
            Some(l) if l != d => diff.push(format!("  {p}: listed {l:?}, on disk {d:?}")),
            Some(_) => {}
        }
    }
    for (p, l) in &listed {
        if !disk.contains_key(p) {
            diff.push(format!("  listed, not on disk: {p} {l:?}"));
        }
    }
    Err(diff.join("\n"))
}

/// The row for `path`.
pub fn find<'a>(list: &'a [Value], path: &str) -> Option<&'a Value> {
    list.iter().find(|r| r["path"] == path)
}

/// The paths of a list, in its order.
pub fn paths(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|r| r["path"].as_str().unwrap_or("<no path>").to_string())
        .collect()
}

/// A list as pretty JSON, for messages.
pub fn pretty(list: &[Value]) -> String {
    serde_json::to_string_pretty(list).unwrap_or_else(|e| format!("<{e}>"))
}

/// Deterministic, incompressible-looking bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// How long two nodes may take to link up (and to re-link after a restart).
pub const LINK_TIMEOUT: Duration = Duration::from_secs(20);

/// `tandem nodes --json` of `node`, parsed.
pub fn nodes_json(node: &Node) -> Result<Vec<Value>, String> {
    let out = tandem(node.addr(), &["nodes", "--json"])?;
    if !out.status.success() {
        return Err(format!(
            "`tandem nodes --json` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("nodes --json: {e}"))
}

/// Waits until each node lists the other as up.
pub fn wait_linked(a: &Node, b: &Node) {
    wait_until(scaled(LINK_TIMEOUT), "A and B linked", &[a, b], || {
        for (n, other) in [(a, b), (b, a)] {
            let v = nodes_json(n)?;
            let up = v
                .iter()
                .any(|r| r["name"] == other.name() && r["up"] == true);
            if !up {
                return Err(format!(
                    "{} does not see {} up: {v:?}",
                    n.name(),
                    other.name()
                ));
            }
        }
        Ok::<(), String>(())
    });
}

/// Two nodes, A and B, each configured with the other as its peer, linked;
/// `a_args` are extra arguments of A.
pub fn linked_pair(a_args: &[&str]) -> (Node, Node) {
    let (aa, ba) = (free_addr(), free_addr());
    let mut ab = Node::builder("A").listen(aa).peer(ba);
    for x in a_args {
        ab = ab.arg(x);
    }
    let mut nodes = start_all(vec![ab, Node::builder("B").listen(ba).peer(aa)]);
    let b = nodes.pop().expect("B");
    let a = nodes.pop().expect("A");
    wait_linked(&a, &b);
    (a, b)
}

// ---------------------------------------------------------------------------
// Raw peers (tests that speak the protocol by hand)

/// A connection of a hand-driven peer.
pub type RawPeerIo = tandem_common::codec::FrameIo<
    tokio_rustls::client::TlsStream<tandem_common::tls::Transport<tokio::net::TcpStream>>,
>;

/// A fresh key pair (its file is removed at once; the key lives in memory).
pub fn fresh_key() -> tandem_common::identity::KeyPair {
    let key_file = std::env::temp_dir().join(format!(
        "tandem-test-raw-{}-{}.key",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let (key, _) = tandem_common::identity::KeyPair::load_or_create(&key_file).expect("a key");
    let _ = fs::remove_file(&key_file);
    key
}

/// A TLS connection to `node` proving `key` (as a node when `as_peer`,
/// else as a client), no hello said yet.
pub async fn tls_to(
    node: &Node,
    key: &tandem_common::identity::KeyPair,
    as_peer: bool,
) -> RawPeerIo {
    let tls = if as_peer {
        tandem_common::tls::Tls::node(key)
    } else {
        tandem_common::tls::Tls::client(key)
    }
    .expect("tls");
    let stream = tokio::net::TcpStream::connect(node.addr())
        .await
        .expect("connect");
    let (stream, _) = tls.connect(stream).await.expect("TLS handshake");
    tandem_common::codec::FrameIo::new(stream)
}

/// Connects to `node` as a peer with a key of its own that `node` is made
/// to trust first, and says hello. Returns the connection and the raw
/// peer's id.
pub async fn raw_peer(node: &Node, name: &str) -> (RawPeerIo, tandem_common::NodeId) {
    let key = fresh_key();
    let id = tandem_common::NodeId(key.id());
    (raw_peer_keyed(node, name, &key).await, id)
}

/// [`raw_peer`] with the key `key` (the same peer again, after a restart).
pub async fn raw_peer_keyed(
    node: &Node,
    name: &str,
    key: &tandem_common::identity::KeyPair,
) -> RawPeerIo {
    use tandem_common::proto::{self, Hello, Role};
    let id = tandem_common::NodeId(key.id());
    trust_in(&node.state_dir(), &id.to_string());
    let mut io = tls_to(node, key, true).await;
    let hello = Hello {
        role: Role::Peer,
        name: name.into(),
    };
    proto::connect_handshake(&mut io, &hello)
        .await
        .expect("handshake as a peer");
    io
}

/// A TLS client connection with a fresh key of its own, hello said.
pub async fn stranger(node: &Node) -> RawPeerIo {
    use tandem_common::proto::{self, Hello, Role};
    let mut io = tls_to(node, &fresh_key(), false).await;
    let hello = Hello {
        role: Role::Client,
        name: "stranger".into(),
    };
    let w = proto::connect_handshake(&mut io, &hello)
        .await
        .expect("welcome");
    assert!(
        w.client.is_some_and(|(_, role)| role.is_none()),
        "a new client has no role"
    );
    io
}

/// Waits (with a deadline) until the node closes `io`; fails with `why`.
pub async fn closed_by_node(node: &Node, mut io: RawPeerIo, why: &str) {
    let closed = tokio::time::timeout(scaled(Duration::from_secs(15)), async {
        while let Ok(Some(_)) = io.recv_raw().await {}
    })
    .await;
    assert!(closed.is_ok(), "{}", node.fail(why));
}

/// Makes every node of `nodes` trust every other, whatever links they
/// dial: the lock cluster forms only among nodes that all trust the same
/// set (a chain's ends must trust each other too).
pub fn trust_each_other(nodes: &[&Node]) {
    for a in nodes {
        for b in nodes {
            if a.key != b.key
                && let Some(id) = b.id()
            {
                trust_in(&a.state_dir(), id);
            }
        }
    }
}
