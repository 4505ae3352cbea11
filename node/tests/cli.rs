//! `tandem-node`'s command line as a user meets it (issue 15): host names
//! in `--listen` and `--peer`, the forms it expects on bad input, sizes
//! that need a unit, and logs without colour codes when stderr is a file.
//! Real binaries on temp dirs and free loopback ports; every process
//! started here is killed by its PID when its guard drops.

mod harness;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use harness::*;
use serde_json::Value;
use tempfile::TempDir;

/// How long two nodes may take to link.
const LINK_TIMEOUT: Duration = Duration::from_secs(20);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tandem-node ARGS` run to completion.
fn node_cmd(args: &[&str]) -> Output {
    let mut cmd = Command::new(node_bin());
    cmd.args(args).env("NO_COLOR", "1");
    run_with_timeout(cmd, CLIENT_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// A node process started by hand (the harness always passes an IP
/// address to `--listen`); killed by its PID when dropped.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Proc {
    /// `tandem-node ARGS` with stdout and stderr appended to `log`; the
    /// environment says nothing about colours.
    fn start(args: &[&str], log: &Path) -> Proc {
        let out = fs::File::create(log).expect("create the log");
        let err = out.try_clone().unwrap();
        let child = Command::new(node_bin())
            .args(args)
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start tandem-node");
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        text(&fs::read(&self.log).unwrap_or_default())
    }

    /// Waits until the log contains `needle`.
    fn wait_log(&mut self, needle: &str) -> String {
        wait_until(READY_TIMEOUT, needle, &[], || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the node exited with {st}:\n{}", self.log());
            }
            let log = self.log();
            if log.contains(needle) {
                Ok(log)
            } else {
                Err(format!("log so far:\n{log}"))
            }
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID (if not yet reaped).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tandem --node NODE ARGS` (the node given by name, not a SocketAddr).
fn client(node: &str, args: &[&str]) -> Result<Output, String> {
    let mut cmd = Command::new(client_bin());
    cmd.arg("--node")
        .arg(node)
        .args(args)
        .env_remove("TANDEM_NODE")
        .env("TANDEM_KNOWN_NODES", "/dev/null")
        .env("TANDEM_IDENTITY", harness_identity());
    run_with_timeout(cmd, CLIENT_TIMEOUT)
}

fn id_of(dir: &Path) -> String {
    let out = node_cmd(&["--dir", dir.to_str().unwrap(), "id"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn listen_and_peer_take_host_names_and_say_what_form_they_expect() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path().join("never");
    let dir = d.to_str().unwrap();
    // Bad input: exit 2, the form expected with an example, nothing made.
    for (args, want) in [
        (
            vec!["--listen", "7002"],
            "\"7002\" is not HOST:PORT; give an address and a port, e.g. 127.0.0.1:7001, 0.0.0.0:7001 or localhost:7001",
        ),
        (
            vec!["--listen", "localhost"],
            "\"localhost\" is not HOST:PORT; give an address and a port",
        ),
        (
            vec!["--listen", "no-such-host.invalid:7001"],
            "cannot resolve \"no-such-host.invalid:7001\"",
        ),
        (
            vec!["--peer", "localhost"],
            "\"localhost\" is not HOST:PORT; give a peer as ID@HOST:PORT (HOST a name or an IP address), e.g.",
        ),
        (
            vec!["--peer", "nope@localhost:7002"],
            "give a peer as ID@HOST:PORT, e.g. ABCDEFG-HIJKLMN-OPQRSTU-VWXYZ23@localhost:7002",
        ),
    ] {
        let mut all = vec!["--dir", dir];
        all.extend(&args);
        let out = node_cmd(&all);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(!d.exists(), "{args:?}: bad input created {dir}");
    }

    // Two nodes that know each other as localhost:PORT link, and a client
    // reaches them by that name.
    let (da, db) = (tmp.path().join("a"), tmp.path().join("b"));
    let (ia, ib) = (id_of(&da), id_of(&db));
    let (pa, pb) = (free_addr().port(), free_addr().port());
    let (la, lb) = (format!("localhost:{pa}"), format!("localhost:{pb}"));
    let (peer_a, peer_b) = (format!("{ia}@{la}"), format!("{ib}@{lb}"));
    let mut a = Proc::start(
        &[
            "--dir",
            da.to_str().unwrap(),
            "--name",
            "A",
            "--listen",
            &la,
            "--peer",
            &peer_b,
        ],
        &tmp.path().join("a.log"),
    );
    let mut b = Proc::start(
        &[
            "--dir",
            db.to_str().unwrap(),
            "--name",
            "B",
            "--listen",
            &lb,
            "--peer",
            &peer_a,
        ],
        &tmp.path().join("b.log"),
    );
    let log = a.wait_log("serving");
    assert!(
        log.contains(&format!("on 127.0.0.1:{pa}")),
        "localhost listens on its IPv4 address: {log}"
    );
    b.wait_log("serving");
    wait_until(LINK_TIMEOUT, "A sees B up, asked as localhost", &[], || {
        let out = client(&la, &["nodes", "--json"])?;
        let v: Vec<Value> = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{e}: {}", text(&out.stderr)))?;
        if v.iter().any(|n| n["name"] == "B" && n["up"] == true) {
            Ok(())
        } else {
            Err(format!(
                "{v:?}\nA's log:\n{}\nB's log:\n{}",
                a.log(),
                b.log()
            ))
        }
    });
}

#[test]
fn a_size_without_a_unit_is_refused_with_an_example() {
    let tmp = TempDir::new().unwrap();
    let d = tmp.path().join("never");
    let out = node_cmd(&["--dir", d.to_str().unwrap(), "--cache-size", "64"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "invalid value '64' for '--cache-size <SIZE>': \"64\" has no unit; write e.g. 64MiB (or 64B for bytes, 64KiB, 64GiB)"
        ),
        "{}",
        text(&out.stderr)
    );
    assert!(!d.exists(), "a refused size created the folder");
    let out = node_cmd(&["--dir", d.to_str().unwrap(), "--cache-size", "64MB", "id"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_a_file() {
    let tmp = TempDir::new().unwrap();
    let addr = free_addr().to_string();
    let mut n = Proc::start(
        &[
            "--dir",
            tmp.path().join("d").to_str().unwrap(),
            "--listen",
            &addr,
        ],
        &tmp.path().join("node.log"),
    );
    let log = n.wait_log("serving");
    assert!(log.contains(" INFO "), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log written to a file: {log:?}"
    );
}
