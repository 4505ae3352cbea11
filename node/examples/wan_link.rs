//! A slow link on loopback: a TCP proxy that delays and rate-limits.
//!
//!     cargo run --release -p tandem-node --example wan_link -- \
//!         --listen 127.0.0.1:7100 --to 127.0.0.1:7001 --delay 25ms --rate 100mbit
//!
//! Accepts TCP connections on `--listen`, connects each to `--to`, and
//! copies bytes both ways as a link with a fixed one-way delay and a
//! bandwidth would carry them, independently in each direction: a byte read
//! from one side at time `t` is written to the other no earlier than
//! `t + delay`, and no faster than `rate` (a serialization clock per
//! direction: each piece read waits until the bytes before it have been
//! "sent" at the rate, takes `len / rate` to send, then `delay` to arrive).
//! There is no burst credit: an idle link does not save up capacity.
//! The clock of a direction is shared by every connection through the
//! proxy (one wire), so two connections do not get twice the rate.
//!
//! It is a byte pipe, so TLS passes through unchanged (Tandem's peer links:
//! TLS 1.3 pinned by node id; the certificate does not name an address).
//!
//! Also modelled:
//! * ordering: pieces leave in the order they came, and a half-close (FIN)
//!   arrives after the bytes before it;
//! * bounded buffering: when more than `rate × (delay + queue)` bytes of a
//!   connection's direction are in the pipe (default queue 100 ms), the
//!   proxy stops reading from the source, so TCP backpressure reaches the
//!   sender;
//! * the TCP handshake's round trip: the client's `connect` returns at once
//!   on loopback, so the proxy waits `2 × delay` before it connects to the
//!   target and reads nothing from the client before then (the client's
//!   first bytes arrive at 3 × delay, as over a real link;
//!   `--no-handshake-delay` turns it off).
//!
//! Not modelled: loss, jitter, reordering, TCP's slow start and congestion
//! window on the long path (each side's TCP talks to the proxy over
//! loopback, as behind a split-TCP accelerator), and per-packet headers
//! (`rate` limits payload bytes). Timers have a resolution of about 1 ms,
//! which is added to each crossing.
//!
//! On start it prints one line, `wan_link: listening on ADDR -> TARGET, ...`
//! (stdout); it logs each connection's bytes when it closes (stderr) and
//! exits on SIGTERM or SIGINT, after a last line with the totals
//! (`wan_link: totals: N connections; to target X B, from target Y B`).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc};

#[derive(Parser, Debug)]
#[command(about = "TCP proxy with a one-way delay and a bandwidth limit in each direction")]
struct Args {
    /// Where to listen (port 0: any free port; the line printed at start names it).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to connect each accepted connection.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// One-way delay, each direction (humantime: 25ms, 1s, 0s).
    #[arg(long, value_name = "DURATION", default_value = "25ms", value_parser = parse_duration)]
    delay: Duration,
    /// Bandwidth, each direction: 100mbit, 1gbit, 500kbit, 12.5MB (bytes/s),
    /// 10MiB; 0 or "unlimited" for no limit.
    #[arg(long, value_name = "RATE", default_value = "100mbit", value_parser = parse_rate)]
    rate: u64,
    /// Queueing allowed on top of the delay before the proxy stops reading
    /// from the sender.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_duration)]
    queue: Duration,
    /// Connect to the target at once instead of after 2 × delay.
    #[arg(long)]
    no_handshake_delay: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{s:?}: {e}"))
}

