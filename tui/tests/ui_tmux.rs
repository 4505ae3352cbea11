//! End-to-end: the real `tandem` UI inside tmux against two real nodes.
//!
//! Starts `tandem-node` twice on free loopback ports (peers of each other),
//! runs `tandem --node A` in a detached 160×48 tmux session on a private
//! tmux server (its socket in the test's temp dir), then drives it with `send-keys` and reads it with
//! `capture-pane`, polling with deadlines (no sleeps as synchronisation).
//! A guard kills the tmux server and both nodes by PID, also on failure.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod support;
use support::{Tmux, node_bin};

const READY: Duration = Duration::from_secs(60);
const CHANGE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);
/// Width of the screen; the table takes the first `TABLE_W` columns and the
/// feed the rest (the UI's wide layout: feed = 38% of the width).
const WIDTH: u16 = 160;
const HEIGHT: u16 = 48;

fn tandem_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

/// Two free loopback ports (bound then released).
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    (
        a.local_addr().expect("addr").port(),
        b.local_addr().expect("addr").port(),
    )
}

/// Everything the test started; dropping it stops all of it.
struct Cluster {
    /// First, so its server is killed while its socket (in `dirs`) exists.
    ui: Tmux,
    dirs: TempDir,
    nodes: Vec<(String, Child)>,
}

impl Cluster {
    fn screen(&self) -> String {
        self.ui.screen()
    }

    fn keys(&self, keys: &[&str]) {
        self.ui.keys(keys)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.dirs.path().join(name)
    }

