//! The lock table on Raft (issue 14), through the real binaries: racing
//! clients in a chain of four and a mesh of five (exactly one winner per
//! round, every node agreeing on the holder), a mesh of three that keeps
//! locking with one node down and refuses clearly with two down, the queue
//! of `lock --wait`, kill -9 of the leader and of a follower mid-grant,
//! membership following the trust lists, and held changes seen across a
//! chain.
//!
//! `TANDEM_LOCK_ROUNDS` sets the rounds of the race tests (default 20; the
//! issue's 200 for a long run).

mod harness;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use harness::locking::*;
use harness::*;

fn rounds() -> usize {
    std::env::var("TANDEM_LOCK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Starts one node per `(name, addr, dials)`, makes them all trust each
/// other, and waits until each pair in `links` is linked.
fn cluster(spec: &[(&str, SocketAddr, Vec<SocketAddr>)], links: &[(usize, usize)]) -> Vec<Node> {
    let builders = spec
        .iter()
        .map(|(name, addr, dials)| {
            dials
                .iter()
                .fold(Node::builder(name).listen(*addr), |b, d| b.peer(*d))
        })
        .collect();
    let nodes = start_all(builders);
    trust_each_other(&nodes.iter().collect::<Vec<_>>());
    for &(i, j) in links {
        wait_linked(&nodes[i], &nodes[j]);
    }
    nodes
}

/// A chain A–B–C–D: each node dials only the next one.
fn chain_of_four() -> Vec<Node> {
    let a: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    cluster(
        &[
            ("A", a[0], vec![a[1]]),
            ("B", a[1], vec![a[2]]),
            ("C", a[2], vec![a[3]]),
            ("D", a[3], vec![]),
        ],
        &[(0, 1), (1, 2), (2, 3)],
    )
}

/// `n` nodes, each dialing every node after it.
fn mesh(names: &[&str]) -> Vec<Node> {
    let a: Vec<SocketAddr> = names.iter().map(|_| free_addr()).collect();
    let spec: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, a[i], a[i + 1..].to_vec()))
        .collect();
    let links: Vec<(usize, usize)> = (0..names.len())
        .flat_map(|i| (i + 1..names.len()).map(move |j| (i, j)))
        .collect();
    cluster(&spec, &links)
}

/// Writes `rel` on `nodes[0]` and waits until every node lists it.
fn shared(nodes: &[Node], rel: &str) {
    put(nodes[0].path(rel), "shared\n");
    for n in nodes {
        n.wait_list(&format!("{rel} on {}", n.name()), |l| {
            find(l, rel).is_some_and(|r| in_sync_on(r, n))
        });
    }
}

/// Whether `node` itself holds the newest version of the listed file. The
/// list is the whole cluster's (a file any node has is listed through
/// every node), so that a file is listed says nothing about `node`.
fn in_sync_on(row: &serde_json::Value, node: &Node) -> bool {
    row["states"][node.name()] == "in sync"
}

