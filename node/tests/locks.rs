//! Locks and client identities (issue 4), tested through the real
//! `tandem-node` and `tandem` binaries on a two-node cluster A <-> B:
//! a locked file is left alone by sync and its changes are held until
//! unlock (then reconciled by the normal rules, a held delete announced);
//! racing lockers through two nodes, exactly one winner; locks survive a
//! restart and belong to an identity, which every node recognises; bad
//! identities, bad targets and a peer that is down are refused and change
//! nothing.
//!
//! Every client runs with `--identity <temp dir>/<name>.toml`, never the
//! user's own identity file.

mod harness;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use harness::locking::*;
use harness::*;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers

/// How long a change takes to travel to the other node.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);

/// Content of `node`'s copy of `rel`, if any.
fn read(node: &Node, rel: &str) -> Option<Vec<u8>> {
    fs::read(node.path(rel)).ok()
}

/// Waits until `rel` has `content` on disk on each node and is listed with
/// its hash.
fn wait_content(nodes: &[&Node], rel: &str, content: &[u8]) {
    let hash = blake3_hex(content);
    for n in nodes {
        wait_until(
            SYNC_TIMEOUT,
            &format!(
                "{rel} = {:?} on {}",
                String::from_utf8_lossy(content),
                n.name()
            ),
            nodes,
            || {
                let disk = read(n, rel);
                if disk.as_deref() != Some(content) {
                    return Err(format!(
                        "on disk: {:?}",
                        disk.map(|d| String::from_utf8_lossy(&d).into_owned())
                    ));
                }
                let list = n.try_list()?;
                match find(&list, rel) {
                    Some(r) if r["hash"] == hash.as_str() => Ok(()),
                    r => Err(format!("listed: {r:?}")),
                }
            },
        );
    }
}

/// Waits until `rel` is gone from disk and from the list on each node.
fn wait_gone(nodes: &[&Node], rel: &str) {
    for n in nodes {
        wait_until(
            SYNC_TIMEOUT,
            &format!("{rel} gone on {}", n.name()),
            nodes,
            || {
                if n.path(rel).exists() {
                    return Err("still on disk".to_string());
                }
                let list = n.try_list()?;
                match find(&list, rel) {
                    None => Ok(()),
                    Some(r) => Err(format!("still listed: {r}")),
                }
            },
        );
    }
}

/// Writes `content` to `rel` on `node`, atomically, with the mtime `mtime`
/// (written next to the directory, then renamed in).
fn write_with_mtime(node: &Node, scratch: &TempDir, rel: &str, content: &[u8], mtime: SystemTime) {
    let tmp = scratch
        .path()
        .join(format!("staging-{}-{}", node.name(), rel.replace('/', "_")));
    fs::write(&tmp, content).expect("write staging file");
    filetime::set_file_mtime(&tmp, filetime::FileTime::from_system_time(mtime)).expect("set mtime");
    fs::rename(&tmp, node.path(rel)).expect("rename into the node's directory");
}

/// A file created on A and synced to B.
fn shared_file(a: &Node, b: &Node, rel: &str, content: &[u8]) {
    put(a.path(rel), content);
    wait_content(&[a, b], rel, content);
}

