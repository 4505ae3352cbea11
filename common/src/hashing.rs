//! Content hashing: one read of a reader yields the size, the whole-file
//! BLAKE3 hash and the per-block hashes; large content can be hashed in two
//! parts on two threads, each part read once for both.

use std::io::{self, Read};

use crate::model::{BLOCK_SIZE, ContentHash};

/// Size, whole-content hash and block hashes of some content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes read.
    pub size: u64,
    /// BLAKE3 of everything.
    pub hash: ContentHash,
    /// BLAKE3 of each `BLOCK_SIZE` block.
    pub blocks: Vec<ContentHash>,
}

thread_local! {
    /// One block buffer per thread, reused: a scan hashes many small files,
    /// and a fresh 128 KiB allocation each time fragments the heap.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads `r` to the end, hashing as it goes. Memory use is one block.
pub fn hash_reader(r: impl Read) -> io::Result<Hashed> {
    with_buf(|buf| hash_with(r, buf))
}

/// One part of some content, hashed apart from the rest (see
/// [`split_point`]): its size, its block hashes, and the BLAKE3 chaining
/// value of its subtree, which [`join_parts`] makes the whole hash from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Bytes read.
    pub size: u64,
    /// BLAKE3 of each `BLOCK_SIZE` block of the part.
    pub blocks: Vec<ContentHash>,
    cv: blake3::hazmat::ChainingValue,
}

/// Where content of `len` bytes splits in two parts that can be hashed on
/// two threads, each read once for both its block hashes and its share of
/// the whole hash: BLAKE3's left subtree, a power of two of 1 KiB chunks
/// (a whole number of blocks). `None` below two blocks.
pub fn split_point(len: u64) -> Option<u64> {
    (len >= 2 * BLOCK_SIZE)
        .then(|| blake3::hazmat::left_subtree_len(len))
        .filter(|at| at % BLOCK_SIZE == 0 && *at < len)
}

/// Hashes the part read from `r`, which starts `offset` bytes into the
/// content: 0 for the left part, the [`split_point`] for the right. A right
/// part is read for at most `offset` bytes, the most BLAKE3's tree lets it
/// hold (the caller bounds it to what it expects, and compares sizes).
/// `None` if it is empty (a part never is, unless the content shrank
/// meanwhile).
pub fn hash_part(r: impl Read, offset: u64) -> io::Result<Option<Part>> {
    use blake3::hazmat::HasherExt;
    assert_eq!(offset % BLOCK_SIZE, 0, "a part starts on a block boundary");
    let r = r.take(if offset == 0 { u64::MAX } else { offset });
    with_buf(|buf| {
        let mut tree = blake3::Hasher::new();
        tree.set_input_offset(offset);
        let mut blocks = Vec::new();
        let size = each_block(r, buf, |b| {
            tree.update(b);
            blocks.push(ContentHash::of(b));
        })?;
        Ok((size > 0).then(|| Part {
            size,
            blocks,
            cv: tree.finalize_non_root(),
        }))
    })
}

/// The whole content's hashes from its left and right [`Part`]s, as
/// [`hash_reader`] would make them from one read. The caller checks the
/// left part's size is the [`split_point`] of the whole.
pub fn join_parts(left: Part, right: Part) -> Hashed {
    let hash = blake3::hazmat::merge_subtrees_root(&left.cv, &right.cv, blake3::hazmat::Mode::Hash);
    let mut blocks = left.blocks;
    blocks.extend(right.blocks);
    Hashed {
        size: left.size + right.size,
        hash: ContentHash(*hash.as_bytes()),
        blocks,
    }
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
    let mut whole = blake3::Hasher::new();
    let mut blocks = Vec::new();
    let mut short = None;
    let size = each_block(r, buf, |b| {
        if blocks.is_empty() && b.len() < BLOCK_SIZE as usize {
            // Less than a block in all: the content is this one block,
            // whose hash is the whole's (one pass instead of two).
            let h = ContentHash::of(b);
            short = Some(h);
            blocks.push(h);
            return;
        }
        whole.update(b);
        blocks.push(ContentHash::of(b));
    })?;
    Ok(Hashed {
        size,
        hash: short.unwrap_or_else(|| ContentHash(*whole.finalize().as_bytes())),
        blocks,
    })
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
            ContentHash::of(&data[BLOCK_SIZE as usize * 2..])
        );
        let empty = hash_reader(&[][..]).unwrap();
        assert_eq!(empty.size, 0);
        assert!(empty.blocks.is_empty());
        assert_eq!(empty.hash, ContentHash::of(b""));
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
