//! Content hashing: one read of a reader yields the size, the block hashes
//! and, from them, the whole-file BLAKE3 hash; large content can be hashed
//! in two parts on two threads.
//!
//! A block's hash is its place in BLAKE3's own tree: the chaining value of
//! the block's subtree at its offset ([`block_hash`]). The whole-content
//! hash is then made from the block hashes alone ([`root_of`]), so each byte
//! is hashed once, and a block list that makes the content hash is bound to
//! that content: checking every block against it checks the whole. Content
//! of one block (or none) has its whole hash as its one block hash. The
//! same bytes at another offset hash differently, so a block is only ever
//! reused at its own offset.

use std::io::{self, Read};

use blake3::hazmat::{HasherExt, Mode};

use crate::model::{BLOCK_SIZE, ContentHash};

/// Size, whole-content hash and block hashes of some content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes read.
    pub size: u64,
    /// BLAKE3 of everything.
    pub hash: ContentHash,
    /// The hash of each `BLOCK_SIZE` block (see [`block_hash`]).
    pub blocks: Vec<ContentHash>,
}

thread_local! {
    /// One block buffer per thread, reused: a scan hashes many small files,
    /// and a fresh 128 KiB allocation each time fragments the heap.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The hash of block `index` of content of `size` bytes, whose bytes are
/// `data`: for content of at most one block, BLAKE3 of the content; else
/// the BLAKE3 chaining value of the block's subtree at its offset. Bytes
/// that cannot be that block (none, or more than a block) get a hash no
/// block list holds.
pub fn block_hash(data: &[u8], index: usize, size: u64) -> ContentHash {
    if size <= BLOCK_SIZE || data.is_empty() || data.len() as u64 > BLOCK_SIZE {
        return ContentHash::of(data);
    }
    ContentHash(
        blake3::Hasher::new()
            .set_input_offset((index as u64).wrapping_mul(BLOCK_SIZE))
            .update(data)
            .finalize_non_root(),
    )
}

/// The whole-content hash of content of `size` bytes with the block hashes
/// `blocks` (see [`block_hash`]); `None` if there are not as many as such
/// content has blocks.
pub fn root_of(blocks: &[ContentHash], size: u64) -> Option<ContentHash> {
    if blocks.len() as u64 != size.div_ceil(BLOCK_SIZE) {
        return None;
    }
    Some(match blocks {
        [] => ContentHash::of(b""),
        [one] => *one,
        _ => {
            let (left, right) = split_subtree(blocks, size);
            let root = blake3::hazmat::merge_subtrees_root(&left, &right, Mode::Hash);
            ContentHash(*root.as_bytes())
        }
    })
}

/// True when `e`'s block list makes its content hash, as every list must
/// (see [`root_of`]).
pub fn makes_hash(e: &crate::model::FileEntry) -> bool {
    root_of(&e.blocks, e.size) == Some(e.hash)
}

/// The chaining values of the two halves of BLAKE3's subtree over the
/// (at least two) blocks `blocks`, `len` bytes in all. The left half is a
/// power of two of 1 KiB chunks, so of whole blocks.
fn split_subtree(
    blocks: &[ContentHash],
    len: u64,
) -> (blake3::hazmat::ChainingValue, blake3::hazmat::ChainingValue) {
    let left_len = blake3::hazmat::left_subtree_len(len);
    let at = (left_len / BLOCK_SIZE) as usize;
    (
        subtree(&blocks[..at], left_len),
        subtree(&blocks[at..], len - left_len),
    )
}

fn subtree(blocks: &[ContentHash], len: u64) -> blake3::hazmat::ChainingValue {
    if let [one] = blocks {
        return one.0;
    }
    let (left, right) = split_subtree(blocks, len);
    blake3::hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash)
}

/// Reads `r` to the end, hashing as it goes. Memory use is one block.
pub fn hash_reader(r: impl Read) -> io::Result<Hashed> {
    with_buf(|buf| hash_with(r, buf))
}

/// One part of some content, hashed apart from the rest (see
/// [`split_point`]): its size and its block hashes, which [`join_parts`]
/// makes the whole hash from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Bytes read.
    pub size: u64,
    /// The hash of each `BLOCK_SIZE` block of the part, at its offset in the
    /// whole (see [`block_hash`]).
    pub blocks: Vec<ContentHash>,
}

/// Where content of `len` bytes splits in two parts that can be hashed on
/// two threads, each read once: BLAKE3's left subtree, a power of two of
/// 1 KiB chunks (a whole number of blocks). `None` below two blocks.
pub fn split_point(len: u64) -> Option<u64> {
    (len >= 2 * BLOCK_SIZE)
        .then(|| blake3::hazmat::left_subtree_len(len))
        .filter(|at| at % BLOCK_SIZE == 0 && *at < len)
}

