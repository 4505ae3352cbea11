//! Block lists on the wire: which entries travel without their list, and
//! the group hashes that let a receiver fetch only the parts of a list that
//! differ from what it already has.
//!
//! A file's block list costs 32 bytes per [`BLOCK_SIZE`] block: 64 KiB for
//! 256 MiB, far more than a small edit or a rename needs to send. So entries
//! of more than [`INLINE_BLOCKS`] blocks are announced without their list.
//! A receiver that needs one takes it from a local file with the same
//! whole-content hash (a rename or a copy), or asks the peer: first for the
//! group hashes (BLAKE3 over the concatenated block hashes of each run of
//! [`GROUP_BLOCKS`] blocks: 32 bytes per 8 MiB of file), then for the block
//! hashes of only the groups that differ from its own version of the path.
//!
//! Pure: the node does the asking; this module only computes and checks.

use crate::codec::MAX_FRAME;
use crate::model::{BLOCK_SIZE, ContentHash, FileEntry};

/// Entries with at most this many blocks carry their list inline (it is
/// cheaper than a round trip to ask for it).
pub const INLINE_BLOCKS: usize = 8;
/// Blocks per group (8 MiB of file with 128 KiB blocks).
pub const GROUP_BLOCKS: usize = 64;
/// Most groups whose block hashes one request may ask for (answers of
/// 512 KiB, far under the frame limit).
pub const MAX_GROUPS_PER_REQUEST: usize = 256;

/// Most groups a file may have: its group hashes must fit in half a frame.
/// That is files up to 2 TiB (before lists were left out of entries, an
/// entry's whole list had to fit in a frame: 64 GiB).
pub const MAX_GROUPS: usize = MAX_FRAME / 2 / 32;

/// True when a file of `size` bytes is small enough for its block list to
/// be asked for (a peer's entry claiming more is refused, so a hostile size
/// cannot make the receiver allocate without bound).
pub fn list_fits(size: u64) -> bool {
    size.div_ceil(BLOCK_SIZE).div_ceil(GROUP_BLOCKS as u64) <= MAX_GROUPS as u64
}

/// `e` as sent to a peer: without its block list unless that is short.
pub fn for_wire(e: &FileEntry) -> FileEntry {
    let blocks = if sent_inline(e.blocks.len()) {
        e.blocks.clone()
    } else {
        Vec::new()
    };
    FileEntry {
        path: e.path.clone(),
        kind: e.kind.clone(),
        size: e.size,
        mtime_ns: e.mtime_ns,
        mode: e.mode,
        hash: e.hash,
        blocks,
        version: e.version.clone(),
        written: e.written.clone(),
        losers: e.losers.clone(),
        deleted: e.deleted,
    }
}

/// Number of blocks of a file of `size` bytes.
pub fn block_count(size: u64) -> usize {
    size.div_ceil(BLOCK_SIZE) as usize
}

/// Number of groups of a list of `blocks` block hashes.
pub fn group_count(blocks: usize) -> usize {
    blocks.div_ceil(GROUP_BLOCKS)
}

/// True when an entry's list is sent along with it.
pub fn sent_inline(blocks: usize) -> bool {
    blocks <= INLINE_BLOCKS
}

/// The hash of one group: BLAKE3 over its block hashes, concatenated.
pub fn group_hash(group: &[ContentHash]) -> ContentHash {
    let mut h = blake3::Hasher::new();
    for b in group {
        h.update(&b.0);
    }
    ContentHash(*h.finalize().as_bytes())
}

/// The hash of every group of `blocks`, in order.
pub fn group_hashes(blocks: &[ContentHash]) -> Vec<ContentHash> {
    blocks.chunks(GROUP_BLOCKS).map(group_hash).collect()
}

/// The block hashes of group `g` of `blocks` (empty past the end).
pub fn group(blocks: &[ContentHash], g: usize) -> &[ContentHash] {
    let start = (g * GROUP_BLOCKS).min(blocks.len());
    let end = (start + GROUP_BLOCKS).min(blocks.len());
    &blocks[start..end]
}

/// The groups of `theirs` (a peer's group hashes) that `ours` (our block
/// list, of any version) does not have at the same position.
pub fn differing_groups(theirs: &[ContentHash], ours: &[ContentHash]) -> Vec<u32> {
    theirs
        .iter()
        .enumerate()
        .filter(|(g, h)| {
            let mine = group(ours, *g);
            mine.is_empty() || group_hash(mine) != **h
        })
        .map(|(g, _)| g as u32)
        .collect()
}