/// A rate as bytes per second (0 = unlimited). Bits with SI prefixes
/// (`bit`, `kbit`, `mbit`, `gbit`, as network links are sold) or bytes
/// (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`), each optionally `/s`.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t == "0" || t.eq_ignore_ascii_case("unlimited") {
        return Ok(0);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: give a unit, e.g. 100mbit or 12.5MB"))?;
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
    let bytes_per_unit = match unit.trim() {
        u if u.eq_ignore_ascii_case("bit") => 1.0 / 8.0,
        u if u.eq_ignore_ascii_case("kbit") => 1e3 / 8.0,
        u if u.eq_ignore_ascii_case("mbit") => 1e6 / 8.0,
        u if u.eq_ignore_ascii_case("gbit") => 1e9 / 8.0,
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (bit, kbit, mbit, gbit, B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    let r = (num * bytes_per_unit).round();
    if !(1.0..1e15).contains(&r) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(r as u64)
}

// ------------------------------------------------------------ timing (pure)

/// Nanoseconds to put `len` bytes on a wire of `rate` bytes/s (rounded up,
/// so the rate is never exceeded); 0 when unlimited.
fn tx_ns(len: usize, rate: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    (len as u128 * 1_000_000_000).div_ceil(rate as u128) as u64
}

/// The largest piece read and scheduled at once: about 1 ms of the rate
/// (so bytes trickle out as they would, not in big bursts), at least one
/// packet's worth, at most 64 KiB.
fn quantum(rate: u64) -> usize {
    if rate == 0 {
        return 64 * 1024;
    }
    ((rate / 1000) as usize).clamp(1460, 64 * 1024)
}

/// Bytes a direction of one connection may hold before the proxy stops
/// reading from its source: what the wire holds in `delay` plus `queue` of
/// queueing (at least a few pieces, so a very slow link still moves).
fn queue_limit(rate: u64, delay: Duration, queue: Duration) -> usize {
    let q = quantum(rate);
    if rate == 0 {
        return 16 * 1024 * 1024;
    }
    let bytes = rate as u128 * (delay + queue).as_nanos() / 1_000_000_000;
    (bytes.min(1 << 30) as usize).max(4 * q)
}

/// One direction of the link: when the wire is next free.
#[derive(Debug, Clone)]
struct Wire {
    rate: u64,
    delay_ns: u64,
    /// When the last byte scheduled so far has been put on the wire (ns
    /// since the proxy's epoch).
    free_at: u64,
}

impl Wire {
    fn new(rate: u64, delay: Duration) -> Wire {
        Wire {
            rate,
            delay_ns: delay.as_nanos() as u64,
            free_at: 0,
        }
    }

    /// `len` bytes read at `arrival`: when they may be written on the far
    /// side. They wait for the bytes before them to be sent, take their own
    /// time to send, then the delay.
    fn send(&mut self, arrival: u64, len: usize) -> u64 {
        let start = arrival.max(self.free_at);
        self.free_at = start + tx_ns(len, self.rate);
        self.free_at + self.delay_ns
    }

    /// The end of the stream, read at `arrival`: it follows the bytes before it.
    fn fin(&self, arrival: u64) -> u64 {
        arrival.max(self.free_at) + self.delay_ns
    }
}

// ------------------------------------------------------------ the proxy

#[derive(Debug, Clone)]
struct Config {
    to: String,
    delay: Duration,
    rate: u64,
    queue: Duration,
    handshake_delay: bool,
}

/// What the proxy shares between connections: the clock's epoch, one wire
/// per direction, and byte counts ("up" = towards the target).
struct Link {
    cfg: Config,
    epoch: Instant,
    up: Mutex<Wire>,
    down: Mutex<Wire>,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    connections: AtomicU64,
}

impl Link {
    fn new(cfg: Config) -> Arc<Link> {
        Arc::new(Link {
            up: Mutex::new(Wire::new(cfg.rate, cfg.delay)),
            down: Mutex::new(Wire::new(cfg.rate, cfg.delay)),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            epoch: Instant::now(),
            cfg,
        })
    }

    fn totals(&self) -> String {
        format!(
            "{} connections; to target {} B, from target {} B",
            self.connections.load(Ordering::Relaxed),
            self.up_bytes.load(Ordering::Relaxed),
            self.down_bytes.load(Ordering::Relaxed)
        )
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn at(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_nanos(ns))
    }
}

/// Copies `rd` to `wr` through `wire`; returns the bytes copied (and adds
/// them to `count` as they are read). Reading and writing run side by side,
/// joined by a queue bounded in bytes.
async fn pipe(
    link: &Link,
    wire: &Mutex<Wire>,
    count: &AtomicU64,
    mut rd: OwnedReadHalf,
    mut wr: OwnedWriteHalf,
) -> io::Result<u64> {
    let q = quantum(link.cfg.rate);
    let limit = queue_limit(link.cfg.rate, link.cfg.delay, link.cfg.queue);
    let room = Arc::new(Semaphore::new(limit));
    // Unbounded in messages, bounded in bytes by `room`.
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Option<Vec<u8>>)>();
    let reader = async {
        let mut total = 0u64;
        loop {
            let permit = room
                .clone()
                .acquire_many_owned(q as u32)
                .await
                .map_err(io::Error::other)?;
            let mut buf = vec![0u8; q];
            let n = rd.read(&mut buf).await?;
            let now = link.now_ns();
            if n == 0 {
                let at = wire.lock().unwrap().fin(now);
                let _ = tx.send((at, None));
                return Ok::<u64, io::Error>(total);
            }
            buf.truncate(n);
            permit.forget();
            room.add_permits(q - n);
            let at = wire.lock().unwrap().send(now, n);
            total += n as u64;
            count.fetch_add(n as u64, Ordering::Relaxed);
            if tx.send((at, Some(buf))).is_err() {
                return Ok(total); // the writer failed; its error is reported
            }
        }
    };
    let writer = async {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(link.at(at)).await;
            match data {
                Some(buf) => {
                    wr.write_all(&buf).await?;
                    room.add_permits(buf.len());
                }
                None => {
                    wr.shutdown().await?;
                    break;
                }
            }
        }
        Ok::<(), io::Error>(())
    };
    let (total, ()) = tokio::try_join!(reader, writer)?;
    Ok(total)
}