/// Hashes the part read from `r`, which starts `offset` bytes into content
/// of at least two blocks: 0 for the left part, the [`split_point`] for the
/// right. A right part is read for at most `offset` bytes, the most the
/// split lets it hold (the caller bounds it to what it expects, and
/// compares sizes). `None` if it is empty (a part never is, unless the
/// content shrank meanwhile).
pub fn hash_part(r: impl Read, offset: u64) -> io::Result<Option<Part>> {
    assert_eq!(offset % BLOCK_SIZE, 0, "a part starts on a block boundary");
    let r = r.take(if offset == 0 { u64::MAX } else { offset });
    let first = (offset / BLOCK_SIZE) as usize;
    with_buf(|buf| {
        let mut blocks = Vec::new();
        let size = each_block(r, buf, |b| {
            // Content of two blocks or more: every block is a subtree.
            blocks.push(block_hash(b, first + blocks.len(), u64::MAX));
        })?;
        Ok((size > 0).then_some(Part { size, blocks }))
    })
}

/// The whole content's hashes from its left and right [`Part`]s, as
/// [`hash_reader`] would make them from one read. The caller checks the
/// left part's size is the [`split_point`] of the whole.
pub fn join_parts(left: Part, right: Part) -> Hashed {
    let size = left.size + right.size;
    let mut blocks = left.blocks;
    blocks.extend(right.blocks);
    let hash = root_of(&blocks, size)
        // Not two whole parts (the caller's sizes were wrong): a hash that
        // matches nothing.
        .unwrap_or(ContentHash([0; 32]));
    Hashed { size, hash, blocks }
}

/// Runs `f` with this thread's block buffer.
fn with_buf<T>(f: impl FnOnce(&mut [u8]) -> io::Result<T>) -> io::Result<T> {
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            buf.resize(BLOCK_SIZE as usize, 0);
            f(&mut buf[..])
        }
        // Re-entered on this thread (not expected): use a fresh buffer.
        Err(_) => f(&mut vec![0u8; BLOCK_SIZE as usize]),
    })
}

fn hash_with(r: impl Read, buf: &mut [u8]) -> io::Result<Hashed> {
    let mut blocks = Vec::new();
    // The first block's hash as the whole content, in case it is the only
    // one (a full block followed by the end looks like any other block).
    let mut alone = None;
    let size = each_block(r, buf, |b| {
        if blocks.is_empty() {
            let mut h = blake3::Hasher::new();
            h.update(b);
            let whole = ContentHash(*h.finalize().as_bytes());
            alone = Some(whole);
            blocks.push(if (b.len() as u64) < BLOCK_SIZE {
                // Less than a block in all: its hash is the whole's.
                whole
            } else {
                ContentHash(h.finalize_non_root())
            });
            return;
        }
        blocks.push(block_hash(b, blocks.len(), u64::MAX));
    })?;
    if let (1, Some(whole)) = (blocks.len(), alone) {
        blocks[0] = whole;
    }
    let hash = root_of(&blocks, size).unwrap_or(ContentHash([0; 32]));
    Ok(Hashed { size, hash, blocks })
}