/// Checks for `window` that `rel` on `node` keeps `content` (disk and list).
fn stays_for(node: &Node, rel: &str, content: &[u8], window: Duration) {
    let hash = blake3_hex(content);
    let start = Instant::now();
    while start.elapsed() < window {
        let disk = read(node, rel);
        assert!(
            disk.as_deref() == Some(content),
            "{}",
            node.fail(&format!(
                "{rel} on {} changed while locked: {:?}",
                node.name(),
                disk.map(|d| String::from_utf8_lossy(&d).into_owned())
            ))
        );
        let own = json_of(node, &["discover", node.name(), "--json"])
            .unwrap_or_else(|e| panic!("{}", node.fail(&e)));
        let row = find(&own, rel).unwrap_or_else(|| panic!("{rel} not on {}", node.name()));
        assert_eq!(
            row["hash"],
            hash.as_str(),
            "{rel} on {} re-indexed",
            node.name()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The text line of `tandem list` for `rel`.
fn list_line(node: &Node, rel: &str) -> String {
    let out = tandem(node.addr(), &["list"]).unwrap_or_else(|e| panic!("{}", node.fail(&e)));
    let stdout = expect_ok(&out, "tandem list", &[node]);
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(rel))
        .unwrap_or_else(|| panic!("{rel} not in `tandem list`:\n{stdout}"))
        .to_string()
}

/// Every file under the node's conflicts folder, with its content.
fn conflicts(node: &Node) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if let Ok(c) = fs::read(&p) {
                out.push((p, c));
            }
        }
    }
    let mut out = Vec::new();
    walk(&node.path(".tandem/conflicts"), &mut out);
    out
}

// ---------------------------------------------------------------------------
// 1. A lock holds remote changes until unlock

#[test]
fn locked_file_is_left_alone_until_unlock() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "plan.md", b"version 1\n");

    let out = alice.ok(&a, &["lock", "--path", "plan.md"], &nodes);
    assert!(
        out.contains("locked plan.md (owner alice, through node A)"),
        "lock output: {out}"
    );
    let l = wait_locks(&nodes, &[("plan.md", "alice")]);
    assert_eq!(l[0]["via"], "A");
    assert!(alice.ident.exists(), "the identity file was not saved");

    // Edit on B: held there, not sent to A.
    put(b.path("plan.md"), "version 2, edited on B while locked\n");
    let h = wait_until(SYNC_TIMEOUT, "B holds its change", &nodes, || {
        let h = held(&b);
        let ok = h.len() == 1
            && h[0]["path"] == "plan.md"
            && h[0]["kind"] == "modify"
            && h[0]["node"] == "B";
        if ok {
            Ok(h)
        } else {
            Err(format!("held on B: {h:?}"))
        }
    });
    assert_eq!(h[0]["size"], 36);
    stays_for(&a, "plan.md", b"version 1\n", Duration::from_millis(1500));
    // `held` is the cluster's: asked through A, it shows B's held change.
    assert_eq!(held(&a), h, "held through A");
    // The merged table: locked, by alice, one change held.
    for n in nodes {
        let line = list_line(n, "plan.md");
        assert!(
            line.contains("locked by alice, 1 held"),
            "list on {}: {line}",
            n.name()
        );
        let row = find(&n.list(), "plan.md").cloned().unwrap();
        assert_eq!(row["locked_by"], "alice", "list --json on {}", n.name());
    }

    // Unlock: the held change goes to A.
    let out = alice.ok(&a, &["unlock", "--path", "plan.md"], &nodes);
    assert!(
        out.contains("unlocked plan.md (was locked by alice)"),
        "unlock: {out}"
    );
    wait_locks(&nodes, &[]);
    wait_content(&nodes, "plan.md", b"version 2, edited on B while locked\n");
    wait_until(SPREAD_TIMEOUT, "no held changes", &nodes, || {
        held(&a).is_empty() && held(&b).is_empty()
    });
    let row = find(&a.list(), "plan.md").cloned().unwrap();
    assert!(row["locked_by"].is_null(), "still locked: {row}");
    assert_eq!(row["nodes"], serde_json::json!(["A", "B"]));
}