/// One accepted connection, until both directions have ended (or one failed).
async fn serve(link: Arc<Link>, client: TcpStream, n: u64) {
    let started = Instant::now();
    let peer = client
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    if link.cfg.handshake_delay {
        tokio::time::sleep(2 * link.cfg.delay).await;
    }
    let server =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&link.cfg.to)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                eprintln!(
                    "wan_link: #{n} from {peer}: cannot connect to {}: {e}",
                    link.cfg.to
                );
                return;
            }
            Err(_) => {
                eprintln!(
                    "wan_link: #{n} from {peer}: connecting to {} timed out",
                    link.cfg.to
                );
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(&link, &link.up, &link.up_bytes, cr, sw);
    let down = pipe(&link, &link.down, &link.down_bytes, sr, cw);
    tokio::pin!(up, down);
    let (mut up_res, mut down_res) = (None, None);
    // Both directions to their end; a failure in one drops the other (and
    // with it both sockets).
    while up_res.is_none() || down_res.is_none() {
        tokio::select! {
            r = &mut up, if up_res.is_none() => {
                let failed = r.is_err();
                up_res = Some(r);
                if failed { break; }
            }
            r = &mut down, if down_res.is_none() => {
                let failed = r.is_err();
                down_res = Some(r);
                if failed { break; }
            }
        }
    }
    let show = |r: &Option<io::Result<u64>>| match r {
        Some(Ok(b)) => format!("{b} B"),
        Some(Err(e)) => format!("failed: {e}"),
        None => "dropped".to_string(),
    };
    eprintln!(
        "wan_link: #{n} from {peer} closed after {:.3} s; to target {}, from target {}",
        started.elapsed().as_secs_f64(),
        show(&up_res),
        show(&down_res)
    );
}

/// Accepts connections on `listener` and serves each through `link`, forever.
async fn run(listener: TcpListener, link: Arc<Link>) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        let n = link.connections.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(serve(link.clone(), client, n));
    }
}

