//! The real `tandem` binary against things that are not Tandem nodes: a
//! listener that accepts and never answers, an HTTP server, and a TLS
//! server that speaks something else. Each is a tiny listener made here on
//! a free loopback port; each run of the client is bounded by a deadline
//! and killed by its PID if it overstays (so a hang fails the test instead
//! of blocking it).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Longest a single client run may take before the test calls it a hang.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A listener on a free loopback port that serves every connection with
/// `serve` on a thread of its own, until dropped.
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let serve = Arc::new(serve);
        thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let serve = serve.clone();
                        thread::spawn(move || serve(s));
                    }
                    // Polling accept keeps the thread stoppable; this is
                    // the listener's own pace, not test synchronisation.
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Listener { addr, stop }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads and keeps the connection open until the client goes away, never
/// writing a byte.
fn silent(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

/// Answers whatever comes with an HTTP error, like a web server would.
fn http(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = s.read(&mut buf);
    let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n\r\nBad Request");
    let _ = s.flush();
    silent(s);
}

/// `tandem ARGS` with a fresh identity in `home`, no pinned ids and no
/// `TANDEM_NODE`; killed (by PID) after `RUN_LIMIT`.
fn tandem(home: &Path, args: &[&str]) -> (Output, Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .env_remove("TANDEM_NODE")
        .env("TANDEM_IDENTITY", home.join("client.key"))
        .env("TANDEM_KNOWN_NODES", home.join("known_nodes"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem");
    let t0 = Instant::now();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for tandem") {
            break st;
        }
        if t0.elapsed() > RUN_LIMIT {
            // SAFETY: kill(2) on our own child's PID, not yet reaped.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "tandem {args:?} still ran after {RUN_LIMIT:?}: no timeout; stderr so far: {}",
                String::from_utf8_lossy(&err.join().unwrap_or_default())
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t0.elapsed();
    (
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        },
        elapsed,
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_listener_that_never_answers_times_out_by_name() {
    let home = TempDir::new().unwrap();
    let l = Listener::start(silent);
    let addr = l.addr.to_string();

    // `--timeout` after the subcommand, like `--node`.
    let (out, took) = tandem(home.path(), &["list", "--node", &addr, "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let want = format!("tandem: error: {addr} did not answer as a Tandem node within 1 s; ");
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "took {took:?}"
    );

    // The default is 10 s.
    let (out, took) = tandem(home.path(), &["--node", &addr, "nodes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let want = format!("tandem: error: {addr} did not answer as a Tandem node within 10 s; ");
    assert!(stderr(&out).starts_with(&want), "{}", stderr(&out));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(25),
        "took {took:?}"
    );
}

/// `tandem list` against `addr` fails (exit 1) naming it as not a Tandem
/// node, never with the codec's "frame size" words.
fn said_not_tandem(home: &Path, addr: &str) {
    let (out, _) = tandem(home, &["--node", addr, "list", "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("tandem: error: {addr} is not a Tandem node: ")),
        "{err}"
    );
    assert!(!err.contains("frame size"), "{err}");
}

#[test]
fn a_server_that_is_not_tandem_is_named_as_such() {
    let home = TempDir::new().unwrap();

    // Plain bytes where TLS was expected: an HTTP server.
    let l = Listener::start(http);
    said_not_tandem(home.path(), &l.addr.to_string());

    // TLS, but then something else than Tandem's hello: the case that
    // used to say "frame size too big".
    let dir = TempDir::new().unwrap();
    let (key, _) =
        tandem_common::identity::KeyPair::load_or_create(&dir.path().join("k.pem")).unwrap();
    let tls = Arc::new(tandem_common::tls::Tls::node(&key).unwrap());
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap(),
    );
    let l = Listener::start(move |s| {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = tls.clone();
        rt.block_on(async move {
            s.set_nonblocking(true).unwrap();
            let s = tokio::net::TcpStream::from_std(s).unwrap();
            let Ok((mut s, _, _)) = tls.accept(s).await else {
                return;
            };
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .await;
            let _ = s.flush().await;
            let mut buf = [0u8; 4096];
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
        });
    });
    let addr = l.addr.to_string();
    said_not_tandem(home.path(), &addr);
    // Its key was not pinned for the address: a real node there later is
    // not refused as "another machine".
    let pinned = std::fs::read_to_string(home.path().join("known_nodes")).unwrap_or_default();
    assert!(!pinned.contains(&addr), "{pinned}");
}

#[test]
fn node_is_an_address_and_cache_names_a_node_with_of() {
    let home = TempDir::new().unwrap();
    // The old spelling: a usage error (exit 2) that says what to write.
    let (out, _) = tandem(home.path(), &["cache", "--node", "B"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "error: --node takes the address of the node to talk to (HOST:PORT), not a node's name; to see the cache of node B, use `tandem cache --of B`"
        ),
        "{}",
        stderr(&out)
    );
    let (out, _) = tandem(home.path(), &["list", "--node", "B"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: --node \"B\" is not an address; give HOST:PORT"),
        "{}",
        stderr(&out)
    );
    // `--node` after the subcommand is the node talked to: the silent
    // listener's address shows in the timeout.
    let l = Listener::start(silent);
    let addr = l.addr.to_string();
    let (out, _) = tandem(
        home.path(),
        &["cache", "--of", "B", "--node", &addr, "--timeout", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{addr} did not answer as a Tandem node within 1 s"
        )),
        "{}",
        stderr(&out)
    );
}