/// Issue 14's scenario: the owner locks through A and edits there; someone
/// edits on B (with a newer mtime); the owner edits again; unlock. The
/// owner's edits flow to B while locked (as long as B's own change does
/// not sit in the way), B's change is held, and at unlock the owner's
/// version stays current everywhere while B's edit, not made on top of it,
/// is kept in B's conflicts folder. A later edit on B applies as usual.
#[test]
fn the_owners_version_stays_current_and_a_concurrent_edit_elsewhere_becomes_a_conflict_copy() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "notes.txt", b"original\n");
    alice.ok(&a, &["lock", "--path", "notes.txt"], &nodes);
    wait_locks(&nodes, &[("notes.txt", "alice")]);

    let now = SystemTime::now();
    // The owner's edits flow at once.
    write_with_mtime(
        &a,
        &scratch,
        "notes.txt",
        b"owner 1\n",
        now - Duration::from_secs(30),
    );
    wait_content(&nodes, "notes.txt", b"owner 1\n");
    assert!(held(&a).is_empty(), "the owner's edit is not held");
    // B's edit, newer than anything the owner writes, is held on B.
    write_with_mtime(
        &b,
        &scratch,
        "notes.txt",
        b"B's edit\n",
        now + Duration::from_secs(3600),
    );
    wait_until(SYNC_TIMEOUT, "B holds its edit", &nodes, || {
        let h = held(&a);
        let ok = h.len() == 1 && h[0]["node"] == "B" && h[0]["kind"] == "modify";
        if ok {
            Ok(())
        } else {
            Err(format!("held: {h:?}"))
        }
    });
    write_with_mtime(
        &a,
        &scratch,
        "notes.txt",
        b"owner 2\n",
        now - Duration::from_secs(10),
    );
    b.wait_log("held Modify of notes.txt from A");
    // B's disk keeps B's edit (its index, the owner's first version).
    assert_eq!(read(&b, "notes.txt").unwrap(), b"B's edit\n");

    let out = alice.ok(&a, &["unlock", "--path", "notes.txt"], &nodes);
    assert!(
        out.contains("released: change made on B")
            && out.contains("kept as a conflict copy on B")
            && out.contains("the owner's version stays"),
        "the unlock says what became of B's change:\n{out}"
    );
    wait_content(&nodes, "notes.txt", b"owner 2\n");
    let kept = wait_until(
        SYNC_TIMEOUT,
        "B's edit in B's conflicts folder",
        &nodes,
        || {
            conflicts(&b)
                .into_iter()
                .find(|(_, c)| c == b"B's edit\n")
                .map(|(p, _)| p)
        },
    );
    assert!(
        kept.starts_with(b.path(".tandem/conflicts")),
        "{}",
        kept.display()
    );
    b.wait_log("was not made on top of the owner's latest version");
    assert!(
        !conflicts(&a).iter().any(|(_, c)| c == b"owner 2\n"),
        "the owner's version is not a conflict copy anywhere"
    );
    wait_until(SPREAD_TIMEOUT, "no held changes", &nodes, || {
        held(&a).is_empty() && held(&b).is_empty()
    });
    stays_for(&a, "notes.txt", b"owner 2\n", Duration::from_millis(500));

    // Unlocked, an edit on B made on top of the owner's version flows.
    put(b.path("notes.txt"), "B after unlock\n");
    wait_content(&nodes, "notes.txt", b"B after unlock\n");
}

/// A change held on B that was made on top of the owner's latest version
/// (the owner wrote nothing after it) applies at unlock, without a
/// conflict copy, although its mtime is older.
#[test]
fn an_edit_made_on_top_of_the_owners_latest_version_applies_at_unlock() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "doc.txt", b"original\n");
    alice.ok(&a, &["lock", "--path", "doc.txt"], &nodes);
    wait_locks(&nodes, &[("doc.txt", "alice")]);
    let now = SystemTime::now();
    write_with_mtime(
        &a,
        &scratch,
        "doc.txt",
        b"owner\n",
        now - Duration::from_secs(10),
    );
    wait_content(&nodes, "doc.txt", b"owner\n");
    write_with_mtime(
        &b,
        &scratch,
        "doc.txt",
        b"B on top\n",
        now - Duration::from_secs(20),
    );
    wait_until(SYNC_TIMEOUT, "B holds its edit", &nodes, || {
        held(&b).iter().any(|h| h["node"] == "B")
    });
    stays_for(&a, "doc.txt", b"owner\n", Duration::from_millis(500));
    let out = alice.ok(&a, &["unlock", "--path", "doc.txt"], &nodes);
    assert!(
        out.contains("released: change made on B")
            && out.contains("handed back to the normal rules"),
        "{out}"
    );
    wait_content(&nodes, "doc.txt", b"B on top\n");
    assert!(conflicts(&a).is_empty() && conflicts(&b).is_empty());
}