/// Rounds of clients racing to lock `rel`, each through its own node:
/// exactly one wins each round, the others are told who holds it, and
/// every node agrees on the holder before the winner unlocks.
fn race(nodes: &[Node], through: &[usize], rel: &str) {
    let ids = tempfile::tempdir().unwrap();
    let names = ["alice", "bob", "carol"];
    let clients: Vec<(Who, usize)> = through
        .iter()
        .enumerate()
        .map(|(k, &i)| (Who::new(&ids, names[k]), i))
        .collect();
    for (who, i) in &clients {
        approve(nodes[*i].addr(), who.ident.to_str().unwrap(), "write");
    }
    let all: Vec<&Node> = nodes.iter().collect();
    let rounds = rounds();
    let mut wins = vec![0usize; clients.len()];
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(clients.len()));
        let outs: Vec<_> = thread::scope(|s| {
            let handles: Vec<_> = clients
                .iter()
                .map(|(who, i)| {
                    let barrier = barrier.clone();
                    let node = &nodes[*i];
                    s.spawn(move || {
                        barrier.wait();
                        node.tandem(&who.args(&["lock", "--path", rel]))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..outs.len())
            .filter(|k| outs[*k].status.success())
            .collect();
        let report = || {
            outs.iter()
                .zip(&clients)
                .map(|(o, (w, i))| {
                    format!(
                        "{} via {}: {} / {}",
                        w.name,
                        nodes[*i].name(),
                        text(&o.stdout).trim(),
                        text(&o.stderr).trim()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            winners.len(),
            1,
            "{}",
            fail_with_logs(
                &format!("round {round}: not exactly one winner\n{}", report()),
                &all
            )
        );
        let w = winners[0];
        wins[w] += 1;
        let winner = &clients[w].0.name;
        for (k, o) in outs.iter().enumerate().filter(|(k, _)| *k != w) {
            let err = text(&o.stderr);
            assert!(
                err.contains(&format!("{rel} is locked by {winner}")),
                "round {round}: {} was told: {err}\n{}",
                clients[k].0.name,
                report()
            );
        }
        wait_locks(&all, &[(rel, winner)]);
        let (who, i) = &clients[w];
        who.ok(&nodes[*i], &["unlock", "--path", rel], &all);
        wait_locks(&all, &[]);
    }
    eprintln!("{rounds} rounds, wins per client: {wins:?}");
}

#[test]
fn clients_racing_through_the_ends_of_a_chain_of_four_have_exactly_one_winner() {
    let nodes = chain_of_four();
    shared(&nodes, "race.txt");
    // Through A and D (no direct link: Raft messages are forwarded) and C.
    race(&nodes, &[0, 3, 2], "race.txt");
}

#[test]
fn clients_racing_in_a_mesh_of_five_have_exactly_one_winner() {
    let nodes = mesh(&["A", "B", "C", "D", "E"]);
    shared(&nodes, "race.txt");
    race(&nodes, &[1, 4, 2], "race.txt");
}

#[test]
fn a_mesh_of_three_locks_with_one_node_down_and_refuses_clearly_with_two() {
    let mut nodes = mesh(&["A", "B", "C"]);
    shared(&nodes, "m.txt");
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    {
        let all: Vec<&Node> = nodes.iter().collect();
        alice.ok(&nodes[0], &["lock", "--path", "m.txt"], &all);
        alice.ok(&nodes[1], &["unlock", "--path", "m.txt"], &all);
    }
    // C down: A and B are a majority.
    nodes[2].stop();
    {
        let up = [&nodes[0], &nodes[1]];
        alice.ok(&nodes[0], &["lock", "--path", "m.txt"], &up);
        wait_locks(&up, &[("m.txt", "alice")]);
    }
    // C learns the lock taken while it was down.
    nodes[2].restart();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_locks(&all, &[("m.txt", "alice")]);
    alice.ok(&nodes[2], &["unlock", "--path", "m.txt"], &all);
    wait_locks(&all, &[]);

    // B and C down: refused, saying who is missing, within 5 s.
    nodes[1].stop();
    nodes[2].stop();
    let t0 = Instant::now();
    let err = alice.refused(&nodes[0], &["lock", "--path", "m.txt"], &[&nodes[0]]);
    let took = t0.elapsed();
    assert!(
        err.contains("lock refused: only 1 of 3 nodes reachable (")
            && err.contains("a majority (2) is needed"),
        "{err}"
    );
    let down = err.split(" down)").next().unwrap_or_default();
    assert!(
        down.contains('B') && down.contains('C') && !down.contains("(A"),
        "the refusal names B and C as down: {err}"
    );
    // The client's own start and TLS handshake come on top of the node's 5 s.
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    assert!(locks(&nodes[0]).is_empty());
}

/// A `tandem lock --wait` running in the background, killed if the test
/// ends first.
struct Waiter {
    name: String,
    child: Child,
}

impl Waiter {
    fn start(node: &Node, who: &Who, rel: &str) -> Waiter {
        let mut cmd: Command =
            tandem_command(node.addr(), &who.args(&["lock", "--wait", "--path", rel]));
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        Waiter {
            name: who.name.clone(),
            child: cmd.spawn().expect("cannot start tandem lock --wait"),
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits for it to exit with success; returns stdout.
    fn granted(mut self, nodes: &[&Node]) -> String {
        wait_until(
            SPREAD_TIMEOUT,
            &format!("{} to get the lock", self.name),
            nodes,
            || {
                if self.running() {
                    Err("still waiting".to_string())
                } else {
                    Ok(())
                }
            },
        );
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        expect_ok(&out, &format!("{}: tandem lock --wait", self.name), nodes)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The names queued for `rel` on `node`, in order.
fn waiting(node: &Node, rel: &str) -> Result<Vec<String>, String> {
    let v = json_of(node, &["locks", "--json"])?;
    Ok(v.iter()
        .find(|l| l["path"] == rel)
        .and_then(|l| l["waiting"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|w| w.as_str().unwrap_or_default().to_string())
        .collect())
}

fn wait_queue(nodes: &[&Node], rel: &str, want: &[&str]) {
    for n in nodes {
        wait_until(
            SPREAD_TIMEOUT,
            &format!("queue on {}: {want:?}", n.name()),
            nodes,
            || {
                let q = waiting(n, rel)?;
                if q == want {
                    Ok(())
                } else {
                    Err(format!("queue {q:?}"))
                }
            },
        );
    }
}

#[test]
fn waiters_get_the_lock_in_order_and_one_that_leaves_gives_up_its_place() {
    let nodes = mesh(&["A", "B", "C"]);
    let all: Vec<&Node> = nodes.iter().collect();
    shared(&nodes, "q.txt");
    let ids = tempfile::tempdir().unwrap();
    let who: Vec<Who> = ["alice", "bob", "carol", "dave", "eve"]
        .iter()
        .map(|n| Who::new(&ids, n))
        .collect();
    for (k, w) in who.iter().enumerate() {
        approve(nodes[k % 3].addr(), w.ident.to_str().unwrap(), "write");
    }
    who[0].ok(&nodes[0], &["lock", "--path", "q.txt"], &all);
    // bob, carol and dave queue, each through another node, in this order;
    // eve queues and leaves (Ctrl-C closes her connection).
    let mut queue = Vec::new();
    let mut want: Vec<&str> = Vec::new();
    for k in 1..=3 {
        queue.push(Waiter::start(&nodes[k % 3], &who[k], "q.txt"));
        want.push(&who[k].name);
        wait_queue(&all, "q.txt", &want);
    }
    let eve = Waiter::start(&nodes[1], &who[4], "q.txt");
    wait_queue(&all, "q.txt", &["bob", "carol", "dave", "eve"]);
    drop(eve);
    wait_queue(&all, "q.txt", &["bob", "carol", "dave"]);

    // Each unlock hands the lock to the first waiter, whose command returns.
    let mut holder = 0;
    for (n, mut w) in queue.into_iter().enumerate() {
        let k = n + 1;
        assert!(w.running(), "{} returned before its turn", w.name);
        who[holder].ok(&nodes[holder % 3], &["unlock", "--path", "q.txt"], &all);
        let out = w.granted(&all);
        assert!(
            out.contains(&format!("locked q.txt (owner {}", who[k].name)),
            "{out}"
        );
        wait_locks(&all, &[("q.txt", &who[k].name)]);
        holder = k;
    }
    who[holder].ok(&nodes[holder % 3], &["unlock", "--path", "q.txt"], &all);
    wait_locks(&all, &[]);
}

/// Whether a refused lock or unlock said something a client may get while
/// a node dies: someone else holds it, no majority, no leader yet, or an
/// honest "may or may not".
fn allowed_refusal(err: &str) -> bool {
    err.contains("is locked by")
        || err.contains("lock refused: only")
        || err.contains("may or may not have changed")
        || err.contains("lock service unavailable")
}

/// Runs `who`'s `args` through `node` until it succeeds (a refusal must be
/// one a client may get while a node dies), within the spread timeout.
fn until_ok(who: &Who, node: &Node, args: &[&str], logs: &[&Node]) {
    wait_until(
        SPREAD_TIMEOUT,
        &format!("{} {args:?} via {}", who.name, node.name()),
        logs,
        || {
            let out = node.tandem(&who.args(args));
            let err = text(&out.stderr);
            if out.status.success() || err.contains("is not locked") {
                return Ok(());
            }
            assert!(allowed_refusal(&err), "{} {args:?}: {err}", who.name);
            Err(err)
        },
    );
}

/// kill -9 of the lock cluster's leader while two clients race for a lock
/// through the other two nodes, then of a follower: never two winners,
/// every answer definite or an honest "unknown, retry", the survivors
/// agree, and a restarted node learns the table.
#[test]
fn killing_the_leader_or_a_follower_mid_grant_never_grants_twice() {
    let mut nodes = mesh(&["A", "B", "C"]);
    shared(&nodes, "k.txt");
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    let bob = Who::new(&ids, "bob");
    // The node that formed the cluster leads it until something happens.
    let all: Vec<&Node> = nodes.iter().collect();
    let l = wait_until(
        SPREAD_TIMEOUT,
        "a node to form the lock cluster",
        &all,
        || {
            nodes
                .iter()
                .position(|n| n.log().contains("lock cluster: formed"))
                .ok_or("not formed yet")
        },
    );
    let (x, y) = ((l + 1) % 3, (l + 2) % 3);
    approve(nodes[x].addr(), alice.ident.to_str().unwrap(), "admin");
    approve(nodes[y].addr(), bob.ident.to_str().unwrap(), "admin");

    for victim in [l, y] {
        // Free, then a race through the two other nodes while `victim` dies.
        let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
        {
            let logs: Vec<&Node> = nodes.iter().collect();
            until_ok(&alice, &nodes[x], &["unlock", "--path", "k.txt"], &logs);
            wait_locks(&logs, &[]);
        }
        let racers = [(&alice, x), (&bob, if victim == y { l } else { y })];
        let barrier = Arc::new(Barrier::new(3));
        let outs: Vec<std::process::Output> = thread::scope(|s| {
            let handles: Vec<_> = racers
                .iter()
                .map(|(who, i)| {
                    let (barrier, node) = (barrier.clone(), &nodes[*i]);
                    s.spawn(move || {
                        barrier.wait();
                        node.tandem(&who.args(&["lock", "--path", "k.txt"]))
                    })
                })
                .collect();
            // The victim dies while the two requests are on their way.
            barrier.wait();
            nodes[victim].kill9_shared();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let survivors: Vec<&Node> = live.iter().map(|i| &nodes[*i]).collect();
        let winners: Vec<&str> = outs_winners(&outs, &racers);
        for (o, (who, i)) in outs.iter().zip(&racers) {
            eprintln!(
                "{} via {} while {} died: {}{}",
                who.name,
                nodes[*i].name(),
                nodes[victim].name(),
                text(&o.stdout).trim(),
                text(&o.stderr).trim()
            );
        }
        assert!(winners.len() <= 1, "two winners: {winners:?}");
        for (o, (who, _)) in outs.iter().zip(&racers) {
            let err = text(&o.stderr);
            assert!(
                o.status.success() || allowed_refusal(&err),
                "{}: {err}",
                who.name
            );
        }
        // Whoever holds it now, the survivors agree; alice ends up with it.
        let holder = wait_until(SPREAD_TIMEOUT, "the survivors agree", &survivors, || {
            let a = lock_state(survivors[0]);
            let b = lock_state(survivors[1]);
            if a == b {
                Ok(a)
            } else {
                Err(format!("{a:?} vs {b:?}"))
            }
        });
        if let Some(w) = winners.first() {
            assert!(
                holder.iter().any(|(p, o, _)| p == "k.txt" && o == w),
                "{w} was told it won, the cluster says {holder:?}"
            );
        }
        if holder.iter().any(|(_, o, _)| o == "bob") {
            let by = racers[1].1;
            until_ok(&bob, &nodes[by], &["unlock", "--path", "k.txt"], &survivors);
        }
        until_ok(&alice, &nodes[x], &["lock", "--path", "k.txt"], &survivors);
        wait_locks(&survivors, &[("k.txt", "alice")]);

        // The node comes back and learns the table.
        nodes[victim].restart();
        let all: Vec<&Node> = nodes.iter().collect();
        wait_locks(&all, &[("k.txt", "alice")]);
    }
}

fn outs_winners<'a>(outs: &[std::process::Output], racers: &[(&'a Who, usize)]) -> Vec<&'a str> {
    outs.iter()
        .zip(racers)
        .filter(|(o, _)| o.status.success())
        .map(|(_, (w, _))| w.name.as_str())
        .collect()
}

/// A change held on D, at the far end of a chain A–B–C–D, is visible
/// through A, in `tandem held` and in the merged table (both ask every
/// node, through the others).
#[test]
fn a_change_held_at_the_end_of_a_chain_is_seen_through_the_other_end() {
    let nodes = chain_of_four();
    let all: Vec<&Node> = nodes.iter().collect();
    shared(&nodes, "far.txt");
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    alice.ok(&nodes[0], &["lock", "--path", "far.txt"], &all);
    wait_locks(&all, &[("far.txt", "alice")]);
    put(nodes[3].path("far.txt"), "edited on D\n");
    let h = wait_until(
        SPREAD_TIMEOUT,
        "D's change held, seen through A",
        &all,
        || {
            let h = held(&nodes[0]);
            if h.iter().any(|c| c["node"] == "D" && c["path"] == "far.txt") {
                Ok(h)
            } else {
                Err(format!("held through A: {h:?}"))
            }
        },
    );
    assert_eq!(h.len(), 1, "{h:?}");
    // The merged table through A has D's view too: held count, replicas.
    let row = find(&nodes[0].list(), "far.txt").cloned().unwrap();
    assert_eq!(row["held"], 1, "{row}");
    assert_eq!(row["locked_by"], "alice", "{row}");
    assert_eq!(
        row["nodes"],
        serde_json::json!(["A", "B", "C", "D"]),
        "{row}"
    );
    let out = alice.ok(&nodes[0], &["unlock", "--path", "far.txt"], &all);
    assert!(out.contains("released: change made on D"), "{out}");
    for n in &nodes {
        n.wait_list(&format!("D's edit on {}", n.name()), |l| {
            find(l, "far.txt").is_some_and(|r| r["size"] == 12 && in_sync_on(r, n))
        });
    }
}

/// `tandem-node untrust ID` on a node while it runs.
fn untrust(node: &Node, id: &str) {
    let out = Command::new(node_bin())
        .arg("--dir")
        .arg(node.dir())
        .arg("--state-dir")
        .arg(node.state_dir())
        .arg("untrust")
        .arg(id)
        .output()
        .expect("tandem-node untrust");
    assert!(out.status.success(), "untrust: {}", text(&out.stderr));
}

/// Membership follows the trust lists, by commands: a node trusted by all
/// is added (and learns the table), a node gone for good and untrusted
/// everywhere is removed, so it no longer counts towards a majority.
#[test]
fn a_trusted_node_joins_the_lock_cluster_and_an_untrusted_one_leaves_it() {
    let mut nodes = mesh(&["A", "B", "C"]);
    shared(&nodes, "m.txt");
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    {
        let all: Vec<&Node> = nodes.iter().collect();
        alice.ok(&nodes[0], &["lock", "--path", "m.txt"], &all);
    }
    // D dials A only; everyone trusts everyone.
    nodes.push(Node::builder("D").peer(nodes[0].addr()).start());
    let all: Vec<&Node> = nodes.iter().collect();
    trust_each_other(&all);
    wait_linked(&nodes[0], &nodes[3]);
    wait_until(SPREAD_TIMEOUT, "D added to the lock cluster", &all, || {
        all.iter()
            .any(|n| n.log().contains("lock cluster: D added"))
            .then_some(())
            .ok_or("not yet")
    });
    wait_locks(&all, &[("m.txt", "alice")]);

    // C gone for good.
    let c_id = nodes[2].id().expect("C's id").to_string();
    nodes[2].stop();
    for i in [0, 1, 3] {
        untrust(&nodes[i], &c_id);
    }
    let live = [&nodes[0], &nodes[1], &nodes[3]];
    wait_until(
        SPREAD_TIMEOUT,
        "C removed from the lock cluster",
        &live,
        || {
            live.iter()
                .any(|n| n.log().contains("lock cluster: C removed"))
                .then_some(())
                .ok_or("not yet")
        },
    );
    // A, B and D are the members now: with B and D down, A is 1 of 3.
    nodes[1].stop();
    nodes[3].stop();
    let err = alice.refused(&nodes[0], &["unlock", "--path", "m.txt"], &[&nodes[0]]);
    assert!(
        err.contains("only 1 of 3 nodes reachable (") && !err.contains('C'),
        "C must no longer count: {err}"
    );
}

/// A node that trusts no other node forms a lock cluster of its own only
/// when a lock is asked (so a node being set up never forms one that could
/// not merge with its peers'), and then locks alone.
#[test]
fn a_node_alone_forms_its_cluster_when_a_lock_is_asked() {
    let n = Node::start("solo");
    put(n.path("s.txt"), "s\n");
    n.wait_list("s.txt", |l| find(l, "s.txt").is_some());
    assert!(
        !n.log().contains("lock cluster: formed"),
        "formed before any lock was asked"
    );
    let ids = tempfile::tempdir().unwrap();
    let alice = Who::new(&ids, "alice");
    alice.ok(&n, &["lock", "--path", "s.txt"], &[&n]);
    wait_locks(&[&n], &[("s.txt", "alice")]);
    n.wait_log("lock cluster: formed with solo");
    alice.ok(&n, &["unlock", "--path", "s.txt"], &[&n]);
}
