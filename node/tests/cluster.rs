//! The cluster as clients see it (issue 5), tested through the real
//! `tandem-node` and `tandem` binaries on a two-node cluster A <-> B: the
//! merged table, `discover`, `nodes`, `ping`, `clients`, the live feed,
//! `fetch` (missing paths, a stale cache, a file rewritten meanwhile),
//! `cache` (and the `largest-first` policy's capacity), `put`, the
//! Prometheus endpoint, and 50 clients at once while sync runs.
//!
//! Clients that need an identity run with `--identity <temp dir>/<name>.toml`.

mod harness;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use harness::*;
use serde_json::Value;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Helpers

/// How long two nodes may take to link up (and to re-link after a restart).
/// How long a change takes to travel to the other node.
const SYNC_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an event takes to reach a feed.
const FEED_TIMEOUT: Duration = Duration::from_secs(15);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `tandem ARGS` against `node`; stdout if it succeeded, else why not.
fn try_run(node: &Node, args: &[&str]) -> Result<String, String> {
    let out = tandem(node.addr(), args)?;
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "tandem {args:?} via {} exited with {}: {}",
            node.name(),
            out.status,
            text(&out.stderr)
        ))
    }
}

/// `tandem ARGS` against `node`, expected to succeed; stdout.
fn run_ok(node: &Node, args: &[&str], logs: &[&Node]) -> String {
    try_run(node, args).unwrap_or_else(|e| panic!("{}", fail_with_logs(&e, logs)))
}

/// `tandem ARGS` against `node`, expected to fail with exit code 1.
fn run_refused(node: &Node, args: &[&str], logs: &[&Node]) -> Output {
    let out = node.tandem(args);
    assert!(
        out.status.code() == Some(1),
        "{}",
        fail_with_logs(
            &format!(
                "tandem {args:?} via {} should fail with exit code 1, got {}\nstdout: {}\nstderr: {}",
                node.name(),
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ),
            logs
        )
    );
    out
}

fn try_json<T: serde::de::DeserializeOwned>(node: &Node, args: &[&str]) -> Result<T, String> {
    let out = try_run(node, args)?;
    serde_json::from_str(&out).map_err(|e| format!("tandem {args:?}: not JSON ({e}): {out}"))
}

fn json<T: serde::de::DeserializeOwned>(node: &Node, args: &[&str]) -> T {
    try_json(node, args).unwrap_or_else(|e| panic!("{}", node.fail(&e)))
}

/// Waits until `rel` has `content` on disk on each node and is listed by
/// each node with its hash, held by both.
fn wait_content(nodes: &[&Node], rel: &str, content: &[u8]) {
    let hash = blake3_hex(content);
    for n in nodes {
        wait_until(
            SYNC_TIMEOUT,
            &format!("{rel} ({} bytes) on {}", content.len(), n.name()),
            nodes,
            || {
                let disk = fs::read(n.path(rel)).ok();
                if disk.as_deref() != Some(content) {
                    return Err(format!("on disk: {:?} bytes", disk.map(|d| d.len())));
                }
                let list = n.try_list()?;
                match find(&list, rel) {
                    Some(r)
                        if r["hash"] == hash.as_str()
                            && r["nodes"].as_array().map(Vec::len) == Some(nodes.len()) =>
                    {
                        Ok(())
                    }
                    r => Err(format!("listed: {r:?}")),
                }
            },
        );
    }
}

/// A `tandem feed --json` process, killed by PID when dropped.
struct Feed {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Feed {
    fn start(addr: std::net::SocketAddr) -> Feed {
        let mut child = tandem_command(addr, &["feed", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start tandem feed");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (l, e) = (lines.clone(), stderr.clone());
        let readers = vec![
            thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    l.lock().unwrap().push(line);
                }
            }),
            thread::spawn(move || {
                let mut r = BufReader::new(err);
                let mut buf = String::new();
                while let Ok(n) = r.read_line(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    e.lock().unwrap().push_str(&buf);
                    buf.clear();
                }
            }),
        ];
        Feed {
            child,
            lines,
            stderr,
            readers,
        }
    }

    /// The events printed so far, parsed (every line must be JSON).
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("feed printed a line that is not JSON ({e}): {l}"))
            })
            .collect()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for an event (after the first `skip`) that `pred` accepts.
    fn wait_event(
        &mut self,
        what: &str,
        nodes: &[&Node],
        skip: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(FEED_TIMEOUT, what, nodes, || {
            if !self.running() {
                return Err(format!("the feed exited; stderr: {}", self.stderr()));
            }
            let ev = self.events();
            ev.iter()
                .skip(skip)
                .find(|e| pred(e))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "feed so far: {}\nfeed stderr: {}",
                        ev.iter()
                            .map(Value::to_string)
                            .collect::<Vec<_>>()
                            .join("\n"),
                        self.stderr()
                    )
                })
        })
    }

    /// Waits until the feed prints events of `node` (from a run other than
    /// `not_epoch`), i.e. it is subscribed: each `tandem list` run meanwhile
    /// makes the node emit client connected/disconnected events.
    fn wait_subscribed(&mut self, node: &Node, not_epoch: Option<u64>) {
        wait_until(FEED_TIMEOUT, "the feed subscribed", &[node], || {
            if !self.running() {
                return Err(format!("the feed exited; stderr: {}", self.stderr()));
            }
            let subscribed = self
                .events()
                .iter()
                .any(|e| e["epoch"].as_u64() != not_epoch && e["node"] == node.name());
            if subscribed {
                return Ok(());
            }
            node.try_list()?;
            Err(format!("no event yet; feed stderr: {}", self.stderr()))
        });
    }

    /// Kills the process (by PID) and reaps it.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An identity file in `dir` for the client `name`, and that name.
fn ident(dir: &TempDir, name: &str) -> (PathBuf, String) {
    (dir.path().join(format!("{name}.toml")), name.to_string())
}

/// `args` run as the client whose identity is in `id_file`, called `name`.
fn as_client<'a>(id_file: &'a str, name: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--identity", id_file, "--name", name];
    v.extend_from_slice(args);
    v
}

// ---------------------------------------------------------------------------
// 1. Tables: list, discover, nodes, ping, clients