    fn log(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dirs.path().join(format!("{name}.log"))) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The id of the node whose folder is `name` (its key is made on first use).
    fn node_id(&self, name: &str) -> String {
        let out = Command::new(node_bin())
            .arg("--dir")
            .arg(self.dir(name))
            .arg("id")
            .output()
            .expect("tandem-node id");
        assert!(out.status.success(), "tandem-node id failed");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Starts `name` on `port`, dialing the node `peer_name` on `peer`
    /// (naming its id, which trusts it; the peer trusts this one the same way).
    fn start_node(&mut self, name: &str, port: u16, peer_name: &str, peer: u16) {
        let dir = self.dir(name);
        fs::create_dir_all(&dir).expect("node dir");
        fs::create_dir_all(self.dir(peer_name)).expect("node dir");
        let peer_id = self.node_id(peer_name);
        let log = fs::File::create(self.dirs.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(node_bin())
            .arg("--dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--peer", &format!("{peer_id}@127.0.0.1:{peer}")])
            .args(["--name", name])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start tandem-node");
        self.nodes.push((name.to_string(), child));
    }

    /// Polls `f` until it gives a value; fails with the screen and logs.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            for (name, child) in &mut self.nodes {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("node {name} exited ({st}) while waiting for {what}");
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- screen ---\n{}\n--- alpha log ---\n{}\n--- beta log ---\n{}",
                    self.screen(),
                    self.log("alpha"),
                    self.log("beta")
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Cluster {
    /// Like [`Cluster::wait`] while node `pid` is stopped: gives the
    /// failure back instead of panicking, so the caller can let the node
    /// go on first (the failure report needs its log, not a stopped node).
    fn wait_or_continue<T>(
        &self,
        what: &str,
        timeout: Duration,
        pid: libc::pid_t,
        mut f: impl FnMut(&Cluster) -> Option<T>,
    ) -> Result<T, String> {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} (node {pid} stopped)\n--- screen ---\n{}",
                    self.screen()
                ));
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The table part of each screen line.
fn table_lines(screen: &str) -> Vec<String> {
    let a = areas();
    cut(screen, a.main)
}

/// The feed part of each screen line.
fn feed_lines(screen: &str) -> Vec<String> {
    let a = areas();
    cut(
        screen,
        a.feed.expect("the Files view has a feed at this size"),
    )
}

/// Where the UI puts the table and the feed at the session's size (the
/// same function the UI uses, so a layout change needs no change here).
fn areas() -> tandem_tui::ui::Areas {
    tandem_tui::ui::layout(
        ratatui::layout::Rect::new(0, 0, WIDTH, HEIGHT),
        tandem_tui::app::View::Files,
    )
}

/// The part of `screen` inside `r`, line by line.
fn cut(screen: &str, r: ratatui::layout::Rect) -> Vec<String> {
    screen
        .lines()
        .skip(usize::from(r.y))
        .take(usize::from(r.height))
        .map(|l| {
            l.chars()
                .skip(usize::from(r.x))
                .take(usize::from(r.width))
                .collect()
        })
        .collect()
}

/// The table row showing `name`.
fn row_of(screen: &str, name: &str) -> Option<String> {
    table_lines(screen)
        .into_iter()
        .find(|l| l.starts_with('│') && l.contains(&format!(" {name} ")))
}

#[test]
fn ui_in_tmux_shows_the_table_the_feed_and_locks() {
    let (pa, pb) = free_ports();
    let dirs = tempfile::Builder::new()
        .prefix("tandem-ui-tmux-")
        .tempdir()
        .expect("temp dir");
    let mut c = Cluster {
        ui: Tmux::new(dirs.path()),
        dirs,
        nodes: Vec::new(),
    };
    fs::create_dir_all(c.dir("alpha")).expect("dir");
    fs::write(c.dir("alpha").join("hello.txt"), b"hello from alpha\n").expect("write");
    c.start_node("alpha", pa, "beta", pb);
    c.start_node("beta", pb, "alpha", pa);
    for port in [pa, pb] {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        c.wait(&format!("a node listening on {addr}"), READY, |_| {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
    }

    let identity = c.dirs.path().join("identity.toml");
    let cmd = format!(
        "'{}' --node 127.0.0.1:{pa} --identity '{}' --name tester 2>'{}'",
        tandem_bin().display(),
        identity.display(),
        c.dirs.path().join("ui.stderr").display()
    );
    c.ui.start(WIDTH, HEIGHT, &cmd);

    // The table appears, with the file alpha holds.
    c.wait("the table with hello.txt", READY, |c| {
        let s = c.screen();
        (s.contains("Files ·") && s.contains("● alpha") && row_of(&s, "hello.txt").is_some())
            .then_some(())
    });

    // A file made on the other node shows up in the table, and in the feed.
    fs::write(c.dir("beta").join("from-beta.txt"), b"made on beta\n").expect("write");
    c.wait("from-beta.txt in the table", CHANGE, |c| {
        row_of(&c.screen(), "from-beta.txt")
    });
    c.wait("a feed line about from-beta.txt", CHANGE, |c| {
        feed_lines(&c.screen())
            .into_iter()
            .find(|l| l.contains("from-beta.txt"))
    });

    // `l` locks the selected row: its lock column shows the owner.
    let selected = c.wait("a selected row", CHANGE, |c| {
        table_lines(&c.screen())
            .into_iter()
            .find(|l| l.starts_with("│▶"))
            .and_then(|l| {
                ["hello.txt", "from-beta.txt"]
                    .into_iter()
                    .find(|n| l.contains(&format!(" {n} ")))
            })
    });
    assert!(
        !row_of(&c.screen(), selected).is_some_and(|r| r.contains("tester")),
        "not locked yet"
    );
    c.keys(&["l"]);
    c.wait("the lock owner in the lock column", CHANGE, |c| {
        row_of(&c.screen(), selected).filter(|r| r.contains("tester"))
    });
    c.wait("the status line", CHANGE, |c| {
        c.screen()
            .contains(&format!("locked {selected} (owner tester)"))
            .then_some(())
    });

    // `f` fetches the selected row into a directory typed at the prompt:
    // the file arrives whole and the status line says so.
    let dest = c.dirs.path().join("fetched");
    fs::create_dir_all(&dest).expect("dest dir");
    c.keys(&["f", "C-u"]);
    c.keys(&["-l", &dest.display().to_string()]);
    c.keys(&["Enter"]);
    let source = if selected == "hello.txt" {
        c.dir("alpha").join("hello.txt")
    } else {
        c.dir("beta").join("from-beta.txt")
    };
    let want = fs::read(&source).expect("source file");
    c.wait("the fetched file in the destination", CHANGE, |_| {
        fs::read(dest.join(selected))
            .ok()
            .filter(|got| *got == want)
    });
    c.wait("the fetch status line", CHANGE, |c| {
        c.screen().contains("(hash verified)").then_some(())
    });

    // Fetching it again asks before replacing the local file (the prompt
    // now offers the folder used last): `n` keeps it, `y` replaces it.
    fs::write(dest.join(selected), b"mine\n").expect("local edit");
    let question = format!("{selected} exists in {} — replace it? y/n", dest.display());
    c.keys(&["f", "Enter"]);
    c.wait("the overwrite question", CHANGE, |c| {
        c.screen().contains(&question).then_some(())
    });
    c.keys(&["n"]);
    c.wait("the answer to n", CHANGE, |c| {
        c.screen()
            .contains(&format!(
                "kept {}; nothing was changed",
                dest.join(selected).display()
            ))
            .then_some(())
    });
    assert_eq!(fs::read(dest.join(selected)).unwrap(), b"mine\n");
    c.keys(&["f", "Enter"]);
    c.wait("the overwrite question again", CHANGE, |c| {
        c.screen().contains(&question).then_some(())
    });
    c.keys(&["y"]);
    c.wait("y replaced the file", CHANGE, |_| {
        fs::read(dest.join(selected))
            .ok()
            .filter(|got| *got == want)
    });

    // A file in folders keeps them under the folder given, made as needed.
    let nested = c.dir("alpha").join("docs/notes");
    fs::create_dir_all(&nested).expect("nested dir");
    fs::write(nested.join("meeting.md"), b"minutes\n").expect("write");
    c.wait("docs/notes/meeting.md in the table", CHANGE, |c| {
        row_of(&c.screen(), "docs/notes/meeting.md")
    });
    let tree = c.dirs.path().join("new");
    c.keys(&[":"]);
    c.keys(&[
        "-l",
        &format!("fetch docs/notes/meeting.md {}", tree.display()),
    ]);
    c.keys(&["Enter"]);
    c.wait("the status line naming the folder made", CHANGE, |c| {
        c.screen()
            .contains(&format!("made the folder {}", tree.display()))
            .then_some(())
    });
    assert_eq!(
        fs::read(tree.join("docs/notes/meeting.md")).expect("kept its folders"),
        b"minutes\n"
    );

    // Esc cancels a running fetch. Alpha is stopped first, so the fetch is
    // surely still under way when Esc arrives; the folder it made for the
    // file is gone again afterwards.
    let cancelled = c.dirs.path().join("cancelled");
    let alpha_pid = c.nodes[0].1.id() as libc::pid_t;
    // SAFETY: signals a child this test started (and still owns).
    assert_eq!(unsafe { libc::kill(alpha_pid, libc::SIGSTOP) }, 0);
    c.keys(&[":"]);
    c.keys(&["-l", &format!("fetch hello.txt {}", cancelled.display())]);
    c.keys(&["Enter"]);
    c.wait("the fetch gauge", CHANGE, |c| {
        c.screen().contains("fetching hello.txt").then_some(())
    });
    c.keys(&["Escape"]);
    let said = c.wait_or_continue("the cancel in the status line", CHANGE, alpha_pid, |c| {
        c.screen()
            .contains("fetch of hello.txt cancelled; nothing was saved")
            .then_some(())
    });
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(alpha_pid, libc::SIGCONT) }, 0);
    said.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !cancelled.exists(),
        "a cancelled fetch left {} behind",
        cancelled.display()
    );

