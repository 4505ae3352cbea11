//! A node that hits the inotify watch limit keeps working: it starts (and
//! restarts), says so in `tandem nodes` and the log, and finds changes in
//! the folders it cannot watch by rescanning periodically.
//!
//! The limit is lowered for the node alone: it runs in a user namespace of
//! its own (`unshare -U -r`), whose `/proc/sys/user/max_inotify_watches` is
//! set to 20 before `exec`, so the rest of the machine is not affected.

mod harness;

use std::time::Duration;

use harness::{Node, disk_files, nodes_json, put, scaled, user_namespaces_work, wait_until};

const FOLDERS: usize = 40;

#[test]
fn a_node_over_the_watch_limit_starts_says_so_and_rescans() {
    if !user_namespaces_work() {
        // Not a pass in disguise: say loudly why nothing was checked.
        eprintln!("SKIPPED: `unshare -U -r` is not available here; cannot lower the watch limit");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for i in 0..FOLDERS {
        put(
            dir.path().join(format!("d{i:02}/first.txt")),
            format!("first {i}"),
        );
    }
    let b = Node::start("b");
    let mut a = Node::builder("a")
        .dir(dir.path())
        .peer(b.addr())
        .arg("--verify-every")
        .arg("2s")
        .watch_limit(20)
        .start();
    a.wait_log("inotify watch limit");
    let warned = |a: &Node| {
        nodes_json(a).ok().and_then(|rows| {
            rows.iter()
                .find(|r| r["name"] == "a")
                .and_then(|r| r["warnings"].as_array().cloned())
                .filter(|w| {
                    w.iter()
                        .any(|l| l.as_str().is_some_and(|s| s.contains("not watched")))
                })
        })
    };
    wait_until(
        scaled(Duration::from_secs(10)),
        "a's warning in tandem nodes",
        &[&a],
        || warned(&a),
    );

    let all_on_b = |name: &str| {
        let files = disk_files(b.dir());
        (0..FOLDERS).all(|i| files.contains_key(&format!("d{i:02}/{name}")))
    };
    wait_until(
        scaled(Duration::from_secs(20)),
        "first files on b",
        &[&a, &b],
        || all_on_b("first.txt"),
    );
    // Half of these folders are not watched: only the rescans find them.
    for i in 0..FOLDERS {
        put(a.path(format!("d{i:02}/second.txt")), format!("second {i}"));
    }
    put(a.path("new folder/inside.txt"), "new");
    wait_until(
        scaled(Duration::from_secs(20)),
        "second files on b",
        &[&a, &b],
        || all_on_b("second.txt") && disk_files(b.dir()).contains_key("new folder/inside.txt"),
    );

    // And it starts again with the limit still there.
    a.stop();
    a.restart();
    for i in 0..FOLDERS {
        put(a.path(format!("d{i:02}/third.txt")), format!("third {i}"));
    }
    wait_until(
        scaled(Duration::from_secs(20)),
        "third files on b",
        &[&a, &b],
        || all_on_b("third.txt"),
    );
}