#[test]
fn held_delete_is_announced_and_applied_on_unlock() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "old.log", b"keep me until unlock\n");

    alice.ok(&a, &["lock", "--path", "old.log"], &nodes);
    wait_locks(&nodes, &[("old.log", "alice")]);

    fs::remove_file(b.path("old.log")).unwrap();
    wait_until(SYNC_TIMEOUT, "B holds the delete", &nodes, || {
        let h = held(&b);
        let ok = h.len() == 1 && h[0]["path"] == "old.log" && h[0]["kind"] == "delete";
        if ok {
            Ok(())
        } else {
            Err(format!("held on B: {h:?}"))
        }
    });
    stays_for(
        &a,
        "old.log",
        b"keep me until unlock\n",
        Duration::from_millis(1000),
    );
    assert!(list_line(&a, "old.log").contains("locked by alice, 1 held"));

    let out = alice.ok(&b, &["unlock", "--path", "old.log"], &nodes);
    assert!(
        out.contains("1 held change(s) released") && out.contains("released: DELETE made on B"),
        "the unlock must announce the released delete:\n{out}"
    );
    b.wait_log("released a held DELETE of old.log made on B");
    wait_gone(&nodes, "old.log");
}

/// The same held delete, unlocked through the other node: whoever unlocks
/// must be told that a delete was released, whichever node they ask.
#[test]
fn held_delete_on_the_other_node_is_announced_on_unlock() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "old.log", b"keep me until unlock\n");
    alice.ok(&a, &["lock", "--path", "old.log"], &nodes);
    wait_locks(&nodes, &[("old.log", "alice")]);
    fs::remove_file(b.path("old.log")).unwrap();
    wait_until(SYNC_TIMEOUT, "B holds the delete", &nodes, || {
        held(&b).iter().any(|h| h["kind"] == "delete")
    });
    let out = alice.ok(&a, &["unlock", "--path", "old.log"], &nodes);
    wait_gone(&nodes, "old.log");
    assert!(
        out.contains("released: DELETE made on B"),
        "unlock through A did not announce the delete released on B:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// 2. Exactly one holder

#[test]
fn racing_lockers_through_two_nodes_have_exactly_one_winner() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    let bob = Who::new(&ids, "bob");
    shared_file(&a, &b, "race.txt", b"contested\n");
    // Register both identities first, so each round is only the race.
    shared_file(&a, &b, "warmup.txt", b"w\n");
    for (w, n) in [(&alice, &a), (&bob, &b)] {
        w.ok(n, &["lock", "--path", "warmup.txt"], &nodes);
        wait_locks(&nodes, &[("warmup.txt", w.name.as_str())]);
        w.ok(n, &["unlock", "--path", "warmup.txt"], &nodes);
        wait_locks(&nodes, &[]);
    }

    let mut wins = [0usize; 2];
    for round in 1..=20 {
        let barrier = Arc::new(Barrier::new(2));
        let racers = [(&alice, &a), (&bob, &b)];
        let outs: Vec<Output> = thread::scope(|s| {
            let handles: Vec<_> = racers
                .iter()
                .map(|(w, n)| {
                    let args = w.args(&["lock", "--path", "race.txt"]);
                    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                    let (addr, barrier) = (n.addr(), barrier.clone());
                    s.spawn(move || {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        barrier.wait();
                        tandem(addr, &args)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .expect("racer thread")
                        .unwrap_or_else(|e| panic!("{}", fail_with_logs(&e, &nodes)))
                })
                .collect()
        });
        let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
        let report = || {
            fail_with_logs(
                &format!(
                    "round {round}: {} winners\nalice via A: {} {} {}\nbob via B: {} {} {}",
                    won.len(),
                    outs[0].status,
                    text(&outs[0].stdout),
                    text(&outs[0].stderr),
                    outs[1].status,
                    text(&outs[1].stdout),
                    text(&outs[1].stderr)
                ),
                &nodes,
            )
        };
        assert!(won.len() == 1, "{}", report());
        let (w, l) = (won[0], 1 - won[0]);
        wins[w] += 1;
        let (winner, winner_node) = racers[w];
        let loser_err = text(&outs[l].stderr);
        assert!(
            loser_err.contains(&format!("locked by {}", winner.name))
                && loser_err.contains(" since "),
            "round {round}: the loser is not told who holds it: {loser_err}\n{}",
            report()
        );
        assert!(
            text(&outs[w].stdout).contains(&format!("owner {}", winner.name)),
            "{}",
            report()
        );
        wait_locks(&nodes, &[("race.txt", winner.name.as_str())]);
        winner.ok(winner_node, &["unlock", "--path", "race.txt"], &nodes);
        wait_locks(&nodes, &[]);
    }
    eprintln!(
        "20 rounds: alice (via A) won {}, bob (via B) won {}",
        wins[0], wins[1]
    );
}

// ---------------------------------------------------------------------------
// 3. Locks survive restarts and belong to identities

#[test]
fn lock_survives_restarts_and_only_its_owner_or_force_unlocks() {
    let (mut a, mut b) = linked_pair(&[]);
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    let bob = Who::new(&ids, "bob");
    shared_file(&a, &b, "kept.txt", b"kept\n");
    shared_file(&a, &b, "forced.txt", b"forced\n");

    alice.ok(&a, &["lock", "--path", "kept.txt"], &[&a, &b]);
    let before = wait_locks(&[&a, &b], &[("kept.txt", "alice")]);

    // Each node alone after a restart, so it cannot have relearned the lock
    // from the other: B after a crash, A (the node the lock was taken
    // through) after a clean stop.
    b.kill9();
    a.stop();
    b.restart();
    let alone = locks(&b);
    assert!(
        alone.len() == 1 && alone[0]["path"] == "kept.txt",
        "{}",
        b.fail(&format!("B forgot the lock over a crash: {alone:?}"))
    );
    b.stop();
    a.restart();
    let alone = locks(&a);
    assert!(
        alone.len() == 1 && alone[0]["path"] == "kept.txt",
        "{}",
        a.fail(&format!("A forgot the lock over a restart: {alone:?}"))
    );
    b.restart();
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    for n in nodes {
        let after = locks(n);
        assert_eq!(
            after.len(),
            1,
            "locks on {} after restarts: {after:?}",
            n.name()
        );
        for k in ["path", "owner", "owner_id", "since", "via"] {
            assert_eq!(
                after[0][k],
                before[0][k],
                "{k} of the lock on {} after restarts",
                n.name()
            );
        }
    }

    // Another identity cannot unlock it, through either node.
    bob.ok(&b, &["lock", "--path", "forced.txt"], &nodes);
    wait_locks(&nodes, &[("forced.txt", "bob"), ("kept.txt", "alice")]);
    for n in nodes {
        let err = bob.refused(n, &["unlock", "--path", "kept.txt"], &nodes);
        assert!(
            err.contains("locked by alice") && err.contains("only the owner can unlock it"),
            "bob unlocking alice's lock via {}: {err}",
            n.name()
        );
    }
    assert_eq!(lock_state(&a).len(), 2);
    // Its owner, reconnecting with its identity file, can.
    let out = alice.ok(&b, &["unlock", "--path", "kept.txt"], &nodes);
    assert!(
        out.contains("unlocked kept.txt (was locked by alice)"),
        "{out}"
    );
    wait_locks(&nodes, &[("forced.txt", "bob")]);

    // --force opens someone else's lock, and the node logs who did it.
    let err = alice.refused(&a, &["unlock", "--path", "forced.txt"], &nodes);
    assert!(err.contains("only the owner"), "{err}");
    let out = alice.ok(&a, &["unlock", "--path", "forced.txt", "--force"], &nodes);
    assert!(
        out.contains("unlocked forced.txt (was locked by bob)"),
        "{out}"
    );
    wait_locks(&nodes, &[]);
    let line = a.wait_log("forced.txt");
    let forced = a
        .log()
        .lines()
        .find(|l| l.contains("forced.txt") && l.contains("FORCED open by alice"))
        .map(str::to_string);
    assert!(
        forced.is_some(),
        "{}",
        a.fail(&format!(
            "A's log does not say alice forced the lock open (first line: {line})"
        ))
    );
    // The other node learns the release from the lock cluster.
    b.wait_log("forced.txt unlocked");
}

#[test]
fn a_role_given_through_one_node_works_through_the_other() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let carol = Who::new(&ids, "carol");
    shared_file(&a, &b, "x.txt", b"x\n");
    let ident = carol.ident.to_str().unwrap().to_string();
    // Approved through A only.
    harness::approve(a.addr(), &ident, "write");
    let id = harness::client_id(a.addr(), &ident);
    let key = fs::read_to_string(&carol.ident).expect("the key file");
    wait_until(SPREAD_TIMEOUT, "carol's role on B", &nodes, || {
        let out = b.tandem(&["identities", "--json"]);
        let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v.iter()
            .any(|r| r["id"] == id.as_str() && r["role"] == "write")
    });
    // B never saw carol connect, but knows her role.
    let out = b.tandem(&carol.args(&["lock", "--path", "x.txt"]));
    expect_ok(&out, "carol locks through B", &nodes);
    let l = wait_locks(&nodes, &[("x.txt", "carol")]);
    assert_eq!(l[0]["via"], "B");
    let out = a.tandem(&carol.args(&["unlock", "--path", "x.txt"]));
    expect_ok(&out, "carol unlocks through A", &nodes);
    wait_locks(&nodes, &[]);
    assert_eq!(
        fs::read_to_string(&carol.ident).unwrap(),
        key,
        "the key is reused, never replaced"
    );
}

// ---------------------------------------------------------------------------
// 4. Refusals

#[test]
fn clients_without_the_role_or_with_a_damaged_key_are_refused_and_change_nothing() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "held.txt", b"h\n");
    shared_file(&a, &b, "free.txt", b"f\n");
    alice.ok(&a, &["lock", "--path", "held.txt"], &nodes);
    wait_locks(&nodes, &[("held.txt", "alice")]);
    let state = (lock_state(&a), lock_state(&b));

    // A client nobody approved: only `whoami` and `register` work.
    let stranger = Who::new(&ids, "stranger");
    for n in nodes {
        let out = n.tandem(&stranger.args(&["lock", "--path", "free.txt"]));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success() && err.contains("not authorized"),
            "{err}"
        );
        assert!(
            err.contains("tandem approve"),
            "the refusal says what to do: {err}"
        );
        let out = n.tandem(&stranger.args(&["list"]));
        assert!(!out.status.success(), "a client without a role cannot list");
    }
    // A write client cannot force anyone's lock open.
    let writer = Who::new(&ids, "writer");
    harness::approve(a.addr(), writer.ident.to_str().unwrap(), "write");
    let out = a.tandem(&writer.args(&["unlock", "--path", "held.txt", "--force"]));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("admin role"), "{err}");
    // A damaged key file: a clear error naming the file.
    let damaged = ids.path().join("damaged.key");
    fs::write(&damaged, "not a key").unwrap();
    let out = a.tandem(&["--identity", damaged.to_str().unwrap(), "list"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("is not a Tandem key file"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&damaged).unwrap(),
        "not a key",
        "left alone"
    );

    assert_eq!((lock_state(&a), lock_state(&b)), state, "nothing changed");
    for n in nodes {
        assert_eq!(fs::read(n.path("free.txt")).unwrap(), b"f\n");
    }
}

