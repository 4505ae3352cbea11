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

/// Reads `r` to the end, hashing as it goes. Memory use is one block.
pub fn hash_reader(mut r: impl Read) -> io::Result<Hashed> {
    let mut whole = blake3::Hasher::new();
    let mut blocks = Vec::new();
    let mut buf = vec![0u8; BLOCK_SIZE as usize];
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
