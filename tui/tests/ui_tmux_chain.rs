//! End-to-end: the real `tandem` UI inside tmux, connected to one end of a
//! chain of three real nodes (alpha – beta – gamma; alpha and gamma have no
//! link). Through alpha the UI must show gamma in the Nodes view, a change
//! held on gamma in alpha's table, and fetch and restore a conflict copy kept on
//! gamma. Polls the screen with deadlines; a guard stops tmux and every
//! node by PID, also on failure.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod support;
use support::{Tmux, node_bin};

const READY: Duration = Duration::from_secs(60);
const CHANGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

fn tandem_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Everything the test started; dropping it stops all of it.
struct Chain {
    /// First, so its server is killed while its socket (in `dirs`) exists.
    ui: Tmux,
    dirs: TempDir,
    nodes: Vec<Child>,
}

impl Chain {
    fn screen(&self) -> String {
        self.ui.screen()
    }

    fn keys(&self, keys: &[&str]) {
        self.ui.keys(keys)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.dirs.path().join(name)
    }

    fn node(&self, args: &[&str]) -> String {
        let out = Command::new(node_bin())
            .args(args)
            .output()
            .expect("tandem-node");
        assert!(out.status.success(), "tandem-node {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn logs(&self) -> String {
        ["alpha", "beta", "gamma"]
            .iter()
            .map(|n| {
                let log = fs::read_to_string(self.dirs.path().join(format!("{n}.log")));
                format!("--- {n} log ---\n{}", log.unwrap_or_default())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `f` until it gives a value; fails with the screen and logs.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Chain) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            for child in &mut self.nodes {
                if let Ok(Some(st)) = child.try_wait() {
                    panic!(
                        "a node exited ({st}) while waiting for {what}\n{}",
                        self.logs()
                    );
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- screen ---\n{}\n{}",
                    self.screen(),
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn through_one_end_of_a_chain_the_ui_sees_and_restores_on_the_far_end() {
    let dirs = tempfile::Builder::new()
        .prefix("tandem-ui-chain-")
        .tempdir()
        .expect("temp dir");
    let mut c = Chain {
        ui: Tmux::new(dirs.path()),
        dirs,
        nodes: Vec::new(),
    };
    let names = ["alpha", "beta", "gamma"];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    for n in names {
        fs::create_dir_all(c.dir(n)).expect("dir");
    }
    fs::write(c.dir("gamma").join("plan.txt"), b"current\n").expect("write");
    let ids: Vec<String> = names
        .iter()
        .map(|n| c.node(&["--dir", &c.dir(n).display().to_string(), "id"]))
        .collect();
    // Every node trusts every other; only alpha–beta and beta–gamma link.
    for (i, n) in names.iter().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                c.node(&["--dir", &c.dir(n).display().to_string(), "trust", id]);
            }
        }
    }
    for (i, n) in names.iter().enumerate() {
        let mut cmd = Command::new(node_bin());
        cmd.arg("--dir")
            .arg(c.dir(n))
            .args(["--listen", &format!("127.0.0.1:{}", ports[i])])
            .args(["--name", n])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(c.dirs.path().join(format!("{n}.log"))).expect("log"));
        if i + 1 < names.len() {
            cmd.args([
                "--peer",
                &format!("{}@127.0.0.1:{}", ids[i + 1], ports[i + 1]),
            ]);
        }
        c.nodes.push(cmd.spawn().expect("cannot start tandem-node"));
    }
    for port in &ports {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        c.wait(&format!("a node listening on {addr}"), READY, |_| {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
    }
    c.wait("plan.txt to reach alpha", READY, |c| {
        fs::read(c.dir("alpha").join("plan.txt"))
            .ok()
            .filter(|b| b == b"current\n")
    });

    let cmd = format!(
        "'{}' --node 127.0.0.1:{} --identity '{}' --name tester 2>'{}'",
        tandem_bin().display(),
        ports[0],
        c.dirs.path().join("identity.key").display(),
        c.dirs.path().join("ui.stderr").display()
    );
    c.ui.start(200, 50, &cmd);
    c.wait("the table with plan.txt", READY, |c| {
        let s = c.screen();
        (s.contains("● alpha") && s.contains(" plan.txt ")).then_some(())
    });

    // The Nodes view lists gamma, reached through beta.
    c.keys(&["3"]);
    c.wait("gamma up in the Nodes view", CHANGE, |c| {
        let s = c.screen();
        if !s.contains("┌ Nodes ·") {
            return None;
        }
        s.lines()
            .find(|l| {
                l.contains(" gamma ") && l.contains(" up ") && l.contains("through other nodes")
            })
            .map(str::to_string)
    });

    // Locked through alpha, then changed on gamma: gamma holds the change,
    // and alpha's table says so.
    c.keys(&["1"]);
    c.keys(&["/"]);
    c.keys(&["-l", "plan.txt"]);
    c.keys(&["Enter", "l"]);
    c.wait("the lock taken", CHANGE, |c| {
        c.screen()
            .contains("locked plan.txt (owner tester)")
            .then_some(())
    });
    c.wait("the lock to reach gamma", CHANGE, |c| {
        let out = Command::new(tandem_bin())
            .args(["--node", &format!("127.0.0.1:{}", ports[2]), "--identity"])
            .arg(c.dirs.path().join("identity.key"))
            .args(["locks", "--json"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .contains("plan.txt")
            .then_some(())
    });
    fs::write(
        c.dir("gamma").join("plan.txt"),
        b"edited on gamma while locked\n",
    )
    .expect("edit");
    c.wait("held 1 on plan.txt's row, through alpha", CHANGE, |c| {
        c.screen()
            .lines()
            .find(|l| l.contains(" plan.txt ") && l.contains("held 1"))
            .map(str::to_string)
    });
    assert_eq!(
        fs::read(c.dir("alpha").join("plan.txt")).unwrap(),
        b"current\n"
    );
    c.keys(&["u"]);
    c.wait(
        "the unlock question (a held change is released)",
        CHANGE,
        |c| c.screen().contains("Are you sure?").then_some(()),
    );
    c.keys(&["y"]);
    c.wait("the released change on alpha", CHANGE, |c| {
        fs::read(c.dir("alpha").join("plan.txt"))
            .ok()
            .filter(|b| b == b"edited on gamma while locked\n")
    });

    // A conflict copy kept on gamma, restored from alpha's UI.
    let kept = c
        .dir("gamma")
        .join(".tandem/conflicts/plan.conflict-20251203-060000-beta.txt");
    fs::create_dir_all(kept.parent().unwrap()).expect("conflicts dir");
    fs::write(&kept, b"the lost version\n").expect("plant a copy");
    c.keys(&["4"]);
    // The list itself, not a feed line naming gamma and plan.txt (the tab
    // switch may not be drawn yet).
    c.wait("gamma's copy in the Conflicts view", CHANGE, |c| {
        let s = c.screen();
        if !s.contains("Conflict copies · 1 kept") {
            return None;
        }
        s.lines()
            .find(|l| l.starts_with("│▶") && l.contains(" gamma ") && l.contains(" plan.txt"))
            .map(str::to_string)
    });
    // Fetched to this machine first: a download through beta; the copy
    // stays kept on gamma.
    let downloads = c.dirs.path().join("downloads");
    c.keys(&["f"]);
    c.wait("the fetch prompt", CHANGE, |c| {
        c.screen().contains("Destination directory:").then_some(())
    });
    c.keys(&["C-u"]);
    c.keys(&["-l", downloads.to_str().expect("a UTF-8 temp path")]);
    c.keys(&["Enter"]);
    c.wait("the copy fetched to this machine", CHANGE, |_| {
        fs::read(downloads.join("plan.conflict-20251203-060000-beta.txt"))
            .ok()
            .filter(|b| b == b"the lost version\n")
    });
    c.wait("the fetch's status line", CHANGE, |c| {
        c.screen()
            .contains(
                "fetched the conflict copy plan.conflict-20251203-060000-beta.txt kept on gamma",
            )
            .then_some(())
    });
    assert!(kept.is_file(), "a fetch leaves the copy where it is kept");
    c.keys(&["R"]);
    c.wait("the restore question", CHANGE, |c| {
        c.screen()
            .contains("Restore plan.txt from beta's version")
            .then_some(())
    });
    c.keys(&["y"]);
    for n in ["alpha", "beta", "gamma"] {
        c.wait(&format!("the restored version on {n}"), CHANGE, |c| {
            fs::read(c.dir(n).join("plan.txt"))
                .ok()
                .filter(|b| b == b"the lost version\n")
        });
    }
    c.wait("the status line", CHANGE, |c| {
        c.screen()
            .contains("restored plan.txt on gamma")
            .then_some(())
    });

    c.keys(&["q"]);
    c.wait("the UI to exit", CHANGE, |c| (!c.ui.alive()).then_some(()));
    let stderr = fs::read_to_string(c.dirs.path().join("ui.stderr")).unwrap_or_default();
    assert!(!stderr.contains("panicked"), "the UI panicked:\n{stderr}");
}