#[test]
fn invalid_lock_targets_are_refused() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "one.txt", b"1\n");
    put(a.path("sub/two.txt"), b"2\n");
    wait_content(&nodes, "sub/two.txt", b"2\n");
    let count = a.list().len();
    assert_eq!(count, 2);

    let cases: [(&[&str], &str); 5] = [
        (
            &["lock", "--path", "missing.txt"],
            "missing.txt does not exist",
        ),
        (&["lock", "--path", "sub"], "sub is a directory"),
        (
            &["lock", "99"],
            "there is no file #99: the list has 2 files",
        ),
        (&["lock", "3"], "there is no file #3"),
        (&["lock", "0"], "there is no file #0"),
    ];
    for n in nodes {
        for (args, msg) in cases {
            let err = alice.refused(n, args, &nodes);
            assert!(err.contains(msg), "{args:?} via {}: {err}", n.name());
        }
        let err = alice.refused(n, &["unlock", "--path", "one.txt"], &nodes);
        assert!(err.contains("one.txt is not locked"), "{err}");
        let err = alice.refused(n, &["unlock", "7"], &nodes);
        assert!(err.contains("there is no file #7"), "{err}");
    }
    for n in nodes {
        assert!(locks(n).is_empty(), "locks on {}: {:?}", n.name(), locks(n));
        assert_eq!(n.list().len(), 2);
    }
    // Nothing was left reserved: the refused paths can be locked once valid.
    put(a.path("missing.txt"), b"now here\n");
    wait_content(&nodes, "missing.txt", b"now here\n");
    alice.ok(&b, &["lock", "--path", "missing.txt"], &nodes);
    // By index: `#` of `tandem list` (missing.txt, one.txt, sub/two.txt).
    let out = alice.ok(&a, &["lock", "3"], &nodes);
    assert!(out.contains("locked sub/two.txt"), "{out}");
    wait_locks(
        &nodes,
        &[("missing.txt", "alice"), ("sub/two.txt", "alice")],
    );
    alice.ok(&a, &["unlock", "1"], &nodes);
    alice.ok(&b, &["unlock", "3"], &nodes);
    wait_locks(&nodes, &[]);
}

