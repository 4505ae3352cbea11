//! One-way mirrors (issue 16, part 4), through real `tandem-node` processes
//! and the real `tandem` client: a send-only node does not take a peer's
//! changes (they show as "differs") until `tandem override` pushes its own
//! version over them; a receive-only node does not send its changes (they
//! show as "differs") until `tandem revert` throws them away, kept as
//! versions, and a peer's newer change beats one it never sent.

mod harness;

use std::fs;
use std::path::Path;
use std::time::Duration;

use harness::*;

const SYNC: Duration = Duration::from_secs(20);

fn read(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok()
}

/// The names of the regular files kept under `node`'s versions folder
/// whose content is `data`.
fn kept_with(node: &Node, data: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk_tree(&node.state_dir().join("versions"), &mut |rel, p, m| {
        if m.is_file() && read(p).as_deref() == Some(data) {
            out.push(rel.to_string());
        }
    });
    out
}

fn run(node: &Node, args: &[&str]) -> (bool, String) {
    let out = node.tandem(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_send_only_node_takes_nothing_until_it_overrides() {
    let (a, b) = linked_pair(&["--mode", "send-only"]);
    let nodes = [&a, &b];
    put(a.path("own.txt"), "A's");
    wait_until(scaled(SYNC), "own.txt on B", &nodes, || {
        read(&b.path("own.txt")).as_deref() == Some("A's")
    });

    put(b.path("own.txt"), "B's edit");
    put(b.path("new.txt"), "B's new file");
    put(b.path("barrier.txt"), "after the others");
    // Declined in the order sent: once the last shows as differing, A has
    // decided on the others too.
    let list = wait_until(scaled(SYNC), "A declines B's changes", &nodes, || {
        let l = a.try_list()?;
        match state_in(&l, "barrier.txt", "A").as_deref() {
            Some("differs") => Ok(l),
            other => Err(format!("barrier.txt on A: {other:?}\n{}", pretty(&l))),
        }
    });
    for p in ["own.txt", "new.txt"] {
        assert_eq!(
            state_in(&list, p, "A").as_deref(),
            Some("differs"),
            "{}",
            pretty(&list)
        );
        assert_eq!(
            state_in(&list, p, "B").as_deref(),
            Some("in sync"),
            "{}",
            pretty(&list)
        );
    }
    assert_eq!(read(&a.path("own.txt")).as_deref(), Some("A's"));
    assert!(!a.path("new.txt").exists() && !a.path("barrier.txt").exists());
    let me = nodes_json(&a).unwrap();
    let me = me.iter().find(|n| n["name"] == "A").unwrap();
    assert!(
        me["warnings"]
            .to_string()
            .contains("send-only: 3 path(s) differ"),
        "{me}"
    );
    // Revert is for receive-only nodes, and says so.
    let (ok, said) = run(&a, &["revert"]);
    assert!(
        !ok && said.contains("A is send-only; `tandem revert` is for a receive-only node"),
        "{said}"
    );

    let (ok, said) = run(&a, &["override"]);
    assert!(ok && said.contains("3 path(s) on A pushed over"), "{said}");
    wait_until(scaled(SYNC), "A's version everywhere", &nodes, || {
        if read(&b.path("own.txt")).as_deref() != Some("A's") {
            return Err(format!("B's own.txt: {:?}", read(&b.path("own.txt"))));
        }
        for p in ["new.txt", "barrier.txt"] {
            if b.path(p).exists() {
                return Err(format!("B still has {p}"));
            }
        }
        // Nothing is lost on B: what A's version replaced is kept there
        // (moved to the versions folder just after the install's swap, so
        // waited for with it).
        for data in ["B's edit", "B's new file", "after the others"] {
            if kept_with(&b, data).is_empty() {
                return Err(format!("B kept no {data:?}"));
            }
        }
        Ok(())
    });
    let list = wait_until(scaled(SYNC), "nothing differs", &nodes, || {
        let l = a.try_list()?;
        if l.iter()
            .any(|r| r["states"].to_string().contains("differs"))
        {
            Err(pretty(&l))
        } else {
            Ok(l)
        }
    });
    assert_eq!(paths(&list), ["own.txt"]);

    // A's own changes still go out.
    put(a.path("later.txt"), "A again");
    wait_until(scaled(SYNC), "later.txt on B", &nodes, || {
        read(&b.path("later.txt")).as_deref() == Some("A again")
    });
}

#[test]
fn a_receive_only_node_sends_nothing_and_reverts() {
    let (a, b) = linked_pair(&["--mode", "receive-only"]);
    let nodes = [&a, &b];
    put(b.path("doc.txt"), "v1");
    wait_until(scaled(SYNC), "doc.txt on A", &nodes, || {
        read(&a.path("doc.txt")).as_deref() == Some("v1")
    });

    put(a.path("doc.txt"), "A's local edit");
    put(a.path("mine.txt"), "made on A");
    let list = wait_until(
        scaled(SYNC),
        "A's changes shown as differing",
        &nodes,
        || {
            let l = b.try_list()?;
            match (
                state_in(&l, "doc.txt", "A").as_deref(),
                state_in(&l, "mine.txt", "A").as_deref(),
            ) {
                (Some("differs"), Some("differs")) => Ok(l),
                other => Err(format!("{other:?}\n{}", pretty(&l))),
            }
        },
    );
    // The cluster's version is B's, not A's unsent edit.
    assert_eq!(
        state_in(&list, "doc.txt", "B").as_deref(),
        Some("in sync"),
        "{}",
        pretty(&list)
    );
    // A round trip B -> A after A indexed its changes; then B still has
    // none of them.
    put(b.path("barrier.txt"), "b");
    wait_until(scaled(SYNC), "barrier.txt on A", &nodes, || {
        a.path("barrier.txt").exists()
    });
    assert_eq!(read(&b.path("doc.txt")).as_deref(), Some("v1"));
    assert!(!b.path("mine.txt").exists(), "A sent mine.txt");
    let me = nodes_json(&a).unwrap();
    let me = me.iter().find(|n| n["name"] == "A").unwrap();
    assert!(
        me["warnings"]
            .to_string()
            .contains("receive-only: 2 change(s) made here are not sent"),
        "{me}"
    );

    let (ok, said) = run(&a, &["revert"]);
    assert!(ok && said.contains("2 path(s) on A thrown away"), "{said}");
    wait_until(
        scaled(SYNC),
        "the cluster's version back on A",
        &nodes,
        || read(&a.path("doc.txt")).as_deref() == Some("v1") && !a.path("mine.txt").exists(),
    );
    for data in ["A's local edit", "made on A"] {
        assert!(!kept_with(&a, data).is_empty(), "A kept no {data:?}");
    }
    wait_until(scaled(SYNC), "nothing differs", &nodes, || {
        let l = b.try_list()?;
        if l.iter()
            .any(|r| r["states"].to_string().contains("differs"))
        {
            Err(pretty(&l))
        } else {
            Ok(())
        }
    });

    // A change made here never wins over one made elsewhere: it is kept
    // as a conflict copy.
    put(a.path("doc.txt"), "A's second edit");
    wait_until(scaled(SYNC), "A's second edit indexed", &nodes, || {
        let l = b.try_list()?;
        match state_in(&l, "doc.txt", "A").as_deref() {
            Some("differs") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    put(b.path("doc.txt"), "v2 from B");
    wait_until(scaled(SYNC), "B's v2 on A", &nodes, || {
        read(&a.path("doc.txt")).as_deref() == Some("v2 from B")
    });
    let mut copies = Vec::new();
    walk_tree(&a.state_dir().join("conflicts"), &mut |rel, p, _| {
        if read(p).as_deref() == Some("A's second edit") {
            copies.push(rel.to_string());
        }
    });
    assert_eq!(copies.len(), 1, "A's conflicts: {copies:?}");
    assert_eq!(read(&b.path("doc.txt")).as_deref(), Some("v2 from B"));

    // Nor over a delete made elsewhere: the edit goes to the conflicts
    // folder (kept as long as the user wants), not to versions.
    put(a.path("doc.txt"), "A's third edit");
    wait_until(scaled(SYNC), "A's third edit indexed", &nodes, || {
        let l = b.try_list()?;
        match state_in(&l, "doc.txt", "A").as_deref() {
            Some("differs") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    fs::remove_file(b.path("doc.txt")).unwrap();
    wait_until(scaled(SYNC), "B's delete on A", &nodes, || {
        !a.path("doc.txt").exists()
    });
    let mut copies = Vec::new();
    walk_tree(&a.state_dir().join("conflicts"), &mut |rel, p, _| {
        if read(p).as_deref() == Some("A's third edit") {
            copies.push(rel.to_string());
        }
    });
    assert_eq!(copies.len(), 1, "A's conflicts: {copies:?}");
}

#[test]
fn a_send_only_node_that_wins_a_conflict_differs_in_nothing() {
    let (mut a, mut b) = linked_pair(&["--mode", "send-only"]);
    put(a.path("f.txt"), "first");
    wait_until(scaled(SYNC), "f.txt on B", &[&a, &b], || {
        read(&b.path("f.txt")).as_deref() == Some("first")
    });
    // Concurrent edits while apart; A's is newer and wins everywhere.
    a.stop();
    b.stop();
    put(b.path("f.txt"), "B's, older");
    put(a.path("f.txt"), "A's, newer");
    let later = std::time::SystemTime::now() + Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(a.path("f.txt"))
        .unwrap()
        .set_modified(later)
        .unwrap();
    a.restart();
    b.restart();
    let nodes = [&a, &b];
    wait_until(scaled(SYNC), "A's version on B", &nodes, || {
        read(&b.path("f.txt")).as_deref() == Some("A's, newer")
    });
    // B settles the conflict with a version of its own of A's content; A
    // takes that (it changes nothing here) instead of showing a difference.
    wait_until(scaled(SYNC), "nothing differs", &nodes, || {
        let l = a.try_list()?;
        match (
            state_in(&l, "f.txt", "A").as_deref(),
            state_in(&l, "f.txt", "B").as_deref(),
        ) {
            (Some("in sync"), Some("in sync")) => Ok(()),
            other => Err(format!("{other:?}\n{}", pretty(&l))),
        }
    });
    let mut kept = Vec::new();
    walk_tree(&b.state_dir().join("conflicts"), &mut |rel, p, _| {
        if read(p).as_deref() == Some("B's, older") {
            kept.push(rel.to_string());
        }
    });
    assert_eq!(kept.len(), 1, "B's conflicts: {kept:?}");
}
