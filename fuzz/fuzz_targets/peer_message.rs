//! A frame payload decoded as a `PeerMessage`, as a node decodes every
//! frame from a peer after the handshake (`PeerQuery` and `PeerAnswer`
//! travel inside it).
//!
//! Why: a peer is trusted to sync, not to send well-formed bytes (a bug or a
//! different build is enough). Checked, beyond "never panics":
//! - the codec's round trip (see `tandem_fuzz::round_trip`): what decodes
//!   re-encodes no longer, decodes to the same value, and a failure is a
//!   typed decode error;
//! - what decoding promises to normalise or validate: every version vector
//!   sorted with one non-zero counter per node, every set of writes sorted
//!   and unique, every path a valid `RelPath`;
//! - the raw body that follows a `Blocks` answer (`codec::Body`): its length
//!   is the sum of the blocks' lengths, and putting a body of that length
//!   back gives each block exactly its bytes, in order;
//! - a block sent as some of its chunks (`BlockData::patch`) is put
//!   together with an older copy, or refused, without panicking.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tandem_common::codec::Body;
use tandem_common::delta;
use tandem_common::model::BLOCK_SIZE;
use tandem_common::proto::{FileSummary, PeerAnswer, PeerMessage, PeerQuery};
use tandem_fuzz::{check_entry, check_path, check_version, round_trip};

/// Largest body the target builds to check `put_body` (the lengths are
/// the peer's word; the frame limit caps the real body).
const MAX_BODY: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some(mut msg) = round_trip::<PeerMessage>(data) else {
        return;
    };
    match &msg {
        PeerMessage::Index { entries, .. } => entries.iter().for_each(|(_, e)| check_entry(e)),
        PeerMessage::GetBlocks { path, .. } | PeerMessage::GetBlockList { path, .. } => {
            check_path(path.as_str())
        }
        PeerMessage::GetFiles { files, .. } => {
            files.iter().for_each(|(p, _)| check_path(p.as_str()))
        }
        PeerMessage::Query {
            q: PeerQuery::Files { after: Some(p) } | PeerQuery::File { path: p },
            ..
        } => check_path(p.as_str()),
        PeerMessage::Answer { a: Ok(a), .. } => match a {
            PeerAnswer::Files(files, _) => files.iter().for_each(check_summary),
            PeerAnswer::File(Some(f)) => check_summary(f),
            PeerAnswer::Held(held) => held.iter().for_each(|h| check_path(h.path.as_str())),
            PeerAnswer::Cache(c) => c.entries.iter().for_each(|e| check_path(e.path.as_str())),
            _ => {}
        },
        _ => {}
    }
    check_body(&mut msg);
});

fn check_summary(f: &FileSummary) {
    check_version(&f.version);
    check_path(f.path.as_str());
}

/// Chunks sent for a block, put together with older copies of a few
/// lengths: a patch is the block's length or an error.
fn check_patch(mask: u32, sent: &[u8]) {
    let full = BLOCK_SIZE as usize;
    let base = vec![7u8; full];
    for len in [0, 1, delta::CHUNK_SIZE + 1, full - 1, full, full + 1] {
        for base in [&base[..], &base[..len.min(full) / 2]] {
            if let Ok(block) = delta::patch(base, len, mask, sent) {
                assert_eq!(block.len(), len);
                assert_eq!(delta::masked_len(len, mask), Ok(sent.len()));
            }
        }
    }
}

/// The `Body` contract of a decoded message.
fn check_body(msg: &mut PeerMessage) {
    let announced = msg.body_len();
    let PeerMessage::Blocks {
        data: Ok(blocks), ..
    } = msg
    else {
        assert_eq!(announced, None, "only a Blocks answer has a body");
        assert!(msg.take_body().is_empty());
        return;
    };
    let total: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
    assert_eq!(announced, Some(total as usize));
    assert!(
        blocks.iter().all(|b| b.bytes.is_empty()),
        "bytes before the body"
    );
    if total > MAX_BODY {
        return;
    }
    let body = Bytes::from((0..total).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    msg.put_body(body.clone());
    let PeerMessage::Blocks {
        data: Ok(blocks), ..
    } = &*msg
    else {
        unreachable!()
    };
    let mut at = 0;
    for b in blocks {
        assert_eq!(b.bytes.len(), b.len as usize);
        assert_eq!(b.bytes, body.slice(at..at + b.len as usize));
        at += b.len as usize;
        if let Some(mask) = b.patch {
            check_patch(mask, &b.bytes);
        }
    }
    let parts = msg.take_body();
    assert_eq!(
        parts.concat(),
        body.to_vec(),
        "take_body gives the body back"
    );
}
