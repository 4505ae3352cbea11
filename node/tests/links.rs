//! Symbolic links (issue 16, part 3), through real `tandem-node` processes
//! and the real `tandem` client: a link syncs as a link with the same
//! target, whatever the target (inside the folder, absolute, leaving the
//! folder, dangling); nothing behind a link is ever listed, read or
//! written; changing or deleting a link syncs, and a deleted link is kept
//! as a version; `tandem list` shows the target and `tandem fetch` says
//! what a link is. (A link against a folder is in `faults.rs`,
//! `symlink_in_the_way_is_left_alone`.)

mod harness;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;

const SYNC: Duration = Duration::from_secs(20);

/// The target of the link at `p`, or why there is none.
fn link_at(p: &Path) -> Result<PathBuf, String> {
    let m = fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
    if !m.file_type().is_symlink() {
        return Err(format!("{} is not a link", p.display()));
    }
    fs::read_link(p).map_err(|e| e.to_string())
}

#[test]
fn links_sync_as_links_and_nothing_behind_them_is_read() {
    let outside = tempfile::Builder::new()
        .prefix("tandem-test-outside-")
        .tempdir()
        .expect("temp dir");
    put(outside.path().join("secret.txt"), "outside the folder");
    fs::set_permissions(outside.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let (a, b) = linked_pair(&[]);
    let nodes = [&a, &b];

    put(a.path("notes.txt"), "notes");
    let escaping = format!(
        "../{}/secret.txt",
        outside.path().file_name().unwrap().to_str().unwrap()
    );
    let links: Vec<(&str, String)> = vec![
        ("inside", "notes.txt".into()),
        ("absolute", outside.path().to_str().unwrap().into()),
        ("escaping", escaping),
        ("dangling", "no/such/thing".into()),
        ("sub/up", "../notes.txt".into()),
    ];
    fs::create_dir(a.path("sub")).unwrap();
    for (name, target) in &links {
        symlink(target, a.path(name)).expect("ln -s");
    }
    for (name, target) in &links {
        wait_until(
            scaled(SYNC),
            &format!("{name} on B"),
            &nodes,
            || match link_at(&b.path(name)) {
                Ok(t) if t == Path::new(target) => Ok(()),
                Ok(t) => Err(format!("B's {name} points at {}", t.display())),
                Err(e) => Err(e),
            },
        );
    }

    // Listed as links, with their targets; nothing behind them.
    let listed = wait_until(scaled(SYNC), "B lists what its disk holds", &nodes, || {
        let l = b.try_list()?;
        diff_list_disk(&l, b.dir()).map(|()| l)
    });
    for (name, target) in &links {
        let row = find(&listed, name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(row["link"], target.as_str(), "{row}");
        assert_eq!(row["size"], 0, "{row}");
    }
    let behind: Vec<String> = paths(&listed)
        .into_iter()
        .filter(|p| p.starts_with("absolute/"))
        .collect();
    assert!(behind.is_empty(), "listed through a link: {behind:?}");
    let text = b.tandem(&["list"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("inside -> notes.txt"),
        "tandem list shows no target:\n{text}"
    );

    // A link has nothing to fetch, and says so.
    let to = tempfile::tempdir().unwrap();
    let out = b.tandem(&["fetch", "absolute", "--to", to.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("absolute is a symbolic link to"),
        "{out:?}"
    );
    assert_eq!(dir_entries(to.path()), Vec::<String>::new());

    // Changed and deleted links follow; the deleted one is kept as a
    // version on B (as a link).
    fs::remove_file(a.path("inside")).unwrap();
    symlink("sub", a.path("inside")).unwrap();
    fs::remove_file(a.path("absolute")).unwrap();
    wait_until(
        scaled(SYNC),
        "the change and the delete on B",
        &nodes,
        || {
            let t = link_at(&b.path("inside"))?;
            if t != Path::new("sub") {
                return Err(format!("B's inside points at {}", t.display()));
            }
            if fs::symlink_metadata(b.path("absolute")).is_ok() {
                return Err("B still has absolute".into());
            }
            Ok(())
        },
    );
    let mut kept = Vec::new();
    walk_tree(&b.state_dir().join("versions"), &mut |rel, p, m| {
        if m.file_type().is_symlink() {
            kept.push((rel.to_string(), fs::read_link(p).unwrap()));
        }
    });
    assert!(
        kept.iter()
            .any(|(rel, t)| rel.starts_with("absolute") && t == outside.path())
            && kept
                .iter()
                .any(|(rel, t)| rel.starts_with("inside") && t == Path::new("notes.txt")),
        "B's versions folder holds links {kept:?}"
    );

    // A folder replaced by a link: its files go first, then the link.
    put(a.path("folder/inner.txt"), "inner");
    wait_until(scaled(SYNC), "folder/inner.txt on B", &nodes, || {
        b.path("folder/inner.txt").exists()
    });
    fs::remove_dir_all(a.path("folder")).unwrap();
    symlink("notes.txt", a.path("folder")).unwrap();
    // A link at the ignore file is not synced: every node reads that file
    // as a file, and would refuse to start with a link there.
    symlink("notes.txt", a.path(".tandemignore")).unwrap();
    wait_until(
        scaled(SYNC),
        "folder is a link on B",
        &nodes,
        || match link_at(&b.path("folder")) {
            Ok(t) if t == Path::new("notes.txt") => Ok(()),
            Ok(t) => Err(format!("B's folder points at {}", t.display())),
            Err(e) => Err(e),
        },
    );
    assert!(
        fs::symlink_metadata(b.path(".tandemignore")).is_err(),
        "the ignore file's link reached B"
    );
    assert!(find(&a.list(), ".tandemignore").is_none());

    // Both sides list the same (mtimes included), and nothing outside
    // was touched.
    wait_until(scaled(SYNC), "A and B list the same", &nodes, || {
        let (la, lb) = (a.try_list()?, b.try_list()?);
        if listed_files(&la) == listed_files(&lb) {
            Ok(())
        } else {
            Err(format!("A: {}\nB: {}", pretty(&la), pretty(&lb)))
        }
    });
    assert_eq!(dir_entries(outside.path()), ["secret.txt"]);
    let mode = fs::metadata(outside.path()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the folder outside changed mode");
    for n in nodes {
        assert!(
            !n.log().contains("outside the folder"),
            "{}",
            n.fail("read through a link")
        );
    }
}
