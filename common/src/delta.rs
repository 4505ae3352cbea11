//! Sending part of a block: when the asker holds an older copy of a block
//! (the same place in its own older version of the file), it sends a short
//! hash of each [`CHUNK_SIZE`] chunk of that copy, and the answer carries
//! only the chunks that differ. A 4 KiB edit then costs 4–8 KiB on the
//! wire instead of the whole 128 KiB block.
//!
//! The chunk hashes only choose what to send: the asker checks the patched
//! block against its full BLAKE3 block hash, so a chunk-hash collision or a
//! wrong answer costs one more request for the whole block, never a wrong
//! file. Pure functions, no I/O.

use crate::model::BLOCK_SIZE;

/// Bytes per chunk: the unit of a partial block.
pub const CHUNK_SIZE: usize = 4096;
/// Chunks in a full block (one bit each in a chunk mask).
pub const CHUNKS_PER_BLOCK: usize = BLOCK_SIZE as usize / CHUNK_SIZE;
const _: () = assert!(CHUNKS_PER_BLOCK <= 32, "a chunk mask is a u32");

/// A chunk's short hash: the first 8 bytes of its BLAKE3.
pub type ChunkHash = u64;

/// Why a partial block could not be put together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The block is longer than a block can be.
    #[error("a block of {0} bytes is longer than {BLOCK_SIZE}")]
    TooLong(usize),
    /// The mask names a chunk past the block's end.
    #[error("chunk mask {mask:#x} names chunks past the end of a {len}-byte block")]
    MaskPastEnd {
        /// The mask sent.
        mask: u32,
        /// The block's length.
        len: usize,
    },
    /// The bytes sent are not the chunks the mask names.
    #[error("{got} bytes sent for chunks that hold {expected}")]
    SentLength {
        /// Bytes the mask's chunks hold.
        expected: usize,
        /// Bytes sent.
        got: usize,
    },
    /// A chunk not sent is not (wholly) in the base.
    #[error("chunk {0} was not sent and the older copy does not reach it")]
    BaseTooShort(usize),
}

/// The short hash of each chunk of `block` (the last one may be shorter).
pub fn chunk_hashes(block: &[u8]) -> Vec<ChunkHash> {
    block.chunks(CHUNK_SIZE).map(chunk_hash).collect()
}

fn chunk_hash(chunk: &[u8]) -> ChunkHash {
    let h = blake3::hash(chunk);
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Chunks in a block of `len` bytes.
fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_SIZE)
}

/// The chunks of `block` that the holder of a copy with chunk hashes `base`
/// lacks: bit `j` set when chunk `j` must be sent.
pub fn changed_chunks(block: &[u8], base: &[ChunkHash]) -> u32 {
    block
        .chunks(CHUNK_SIZE)
        .enumerate()
        .take(CHUNKS_PER_BLOCK)
        .filter(|&(j, c)| base.get(j) != Some(&chunk_hash(c)))
        .fold(0, |mask, (j, _)| mask | 1 << j)
}

/// The byte range of chunk `j` in a block of `len` bytes.
fn chunk_range(len: usize, j: usize) -> std::ops::Range<usize> {
    j * CHUNK_SIZE..((j + 1) * CHUNK_SIZE).min(len)
}

/// Bytes the chunks in `mask` hold in a block of `len` bytes, or why the
/// mask does not fit the block.
pub fn masked_len(len: usize, mask: u32) -> Result<usize, PatchError> {
    if len > BLOCK_SIZE as usize {
        return Err(PatchError::TooLong(len));
    }
    let n = chunk_count(len);
    if n < 32 && mask >> n != 0 {
        return Err(PatchError::MaskPastEnd { mask, len });
    }
    Ok((0..n)
        .filter(|j| mask & (1 << j) != 0)
        .map(|j| chunk_range(len, j).len())
        .sum())
}

/// Copies the chunks of `block` in `mask` to the front of `out`, in order
/// (the sender's side).
pub fn take_chunks(block: &[u8], mask: u32, out: &mut Vec<u8>) {
    for (j, c) in block.chunks(CHUNK_SIZE).enumerate() {
        if j < 32 && mask & (1 << j) != 0 {
            out.extend_from_slice(c);
        }
    }
}

/// The block of `len` bytes made of the `sent` chunks (those in `mask`, in
/// order) and the rest taken from `base` (the asker's older copy).
pub fn patch(base: &[u8], len: usize, mask: u32, sent: &[u8]) -> Result<Vec<u8>, PatchError> {
    let expected = masked_len(len, mask)?;
    if sent.len() != expected {
        return Err(PatchError::SentLength {
            expected,
            got: sent.len(),
        });
    }
    let mut out = Vec::with_capacity(len);
    let mut at = 0;
    for j in 0..chunk_count(len) {
        let r = chunk_range(len, j);
        if mask & (1 << j) != 0 {
            out.extend_from_slice(&sent[at..at + r.len()]);
            at += r.len();
        } else {
            let from = base.get(r).ok_or(PatchError::BaseTooShort(j))?;
            out.extend_from_slice(from);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_small_edit_sends_only_its_chunks_and_patches_back() {
        let old = data(BLOCK_SIZE as usize, 1);
        let mut new = old.clone();
        // 4 KiB written across the boundary of chunks 1 and 2.
        new[5000..9096].fill(0xAB);
        let mask = changed_chunks(&new, &chunk_hashes(&old));
        assert_eq!(mask, 0b110);
        let mut sent = Vec::new();
        take_chunks(&new, mask, &mut sent);
        assert_eq!(sent.len(), 2 * CHUNK_SIZE);
        assert_eq!(masked_len(new.len(), mask), Ok(sent.len()));
        assert_eq!(patch(&old, new.len(), mask, &sent).unwrap(), new);
    }

    #[test]
    fn a_short_last_block_and_a_shorter_base() {
        // The new block is 10,000 bytes; the old copy had only 5,000.
        let old = data(5000, 2);
        let mut new = data(10_000, 2);
        new[..5000].copy_from_slice(&old);
        let mask = changed_chunks(&new, &chunk_hashes(&old));
        // Chunk 0 is the same; chunk 1 only partly in the base; chunk 2 new.
        assert_eq!(mask, 0b110);
        let mut sent = Vec::new();
        take_chunks(&new, mask, &mut sent);
        assert_eq!(sent.len(), 10_000 - CHUNK_SIZE);
        assert_eq!(patch(&old, new.len(), mask, &sent).unwrap(), new);
        // Without a base every chunk is sent.
        assert_eq!(changed_chunks(&new, &[]), 0b111);
    }

    #[test]
    fn answers_that_do_not_fit_are_refused() {
        let old = data(BLOCK_SIZE as usize, 3);
        let len = BLOCK_SIZE as usize;
        assert_eq!(
            patch(&old, len, 0b1, &[0u8; 10]),
            Err(PatchError::SentLength {
                expected: CHUNK_SIZE,
                got: 10
            })
        );
        // A mask naming chunks past a short block's end.
        assert!(matches!(
            masked_len(100, 0b10),
            Err(PatchError::MaskPastEnd { .. })
        ));
        assert!(matches!(
            masked_len(BLOCK_SIZE as usize + 1, 0),
            Err(PatchError::TooLong(_))
        ));
        // A chunk left out that the base does not hold.
        assert_eq!(
            patch(&old[..100], len, !1, &vec![0u8; len - CHUNK_SIZE]),
            Err(PatchError::BaseTooShort(0))
        );
        // Every chunk sent: the base does not matter.
        let new = data(len, 4);
        assert_eq!(patch(&[], len, u32::MAX, &new).unwrap(), new);
    }
}
