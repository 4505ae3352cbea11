//! Helpers shared by the fuzz targets in `fuzz_targets/` and by the seed
//! generator in `examples/seeds.rs`: the checks every decoded message must
//! pass, a byte stream that hands its bytes out in fuzzer-chosen pieces,
//! and the input layouts that both the targets and the seeds agree on.

use std::fmt::Debug;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_common::FileEntry;
use tandem_common::codec::{self, CodecError};
use tandem_common::model::{VersionVector, Writes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Decodes `data` as a `T` the way a node does ([`codec::decode`]) and, when
/// it decodes, checks the round trip: the value re-encodes, never longer
/// than what was received (a peer cannot make a node send more than it
/// got), the re-encoding decodes again to the same value (same bytes, same
/// `Debug`), and encoding is stable from then on. When it does not decode,
/// the error is a typed decode error, and a `Trailing(n)` error means the
/// first `len - n` bytes alone decode.
pub fn round_trip<T: Serialize + DeserializeOwned + Debug>(data: &[u8]) -> Option<T> {
    let first: T = match codec::decode(data) {
        Ok(v) => v,
        Err(CodecError::Decode(_)) => return None,
        Err(CodecError::Trailing(n)) => {
            assert!(
                n > 0 && n < data.len(),
                "{n} trailing bytes of {}",
                data.len()
            );
            let head = &data[..data.len() - n];
            codec::decode::<T>(head).expect("the bytes before the trailing ones decode alone");
            return None;
        }
        Err(e) => panic!("decode gave an error of the wrong kind: {e:?}"),
    };
    let bytes = codec::encode(&first).expect("a decoded value re-encodes");
    assert!(
        bytes.len() <= data.len(),
        "re-encoding grew from {} to {} bytes: {first:?}",
        data.len(),
        bytes.len()
    );
    let second: T = codec::decode(&bytes).expect("a re-encoded value decodes");
    let again = codec::encode(&second).expect("a decoded value re-encodes");
    assert_eq!(again, bytes, "encoding is not stable for {first:?}");
    assert_eq!(format!("{first:?}"), format!("{second:?}"));
    Some(first)
}

/// A version vector as decoding promises it: sorted by node, one counter
/// per node, no zero counter.
pub fn check_version(v: &VersionVector) {
    let pairs: Vec<_> = v.iter().collect();
    for w in pairs.windows(2) {
        assert!(w[0].0 < w[1].0, "version vector not sorted: {v:?}");
    }
    assert!(pairs.iter().all(|(_, c)| *c > 0), "zero counter in {v:?}");
}

/// A set of writes as decoding promises it: sorted, without duplicates.
pub fn check_writes(w: &Writes) {
    let dots: Vec<_> = w.iter().collect();
    for pair in dots.windows(2) {
        assert!(pair[0] < pair[1], "writes not sorted and unique: {w:?}");
    }
    for d in &dots {
        assert!(w.contains(d), "{d:?} listed but not found in {w:?}");
    }
}

/// Everything decoding promises about a file entry from the network.
pub fn check_entry(e: &FileEntry) {
    check_version(&e.version);
    check_writes(&e.written);
    check_writes(&e.losers);
    check_path(e.path.as_str());
}

/// A decoded path is one that `RelPath::new` accepts (deserialization
/// validates: no path can be smuggled past the check inside a message).
pub fn check_path(p: &str) {
    assert!(
        tandem_common::RelPath::new(p).is_ok(),
        "a decoded path {p:?} is not a valid RelPath"
    );
}

/// Runs a future that never waits on anything but [`Script`] to completion
/// on this thread, without a runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    // A Script wakes itself before every Pending it returns, so each poll
    // makes progress; the bound only catches a future stuck for good.
    for _ in 0..10_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the future made no progress");
}

/// A byte stream that hands out `data` in pieces of at most `chunk` bytes,
/// answering `Pending` before every other piece when `stall` is set, and
/// swallows whatever is written to it.
pub struct Script {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    stall: bool,
    stalled: bool,
}

