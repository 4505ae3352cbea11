//! Content hashing: one read of a reader yields the size, the whole-file
//! BLAKE3 hash and the per-block hashes (or either hash alone, for callers
//! that read twice on two threads).

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

/// Only the block hashes of `r` (and its size): one of the two passes of
/// [`hash_reader`], for a caller that runs the other, [`whole_hash`], at
/// the same time on another thread. (A block's hash is BLAKE3 of the block
/// alone, its chunks numbered from its own start, so the whole content's
/// hash cannot be made from the blocks' work: they are two passes.)
pub fn block_hashes(r: impl Read) -> io::Result<(u64, Vec<ContentHash>)> {
    with_buf(|buf| {
        let mut blocks = Vec::new();
        let size = each_block(r, buf, |b| blocks.push(ContentHash::of(b)))?;
        Ok((size, blocks))
    })
}

/// Only the whole-content hash of `r` (and its size); see [`block_hashes`].
pub fn whole_hash(r: impl Read) -> io::Result<(u64, ContentHash)> {
    with_buf(|buf| {
        let mut whole = blake3::Hasher::new();
        let size = each_block(r, buf, |b| {
            whole.update(b);
        })?;
        Ok((size, ContentHash(*whole.finalize().as_bytes())))
    })
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
    fn either_pass_alone_agrees_with_both_at_once() {
        let b = BLOCK_SIZE as usize;
        for len in [0, 1, b - 1, b, b + 1, 3 * b, 3 * b + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let both = hash_reader(&data[..]).unwrap();
            assert_eq!(both.hash, ContentHash::of(&data), "{len} bytes");
            assert_eq!(both.size, len as u64);
            assert_eq!(both.blocks.len(), len.div_ceil(b), "{len} bytes");
            for (i, h) in both.blocks.iter().enumerate() {
                let end = ((i + 1) * b).min(len);
                assert_eq!(
                    *h,
                    ContentHash::of(&data[i * b..end]),
                    "{len} bytes, block {i}"
                );
            }
            assert_eq!(
                block_hashes(&data[..]).unwrap(),
                (len as u64, both.blocks.clone())
            );
            assert_eq!(whole_hash(&data[..]).unwrap(), (len as u64, both.hash));
        }
    }
}
