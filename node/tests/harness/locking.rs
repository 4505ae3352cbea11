//! Clients with their own identity and the lock commands, for tests of
//! locks through the real `tandem` binary (`locks.rs`, `lock_cluster.rs`).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::*;

/// How long a lock, unlock or identity takes to reach the other nodes.
pub const SPREAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A client: a display name and an identity file in a temp dir.
pub struct Who {
    /// Its display name (`--name`).
    pub name: String,
    /// Its identity file (`--identity`).
    pub ident: PathBuf,
}

impl Who {
    pub fn new(dir: &TempDir, name: &str) -> Who {
        Who {
            name: name.to_string(),
            ident: dir.path().join(format!("{name}.toml")),
        }
    }

    pub fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let ident = self.ident.to_str().expect("UTF-8 temp path");
        let mut v = vec!["--identity", ident, "--name", self.name.as_str()];
        v.extend_from_slice(args);
        v
    }

    /// Runs `tandem --node <node> --identity F --name N ARGS...`, as an
    /// admin of that node (the harness's admin approves it first: these
    /// tests are about locks; roles are tested in security.rs).
    pub fn run(&self, node: &Node, args: &[&str]) -> Output {
        approve(node.addr(), self.ident.to_str().expect("UTF-8"), "admin");
        node.tandem(&self.args(args))
    }

    /// The same, expected to succeed; returns stdout.
    pub fn ok(&self, node: &Node, args: &[&str], logs: &[&Node]) -> String {
        let out = self.run(node, args);
        expect_ok(
            &out,
            &format!("{} via {}: tandem {args:?}", self.name, node.name()),
            logs,
        )
    }

    /// The same, expected to fail; returns stderr.
    pub fn refused(&self, node: &Node, args: &[&str], logs: &[&Node]) -> String {
        let out = self.run(node, args);
        expect_refused(
            &out,
            &format!("{} via {}: tandem {args:?}", self.name, node.name()),
            logs,
        )
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn expect_ok(out: &Output, what: &str, logs: &[&Node]) -> String {
    assert!(
        out.status.success(),
        "{}",
        fail_with_logs(
            &format!(
                "{what} failed with {}\nstdout: {}\nstderr: {}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ),
            logs
        )
    );
    text(&out.stdout)
}

pub fn expect_refused(out: &Output, what: &str, logs: &[&Node]) -> String {
    assert!(
        !out.status.success(),
        "{}",
        fail_with_logs(
            &format!(
                "{what} should have been refused but succeeded\nstdout: {}",
                text(&out.stdout)
            ),
            logs
        )
    );
    assert_eq!(out.status.code(), Some(1), "{what}: exit code");
    text(&out.stderr)
}

pub fn json_of(node: &Node, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = tandem(node.addr(), args)?;
    if !out.status.success() {
        return Err(format!("tandem {args:?} failed: {}", text(&out.stderr)));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tandem {args:?}: not JSON: {e}"))
}

/// `tandem locks --json` of `node`.
pub fn locks(node: &Node) -> Vec<Value> {
    json_of(node, &["locks", "--json"]).unwrap_or_else(|e| panic!("{}", node.fail(&e)))
}

/// `tandem held --json` of `node`.
pub fn held(node: &Node) -> Vec<Value> {
    json_of(node, &["held", "--json"]).unwrap_or_else(|e| panic!("{}", node.fail(&e)))
}

/// The (path, owner, owner_id) of each lock, for comparing lock states.
pub fn lock_state(node: &Node) -> Vec<(String, String, String)> {
    locks(node)
        .iter()
        .map(|l| {
            (
                l["path"].as_str().unwrap_or_default().to_string(),
                l["owner"].as_str().unwrap_or_default().to_string(),
                l["owner_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Waits until every node in `nodes` lists exactly `expected` as locks
/// (path, owner name).
pub fn wait_locks(nodes: &[&Node], expected: &[(&str, &str)]) -> Vec<Value> {
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(p, o)| (p.to_string(), o.to_string()))
        .collect();
    let mut last = Vec::new();
    for n in nodes {
        last = wait_until(
            SPREAD_TIMEOUT,
            &format!("locks on {} to be {expected:?}", n.name()),
            nodes,
            || {
                let v = json_of(n, &["locks", "--json"])?;
                let got: Vec<(String, String)> = v
                    .iter()
                    .map(|l| {
                        (
                            l["path"].as_str().unwrap_or_default().to_string(),
                            l["owner"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect();
                if got == want {
                    Ok(v)
                } else {
                    Err(format!("locks: {v:?}"))
                }
            },
        );
    }
    last
}