impl Script {
    /// A stream reading `data` in pieces of at most `chunk` (at least 1) bytes.
    pub fn new(data: Vec<u8>, chunk: usize, stall: bool) -> Self {
        Script {
            data,
            pos: 0,
            chunk: chunk.max(1),
            stall,
            stalled: false,
        }
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.stall && !self.stalled {
            self.stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.stalled = false;
        let n = self
            .chunk
            .min(buf.remaining())
            .min(self.data.len() - self.pos);
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The first two bytes of a `frame` input: how the reader is set up. The
/// rest of the input is the byte stream.
#[derive(Debug, Clone, Copy)]
pub struct FrameSetup {
    /// The largest frame the reader accepts (`set_max_frame`).
    pub max_frame: usize,
    /// Which typed reader the second pass uses.
    pub reader: TypedReader,
    /// Answer `Pending` between reads.
    pub stall: bool,
    /// Bytes handed out per read.
    pub chunk: usize,
}

/// What the second pass of the `frame` target reads the stream as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypedReader {
    /// `recv_msg::<PeerMessage>` (with block bodies), as a node's peer link.
    Peer,
    /// A hello, then `recv::<Request>`, as a node serving a client.
    Client,
    /// `recv_msg::<NodeToClient>` (with chunk bodies), as a client.
    NodeToClient,
    /// A hello reply, then `recv_msg::<PeerMessage>`, as a connecting node.
    HelloReplyThenPeer,
}

/// The node's frame limit for a client without a role (node/src/api.rs).
pub const STRANGER_MAX_FRAME: usize = 64 * 1024;

impl FrameSetup {
    /// Reads the setup from the first two bytes (missing bytes are 0).
    pub fn from_bytes(b0: u8, b1: u8) -> Self {
        let max_frame = match b0 & 3 {
            0 => codec::MAX_FRAME,
            1 => STRANGER_MAX_FRAME,
            2 => 16,
            _ => 0,
        };
        let reader = match (b0 >> 2) & 3 {
            0 => TypedReader::Peer,
            1 => TypedReader::Client,
            2 => TypedReader::NodeToClient,
            _ => TypedReader::HelloReplyThenPeer,
        };
        FrameSetup {
            max_frame,
            reader,
            stall: b0 & 0x10 != 0,
            chunk: if b1 == 255 {
                usize::MAX
            } else {
                b1 as usize + 1
            },
        }
    }

    /// The two bytes that give this setup (inverse of `from_bytes`).
    pub fn to_bytes(self) -> [u8; 2] {
        let limit = match self.max_frame {
            codec::MAX_FRAME => 0,
            STRANGER_MAX_FRAME => 1,
            16 => 2,
            _ => 3,
        };
        let reader = match self.reader {
            TypedReader::Peer => 0,
            TypedReader::Client => 1,
            TypedReader::NodeToClient => 2,
            TypedReader::HelloReplyThenPeer => 3,
        };
        let chunk = if self.chunk >= 256 {
            255
        } else {
            (self.chunk.max(1) - 1) as u8
        };
        [limit | reader << 2 | u8::from(self.stall) << 4, chunk]
    }
}

/// Input layout of the `blocklist` target (see there): the lengths of the
/// peer's block list and of ours, which hostile change to make to what is
/// received, edits that make our list differ, and the bytes the peer's
/// block hashes are made from.
#[derive(Debug, Clone)]
pub struct BlockListCase {
    /// Blocks in the peer's (target) list, at most [`MAX_CASE_BLOCKS`].
    pub theirs: u16,
    /// Blocks in our list, at most [`MAX_CASE_BLOCKS`].
    pub ours: u16,
    /// Which hostile change to make to the groups received (0: none).
    pub attack: u8,
    /// (position, byte): our block at `position % ours` is replaced.
    pub edits: Vec<(u16, u8)>,
    /// The peer's block `i` hashes `source[i % len]` (and `i / len`).
    pub source: Vec<u8>,
}

/// Longest list the `blocklist` target builds: six groups and a bit
/// (enough for every shape; longer lists only slow the fuzzer down).
pub const MAX_CASE_BLOCKS: u16 = 6 * 64 + 17;

impl BlockListCase {
    /// Reads a case; short inputs read as zeros.
    pub fn from_bytes(data: &[u8]) -> Self {
        let byte = |i: usize| data.get(i).copied().unwrap_or(0);
        let u16_at = |i: usize| u16::from_le_bytes([byte(i), byte(i + 1)]);
        let n_edits = byte(5) as usize % 16;
        let edits = (0..n_edits)
            .map(|k| (u16_at(6 + 3 * k), byte(8 + 3 * k)))
            .collect();
        let start = (6 + 3 * n_edits).min(data.len());
        BlockListCase {
            theirs: u16_at(0) % (MAX_CASE_BLOCKS + 1),
            ours: u16_at(2) % (MAX_CASE_BLOCKS + 1),
            attack: byte(4),
            edits,
            source: data[start..].to_vec(),
        }
    }

    /// The bytes that read back as this case.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.theirs.to_le_bytes());
        out.extend_from_slice(&self.ours.to_le_bytes());
        out.push(self.attack);
        out.push(self.edits.len() as u8);
        for (p, b) in &self.edits {
            out.extend_from_slice(&p.to_le_bytes());
            out.push(*b);
        }
        out.extend_from_slice(&self.source);
        out
    }
}