/// Builds the complete list of a file of `blocks` blocks from the groups
/// received (`(group, block hashes)`) and, for every other group, the same
/// group of `ours`. When the peer's group hashes are known (`theirs`), each
/// received group must match its hash and each group taken from `ours`
/// must too; either way every group must have the right number of blocks.
pub fn merge(
    blocks: usize,
    theirs: Option<&[ContentHash]>,
    ours: &[ContentHash],
    received: Vec<(u32, Vec<ContentHash>)>,
) -> Result<Vec<ContentHash>, String> {
    let groups = group_count(blocks);
    if let Some(t) = theirs
        && t.len() != groups
    {
        return Err(format!(
            "{} group hashes for {blocks} blocks ({groups} groups)",
            t.len()
        ));
    }
    let mut got: Vec<Option<Vec<ContentHash>>> = vec![None; groups];
    for (g, list) in received {
        let slot = got
            .get_mut(g as usize)
            .ok_or_else(|| format!("group {g} is past the end ({groups} groups)"))?;
        *slot = Some(list);
    }
    let mut out = Vec::with_capacity(blocks);
    for (g, slot) in got.iter().enumerate() {
        let want_len = (blocks - g * GROUP_BLOCKS).min(GROUP_BLOCKS);
        let part: &[ContentHash] = match slot {
            Some(list) => list,
            None => group(ours, g),
        };
        if part.len() != want_len {
            return Err(format!(
                "group {g} has {} block hashes, {want_len} expected",
                part.len()
            ));
        }
        if let Some(t) = theirs
            && group_hash(part) != t[g]
        {
            return Err(format!("group {g} does not match its group hash"));
        }
        out.extend_from_slice(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize, seed: u8) -> Vec<ContentHash> {
        (0..n)
            .map(|i| ContentHash::of(&[seed, (i % 251) as u8, (i / 251) as u8]))
            .collect()
    }

    #[test]
    fn counts_and_inline_threshold() {
        assert_eq!(block_count(0), 0);
        assert_eq!(block_count(1), 1);
        assert_eq!(block_count(BLOCK_SIZE), 1);
        assert_eq!(block_count(BLOCK_SIZE + 1), 2);
        assert_eq!(group_count(0), 0);
        assert_eq!(group_count(64), 1);
        assert_eq!(group_count(65), 2);
        assert!(sent_inline(8) && !sent_inline(9));
        assert!(list_fits(2 << 40) && !list_fits((2 << 40) + 1) && !list_fits(u64::MAX));
    }

    #[test]
    fn group_hashes_cover_every_block_once() {
        let l = list(130, 1);
        let g = group_hashes(&l);
        assert_eq!(g.len(), 3);
        assert_eq!(g[2], group_hash(&l[128..]));
        assert_eq!(group(&l, 2).len(), 2);
        assert!(group(&l, 3).is_empty());
        // A group hash depends on order and on the number of blocks.
        let mut swapped = l[..64].to_vec();
        swapped.swap(0, 1);
        assert_ne!(group_hash(&swapped), g[0]);
        assert_ne!(group_hash(&l[..63]), g[0]);
    }

    #[test]
    fn one_changed_block_differs_in_one_group() {
        let ours = list(200, 1);
        let mut theirs = ours.clone();
        theirs[70] = ContentHash::of(b"edited");
        theirs.push(ContentHash::of(b"appended"));
        let tg = group_hashes(&theirs);
        // Group 1 (the edit) and group 3 (its length changed).
        assert_eq!(differing_groups(&tg, &ours), vec![1, 3]);
        let received = vec![
            (1, group(&theirs, 1).to_vec()),
            (3, group(&theirs, 3).to_vec()),
        ];
        assert_eq!(merge(201, Some(&tg), &ours, received), Ok(theirs.clone()));
        // Nothing in common: every group differs.
        assert_eq!(differing_groups(&tg, &[]), vec![0, 1, 2, 3]);
    }

    #[test]
    fn merge_without_group_hashes_takes_everything_received() {
        let theirs = list(70, 2);
        let received = vec![(0, theirs[..64].to_vec()), (1, theirs[64..].to_vec())];
        assert_eq!(merge(70, None, &[], received), Ok(theirs));
        assert_eq!(merge(0, None, &[], vec![]), Ok(vec![]));
    }

    #[test]
    fn merge_refuses_bad_groups() {
        let ours = list(128, 1);
        let theirs = list(128, 2);
        let tg = group_hashes(&theirs);
        // A group not matching its hash.
        let bad = vec![(0, ours[..64].to_vec()), (1, theirs[64..].to_vec())];
        assert!(merge(128, Some(&tg), &ours, bad).is_err());
        // A group missing and ours does not match either.
        let partial = vec![(0, theirs[..64].to_vec())];
        assert!(merge(128, Some(&tg), &ours, partial).is_err());
        // Wrong lengths, out of range groups, wrong number of group hashes.
        assert!(merge(128, None, &[], vec![(0, theirs[..63].to_vec())]).is_err());
        assert!(merge(128, None, &[], vec![(9, vec![])]).is_err());
        assert!(merge(129, Some(&tg), &ours, vec![]).is_err());
        assert!(merge(128, None, &[], vec![]).is_err(), "nothing to take");
    }
}