#[test]
fn lock_is_refused_while_a_configured_peer_is_down() {
    let (a, mut b) = linked_pair(&[]);
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "solo.txt", b"s\n");
    // The lock cluster is formed (a lock is granted) before B goes.
    alice.ok(&a, &["lock", "--path", "solo.txt"], &[&a, &b]);
    alice.ok(&a, &["unlock", "--path", "solo.txt"], &[&a, &b]);

    b.stop();
    wait_until(LINK_TIMEOUT, "A sees B down", &[&a], || {
        nodes_json(&a).map(|v| v.iter().any(|r| r["name"] == "B" && r["up"] == false))
    });
    let t0 = std::time::Instant::now();
    let err = alice.refused(&a, &["lock", "--path", "solo.txt"], &[&a]);
    let took = t0.elapsed();
    // Two members: a majority is both.
    assert!(
        err.contains(
            "lock refused: only 1 of 2 nodes reachable (B down); a majority (2) is needed"
        ),
        "the refusal must say who is down and what is needed: {err}"
    );
    assert!(took < Duration::from_secs(6), "refused after {took:?}");
    assert!(locks(&a).is_empty(), "{:?}", locks(&a));
    let row = find(&a.list(), "solo.txt").cloned().unwrap();
    assert!(row["locked_by"].is_null(), "{row}");

    // When B is back, the same lock is granted (nothing was left reserved).
    b.restart();
    wait_linked(&a, &b);
    alice.ok(&a, &["lock", "--path", "solo.txt"], &[&a, &b]);
    wait_locks(&[&a, &b], &[("solo.txt", "alice")]);
}

