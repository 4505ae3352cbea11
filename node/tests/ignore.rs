//! Ignore patterns (issue 16, part 1), through real `tandem-node` processes
//! and the real `tandem` client: what `DIR/.tandemignore` or `--ignore`
//! matches never leaves a node, is not taken from a peer, is not listed,
//! and is picked up once it is no longer ignored (the file changing while
//! the node runs, or `--ignore` dropped across a restart).
//!
//! "Never left" is established causally: after the ignored files, a
//! barrier file is written; once the peer has the barrier, anything the
//! node would have sent before it has had its chance to arrive.

mod harness;

use std::time::Duration;

use harness::*;
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(20);

fn has(node: &Node, rel: &str, data: &[u8]) -> Result<(), String> {
    match std::fs::read(node.path(rel)) {
        Ok(b) if b == data => Ok(()),
        Ok(b) => Err(format!("{rel} on {} holds {} bytes", node.name(), b.len())),
        Err(e) => Err(format!("{rel} on {}: {e}", node.name())),
    }
}

fn wait_has(nodes: &[&Node], on: &Node, rel: &str, data: &[u8]) {
    wait_until(
        scaled(SYNC),
        &format!("{rel} on {}", on.name()),
        nodes,
        || has(on, rel, data),
    );
}

fn ignored_json(node: &Node) -> Value {
    let out = tandem(node.addr(), &["ignored", "--json"]).unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn ignored_paths_stay_put_and_are_picked_up_once_no_longer_ignored() {
    let (mut a, b) = linked_pair(&["--ignore", "*.log"]);
    let nodes = [&a, &b];

    // The ignore file syncs like any file, and is read again when it changes.
    put(a.path(".tandemignore"), "build/\nsecret.txt\n");
    wait_has(&nodes, &b, ".tandemignore", b"build/\nsecret.txt\n");
    put(a.path("build/out.o"), "object");
    put(a.path("build/sub/deep.o"), "deeper");
    put(a.path("secret.txt"), "A's secret");
    put(a.path("app.log"), "A's log");
    put(a.path("keep.txt"), "kept");
    wait_has(&nodes, &b, "keep.txt", b"kept");
    for gone in ["build", "secret.txt", "app.log"] {
        assert!(!b.path(gone).exists(), "{gone} reached B");
    }
    let listed = list_json(a.addr());
    let paths: Vec<&str> = listed.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, [".tandemignore", "keep.txt"], "{listed:?}");

    let v = ignored_json(&a);
    let rows: Vec<(String, bool, String, String)> = v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap().to_string(),
                r["dir"].as_bool().unwrap(),
                r["pattern"].as_str().unwrap().to_string(),
                r["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("app.log".into(), false, "*.log".into(), "--ignore".into()),
            (
                "build".into(),
                true,
                "build/".into(),
                ".tandemignore:1".into()
            ),
            (
                "secret.txt".into(),
                false,
                "secret.txt".into(),
                ".tandemignore:2".into()
            ),
        ],
        "{v}"
    );
    let text = String::from_utf8(tandem(a.addr(), &["ignored"]).unwrap().stdout).unwrap();
    assert!(
        text.contains("build/      build/ (.tandemignore:1)"),
        "{text}"
    );

    // B ignores the file's patterns too, not A's --ignore: its secret
    // stays on B, its log reaches A's disk only once A stops ignoring logs.
    put(b.path("secret.txt"), "B's secret");
    put(b.path("b.log"), "B's log");
    put(b.path("barrier-1.txt"), "1");
    wait_has(&nodes, &a, "barrier-1.txt", b"1");
    has(&a, "secret.txt", b"A's secret").unwrap();
    assert!(!a.path("b.log").exists(), "A took B's log");

    // No longer ignored: A's build output is picked up and synced.
    put(a.path(".tandemignore"), "secret.txt\n");
    wait_has(&nodes, &b, "build/out.o", b"object");
    wait_has(&nodes, &b, "build/sub/deep.o", b"deeper");
    has(&b, "secret.txt", b"B's secret").unwrap();

    // A restarted without --ignore asks B for everything again: B's log,
    // sent while A ignored logs, arrives; A's own log goes to B.
    a.stop();
    a.args_mut().retain(|x| x != "--ignore" && x != "*.log");
    a.restart();
    let nodes = [&a, &b];
    wait_has(&nodes, &a, "b.log", b"B's log");
    wait_has(&nodes, &b, "app.log", b"A's log");
    has(&a, "secret.txt", b"A's secret").unwrap();
    has(&b, "secret.txt", b"B's secret").unwrap();

    // Uploading to an ignored path is refused, and says why.
    let up = tempfile::NamedTempFile::new().unwrap();
    let out = tandem(
        a.addr(),
        &[
            "put",
            up.path().to_str().unwrap(),
            "--as",
            "secret.txt",
            "--force",
        ],
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err
                .contains("secret.txt is ignored here (pattern \"secret.txt\" in .tandemignore:1)"),
        "{err}"
    );
}