/// Reads `r` to the end a whole block at a time (short reads are filled up,
/// so block boundaries are fixed), giving each block to `each`; returns the
/// size. Only the last block is short.
fn each_block(mut r: impl Read, buf: &mut [u8], mut each: impl FnMut(&[u8])) -> io::Result<u64> {
    let mut size = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        each(&buf[..filled]);
        size += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_whole_hash() {
        let data: Vec<u8> = (0..(BLOCK_SIZE as usize * 2 + 10))
            .map(|i| i as u8)
            .collect();
        let h = hash_reader(&data[..]).unwrap();
        assert_eq!(h.size, data.len() as u64);
        assert_eq!(h.hash, ContentHash::of(&data));
        assert_eq!(h.blocks.len(), 3);
        assert_eq!(
            h.blocks[2],
            block_hash(&data[BLOCK_SIZE as usize * 2..], 2, h.size)
        );
        let empty = hash_reader(&[][..]).unwrap();
        assert_eq!(empty.size, 0);
        assert!(empty.blocks.is_empty());
        assert_eq!(empty.hash, ContentHash::of(b""));
        assert_eq!(root_of(&[], 0), Some(ContentHash::of(b"")));
    }

    /// Bytes that differ block by block (no two blocks alike).
    fn content(len: usize, seed: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i * 31 + seed) ^ (i >> 10) ^ (i >> 17)) as u8)
            .collect()
    }

    #[test]
    fn the_block_hashes_make_blake3_of_the_whole() {
        let b = BLOCK_SIZE as usize;
        for len in [
            0,
            1,
            1024,
            b - 1,
            b,
            b + 1,
            b + 1024,
            2 * b,
            2 * b + 1,
            3 * b,
            3 * b + 5,
            4 * b,
            5 * b + 777,
            8 * b,
            9 * b + 1,
            17 * b - 3,
            33 * b,
            64 * b + 1025,
        ] {
            let data = content(len, len);
            let h = hash_reader(&data[..]).unwrap();
            let size = len as u64;
            assert_eq!(h.hash, ContentHash::of(&data), "{len} bytes");
            assert_eq!(h.blocks.len(), len.div_ceil(b), "{len} bytes");
            assert_eq!(root_of(&h.blocks, size), Some(h.hash), "{len} bytes");
            for (i, block) in data.chunks(b).enumerate() {
                assert_eq!(
                    block_hash(block, i, size),
                    h.blocks[i],
                    "{len} bytes, block {i}"
                );
            }
        }
    }

    #[test]
    fn a_block_list_is_bound_to_its_content() {
        let b = BLOCK_SIZE as usize;
        let data = content(5 * b + 100, 7);
        let size = data.len() as u64;
        let h = hash_reader(&data[..]).unwrap();
        // One block changed: its hash, and so the whole, differ.
        let mut other = data.clone();
        other[3 * b + 9] ^= 1;
        let o = hash_reader(&other[..]).unwrap();
        assert_ne!(o.blocks[3], h.blocks[3]);
        assert_eq!(o.blocks[2], h.blocks[2]);
        assert_ne!(root_of(&o.blocks, size), Some(h.hash));
        // Two blocks swapped: each hash is of its place too.
        let mut swapped = h.blocks.clone();
        swapped.swap(1, 2);
        assert_ne!(root_of(&swapped, size), Some(h.hash));
        assert_ne!(block_hash(&data[b..2 * b], 2, size), h.blocks[1]);
        // The wrong number of blocks for the size is no list at all.
        assert_eq!(root_of(&h.blocks[..5], size), None);
        assert_eq!(root_of(&h.blocks, size + b as u64), None);
        // Bytes that cannot be a block match nothing (and do not panic).
        assert_ne!(block_hash(&[], 1, size), h.blocks[1]);
        assert_ne!(block_hash(&data[..b + 1], 1, size), h.blocks[1]);
        let _ = block_hash(&data[..2 * b], 3, size);
    }

    #[test]
    fn two_parts_hash_as_one_read() {
        let b = BLOCK_SIZE as usize;
        assert_eq!(split_point(0), None);
        assert_eq!(split_point(2 * BLOCK_SIZE - 1), None);
        for len in [
            2 * b,
            2 * b + 1,
            3 * b,
            4 * b,
            4 * b + 5,
            7 * b + 1000,
            9 * b,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let one = hash_reader(&data[..]).unwrap();
            assert_eq!(one.hash, ContentHash::of(&data), "{len} bytes");
            let at = split_point(len as u64).unwrap() as usize;
            assert!(
                at >= len / 2 && at < len && at.is_multiple_of(b),
                "{len} bytes split at {at}"
            );
            let left = hash_part(&data[..at], 0).unwrap().unwrap();
            let right = hash_part(&data[at..], at as u64).unwrap().unwrap();
            assert_eq!(left.size, at as u64);
            assert_eq!(join_parts(left, right), one, "{len} bytes split at {at}");
        }
        assert_eq!(hash_part(&[][..], 0).unwrap(), None);
    }

    #[test]
    fn a_part_from_the_wrong_place_gives_another_hash() {
        let b = BLOCK_SIZE as usize;
        let data: Vec<u8> = (0..3 * b).map(|i| (i % 253) as u8).collect();
        let at = split_point(data.len() as u64).unwrap() as usize;
        let left = hash_part(&data[..at], 0).unwrap().unwrap();
        // The right part hashed as if it started the content.
        let wrong = hash_part(&data[at..], 0).unwrap().unwrap();
        assert_ne!(join_parts(left, wrong).hash, ContentHash::of(&data));
    }

    #[test]
    fn content_of_less_than_a_block_is_hashed_once_as_before() {
        let b = BLOCK_SIZE as usize;
        for len in [1, 100, b - 1, b] {
            let data: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
            let h = hash_reader(&data[..]).unwrap();
            assert_eq!(h.hash, ContentHash::of(&data), "{len} bytes");
            assert_eq!(h.blocks, vec![ContentHash::of(&data)], "{len} bytes");
            assert_eq!(h.size, len as u64);
        }
    }
}