#[test]
fn unlock_while_a_peer_is_down_reaches_it_when_it_returns() {
    // Three nodes, so two are a majority while one is down.
    let (aa, ba, ca) = (free_addr(), free_addr(), free_addr());
    let mut nodes = harness::start_all(vec![
        Node::builder("A").listen(aa).peer(ba).peer(ca),
        Node::builder("B").listen(ba).peer(aa).peer(ca),
        Node::builder("C").listen(ca).peer(aa).peer(ba),
    ]);
    let mut b = nodes.remove(1);
    let (a, c) = (nodes.remove(0), nodes.remove(0));
    wait_linked(&a, &b);
    wait_linked(&a, &c);
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "late.txt", b"before\n");
    wait_content(&[&c], "late.txt", b"before\n");
    alice.ok(&a, &["lock", "--path", "late.txt"], &[&a, &b, &c]);
    wait_locks(&[&a, &b, &c], &[("late.txt", "alice")]);
    // A change held on B, then B goes down with it.
    put(b.path("late.txt"), "edited on B, held\n");
    wait_until(SYNC_TIMEOUT, "B holds its change", &[&a, &b], || {
        held(&b)
            .iter()
            .any(|h| h["node"] == "B" && h["kind"] == "modify")
    });
    b.stop();

    let out = alice.ok(&a, &["unlock", "--path", "late.txt"], &[&a, &c]);
    assert!(out.contains("unlocked late.txt"), "{out}");
    wait_locks(&[&a, &c], &[]);
    // Locks keep working with one node of three down.
    alice.ok(&c, &["lock", "--path", "late.txt"], &[&a, &c]);
    wait_locks(&[&a, &c], &[("late.txt", "alice")]);
    alice.ok(&a, &["unlock", "--path", "late.txt"], &[&a, &c]);
    wait_locks(&[&a, &c], &[]);

    // B comes back still holding the lock in its own state, learns of the
    // unlock from the cluster, and releases its held change, which
    // reaches the others.
    b.restart();
    wait_linked(&a, &b);
    wait_locks(&[&a, &b, &c], &[]);
    wait_content(&[&a, &b, &c], "late.txt", b"edited on B, held\n");
    wait_until(SPREAD_TIMEOUT, "no held changes", &[&a, &b, &c], || {
        held(&a).is_empty() && held(&b).is_empty() && held(&c).is_empty()
    });
}