    // A file deleted everywhere comes back from a kept version: alpha
    // kept what beta's delete removed there; `:versions PATH` opens the
    // pane of a path without a row, V asks, y restores it on every node.
    fs::remove_file(c.dir("beta").join("docs/notes/meeting.md")).expect("delete on beta");
    c.wait("alpha to apply beta's delete", CHANGE, |c| {
        (!c.dir("alpha").join("docs/notes/meeting.md").exists()).then_some(())
    });
    c.keys(&[":"]);
    c.keys(&["-l", "versions docs/notes/meeting.md"]);
    c.keys(&["Enter"]);
    c.wait("the version alpha kept, in the pane", CHANGE, |c| {
        let s = c.screen();
        (s.contains("Kept versions")
            && s.contains("on alpha: kept")
            && s.contains("replaced by beta's change"))
        .then_some(())
    });
    c.keys(&["V"]);
    c.wait("the restore question", CHANGE, |c| {
        c.screen()
            .contains("Restore docs/notes/meeting.md as kept on alpha")
            .then_some(())
    });
    c.keys(&["y"]);
    c.wait("the restore in the status line", CHANGE, |c| {
        c.screen()
            .contains("restored docs/notes/meeting.md on alpha from the version")
            .then_some(())
    });
    for n in ["alpha", "beta"] {
        let back = c.dir(n).join("docs/notes/meeting.md");
        c.wait(&format!("meeting.md back on {n}"), CHANGE, |_| {
            fs::read(&back).ok().filter(|got| got == b"minutes\n")
        });
    }

    // `q` quits (the session ends with the process).
    c.keys(&["q"]);
    c.wait("the UI to exit", CHANGE, |c| (!c.ui.alive()).then_some(()));
    let stderr = fs::read_to_string(c.dirs.path().join("ui.stderr")).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "the UI panicked:\n{stderr}");
}
