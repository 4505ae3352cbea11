//! Measures how fast one link moves bulk frames over loopback, with TLS
//! (as every link runs) and over plain TCP (the floor), so a change to the
//! TLS or framing layers can be judged in isolation from sync.
//!
//! `cargo run --release -p tandem-common --example link_throughput [MIB]`

use std::time::Instant;

use bytes::Bytes;
use tandem_common::codec::FrameIo;
use tandem_common::identity::KeyPair;
use tandem_common::tls::Tls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

const FRAME: usize = 1 << 20;

async fn pump<A, B>(a: A, b: B, mib: usize) -> String
where
    A: AsyncRead + AsyncWrite + Send + 'static,
    B: AsyncRead + AsyncWrite + Send + 'static,
{
    let payload = Bytes::from(vec![7u8; FRAME]);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let mut io = FrameIo::new(a);
        for _ in 0..mib {
            io.send_raw(payload.clone()).await.expect("send");
        }
        io
    });
    let mut rx = FrameIo::new(b);
    let mut got = 0usize;
    while got < mib * FRAME {
        got += rx.recv_raw().await.expect("recv").expect("frame").len();
    }
    let secs = started.elapsed().as_secs_f64();
    drop(sender.await);
    let cpu = cpu_seconds() - cpu0;
    let gib = (mib * FRAME) as f64 / (1u64 << 30) as f64;
    format!(
        "{:>5.0} MB/s, {:.2} CPU s/GiB",
        (mib * FRAME) as f64 / secs / 1e6,
        cpu / gib
    )
}

/// User plus system CPU time of this process so far: less disturbed by
/// other work on the machine than wall time.
fn cpu_seconds() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr());
        u.assume_init()
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    let (a, (b, _)) = (a.expect("connect"), b.expect("accept"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("MIB is a number"))
        .unwrap_or(1024);
    let dir = tempfile::tempdir().expect("temp dir");
    let (ka, _) = KeyPair::load_or_create(&dir.path().join("a.pem")).expect("key a");
    let (kb, _) = KeyPair::load_or_create(&dir.path().join("b.pem")).expect("key b");
    let (ta, tb) = (Tls::node(&ka).expect("tls"), Tls::node(&kb).expect("tls"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (a, b) = tcp_pair().await;
        println!("plain TCP: {}", pump(a, b, mib).await);
        let (a, b) = tcp_pair().await;
        let (c, s) = tokio::join!(ta.connect(a), tb.accept(b));
        let (c, s) = (c.expect("connect").0, s.expect("accept").0);
        println!("TLS:       {}", pump(c, s, mib).await);
    });
}
