//! Content hashing: one pass over a reader yields the size, the whole-file
//! BLAKE3 hash and the per-block hashes.

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
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            buf.resize(BLOCK_SIZE as usize, 0);
            hash_with(r, &mut buf)
        }
        // Re-entered on this thread (not expected): use a fresh buffer.
        Err(_) => hash_with(r, &mut vec![0u8; BLOCK_SIZE as usize]),
    })
}

fn hash_with(mut r: impl Read, buf: &mut [u8]) -> io::Result<Hashed> {
    let mut whole = blake3::Hasher::new();
    let mut blocks = Vec::new();
    let mut size = 0u64;
    loop {
        // Fill a whole block (short reads happen) so block boundaries are fixed.
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
        whole.update(&buf[..filled]);
        blocks.push(ContentHash::of(&buf[..filled]));
        size += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok(Hashed {
        size,
        hash: ContentHash(*whole.finalize().as_bytes()),
        blocks,
    })
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
}
