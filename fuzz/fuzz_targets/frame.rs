//! The framed reader every connection goes through (`codec::FrameIo`): a
//! 4-byte big-endian length prefix, then that many bytes, read from a byte
//! stream that hands its bytes out in fuzzer-chosen pieces (and stalls
//! between them), with a fuzzer-chosen frame limit (`set_max_frame`: the
//! full 16 MiB, the 64 KiB a node allows a client without a role, tiny).
//!
//! Why: this is the first code a hostile peer's bytes reach, before any
//! trust. Checked, beyond "never panics":
//! - the raw frames (`recv_raw`) are exactly those of a simple model of the
//!   format: the same payloads in order, then a clean `None` only when the
//!   stream ends between frames, `Truncated` when it ends inside one (even
//!   right after a length prefix), and an I/O `InvalidData` error for a
//!   length over the limit, whatever the read sizes;
//! - reading never holds much more memory than the frame limit allows
//!   (a hostile length is refused before anything is reserved), and
//!   decoding the frames as messages stays within the codec's own limit;
//! - the typed readers (`recv_msg` with block or chunk bodies, `recv`, the
//!   hello) hand out only messages whose bodies have the announced lengths.
//!
//! Input: two setup bytes (see `FrameSetup`), then the stream.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::fuzz_target;
use tandem_common::codec::{CodecError, FrameIo, MAX_FRAME};
use tandem_common::proto::{
    self, ClientResponse, Hello, HelloReply, NodeToClient, PeerMessage, Request,
};
use tandem_fuzz::{FrameSetup, Script, TypedReader, block_on};

/// Counts live heap bytes, so the target can see the most a read held.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as both blocks at once, as a moving realloc holds them.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes held at the most since `start` (a live count before a run).
fn peak_since(start: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(start)
}

fn reset_peak() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// How a stream of frames ends, according to the format.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Between frames.
    Clean,
    /// Inside a frame (or its length prefix).
    Truncated,
    /// A length prefix over the limit.
    TooBig,
}

/// The format, written plainly: the frames of `stream` and how it ends.
fn model(stream: &[u8], max_frame: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Truncated);
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if n > max_frame {
            return (frames, End::TooBig);
        }
        if rest.len() - 4 < n {
            return (frames, End::Truncated);
        }
        frames.push(&rest[4..4 + n]);
        rest = &rest[4 + n..];
    }
}

/// Reading's own allowance over the frame limit: the reader's initial
/// 8 KiB buffer, the stream's pieces, bookkeeping.
const READ_SLACK: usize = 64 * 1024;

/// Decoding's allowance: bincode reserves a string or byte field's claimed
/// length (up to the codec's limit, `MAX_FRAME`, whatever the frame's
/// size) and serde preallocates up to 1 MiB per nested sequence.
const DECODE_ALLOWANCE: usize = MAX_FRAME + 8 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    let setup = FrameSetup::from_bytes(
        data.first().copied().unwrap_or(0),
        data.get(1).copied().unwrap_or(0),
    );
    let stream = data.get(2..).unwrap_or(&[]);
    raw_frames(setup, stream);
    typed_messages(setup, stream);
});

/// First pass: raw frames against the model, and memory against the limit.
fn raw_frames(setup: FrameSetup, stream: &[u8]) {
    let (want, end) = model(stream, setup.max_frame);
    let mut io = FrameIo::new(Script::new(stream.to_vec(), setup.chunk, setup.stall));
    io.set_max_frame(setup.max_frame);
    let start = reset_peak();
    let mut got = 0;
    let result = block_on(async {
        loop {
            match io.recv_raw().await {
                Ok(Some(frame)) => {
                    assert!(got < want.len(), "a frame the model does not have");
                    assert!(frame.len() <= setup.max_frame, "a frame over the limit");
                    assert_eq!(&frame[..], want[got], "frame {got} differs");
                    got += 1;
                }
                other => return other,
            }
        }
    });
    assert_eq!(got, want.len(), "frames missing before {result:?}");
    match (&end, &result) {
        (End::Clean, Ok(None)) => {}
        (End::Truncated, Err(CodecError::Truncated)) => {}
        (End::TooBig, Err(CodecError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {}
        _ => panic!("the stream should end {end:?}, the reader said {result:?}"),
    }
    let held = peak_since(start);
    assert!(
        held <= setup.max_frame + stream.len() + READ_SLACK,
        "reading held {held} bytes with a {}-byte limit",
        setup.max_frame
    );
}

/// Second pass: the same stream through a typed reader, as a node or a
/// client reads it.
fn typed_messages(setup: FrameSetup, stream: &[u8]) {
    let mut io = FrameIo::new(Script::new(stream.to_vec(), setup.chunk, setup.stall));
    io.set_max_frame(setup.max_frame);
    let start = reset_peak();
    block_on(async {
        match setup.reader {
            TypedReader::Peer => {}
            TypedReader::Client => {
                let Ok(Some(frame)) = io.recv_raw().await else {
                    return;
                };
                if !matches!(proto::decode_hello::<Hello>(&frame), Ok((_, Some(_)))) {
                    return;
                }
                while let Ok(Some(_)) = io.recv::<Request>().await {}
                return;
            }
            TypedReader::NodeToClient => {
                while let Ok(Some(msg)) = io.recv_msg::<NodeToClient>().await {
                    if let NodeToClient::Response {
                        body: ClientResponse::Chunk { len, data, .. },
                        ..
                    } = &msg
                    {
                        assert_eq!(data.len(), *len as usize, "a chunk of the wrong length");
                    }
                }
                return;
            }
            TypedReader::HelloReplyThenPeer => {
                let Ok(Some(frame)) = io.recv_raw().await else {
                    return;
                };
                if !matches!(proto::decode_hello::<HelloReply>(&frame), Ok((_, Some(_)))) {
                    return;
                }
            }
        }
        while let Ok(Some(msg)) = io.recv_msg::<PeerMessage>().await {
            if let PeerMessage::Blocks {
                data: Ok(blocks), ..
            } = &msg
            {
                for b in blocks {
                    assert_eq!(b.bytes.len(), b.len as usize, "a block of the wrong length");
                }
            }
        }
    });
    let held = peak_since(start);
    assert!(
        held <= setup.max_frame + stream.len() + READ_SLACK + DECODE_ALLOWANCE,
        "reading and decoding held {held} bytes with a {}-byte limit",
        setup.max_frame
    );
}
