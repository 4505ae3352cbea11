//! Secure by default, against the real binaries: only trusted nodes link,
//! a node that proves another key than the one named is refused, the wire
//! carries no file content in clear, and setuid bits never arrive.

mod harness;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use harness::*;

/// A TCP forwarder to `target` that keeps a copy of every byte it passes.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(target: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    let seen = s2.clone();
                    thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            seen.lock().expect("lock").extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Recorder { addr, seen }
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().expect("lock").clone()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_untrusted_node_is_refused_before_any_message_until_it_is_trusted() {
    let a = Node::builder("A").untrusted().start();
    let a_id = a.id().map(str::to_string).unwrap_or_else(|| {
        let out = std::process::Command::new(node_bin())
            .arg("--dir")
            .arg(a.dir())
            .arg("id")
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    // B names A's id (so B trusts A), but A has never heard of B.
    let b = Node::builder("B")
        .untrusted()
        .arg("--peer")
        .arg(format!("{a_id}@{}", a.addr()))
        .start();
    put(b.path("from-b.txt"), b"secret from B");
    let line = a.wait_log("it is not trusted; to trust it run: tandem-node --dir");
    let b_id = line
        .split("refused node ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("the refusal names the id")
        .to_string();
    b.wait_log(&format!("does not trust this node (id {b_id})"));
    assert!(
        !a.path("from-b.txt").exists(),
        "{}",
        a.fail("a refused node's file arrived")
    );
    // The exact command from the log line trusts it; the link comes up.
    let out = std::process::Command::new(node_bin())
        .arg("--dir")
        .arg(a.dir())
        .args(["trust", &b_id, "--name", "B"])
        .output()
        .expect("trust");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(CHANGE_TIMEOUT * 3, "from-b.txt on A", &[&a, &b], || {
        fs::read(a.path("from-b.txt"))
            .ok()
            .filter(|d| d == b"secret from B")
    });
    // Untrusted again: the live link closes, and B's redials are refused.
    let before = a.log_count("it is not trusted");
    let out = std::process::Command::new(node_bin())
        .arg("--dir")
        .arg(a.dir())
        .args(["untrust", &b_id])
        .output()
        .expect("untrust");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    a.wait_log(&format!(
        "closing the link to B ({b_id}): it is no longer trusted"
    ));
    wait_until(CHANGE_TIMEOUT * 3, "A refuses B again", &[&a, &b], || {
        (a.log_count("it is not trusted") > before).then_some(())
    });
    // Nothing from B arrives any more (a bounded negative check: B's
    // change would arrive in well under this wait over a live link).
    put(b.path("after-untrust.txt"), b"not for A");
    let until = std::time::Instant::now() + scaled(Duration::from_secs(2));
    while std::time::Instant::now() < until {
        assert!(
            !a.path("after-untrust.txt").exists(),
            "{}",
            a.fail("a change from an untrusted node arrived")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_proving_another_key_than_named_is_refused() {
    let a = Node::builder("A").untrusted().start();
    // Some other node's id: whoever answers at A's address is not it.
    let other = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(node_bin())
        .arg("--dir")
        .arg(other.path())
        .arg("id")
        .output()
        .expect("id");
    let wrong = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let b = Node::builder("B")
        .untrusted()
        .arg("--peer")
        .arg(format!("{wrong}@{}", a.addr()))
        .start();
    put(b.path("x.txt"), b"x");
    let line = b.wait_log(&format!("but --peer names {wrong}"));
    assert!(line.contains("nothing was sent"), "{}", b.fail(&line));
    assert!(!a.path("x.txt").exists());
    assert_eq!(a.log_count("peer B connected"), 0, "{}", a.fail("linked"));
}

#[test]
fn the_wire_carries_no_file_content_in_clear() {
    let a = Node::start("A");
    let rec = Recorder::start(a.addr());
    let b = Node::builder("B").peer(rec.addr).trusts(&a).start();
    let marker = b"TANDEM-CLEAR-TEXT-MARKER-0123456789-the content of a secret file";
    put(a.path("secret.txt"), marker);
    wait_until(CHANGE_TIMEOUT * 3, "secret.txt on B", &[&a, &b], || {
        fs::read(b.path("secret.txt")).ok().filter(|d| d == marker)
    });
    let wire = rec.bytes();
    assert!(wire.len() > 1000, "the link went through the recorder");
    assert!(!contains(&wire, marker), "file content crossed in clear");
    assert!(
        !contains(&wire, b"secret.txt"),
        "a file name crossed in clear"
    );
    assert!(
        !contains(&wire, b"TANDEM\r\n"),
        "the hello crossed in clear"
    );
}

#[test]
fn setuid_bits_never_arrive_from_a_peer_or_a_put() {
    let (a, b) = linked_pair(&[]);
    let f = a.path("tool");
    put(&f, b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).expect("chmod");
    wait_until(CHANGE_TIMEOUT * 3, "tool on B", &[&a, &b], || {
        fs::metadata(b.path("tool")).ok()
    });
    let mode = fs::metadata(b.path("tool"))
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "B's copy has mode {mode:o}");

    let local = tempfile::tempdir().expect("dir");
    let up = local.path().join("up");
    fs::write(&up, b"uploaded").expect("write");
    fs::set_permissions(&up, fs::Permissions::from_mode(0o6755)).expect("chmod");
    let out = a.tandem(&["put", up.to_str().expect("utf8"), "--as", "up"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [&a, &b] {
        let m = wait_until(CHANGE_TIMEOUT * 3, "up everywhere", &[&a, &b], || {
            fs::metadata(n.path("up")).ok()
        });
        let mode = m.permissions().mode();
        assert_eq!(mode & 0o7000, 0, "{}: mode {mode:o}", n.name());
    }
}

#[test]
fn idle_and_oversized_strangers_are_closed_and_others_keep_working() {
    let node = Node::builder("A").arg("--idle-timeout").arg("2s").start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // Says hello, then nothing: closed after the idle timeout.
        let idle = stranger(&node).await;
        closed_by_node(&node, idle, "an idle connection stayed open").await;
        node.wait_log("idle for 2s");

        // A client without a role may not send big frames.
        let mut big = stranger(&node).await;
        let _ = big.send_raw(bytes::Bytes::from(vec![0u8; 1 << 20])).await;
        closed_by_node(&node, big, "a 1 MiB frame from a stranger was read").await;
    });
    // The admin's client still works.
    node.list();
}

/// A plain TCP client speaking the old clear-text protocol (the magic bytes
/// and a hello frame, as protocol 4 did) gets no answer it could use: the
/// node closes the connection, says why in its log, and changes nothing.
#[test]
fn a_plain_tcp_client_is_refused_and_changes_nothing() {
    let node = Node::start("A");
    put(node.path("keep.txt"), b"keep");
    node.wait_list("keep.txt indexed", |l| {
        l.iter().any(|f| f["path"] == "keep.txt")
    });
    let before = disk_files(node.dir());
    let mut s = TcpStream::connect(node.addr()).expect("connect");
    s.set_read_timeout(Some(scaled(Duration::from_secs(15))))
        .expect("timeout");
    let mut hello = b"TANDEM\r\n".to_vec();
    hello.extend_from_slice(&9u32.to_be_bytes());
    hello.extend_from_slice(b"\x04\x00\x00\x00\x01\x04evil");
    s.write_all(&hello).expect("write");
    // Whatever comes back (a TLS alert at most) ends in a close.
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    assert!(
        !contains(&back, b"keep.txt") && back.len() < 64,
        "{}",
        node.fail(&format!("a plain client got {} bytes back", back.len()))
    );
    node.wait_log("TLS handshake failed");
    assert_eq!(before, disk_files(node.dir()), "nothing on disk changed");
    node.list();
}