/// A change made to a locked file while its node was down is held when
/// the node comes back (the lock table is known before the first scan),
/// not indexed and sent.
#[test]
fn a_change_made_while_the_node_was_down_is_held_at_start() {
    let (a, mut b) = linked_pair(&[]);
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    shared_file(&a, &b, "offline.txt", b"before\n");
    alice.ok(&a, &["lock", "--path", "offline.txt"], &[&a, &b]);
    wait_locks(&[&a, &b], &[("offline.txt", "alice")]);
    b.stop();
    put(b.path("offline.txt"), "edited on B while it was down\n");
    b.restart();
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    wait_until(
        SYNC_TIMEOUT,
        "B holds the change made while down",
        &nodes,
        || {
            held(&b)
                .iter()
                .any(|h| h["node"] == "B" && h["path"] == "offline.txt")
        },
    );
    stays_for(&a, "offline.txt", b"before\n", Duration::from_millis(1000));
    // Held by B itself: not indexed there (and then held by A on arrival).
    b.wait_log("held local Modify of offline.txt");
    let own: Vec<serde_json::Value> = json_of(&b, &["discover", "B", "--json"]).unwrap();
    let row = find(&own, "offline.txt").unwrap();
    assert_eq!(row["hash"], blake3_hex(b"before\n"), "B indexed it: {row}");
    let out = alice.ok(&a, &["unlock", "--path", "offline.txt"], &nodes);
    assert!(out.contains("released: change made on B"), "{out}");
    wait_content(&nodes, "offline.txt", b"edited on B while it was down\n");
}