#[test]
fn list_discover_nodes_ping_and_clients() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    put(a.path("from-a.txt"), "made on A\n");
    put(b.path("dir/from-b.txt"), "made on B, longer\n");
    wait_content(&nodes, "from-a.txt", b"made on A\n");
    wait_content(&nodes, "dir/from-b.txt", b"made on B, longer\n");

    // The merged table: same through either node, both nodes hold each file.
    let la = a.list();
    let lb = b.list();
    assert_eq!(la, lb, "A and B give different tables");
    assert_eq!(paths(&la), ["dir/from-b.txt", "from-a.txt"]);
    for r in &la {
        assert_eq!(r["nodes"], serde_json::json!(["A", "B"]), "{r}");
        assert!(r["locked_by"].is_null());
    }
    assert_eq!(la[0]["index"], 1);
    assert_eq!(la[1]["index"], 2);
    diff_list_disk(&la, a.dir()).unwrap_or_else(|e| panic!("{}", a.fail(&e)));
    let t = run_ok(&a, &["list"], &nodes);
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].contains("NAME") && lines[0].contains("NODES"),
        "{t}"
    );
    assert!(
        lines[1].starts_with("1  dir/from-b.txt") && lines[1].contains("A,B"),
        "{t}"
    );
    assert!(
        lines[2].starts_with("2  from-a.txt") && lines[2].contains("A,B"),
        "{t}"
    );

    // discover: each node's own files, asked through either node.
    for via in nodes {
        for of in nodes {
            let d: Vec<Value> = json(via, &["discover", of.name(), "--json"]);
            diff_list_disk(&d, of.dir()).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    fail_with_logs(
                        &format!("discover {} via {}: {e}", of.name(), via.name()),
                        &nodes
                    )
                )
            });
            for r in &d {
                assert_eq!(
                    r["nodes"],
                    serde_json::json!([of.name()]),
                    "discover {}: {r}",
                    of.name()
                );
            }
        }
    }
    // The text form.
    let t = run_ok(&a, &["discover", "B"], &nodes);
    assert!(
        t.contains("dir/from-b.txt") && t.contains("from-a.txt"),
        "{t}"
    );
    let out = run_refused(&a, &["discover", "C"], &nodes);
    assert!(
        text(&out.stderr).contains("no node named \"C\" in the cluster"),
        "{}",
        text(&out.stderr)
    );

    // nodes: both up, with RTT and clock offset, file counts.
    for via in nodes {
        let v: Vec<Value> = json(via, &["nodes", "--json"]);
        assert_eq!(v.len(), 2, "nodes via {}: {v:?}", via.name());
        for n in nodes {
            let r = v
                .iter()
                .find(|r| r["name"] == n.name())
                .unwrap_or_else(|| panic!("{} not in nodes via {}: {v:?}", n.name(), via.name()));
            assert_eq!(r["up"], true, "{r}");
            assert_eq!(r["id"].as_str(), n.id(), "each node's proven id: {r}");
            assert_eq!(r["files"], 2, "{r}");
            assert_eq!(r["bytes"], 10 + 18, "{r}");
            let off = r["clock_offset_ms"]
                .as_i64()
                .unwrap_or_else(|| panic!("no clock offset: {r}"));
            assert!(off.abs() < 1000, "same machine, same clock: {r}");
            assert!(r["rss"].as_u64().unwrap() > 0, "{r}");
            assert!(
                r["cpu_percent"].is_number() && r["uptime_s"].is_number(),
                "{r}"
            );
            if n.name() != via.name() {
                let rtt = r["rtt_ms"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no RTT: {r}"));
                assert!(rtt > 0.0 && rtt < 5000.0, "{r}");
                assert_eq!(r["addr"], n.addr().to_string(), "{r}");
            }
        }
    }
    let t = run_ok(&a, &["nodes"], &nodes);
    assert!(t.lines().filter(|l| l.contains(" up ")).count() == 2, "{t}");
    for n in nodes {
        let id = n.id().expect("the harness knows each node's id");
        assert!(t.contains(id), "`tandem nodes` shows {id}: {t}");
    }

    // ping.
    let t = run_ok(&a, &["ping", "B"], &nodes);
    // The shared RTT format: `640 µs` under a millisecond, `1.3 ms` above.
    let rtt = t.trim().strip_prefix("B: round trip ");
    let ms: f64 = rtt
        .and_then(|s| s.strip_suffix(" ms"))
        .and_then(|s| s.parse().ok())
        .or_else(|| {
            rtt.and_then(|s| s.strip_suffix(" µs"))
                .and_then(|s| s.parse::<u64>().ok())
                .map(|us| us as f64 / 1000.0)
        })
        .unwrap_or_else(|| panic!("ping output: {t}"));
    assert!(ms > 0.0 && ms < 5000.0, "{t}");
    let t = run_ok(&b, &["ping", "A"], &nodes);
    assert!(t.starts_with("A: round trip "), "{t}");
    let out = run_refused(&a, &["ping", "nobody"], &nodes);
    assert!(
        text(&out.stderr).contains("no node named \"nobody\" in the cluster; its nodes are A, B"),
        "{}",
        text(&out.stderr)
    );

    // clients: a feed connection and the asking connection itself.
    let feed = Feed::start(a.addr());
    let v = wait_until(FEED_TIMEOUT, "two clients on A", &nodes, || {
        let v: Vec<Value> = try_json(&a, &["clients", "--json"])?;
        if v.len() >= 2 {
            Ok(v)
        } else {
            Err(format!("clients: {v:?}"))
        }
    });
    for c in &v {
        assert!(c["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{c}");
        // Every client is known by the id of its key.
        assert!(c["id"].as_str().is_some_and(|i| i.len() == 31), "{c}");
        assert!(c["since"].as_str().is_some_and(|s| s.ends_with('Z')), "{c}");
    }
    drop(feed);
    // The feed's connection goes away.
    wait_until(FEED_TIMEOUT, "the feed's connection gone", &nodes, || {
        let v: Vec<Value> = try_json(&a, &["clients", "--json"])?;
        if v.len() == 1 {
            Ok(())
        } else {
            Err(format!("clients: {v:?}"))
        }
    });
}

/// `--name` is the display name of the client (issue 4: default `user@host`,
/// `--name` to change), so the node should list the connection under it.
#[test]
fn clients_lists_the_connection_under_its_name() {
    let a = Node::start("A");
    let v: Vec<Value> = json(&a, &["--name", "probe-7", "clients", "--json"]);
    assert!(
        v.iter().any(|c| c["name"] == "probe-7"),
        "{}",
        a.fail(&format!(
            "`tandem --name probe-7 clients` is not listed as probe-7: {v:?}"
        ))
    );
}

// ---------------------------------------------------------------------------
// 2. The live feed

#[test]
fn feed_reports_transfers_locks_and_survives_a_restart() {
    let (mut a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let (id_file, name) = ident(&ids, "alice");
    let idf = id_file.to_str().unwrap();
    harness::approve(a.addr(), idf, "write");
    let mut feed = Feed::start(a.addr());
    feed.wait_subscribed(&a, None);

    put(b.path("news.txt"), "fresh from B\n");
    let e = feed.wait_event("news.txt transferred B -> A", &nodes, 0, |e| {
        e["kind"] == "transferred" && e["path"] == "news.txt"
    });
    assert_eq!(e["node"], "A", "{e}");
    let t = e["text"].as_str().unwrap();
    assert!(t.starts_with("news.txt B → A: 13 B in "), "{e}");
    for k in ["seq", "epoch"] {
        assert!(e[k].as_u64().is_some(), "{k}: {e}");
    }
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");

    // Lock through B (A's feed hears of it from B), a change held on A,
    // unlock: the feed says what was released.
    run_ok(
        &b,
        &as_client(idf, &name, &["lock", "--path", "news.txt"]),
        &nodes,
    );
    let e = feed.wait_event("locked", &nodes, 0, |e| {
        e["kind"] == "locked" && e["path"] == "news.txt"
    });
    assert_eq!(e["text"], "news.txt locked by alice (through B)", "{e}");
    put(a.path("news.txt"), "edited on A while locked\n");
    let e = feed.wait_event("held", &nodes, 0, |e| {
        e["kind"] == "held" && e["path"] == "news.txt"
    });
    assert_eq!(e["text"], "held modify of news.txt from A (locked)", "{e}");
    run_ok(
        &b,
        &as_client(idf, &name, &["unlock", "--path", "news.txt"]),
        &nodes,
    );
    let e = feed.wait_event("unlocked", &nodes, 0, |e| {
        e["kind"] == "unlocked" && e["path"] == "news.txt"
    });
    assert_eq!(e["text"], "news.txt unlocked by alice", "{e}");
    let e = feed.wait_event("released", &nodes, 0, |e| {
        e["kind"] == "released" && e["path"] == "news.txt"
    });
    assert_eq!(e["text"], "released held change of news.txt from A", "{e}");
    wait_content(&nodes, "news.txt", b"edited on A while locked\n");

    // Sequence numbers increase, within one epoch.
    let ev = feed.events();
    for w in ev.windows(2) {
        assert_eq!(w[0]["epoch"], w[1]["epoch"]);
        assert!(
            w[0]["seq"].as_u64() < w[1]["seq"].as_u64(),
            "{} then {}",
            w[0],
            w[1]
        );
    }
    let epoch = ev[0]["epoch"].as_u64().unwrap();

    // A restarts: the same feed process goes on, says so, and prints the
    // events of the new run.
    let seen = ev.len();
    a.stop();
    a.restart();
    wait_linked(&a, &b);
    feed.wait_subscribed(&a, Some(epoch));
    let nodes = [&a, &b];
    put(b.path("after-restart.txt"), "after\n");
    let e = feed.wait_event("a transfer after the restart", &nodes, seen, |e| {
        e["kind"] == "transferred" && e["path"] == "after-restart.txt"
    });
    assert_ne!(e["epoch"], epoch, "a new run, a new epoch: {e}");
    let err = feed.stderr();
    assert!(err.contains("(the node restarted"), "feed stderr: {err}");
    assert!(feed.running(), "the feed exited: {err}");
}

#[test]
fn feed_relays_every_nodes_events_once_along_a_chain() {
    // A - B - C: A and C have no link; A's feed still hears C.
    let (aa, ab, ac) = (free_addr(), free_addr(), free_addr());
    let nodes = start_all(vec![
        Node::builder("A").listen(aa).peer(ab),
        Node::builder("B").listen(ab).peer(aa).peer(ac),
        Node::builder("C").listen(ac).peer(ab),
    ]);
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    wait_linked(a, b);
    wait_linked(b, c);
    let all = [a, b, c];
    let mut feed = Feed::start(a.addr());
    feed.wait_subscribed(a, None);

    put(c.path("far.txt"), "from the far end\n");
    let e = feed.wait_event("C's own event on A's feed", &all, 0, |e| {
        e["node"] == "C" && e["kind"] == "added" && e["path"] == "far.txt"
    });
    assert!(e["text"].as_str().is_some(), "{e}");
    feed.wait_event("B's transfer on A's feed", &all, 0, |e| {
        e["node"] == "B" && e["kind"] == "transferred" && e["path"] == "far.txt"
    });
    feed.wait_event("A's own transfer", &all, 0, |e| {
        e["node"] == "A" && e["kind"] == "transferred" && e["path"] == "far.txt"
    });
    // The mesh has one path here, but B passes A's events back to A and C's
    // on to A: nothing is shown twice, and A's numbering stays in order.
    let ev = feed.events();
    let added_on_c = ev
        .iter()
        .filter(|e| e["node"] == "C" && e["kind"] == "added" && e["path"] == "far.txt")
        .count();
    assert_eq!(added_on_c, 1, "{ev:?}");
    let seqs: Vec<u64> = ev.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// A - B - C linked in a chain, every node trusting every other.
fn chain_of_three() -> Vec<Node> {
    let (aa, ab, ac) = (free_addr(), free_addr(), free_addr());
    let nodes = start_all(vec![
        Node::builder("A").listen(aa).peer(ab),
        Node::builder("B").listen(ab).peer(ac),
        Node::builder("C").listen(ac),
    ]);
    trust_each_other(&[&nodes[0], &nodes[1], &nodes[2]]);
    wait_linked(&nodes[0], &nodes[1]);
    wait_linked(&nodes[1], &nodes[2]);
    nodes
}

/// A - B - C, every node trusting every other: through A, the node list,
/// the merged table, one node's own files and its cache include C, which
/// has no link to A (the questions are forwarded by B).
#[test]
fn views_through_one_end_of_a_chain_include_the_far_end() {
    let nodes = chain_of_three();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [a, b, c];
    put(c.path("far.txt"), "from the far end\n");
    wait_until(
        SYNC_TIMEOUT,
        "C among far.txt's replicas through A",
        &all,
        || {
            let l = try_list_json(a.addr())?;
            let row = find(&l, "far.txt").ok_or("not listed")?;
            if row["nodes"] == serde_json::json!(["A", "B", "C"]) {
                Ok(())
            } else {
                Err(format!("{row}"))
            }
        },
    );
    let v = wait_until(
        SYNC_TIMEOUT,
        "C up in `tandem nodes` through A",
        &all,
        || {
            let v = nodes_json(a)?;
            if v.iter().any(|n| n["name"] == "C" && n["up"] == true) {
                Ok(v)
            } else {
                Err(format!("{v:?}"))
            }
        },
    );
    let row = v.iter().find(|n| n["name"] == "C").unwrap();
    assert_eq!(row["files"], 1, "{row}");
    assert_eq!(v.len(), 3, "one row per node: {v:?}");
    let own: Vec<Value> = json(a, &["discover", "C", "--json"]);
    assert!(find(&own, "far.txt").is_some(), "{own:?}");
    let cache = run_ok(a, &["cache", "--of", "C"], &all);
    assert!(cache.contains("cache of C"), "{cache}");
    // The round trip of the whole path, through B.
    let ping = run_ok(a, &["ping", "C"], &all);
    assert!(ping.starts_with("C: round trip "), "{ping}");
}

/// A conflict copy kept on the far end of a chain is listed, restored and
/// discarded through the near end; the restore syncs everywhere and keeps
/// the version it replaced.
#[test]
fn conflict_copies_on_the_far_end_are_listed_restored_and_discarded_through_the_near_end() {
    let nodes = chain_of_three();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [a, b, c];
    put(c.path("notes/plan.txt"), "current\n");
    wait_content(&all, "notes/plan.txt", b"current\n");
    // What `keep_conflict` leaves when B's version loses on C.
    put(
        c.path(".tandem/conflicts/notes/plan.conflict-20251203-060000-B.txt"),
        "the lost version\n",
    );

    let listed: Value = json(a, &["conflicts", "--json"]);
    let rows = listed["conflicts"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    let row = &rows[0];
    assert_eq!(
        (&row["node"], &row["path"], &row["author"], &row["size"]),
        (
            &Value::from("C"),
            &Value::from("notes/plan.txt"),
            &Value::from("B"),
            &Value::from(17)
        ),
        "{row}"
    );
    assert_eq!(listed["unanswered"], serde_json::json!([]));
    let short = row["short_id"].as_str().unwrap().to_string();
    let table = run_ok(a, &["conflicts"], &all);
    assert!(
        table.contains(&short) && table.contains("notes/plan.txt"),
        "{table}"
    );

    let out = run_refused(a, &["conflicts", "restore", "zzzzzzz"], &all);
    assert!(
        text(&out.stderr).contains("no conflict copy has the id \"zzzzzzz\""),
        "{}",
        text(&out.stderr)
    );

    // A locked file is not restored over: the lock's owner is working on it.
    run_ok(a, &["lock", "--path", "notes/plan.txt"], &all);
    let out = run_refused(a, &["conflicts", "restore", &short], &all);
    assert!(
        text(&out.stderr).contains("notes/plan.txt is locked by"),
        "{}",
        text(&out.stderr)
    );
    run_ok(a, &["unlock", "--path", "notes/plan.txt"], &all);
    wait_until(SYNC_TIMEOUT, "the unlock reaches C", &all, || {
        let l = try_list_json(c.addr())?;
        match find(&l, "notes/plan.txt") {
            Some(r) if r["locked_by"].is_null() => Ok(()),
            r => Err(format!("{r:?}")),
        }
    });
    let said = run_ok(a, &["conflicts", "restore", &short[..5]], &all);
    assert!(
        said.starts_with("restored notes/plan.txt on C from the conflict copy notes/plan.conflict-20251203-060000-B.txt; the version it replaced is kept as notes/plan.conflict-"),
        "{said}"
    );
    wait_content(&all, "notes/plan.txt", b"the lost version\n");

    // The replaced version is a conflict copy now; the restored one is not.
    let listed: Value = json(a, &["conflicts", "--json"]);
    let rows = listed["conflicts"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{listed}");
    let kept_id = rows[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        fs::read_to_string(c.path(format!(".tandem/conflicts/{kept_id}"))).unwrap(),
        "current\n"
    );
    assert_eq!(rows[0]["author"], "C", "{listed}");

    let short = rows[0]["short_id"].as_str().unwrap().to_string();
    let said = run_ok(a, &["conflicts", "discard", &short], &all);
    assert_eq!(said, format!("deleted the conflict copy {kept_id} on C\n"));
    assert!(!c.path(".tandem/conflicts/notes").exists());
    let table = run_ok(a, &["conflicts"], &all);
    assert_eq!(table, "(no conflict copies kept)\n");
    let listed: Value = json(a, &["conflicts", "--json"]);
    assert_eq!(listed["conflicts"], serde_json::json!([]));

    // A copy of a file that is gone comes back; a copy of a name that is
    // a folder here is refused, and nothing changes.
    put(
        c.path(".tandem/conflicts/gone.conflict-20251203-060000-B.txt"),
        "back again\n",
    );
    fs::create_dir_all(c.path("adir/inside")).unwrap();
    put(c.path("adir/inside/x.txt"), "x\n");
    put(
        c.path(".tandem/conflicts/adir.conflict-20251203-060000-B"),
        "was a file\n",
    );
    wait_content(&all, "adir/inside/x.txt", b"x\n");
    let listed: Value = json(a, &["conflicts", "--json"]);
    let short_of = |path: &str| -> String {
        listed["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .and_then(|r| r["short_id"].as_str())
            .unwrap_or_else(|| panic!("{path} not listed: {listed}"))
            .to_string()
    };
    let said = run_ok(a, &["conflicts", "restore", &short_of("gone.txt")], &all);
    assert_eq!(
        said,
        "restored gone.txt on C from the conflict copy gone.conflict-20251203-060000-B.txt\n"
    );
    wait_content(&all, "gone.txt", b"back again\n");
    let out = run_refused(a, &["conflicts", "restore", &short_of("adir")], &all);
    assert!(
        text(&out.stderr).contains("cannot restore adir: it is a folder here; move it away first"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        c.path(".tandem/conflicts/adir.conflict-20251203-060000-B")
            .is_file()
    );
    assert!(c.path("adir/inside/x.txt").is_file());
}

/// Through the near end of a chain, a conflict copy kept on the far end
/// and a file fetched `--from` the far end arrive whole (forwarded by the
/// node in between, in several pieces), under the copy's own name.
#[test]
fn fetches_through_a_chain_reach_the_far_end() {
    let nodes = chain_of_three();
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let all = [a, b, c];
    // Over 2 MiB: three pieces through the mesh.
    let lost = pattern(2_500_000, 7);
    let copy_id = "media/clip.conflict-20251203-060000-B.bin";
    put(c.path(format!(".tandem/conflicts/{copy_id}")), &lost);
    put(
        c.path(".tandem/conflicts/empty.conflict-20251203-060000-B.txt"),
        "",
    );
    let listed: Value = json(a, &["conflicts", "--json"]);
    let short_of = |id: &str| -> String {
        listed["conflicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .and_then(|r| r["short_id"].as_str())
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
            .to_string()
    };
    let to = tempfile::tempdir().unwrap();
    let to_arg = to.path().to_str().unwrap();
    let short = short_of(copy_id);
    let said = run_ok(a, &["conflicts", "fetch", &short, "--to", to_arg], &all);
    let dest = to.path().join("clip.conflict-20251203-060000-B.bin");
    assert!(
        said.starts_with(&format!(
            "the conflict copy {copy_id} kept on C saved to {} (2.38 MiB, ",
            dest.display()
        )) && said.ends_with(", from C)\n"),
        "{said}"
    );
    assert!(fs::read(&dest).unwrap() == lost, "the copy arrived changed");
    // It is a download: the copy stays where it is kept.
    assert!(c.path(format!(".tandem/conflicts/{copy_id}")).is_file());

    let out = run_refused(a, &["conflicts", "fetch", &short, "--to", to_arg], &all);
    assert_eq!(
        text(&out.stderr),
        format!(
            "tandem: error: {} already exists; nothing was fetched. Add --force to replace it, or --to another folder\n",
            dest.display()
        )
    );
    fs::write(&dest, "mine").unwrap();
    run_ok(
        a,
        &["conflicts", "fetch", &short, "--to", to_arg, "--force"],
        &all,
    );
    assert!(fs::read(&dest).unwrap() == lost);
    let empty = short_of("empty.conflict-20251203-060000-B.txt");
    run_ok(a, &["conflicts", "fetch", &empty, "--to", to_arg], &all);
    assert_eq!(
        fs::read(to.path().join("empty.conflict-20251203-060000-B.txt")).unwrap(),
        b""
    );

    // A file asked of C in particular comes from C, which A has no link to.
    let data = pattern(3_000_000, 9);
    put(c.path("big.bin"), &data);
    wait_content(&all, "big.bin", &data);
    let said = run_ok(
        a,
        &["fetch", "big.bin", "--from", "C", "--to", to_arg],
        &all,
    );
    assert!(said.ends_with(", from C)\n"), "{said}");
    assert!(fs::read(to.path().join("big.bin")).unwrap() == data);
}

// ---------------------------------------------------------------------------
// 3. Fetch

#[test]
fn fetch_saves_whole_verified_files() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let data = pattern(300_000, 1);
    put(a.path("docs/report.bin"), &data);
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    filetime::set_file_mtime(
        a.path("docs/report.bin"),
        filetime::FileTime::from_system_time(mtime),
    )
    .unwrap();
    wait_content(&nodes, "docs/report.bin", &data);

    let to = tempfile::tempdir().unwrap();
    let dest = to.path().join("report.bin");
    let out = run_ok(
        &a,
        &[
            "fetch",
            "docs/report.bin",
            "--to",
            to.path().to_str().unwrap(),
        ],
        &nodes,
    );
    assert!(
        out.starts_with(&format!("docs/report.bin saved to {} (", dest.display())),
        "fetch output: {out}"
    );
    assert!(
        out.contains("from A)"),
        "served by A, which holds it: {out}"
    );
    assert_eq!(fs::read(&dest).unwrap(), data);
    assert_eq!(fs::metadata(&dest).unwrap().modified().unwrap(), mtime);
    assert_eq!(dir_entries(to.path()), ["report.bin"]);

    // --from B: through A, from B's copy.
    let to_b = tempfile::tempdir().unwrap();
    let out = run_ok(
        &a,
        &[
            "fetch",
            "docs/report.bin",
            "--to",
            to_b.path().to_str().unwrap(),
            "--from",
            "B",
        ],
        &nodes,
    );
    assert!(out.contains("from B)"), "{out}");
    assert_eq!(fs::read(to_b.path().join("report.bin")).unwrap(), data);
    assert_eq!(
        fs::metadata(to_b.path().join("report.bin"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    assert_eq!(dir_entries(to_b.path()), ["report.bin"]);
    // --from a node that does not exist: said so, with the ones that do.
    let empty = tempfile::tempdir().unwrap();
    let e = empty.path().to_str().unwrap();
    for via in nodes {
        let out = run_refused(
            via,
            &["fetch", "docs/report.bin", "--to", e, "--from", "Z"],
            &nodes,
        );
        assert_eq!(
            text(&out.stderr),
            "tandem: error: no node named \"Z\" in the cluster; its nodes are A, B (see `tandem nodes`)\n"
        );
    }
    // A folder: said so (folders sync, only files are fetched).
    for via in nodes {
        let out = run_refused(via, &["fetch", "docs", "--to", e], &nodes);
        assert_eq!(
            text(&out.stderr),
            "tandem: error: docs is a folder; fetch the files in it one by one (`tandem list` shows them)\n"
        );
    }
    assert_eq!(dir_entries(empty.path()), Vec::<String>::new());

    // A missing path: exit 1, "does not exist", nothing written.
    let empty = tempfile::tempdir().unwrap();
    for via in nodes {
        let out = run_refused(
            via,
            &[
                "fetch",
                "docs/nope.bin",
                "--to",
                empty.path().to_str().unwrap(),
            ],
            &nodes,
        );
        let err = text(&out.stderr);
        assert!(err.contains("docs/nope.bin does not exist"), "{err}");
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
        assert_eq!(
            dir_entries(empty.path()),
            Vec::<String>::new(),
            "fetch of a missing file wrote something"
        );
    }

    // A stale cache is never served: fetch, change, fetch again.
    let to = tempfile::tempdir().unwrap();
    let to_s = to.path().to_str().unwrap();
    put(a.path("live.txt"), "first version\n");
    wait_content(&nodes, "live.txt", b"first version\n");
    run_ok(&a, &["fetch", "live.txt", "--to", to_s], &nodes);
    // A file already there is kept unless --force, and nothing is fetched.
    fs::write(to.path().join("live.txt"), b"mine\n").unwrap();
    let out = run_refused(&a, &["fetch", "live.txt", "--to", to_s], &nodes);
    assert_eq!(
        text(&out.stderr),
        format!(
            "tandem: error: {}/live.txt already exists; nothing was fetched. Add --force to replace it, or --to another folder\n",
            to_s
        )
    );
    assert_eq!(fs::read(to.path().join("live.txt")).unwrap(), b"mine\n");
    assert_eq!(dir_entries(to.path()), ["live.txt"], "no temp file left");
    run_ok(&a, &["fetch", "live.txt", "--to", to_s, "--force"], &nodes);
    assert_eq!(
        fs::read(to.path().join("live.txt")).unwrap(),
        b"first version\n"
    );
    put(a.path("live.txt"), "second version\n");
    a.wait_matches_disk("live.txt re-indexed on A");
    for via in nodes {
        run_ok(via, &["fetch", "live.txt", "--to", to_s, "--force"], &nodes);
        let got = fs::read(to.path().join("live.txt")).unwrap();
        if via.name() == "A" {
            assert_eq!(got, b"second version\n", "stale content after the change");
        }
    }
    wait_content(&nodes, "live.txt", b"second version\n");
    run_ok(&b, &["fetch", "live.txt", "--to", to_s, "--force"], &nodes);
    assert_eq!(
        fs::read(to.path().join("live.txt")).unwrap(),
        b"second version\n"
    );
    assert_eq!(dir_entries(to.path()), ["live.txt"]);
}

#[test]
fn fetch_of_a_file_being_rewritten_gets_one_whole_version() {
    let a = Node::start("A");
    let scratch = tempfile::tempdir().unwrap();
    let x = pattern(1 << 20, 11);
    let y = pattern(1 << 20, 22);
    put(a.path("hot.bin"), &x);
    a.wait_matches_disk("hot.bin indexed");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, x, y) = (stop.clone(), x.clone(), y.clone());
        let (dst, tmp) = (a.path("hot.bin"), scratch.path().join("hot.tmp"));
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::write(&tmp, if n.is_multiple_of(2) { &y } else { &x }).unwrap();
                fs::rename(&tmp, &dst).unwrap();
                n += 1;
                thread::sleep(Duration::from_millis(15));
            }
            n
        })
    };
    let (mut got_x, mut got_y, mut failed) = (0, 0, Vec::new());
    let start = Instant::now();
    let mut round = 0;
    while round < 12 || (got_x + got_y == 0 && start.elapsed() < scaled(Duration::from_secs(30))) {
        round += 1;
        let to = tempfile::tempdir().unwrap();
        let out = a.tandem(&["fetch", "hot.bin", "--to", to.path().to_str().unwrap()]);
        let names = dir_entries(to.path());
        if out.status.success() {
            assert_eq!(names, ["hot.bin"], "only the file is left");
            let got = fs::read(to.path().join("hot.bin")).unwrap();
            if got == x {
                got_x += 1;
            } else if got == y {
                got_y += 1;
            } else {
                let same_x = got.iter().zip(&x).filter(|(p, q)| p == q).count();
                panic!(
                    "{}",
                    a.fail(&format!(
                        "fetch {round} got a mix: {} bytes, {same_x} bytes equal to X",
                        got.len()
                    ))
                );
            }
        } else {
            // Giving up is allowed (the file kept changing); a partial file is not.
            assert_eq!(names, Vec::<String>::new(), "a failed fetch left files");
            failed.push(text(&out.stderr));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    eprintln!(
        "{round} fetches during {rewrites} rewrites: X {got_x}, Y {got_y}, failed {}",
        failed.len()
    );
    for f in &failed {
        assert!(
            f.contains("try again") || f.contains("changed"),
            "unexpected failure: {f}"
        );
    }
    assert!(
        got_x + got_y > 0,
        "{}",
        a.fail(&format!("no fetch succeeded: {failed:?}"))
    );
}

// ---------------------------------------------------------------------------
// 4. Cache

#[test]
fn cache_counts_hits_and_lists_entries() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let data = pattern(200_000, 3);
    put(a.path("cached.bin"), &data);
    wait_content(&nodes, "cached.bin", &data);
    let to = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        run_ok(
            &a,
            &[
                "fetch",
                "cached.bin",
                "--to",
                to.path().to_str().unwrap(),
                "--force",
            ],
            &nodes,
        );
    }
    let r: Value = json(&a, &["cache", "--json"]);
    assert_eq!(r["node"], "A");
    assert_eq!(r["policy"], "moka", "{r}");
    assert_eq!(r["capacity"], 64 << 20, "64 MiB by default: {r}");
    assert!(r["hits"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["misses"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["used"].as_u64().unwrap() >= 200_000, "{r}");
    let e = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == "cached.bin")
        .unwrap_or_else(|| panic!("cached.bin not listed: {r}"));
    assert_eq!(e["size"], 200_000);
    assert!(e["hits"].as_u64().unwrap() >= 1, "{e}");
    let ratio = r["hit_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio <= 1.0, "{r}");
    let t = run_ok(&a, &["cache"], &nodes);
    assert!(
        t.starts_with("cache of A (moka):") && t.contains("cached.bin"),
        "{t}"
    );

    // Another node's cache, through A: B served nothing yet.
    let r: Value = json(&a, &["cache", "--of", "B", "--json"]);
    assert_eq!(r["node"], "B", "{r}");
    assert_eq!(r["hits"], 0, "{r}");
    run_ok(
        &b,
        &[
            "fetch",
            "cached.bin",
            "--to",
            to.path().to_str().unwrap(),
            "--force",
        ],
        &nodes,
    );
    let r: Value = json(&a, &["cache", "--of", "B", "--json"]);
    assert_eq!(r["misses"], 1, "{r}");
    assert_eq!(r["entries"][0]["path"], "cached.bin", "{r}");
    let out = run_refused(&a, &["cache", "--of", "Q"], &nodes);
    assert!(
        text(&out.stderr).contains("no node named \"Q\" in the cluster"),
        "{}",
        text(&out.stderr)
    );
    // The old spelling: `--node` is the global address now; a name there
    // is a usage error that points to `--of`.
    let out = a.tandem(&["cache", "--node", "B"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("to see the cache of node B, use `tandem cache --of B`"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn largest_first_cache_never_exceeds_its_capacity() {
    let (a, b) = linked_pair(&["--cache-policy", "largest-first", "--cache-size", "1MiB"]);
    let nodes = [&a, &b];
    let sizes = [
        300 << 10,
        310 << 10,
        290 << 10,
        305 << 10,
        300 << 10,
        320 << 10,
        280 << 10,
    ];
    for (i, s) in sizes.iter().enumerate() {
        put(a.path(format!("f{i}.bin")), pattern(*s, i as u64 + 100));
    }
    wait_until(SYNC_TIMEOUT, "7 files listed on A", &nodes, || {
        a.list().len() == 7
    });
    let to = tempfile::tempdir().unwrap();
    let to_s = to.path().to_str().unwrap();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.extend([2, 0, 6, 5, 1]);
    for i in order {
        let f = format!("f{i}.bin");
        run_ok(&a, &["fetch", &f, "--to", to_s, "--force"], &nodes);
        assert_eq!(
            fs::read(to.path().join(&f)).unwrap(),
            pattern(sizes[i], i as u64 + 100)
        );
        let r: Value = json(&a, &["cache", "--json"]);
        assert_eq!(r["policy"], "largest-first", "{r}");
        assert_eq!(r["capacity"], 1 << 20, "{r}");
        let used = r["used"].as_u64().unwrap();
        assert!(
            used <= 1 << 20,
            "used {used} > capacity after fetching {f}: {r}"
        );
        let listed: u64 = r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["size"].as_u64().unwrap())
            .sum();
        assert_eq!(listed, used, "entries and `used` disagree: {r}");
        assert!(
            r["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["path"] == f.as_str()),
            "{f} not cached: {r}"
        );
    }
    // A file larger than the whole cache is streamed, not cached.
    let big = pattern(1_200_000, 9);
    put(a.path("big.bin"), &big);
    a.wait_matches_disk("big.bin indexed");
    run_ok(&a, &["fetch", "big.bin", "--to", to_s], &nodes);
    assert_eq!(fs::read(to.path().join("big.bin")).unwrap(), big);
    let r: Value = json(&a, &["cache", "--json"]);
    assert!(r["used"].as_u64().unwrap() <= 1 << 20, "{r}");
    assert!(
        !r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "big.bin"),
        "{r}"
    );
}

// ---------------------------------------------------------------------------
// 5. Put

#[test]
fn put_publishes_a_file_on_every_node() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let ids = tempfile::tempdir().unwrap();
    let (id_file, name) = ident(&ids, "uploader");
    let idf = id_file.to_str().unwrap();
    harness::approve(a.addr(), idf, "write");
    harness::approve(b.addr(), idf, "write");
    let local = tempfile::tempdir().unwrap();
    let data = pattern(2_500_000, 5);
    let file = local.path().join("upload.bin");
    fs::write(&file, &data).unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::new(1_650_000_000, 0);
    filetime::set_file_mtime(&file, filetime::FileTime::from_system_time(mtime)).unwrap();
    let f = file.to_str().unwrap();

    let out = run_ok(&a, &as_client(idf, &name, &["put", f]), &nodes);
    assert!(
        out.starts_with(&format!("{f} stored as upload.bin on A (")),
        "{out}"
    );
    wait_content(&nodes, "upload.bin", &data);
    for n in nodes {
        assert_eq!(
            fs::metadata(n.path("upload.bin"))
                .unwrap()
                .modified()
                .unwrap(),
            mtime
        );
    }

    let out = run_ok(
        &b,
        &as_client(idf, &name, &["put", f, "--as", "sub/name.bin"]),
        &nodes,
    );
    assert!(out.contains("stored as sub/name.bin on B"), "{out}");
    wait_content(&nodes, "sub/name.bin", &data);

    // Replacing an existing path takes --force; without it nothing changes.
    fs::write(&file, b"replacement\n").unwrap();
    for via in nodes {
        let out = run_refused(
            via,
            &as_client(idf, &name, &["put", f, "--as", "sub/name.bin"]),
            &nodes,
        );
        assert_eq!(
            text(&out.stderr),
            format!(
                "tandem: error: sub/name.bin already exists in the cluster ({}, on A, B); nothing was uploaded. Add --force to replace it\n",
                tandem_common::display::human_size(data.len() as u64)
            )
        );
    }
    for n in nodes {
        assert_eq!(fs::read(n.path("sub/name.bin")).unwrap(), data);
    }
    run_ok(
        &b,
        &as_client(idf, &name, &["put", f, "--as", "sub/name.bin", "--force"]),
        &nodes,
    );
    wait_content(&nodes, "sub/name.bin", b"replacement\n");

    // A locked path is refused to everyone but its owner, through either
    // node; the owner puts it through the node the lock was taken through.
    let (owner_file, _) = ident(&ids, "owner");
    let of = owner_file.to_str().unwrap();
    harness::approve(a.addr(), of, "write");
    harness::approve(b.addr(), of, "write");
    run_ok(
        &a,
        &as_client(of, "owner", &["lock", "--path", "upload.bin"]),
        &nodes,
    );
    wait_until(SYNC_TIMEOUT, "the lock on both nodes", &nodes, || {
        nodes
            .iter()
            .all(|n| try_json::<Vec<Value>>(n, &["locks", "--json"]).is_ok_and(|v| v.len() == 1))
    });
    for n in nodes {
        for force in [&[][..], &["--force"]] {
            let mut args = vec!["put", f, "--as", "upload.bin"];
            args.extend(force);
            let out = run_refused(n, &as_client(idf, &name, &args), &nodes);
            let err = text(&out.stderr);
            assert!(err.contains("upload.bin is locked by owner"), "{err}");
        }
    }
    // The owner, through B (the lock was taken through A): a change made
    // on B would only be held, so it is refused with the way to do it.
    let out = run_refused(
        &b,
        &as_client(of, "owner", &["put", f, "--as", "upload.bin"]),
        &nodes,
    );
    assert!(
        text(&out.stderr).contains(
            "you locked upload.bin through node A, so a change made here would be held until you unlock it; put it through A"
        ),
        "{}",
        text(&out.stderr)
    );
    for n in nodes {
        assert_eq!(
            fs::read(n.path("upload.bin")).unwrap(),
            data,
            "a refused put changed the file"
        );
        let tmp = n.path(".tandem/tmp");
        let leftovers: Vec<String> = dir_entries(&tmp)
            .into_iter()
            .filter(|x| x.starts_with("put-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "upload temp files left on {}: {leftovers:?}",
            n.name()
        );
    }
    // Through A the owner replaces its locked file, without --force, and
    // the change reaches B (the owner's edits flow).
    let out = run_ok(
        &a,
        &as_client(of, "owner", &["put", f, "--as", "upload.bin"]),
        &nodes,
    );
    assert!(out.contains("stored as upload.bin on A"), "{out}");
    wait_content(&nodes, "upload.bin", b"replacement\n");

    // A missing local file: clear error, nothing changed.
    let out = run_refused(
        &a,
        &["--identity", idf, "put", "/nonexistent/zzz.bin"],
        &nodes,
    );
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/zzz.bin"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(a.list().len(), 2);
}

// ---------------------------------------------------------------------------
// 6. Metrics

fn http_get(addr: std::net::SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// The value of the metric `name` (a line `name VALUE`).
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    let maddr = free_addr();
    let ml = maddr.to_string();
    let (a, b) = linked_pair(&["--metrics-listen", &ml]);
    let nodes = [&a, &b];
    put(b.path("m1.txt"), "metrics\n");
    put(a.path("m2.txt"), "more metrics\n");
    wait_content(&nodes, "m1.txt", b"metrics\n");
    wait_content(&nodes, "m2.txt", b"more metrics\n");
    let to = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        run_ok(
            &a,
            &[
                "fetch",
                "m2.txt",
                "--to",
                to.path().to_str().unwrap(),
                "--force",
            ],
            &nodes,
        );
    }
    let body = wait_until(SYNC_TIMEOUT, "metrics answer", &nodes, || http_get(maddr));
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(
        body.contains("Content-Type: text/plain; version=0.0.4"),
        "{body}"
    );
    for name in [
        "tandem_files",
        "tandem_peers_up",
        "tandem_cache_hits_total",
        "tandem_cache_misses_total",
        "tandem_bytes_sent_total",
        "tandem_bytes_received_total",
        "tandem_transfers_total",
        "tandem_conflicts_total",
        "tandem_clients",
        "tandem_cache_bytes",
    ] {
        assert!(
            metric(&body, name).is_some(),
            "no numeric {name} line:\n{body}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}:\n{body}"
        );
    }
    assert_eq!(metric(&body, "tandem_files"), Some(2.0), "{body}");
    assert_eq!(metric(&body, "tandem_peers_up"), Some(1.0), "{body}");
    assert!(
        metric(&body, "tandem_cache_hits_total").unwrap() >= 1.0,
        "{body}"
    );
}

/// The traffic counters and the client gauge should move: after a file came
/// from B, A has received at least one transfer and its bytes, B has sent
/// them, and a connected feed is a client.
#[test]
fn metrics_count_transfers_bytes_and_clients() {
    let (ma, mb) = (free_addr(), free_addr());
    let (aa, ba) = (free_addr(), free_addr());
    let mut v = start_all(vec![
        Node::builder("A")
            .listen(aa)
            .peer(ba)
            .arg("--metrics-listen")
            .arg(ma.to_string()),
        Node::builder("B")
            .listen(ba)
            .peer(aa)
            .arg("--metrics-listen")
            .arg(mb.to_string()),
    ]);
    let b = v.pop().unwrap();
    let a = v.pop().unwrap();
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    let data = pattern(100_000, 4);
    put(b.path("from-b.bin"), &data);
    wait_content(&nodes, "from-b.bin", &data);
    let _feed = Feed::start(a.addr());
    wait_until(FEED_TIMEOUT, "the feed connected", &nodes, || {
        try_json::<Vec<Value>>(&a, &["clients", "--json"]).is_ok_and(|v| v.len() >= 2)
    });
    let body_a = http_get(ma).unwrap();
    let body_b = http_get(mb).unwrap();
    let m = |body: &str, name: &str| metric(body, name).unwrap_or(-1.0);
    let report = format!("A:\n{body_a}\nB:\n{body_b}");
    assert!(m(&body_a, "tandem_transfers_total") >= 1.0, "{report}");
    assert!(
        m(&body_a, "tandem_bytes_received_total") >= 100_000.0,
        "{report}"
    );
    assert!(
        m(&body_b, "tandem_bytes_sent_total") >= 100_000.0,
        "{report}"
    );
    assert!(m(&body_a, "tandem_clients") >= 1.0, "{report}");
}

// ---------------------------------------------------------------------------
// 7. Many clients while sync runs

#[test]
fn fifty_clients_at_once_while_200_files_sync() {
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];
    let seed = pattern(100_000, 77);
    put(a.path("seed.bin"), &seed);
    wait_content(&nodes, "seed.bin", &seed);

    // The bulk copy: 200 files into A, written from another thread.
    let files: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| {
            (
                format!("bulk/{i:03}.dat"),
                pattern(40_000 + i * 97, i as u64 + 1000),
            )
        })
        .collect();
    let copier = {
        let files = files.clone();
        let dir = a.dir().to_path_buf();
        thread::spawn(move || {
            for (p, d) in &files {
                put(dir.join(p), d);
            }
        })
    };

    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let t0 = Instant::now();
    thread::scope(|s| {
        for i in 0..50 {
            let (a, b, seed, errors) = (&a, &b, &seed, &errors);
            s.spawn(move || {
                let n = if i % 2 == 0 { a } else { b };
                let fail = |e: String| {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("client {i} via {}: {e}", n.name()))
                };
                match i % 3 {
                    0 => match try_json::<Vec<Value>>(n, &["list", "--json"]) {
                        Ok(l) if find(&l, "seed.bin").is_some() => {}
                        Ok(l) => fail(format!("seed.bin not listed ({} rows)", l.len())),
                        Err(e) => fail(e),
                    },
                    1 => {
                        let to = tempfile::tempdir().unwrap();
                        match try_run(
                            n,
                            &["fetch", "seed.bin", "--to", to.path().to_str().unwrap()],
                        ) {
                            Ok(_) => {
                                if fs::read(to.path().join("seed.bin")).ok().as_ref() != Some(seed)
                                {
                                    fail("fetched seed.bin differs".into());
                                }
                            }
                            Err(e) => fail(e),
                        }
                    }
                    _ => {
                        let mut feed = Feed::start(n.addr());
                        let deadline = Instant::now() + scaled(Duration::from_secs(20));
                        while feed.events().is_empty()
                            && feed.running()
                            && Instant::now() < deadline
                        {
                            thread::sleep(POLL);
                        }
                        let alive = feed.running();
                        let got = feed.events().len();
                        feed.stop();
                        let err = feed.stderr();
                        if !alive || got == 0 || !err.is_empty() {
                            fail(format!(
                                "feed: running {alive}, {got} events, stderr {err:?}"
                            ));
                        }
                    }
                }
            });
        }
    });
    let clients_took = t0.elapsed();
    copier.join().unwrap();
    let on_b_then = files.iter().filter(|(p, _)| b.path(p).exists()).count();
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{}",
        fail_with_logs(
            &format!("{} client errors:\n{}", errors.len(), errors.join("\n")),
            &nodes
        )
    );

    // The sync completes.
    let t1 = Instant::now();
    wait_until(Duration::from_secs(60), "200 files on B", &nodes, || {
        let missing: Vec<&str> = files
            .iter()
            .filter(|(p, d)| fs::read(b.path(p)).ok().as_ref() != Some(d))
            .map(|(p, _)| p.as_str())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} missing on B, e.g. {}",
                missing.len(),
                missing[0]
            ))
        }
    });
    let l = b.list();
    assert_eq!(l.len(), 201, "listed on B");
    eprintln!(
        "50 clients took {clients_took:.1?} (B had {on_b_then} of the 200 files then); sync finished {:.1?} after them",
        t1.elapsed()
    );
    let _ = b.wait_matches_disk("B's list matches its disk");
}

/// A table longer than a page (nodes read each other's files and their own
/// 20,000 at a time) is merged page by page: on either node, every file is
/// listed once, in order, with each node's state. B ignores A's many files
/// (so they need not travel), and a file both hold sorts between them.
#[test]
fn a_table_of_several_pages_lists_every_file_once_in_order() {
    const FOLDERS: usize = 41;
    const PER_FOLDER: usize = 500;
    let a_dir = TempDir::new().unwrap();
    for d in 0..FOLDERS {
        let folder = a_dir.path().join(format!("many/d{d:02}"));
        fs::create_dir_all(&folder).unwrap();
        for i in 0..PER_FOLDER {
            fs::write(folder.join(format!("f{i:03}")), i.to_string()).unwrap();
        }
    }
    let (aa, ba) = (free_addr(), free_addr());
    let mut started = start_all(vec![
        Node::builder("A").dir(a_dir.path()).listen(aa).peer(ba),
        Node::builder("B")
            .listen(ba)
            .peer(aa)
            .arg("--ignore")
            .arg("many/d*/f*"),
    ]);
    let b = started.pop().expect("B");
    let a = started.pop().expect("A");
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    put(b.path("many/d20/g"), "on both");
    wait_content(&nodes, "many/d20/g", b"on both");

    let total = FOLDERS * PER_FOLDER + 1;
    for via in nodes {
        let list = wait_until(
            scaled(SYNC_TIMEOUT),
            &format!(
                "{total} rows on {}, the shared file on both nodes",
                via.name()
            ),
            &nodes,
            || {
                let l = via.try_list()?;
                let shared = l.iter().find(|r| r["path"] == "many/d20/g");
                match shared {
                    Some(r) if l.len() == total && r["nodes"] == serde_json::json!(["A", "B"]) => {
                        Ok(l)
                    }
                    _ => Err(format!("{} rows, the shared one: {shared:?}", l.len())),
                }
            },
        );
        let got = paths(&list);
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{}",
            via.fail("the table's paths are not each listed once, in order")
        );
        let mut want: Vec<String> = (0..FOLDERS)
            .flat_map(|d| (0..PER_FOLDER).map(move |i| format!("many/d{d:02}/f{i:03}")))
            .collect();
        want.push("many/d20/g".into());
        want.sort();
        assert_eq!(got, want, "{}", via.fail("the table's paths"));
        for r in list.iter().filter(|r| r["path"] != "many/d20/g") {
            assert_eq!(r["nodes"], serde_json::json!(["A"]), "{r}");
            assert_eq!(r["states"]["A"], "in sync", "{r}");
            assert_eq!(r["states"]["B"], "missing", "{r}");
        }
    }
}