/// An ignored folder gets no inotify watch: with the watch limit at 20
/// (for this node alone, in a user namespace of its own), 40 ignored
/// folders and a few others, the node watches everything it syncs and
/// says nothing about a limit.
#[test]
fn ignored_folders_take_no_inotify_watch() {
    if !user_namespaces_work() {
        eprintln!("SKIPPED: `unshare -U -r` is not available here; cannot lower the watch limit");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        put(
            dir.path().join(format!("node_modules/pkg{i}/index.js")),
            "x",
        );
    }
    for i in 0..3 {
        put(dir.path().join(format!("src/m{i}/lib.rs")), "y");
    }
    put(dir.path().join(".tandemignore"), "node_modules/\n");
    let node = Node::builder("A").dir(dir.path()).watch_limit(20).start();
    let v = nodes_json(&node).unwrap();
    let me = v.iter().find(|n| n["name"] == "A").unwrap();
    assert_eq!(me["warnings"], serde_json::json!([]), "{me}");
    assert!(!node.log().contains("watch limit"), "{}", node.log_report());
    // Watched, not rescanned: a change is seen at once.
    put(dir.path().join("src/m1/new.rs"), "z");
    wait_until(scaled(SYNC), "src/m1/new.rs indexed", &[&node], || {
        let l = list_json(node.addr());
        find(&l, "src/m1/new.rs").map(|_| ()).ok_or("not yet")
    });
}

/// A folder deleted on one node but holding files ignored on the other is
/// not brought back: the other keeps it (with only its ignored files),
/// says so, and deletes it once those files go.
#[test]
fn a_deleted_folder_holding_ignored_files_is_kept_and_not_brought_back() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    put(a.path(".tandemignore"), "*.o\n");
    put(a.path("d/a.txt"), "a");
    wait_has(&nodes, &b, "d/a.txt", b"a");
    wait_has(&nodes, &b, ".tandemignore", b"*.o\n");
    put(b.path("d/x.o"), "object");
    std::fs::remove_dir_all(a.path("d")).unwrap();
    wait_until(scaled(SYNC), "d/a.txt gone from B", &nodes, || {
        if b.path("d/a.txt").exists() {
            Err("still there")
        } else {
            Ok(())
        }
    });
    wait_until(scaled(SYNC), "B's warning", &nodes, || {
        let v = nodes_json(&b)?;
        let me = v.iter().find(|n| n["name"] == "B").ok_or("no B")?;
        let w = me["warnings"].to_string();
        if w.contains("cannot be applied") {
            Ok(())
        } else {
            Err(w)
        }
    });
    put(b.path("barrier.txt"), "b");
    wait_has(&nodes, &a, "barrier.txt", b"b");
    assert!(!a.path("d").exists(), "the folder came back to A");
    has(&b, "d/x.o", b"object").unwrap();

    std::fs::remove_file(b.path("d/x.o")).unwrap();
    wait_until(
        scaled(Duration::from_secs(60)),
        "d gone from B",
        &nodes,
        || {
            if b.path("d").exists() {
                Err("still there")
            } else {
                Ok(())
            }
        },
    );
}
