//! The suite's own link proxy: one TCP forwarder per directed link.
//!
//! A node dials its peer through a [`Proxy`] (its `--peer` is the proxy's
//! address), so the test controls every link: [`Proxy::cut`] closes every
//! connection through it at once and refuses new ones (each is accepted and
//! closed at once, so the dialling node sees a failed handshake and backs
//! off) until [`Proxy::heal`].
//!
//! Plain threads: one acceptor, and per connection one thread for each
//! direction, each copying through a fixed 64 KiB buffer with blocking
//! writes (back-pressure, no unbounded buffering). Dropping the proxy stops
//! it: the acceptor is woken by a connection of our own and every forwarded
//! connection is shut down, then all threads are joined.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How long the proxy waits for the node it forwards to to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Size of each direction's copy buffer.
const BUF: usize = 64 * 1024;

/// A forwarder from a loopback port of its own to `target`.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cut: bool,
    stopped: bool,
    next_id: u64,
    /// Open forwarded connections: (client side, upstream side).
    conns: HashMap<u64, (TcpStream, TcpStream)>,
    workers: Vec<JoinHandle<()>>,
    accepted: u64,
    refused: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Starts forwarding a fresh `127.0.0.1` port to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("proxy: bound listener has an address");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy-{addr}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("proxy: cannot spawn the acceptor")
        };
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address nodes dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection at once; refuses new ones until [`heal`](Self::heal).
    pub fn cut(&self) {
        let mut st = self.shared.state();
        st.cut = true;
        for (a, b) in st.conns.values() {
            close(a);
            close(b);
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.shared.state().cut = false;
    }

    /// Connections forwarded and refused so far (for the op log).
    pub fn counts(&self) -> (u64, u64) {
        let st = self.shared.state();
        (st.accepted, st.refused)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state();
            st.stopped = true;
            for (a, b) in st.conns.values() {
                close(a);
                close(b);
            }
        }
        // Wake the acceptor: it sees `stopped` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        let workers = std::mem::take(&mut self.shared.state().workers);
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let mut st = shared.state();
        if st.stopped {
            return;
        }
        let Ok(client) = conn else { continue };
        if st.cut {
            st.refused += 1;
            close(&client);
            continue;
        }
        st.accepted += 1;
        st.workers.retain(|w| !w.is_finished());
        let id = st.next_id;
        st.next_id += 1;
        let shared2 = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("proxy-conn-{id}"))
            .spawn(move || forward(id, client, shared2));
        match spawned {
            Ok(h) => st.workers.push(h),
            Err(e) => eprintln!("proxy: cannot spawn a connection thread: {e}"),
        }
    }
}

/// Connects upstream and copies both ways until either side closes or the
/// link is cut.
fn forward(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
        close(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (|| Ok::<_, io::Error>((client.try_clone()?, upstream.try_clone()?)))();
    let Ok((client2, upstream2)) = clones else {
        close(&client);
        close(&upstream);
        return;
    };
    {
        // Registered under the same lock `cut` takes: a cut either sees
        // this connection or is seen here.
        let mut st = shared.state();
        if st.cut || st.stopped {
            close(&client);
            close(&upstream);
            return;
        }
        let reg = (|| Ok::<_, io::Error>((client.try_clone()?, upstream.try_clone()?)))();
        match reg {
            Ok(r) => {
                st.conns.insert(id, r);
            }
            Err(_) => {
                close(&client);
                close(&upstream);
                return;
            }
        }
    }
    let back = thread::Builder::new()
        .name(format!("proxy-conn-{id}-back"))
        .spawn(move || pump(upstream2, client2));
    pump(client, upstream);
    if let Ok(h) = back {
        let _ = h.join();
    }
    if let Some((a, b)) = shared.state().conns.remove(&id) {
        close(&a);
        close(&b);
    }
}

/// Copies `from` to `to` through a fixed buffer. End of stream is passed on
/// as a half close; an error closes both sockets.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    close(&from);
    close(&to);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            // Serves three connections, then stops.
            for c in l.incoming().take(3) {
                let mut c = c.unwrap();
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, h)
    }

    fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_cuts_refuses_and_heals() {
        let (target, _server) = echo_server();
        let proxy = Proxy::start(target);
        let mut s = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");

        proxy.cut();
        // The open connection is closed: a read ends (EOF or reset).
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
        // A new one is accepted and closed at once.
        let mut r = TcpStream::connect(proxy.addr()).unwrap();
        assert!(roundtrip(&mut r, b"x").is_err());

        proxy.heal();
        let mut s2 = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(roundtrip(&mut s2, b"again").unwrap(), b"again");
        assert_eq!(proxy.counts(), (2, 1));
        drop(proxy); // joins every thread; must not hang
    }
}
