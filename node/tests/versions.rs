//! Versions and restore (issue 16, part 2), through real `tandem-node`
//! processes and the real `tandem` client: what a peer's change deletes or
//! overwrites is kept in the versions folder, listed across the cluster,
//! kept across a restart, restored (a file, a deleted folder, one version
//! by its id) so that every node has it again, and dropped by retention.

mod harness;

use std::time::Duration;

use harness::*;
use serde_json::Value;

const SYNC: Duration = Duration::from_secs(20);

fn has(node: &Node, rel: &str, data: Option<&[u8]>) -> Result<(), String> {
    match (std::fs::read(node.path(rel)), data) {
        (Ok(b), Some(d)) if b == d => Ok(()),
        (Err(_), None) => Ok(()),
        (r, _) => Err(format!(
            "{rel} on {}: {:?}",
            node.name(),
            r.map(|b| b.len())
        )),
    }
}

fn wait_all(nodes: &[&Node], rel: &str, data: Option<&[u8]>) {
    wait_until(scaled(SYNC), &format!("{rel} everywhere"), nodes, || {
        nodes.iter().try_for_each(|n| has(n, rel, data))
    });
}

fn versions(node: &Node, path: &str) -> Vec<Value> {
    try_versions(node, path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every node's kept versions of `path`, or why not all nodes said.
fn try_versions(node: &Node, path: &str) -> Result<Vec<Value>, String> {
    let out = tandem(node.addr(), &["versions", path, "--json"])?;
    if !out.status.success() {
        return Err(format!("{out:?}"));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    if v["unanswered"] != serde_json::json!([]) {
        return Err(format!("not every node answered: {v}"));
    }
    Ok(v["versions"].as_array().cloned().unwrap_or_default())
}

fn run(node: &Node, args: &[&str]) -> (bool, String, String) {
    let out = tandem(node.addr(), args).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn what_a_peer_replaces_is_kept_listed_and_restored_everywhere() {
    let (a, mut b) = linked_pair(&[]);
    let nodes = [&a, &b];
    put(a.path("f.txt"), "v1");
    wait_all(&nodes, "f.txt", Some(b"v1"));
    put(a.path("f.txt"), "version two");
    wait_all(&nodes, "f.txt", Some(b"version two"));
    put(a.path("g.txt"), "gee");
    put(a.path("d/one.txt"), "1");
    put(a.path("d/two.txt"), "2");
    wait_all(&nodes, "d/two.txt", Some(b"2"));
    wait_all(&nodes, "g.txt", Some(b"gee"));
    std::fs::remove_file(a.path("g.txt")).unwrap();
    std::fs::remove_dir_all(a.path("d")).unwrap();
    wait_all(&nodes, "g.txt", None);
    wait_all(&nodes, "d", None);

    // B kept what A's changes replaced; listed through A.
    let f = versions(&a, "f.txt");
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (&f[0]["node"], &f[0]["cause"], &f[0]["size"], &f[0]["path"]),
        (
            &Value::from("B"),
            &Value::from("A"),
            &Value::from(2),
            &Value::from("f.txt")
        ),
        "{f:?}"
    );
    assert_eq!(versions(&a, "g.txt").len(), 1);
    let d = versions(&a, "d");
    let mut files: Vec<&str> = d.iter().filter_map(|r| r["path"].as_str()).collect();
    files.sort();
    assert_eq!(files, ["d/one.txt", "d/two.txt"], "{d:?}");
    let (_, table, _) = run(&a, &["versions", "f.txt"]);
    assert!(
        table.contains(f[0]["short_id"].as_str().unwrap()) && table.contains(" f.txt"),
        "{table}"
    );

    // The folder is the record: still there after a restart.
    b.stop();
    b.restart();
    let nodes = [&a, &b];
    wait_linked(&a, &b);
    assert_eq!(versions(&a, "f.txt").len(), 1);

    // The newest kept version of f.txt comes back everywhere; what it
    // replaced is kept in turn.
    let (ok, said, err) = run(&a, &["restore", "f.txt"]);
    assert!(ok, "{err}");
    assert!(
        said.starts_with("restored f.txt on B from the version f.version-")
            && said.contains("; the version it replaced is kept as f.version-"),
        "{said}"
    );
    wait_all(&nodes, "f.txt", Some(b"v1"));
    // A deleted folder: each file's newest kept version.
    let (ok, said, err) = run(&a, &["restore", "d/"]);
    assert!(ok, "{err}");
    assert_eq!(said.lines().count(), 2, "{said}");
    wait_all(&nodes, "d/one.txt", Some(b"1"));
    wait_all(&nodes, "d/two.txt", Some(b"2"));
    // One version by its id.
    let g = versions(&a, "g.txt");
    let short = g[0]["short_id"].as_str().unwrap();
    let (ok, _, err) = run(&a, &["restore", "g.txt", "--version", &short[..5]]);
    assert!(ok, "{err}");
    wait_all(&nodes, "g.txt", Some(b"gee"));

    let (ok, _, err) = run(&a, &["restore", "nothing.txt"]);
    assert!(!ok);
    assert_eq!(
        err,
        "tandem: error: no kept versions of nothing.txt; `tandem versions nothing.txt` lists them\n"
    );
    // g.txt was gone on A when B's restore arrived: A kept nothing of it.
    let (ok, _, err) = run(&a, &["restore", "g.txt", "--from", "A"]);
    assert!(
        !ok && err.contains("no kept versions of g.txt on A"),
        "{err}"
    );
    // A kept its version two of f.txt when B's restore replaced it.
    let f = versions(&a, "f.txt");
    assert!(
        f.iter()
            .any(|r| r["node"] == "A" && r["cause"] == "B" && r["size"] == 11),
        "{f:?}"
    );
}

/// Retention: the size limit drops the oldest versions first (at start and
/// in the background); 0B keeps none at all.
#[test]
fn retention_drops_the_oldest_and_zero_keeps_none() {
    let (a, mut b) = linked_pair(&[]);
    b.stop();
    b.args_mut().extend(["--versions-size".into(), "5B".into()]);
    b.restart();
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    for content in ["abc", "defg", "last one"] {
        put(a.path("f.txt"), content);
        wait_all(&nodes, "f.txt", Some(content.as_bytes()));
    }
    // Kept: abc (3 B) and defg (4 B), over the 5 B limit together.
    b.stop();
    b.restart();
    let nodes = [&a, &b];
    wait_until(scaled(SYNC), "only the newest version kept", &nodes, || {
        // B may not be linked again yet: then it has not answered.
        let v = try_versions(&a, "f.txt")?;
        match v.as_slice() {
            [one] if one["size"] == 4 => Ok(()),
            _ => Err(format!("{v:?}")),
        }
    });

    b.stop();
    let args = b.args_mut();
    args.truncate(args.len() - 2);
    args.extend(["--versions-size".into(), "0B".into()]);
    b.restart();
    wait_linked(&a, &b);
    let nodes = [&a, &b];
    put(a.path("h.txt"), "one");
    wait_all(&nodes, "h.txt", Some(b"one"));
    put(a.path("h.txt"), "two");
    wait_all(&nodes, "h.txt", Some(b"two"));
    assert_eq!(versions(&a, "h.txt"), Vec::<Value>::new());
}