fn describe_rate(rate: u64) -> String {
    if rate == 0 {
        "unlimited".into()
    } else {
        format!("{} Mbit/s ({rate} B/s)", rate as f64 * 8.0 / 1e6)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = Config {
        to: args.to,
        delay: args.delay,
        rate: args.rate,
        queue: args.queue,
        handshake_delay: !args.no_handshake_delay,
    };
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "wan_link: listening on {} -> {}, each way: delay {:?}, rate {}, queue limit {} B per connection{} [delay_ns={} rate={}]",
        listener.local_addr()?,
        cfg.to,
        cfg.delay,
        describe_rate(cfg.rate),
        queue_limit(cfg.rate, cfg.delay, cfg.queue),
        if cfg.handshake_delay {
            format!(", connect after {:?}", 2 * cfg.delay)
        } else {
            String::new()
        },
        cfg.delay.as_nanos(),
        cfg.rate,
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let link = Link::new(cfg);
    tokio::select! {
        r = run(listener, link.clone()) => r?,
        _ = term.recv() => eprintln!("wan_link: SIGTERM received; exiting"),
        _ = int.recv() => eprintln!("wan_link: SIGINT received; exiting"),
    }
    eprintln!("wan_link: totals: {}", link.totals());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn rates_parse_as_bytes_per_second() {
        assert_eq!(parse_rate("100mbit"), Ok(12_500_000));
        assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_rate("1gbit"), Ok(125_000_000));
        assert_eq!(parse_rate("500kbit"), Ok(62_500));
        assert_eq!(parse_rate("12.5MB"), Ok(12_500_000));
        assert_eq!(parse_rate("10MiB/s"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("unlimited"), Ok(0));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("100furlongs").is_err());
        assert!(parse_rate("0.001bit").is_err());
        assert_eq!(parse_duration("25ms"), Ok(Duration::from_millis(25)));
    }

    #[test]
    fn sending_takes_len_over_rate_rounded_up() {
        // 100 Mbit/s = 12.5 MB/s: 12,500 B in 1 ms, 4 KiB in 327.68 µs.
        assert_eq!(tx_ns(12_500, 12_500_000), MS);
        assert_eq!(tx_ns(4096, 12_500_000), 327_680);
        assert_eq!(tx_ns(1, 3), 333_333_334);
        assert_eq!(tx_ns(1 << 30, 0), 0);
    }

    #[test]
    fn pieces_are_about_a_millisecond() {
        assert_eq!(quantum(12_500_000), 12_500);
        assert_eq!(quantum(62_500), 1460);
        assert_eq!(quantum(125_000_000_000), 64 * 1024);
        assert_eq!(quantum(0), 64 * 1024);
    }

    #[test]
    fn queue_holds_delay_plus_queue_at_the_rate() {
        let ms = Duration::from_millis;
        assert_eq!(queue_limit(12_500_000, ms(25), ms(100)), 1_562_500);
        // a slow, short link still holds a few pieces
        assert_eq!(queue_limit(62_500, ms(1), ms(0)), 4 * 1460);
        assert_eq!(queue_limit(0, ms(25), ms(100)), 16 * 1024 * 1024);
    }

    #[test]
    fn a_lone_piece_arrives_after_its_send_time_plus_the_delay() {
        let mut w = Wire::new(12_500_000, Duration::from_millis(25));
        assert_eq!(w.send(100 * MS, 12_500), 126 * MS);
        // without a rate limit, exactly the delay
        let mut w = Wire::new(0, Duration::from_millis(25));
        assert_eq!(w.send(100 * MS, 1 << 20), 125 * MS);
        assert_eq!(w.send(100 * MS, 1 << 20), 125 * MS);
    }

    #[test]
    fn back_to_back_pieces_queue_behind_each_other() {
        let mut w = Wire::new(12_500_000, Duration::from_millis(25));
        // three 1 ms pieces read at the same instant leave 1 ms apart
        assert_eq!(w.send(0, 12_500), 26 * MS);
        assert_eq!(w.send(0, 12_500), 27 * MS);
        assert_eq!(w.send(0, 12_500), 28 * MS);
        // one read while the wire is still busy waits for it
        assert_eq!(w.send(2 * MS, 12_500), 29 * MS);
        // the end of the stream comes after the last byte
        assert_eq!(w.fin(0), 29 * MS);
    }

    #[test]
    fn an_idle_wire_saves_no_credit() {
        let mut w = Wire::new(12_500_000, Duration::from_millis(25));
        w.send(0, 12_500);
        // a second later, a burst is still paced at the rate
        assert_eq!(w.send(1000 * MS, 12_500), 1026 * MS);
        assert_eq!(w.send(1000 * MS, 12_500), 1027 * MS);
        assert_eq!(w.fin(5000 * MS), 5025 * MS);
    }

    #[test]
    fn delivery_never_beats_delay_or_rate() {
        // Arbitrary arrivals and sizes: each piece is delivered at least
        // `delay` after it arrived, and by the time a piece is delivered at
        // most rate × (t - delay - first arrival) bytes (plus nothing) have gone.
        let rate = 1_000_000u64;
        let delay = 7 * MS;
        let mut w = Wire::new(rate, Duration::from_nanos(delay));
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut arrival = 0u64;
        let mut sent = 0u128;
        let mut last = 0u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            arrival += x % (3 * MS);
            let len = (x >> 20) as usize % 5000 + 1;
            let at = w.send(arrival, len);
            sent += len as u128;
            assert!(at >= arrival + delay + tx_ns(len, rate));
            assert!(at >= last, "order kept");
            assert!(sent * 1_000_000_000 <= rate as u128 * (at - delay) as u128);
            last = at;
        }
    }

    /// Through the real proxy on loopback: bytes arrive intact and in order,
    /// the first no sooner than the delay after it was sent, and the whole
    /// no faster than the rate. Only lower bounds on time are checked (a
    /// busy machine makes things slower, never faster).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_through_loopback_take_the_delay_and_the_rate() {
        let delay = Duration::from_millis(40);
        let rate = 1_000_000u64; // 8 Mbit/s
        let total = 400_000usize; // 0.4 s at the rate
        let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = sink.local_addr().unwrap();
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let link = Link::new(Config {
            to: target.to_string(),
            delay,
            rate,
            queue: Duration::from_millis(100),
            handshake_delay: true,
        });
        let server = tokio::spawn(run(proxy, link.clone()));
        let receiver = tokio::spawn(async move {
            let (mut s, _) = sink.accept().await.unwrap();
            let mut first = [0u8; 1];
            s.read_exact(&mut first).await.unwrap();
            let first_at = Instant::now();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            let done_at = Instant::now();
            rest.insert(0, first[0]);
            // answer through the other direction, then close
            s.write_all(b"pong").await.unwrap();
            s.shutdown().await.unwrap();
            (first_at, done_at, rest)
        });
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        let connected = Instant::now();
        let mut c = TcpStream::connect(proxy_addr).await.unwrap();
        let sent_at = Instant::now();
        c.write_all(&data[..1]).await.unwrap();
        c.write_all(&data[1..]).await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(60), c.read_to_end(&mut back))
            .await
            .expect("proxy answered within 60 s")
            .unwrap();
        let back_at = Instant::now();
        let (first_at, done_at, got) = receiver.await.unwrap();
        server.abort();
        assert_eq!(back, b"pong");
        assert_eq!(
            link.totals(),
            format!("1 connections; to target {total} B, from target 4 B")
        );
        assert!(got == data, "bytes changed on the way");
        // the handshake's round trip, then the delay
        assert!(
            first_at - connected >= 3 * delay,
            "{:?}",
            first_at - connected
        );
        assert!(first_at - sent_at >= delay, "{:?}", first_at - sent_at);
        // the whole took at least its time on the wire, plus the delay
        let floor = delay + Duration::from_nanos(total as u64 * 1_000_000_000 / rate);
        assert!(
            done_at - sent_at >= floor,
            "{:?} < {floor:?}",
            done_at - sent_at
        );
        // and the answer crossed back with the delay
        assert!(back_at - done_at >= delay, "{:?}", back_at - done_at);
    }
}
