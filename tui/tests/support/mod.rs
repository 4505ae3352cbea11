//! What the tmux tests share: the `tandem-node` binary, built when stale.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tui/ has a parent")
        .to_path_buf()
}

fn newest_mtime(path: &Path, newest: &mut Option<std::time::SystemTime>) {
    let Ok(meta) = fs::metadata(path) else { return };
    if meta.is_dir() {
        for e in fs::read_dir(path).into_iter().flatten().flatten() {
            newest_mtime(&e.path(), newest);
        }
    } else if let Ok(m) = meta.modified() {
        *newest = Some(newest.map_or(m, |n| n.max(m)));
    }
}

/// `tandem-node`, next to `tandem`; built (same profile) when missing or
/// older than its sources, since `cargo test -p tandem-tui` does not build
/// other packages' binaries.
pub fn node_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_tandem")).with_file_name("tandem-node");
    let built = fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let mut newest = None;
    for p in ["node/src", "node/Cargo.toml", "common/src", "Cargo.lock"] {
        newest_mtime(&workspace_root().join(p), &mut newest);
    }
    if built.is_none() || newest > built {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root()).args([
            "build",
            "-p",
            "tandem-node",
            "--bin",
            "tandem-node",
        ]);
        if bin
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "release")
        {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cannot run cargo to build tandem-node");
        assert!(st.success(), "building tandem-node failed: {st}");
    }
    bin
}

/// A private tmux server (its socket in the test's temp dir) running the
/// UI in a session named `ui`; dropping it kills the server.
pub struct Tmux {
    sock: PathBuf,
    started: bool,
}

impl Tmux {
    /// A server whose socket will live (and go) with `dir`.
    pub fn new(dir: &Path) -> Tmux {
        Tmux {
            sock: dir.join("tmux.sock"),
            started: false,
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("/usr/bin/tmux");
        c.arg("-S")
            .arg(&self.sock)
            .args(["-f", "/dev/null"])
            .env_remove("TMUX");
        c
    }

    /// Runs the shell command `cmd` in a detached `width`×`height` session.
    pub fn start(&mut self, width: u16, height: u16, cmd: &str) {
        let st = self
            .command()
            .args(["new-session", "-d", "-s", "ui", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(cmd)
            .status()
            .expect("cannot run tmux");
        assert!(st.success(), "tmux new-session failed");
        self.started = true;
    }

    /// What the session's screen shows now.
    pub fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "ui"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` (tmux `send-keys` arguments).
    pub fn keys(&self, keys: &[&str]) {
        let st = self
            .command()
            .args(["send-keys", "-t", "ui"])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(st.success());
    }

    /// Whether the session (the UI) still runs.
    pub fn alive(&self) -> bool {
        self.command()
            .args(["has-session", "-t", "ui"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.started {
            let _ = self
                .command()
                .arg("kill-server")
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
