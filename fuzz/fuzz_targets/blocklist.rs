//! The block-list exchange between nodes (`blocklist`): a receiver asks a
//! peer for the group hashes of a large file's block list, compares them
//! with its own list (`differing_groups`), asks for the groups that differ,
//! and rebuilds the list with `merge`, which checks what the peer sent.
//!
//! Why: `merge` is the pure check between a peer's answers and the list a
//! node then fetches blocks by; a list that passes it wrongly means wrong
//! content written to disk. Checked, beyond "never panics":
//! - completeness: asking for exactly the groups `differing_groups` names,
//!   and getting the peer's groups, rebuilds the peer's list exactly (with
//!   or without its group hashes); and it names exactly the groups that
//!   really differ;
//! - soundness against a hostile or broken peer (a group dropped, cut,
//!   padded, altered, out of range, or wrong group hashes): `merge` either
//!   refuses, or returns a list of the right length made only of groups
//!   received or our own, whose group hashes are the ones the peer gave;
//! - the size arithmetic (`block_count`, `group_count`, `list_fits`) agrees
//!   with itself for every `u64` size.
//!
//! Input: see `tandem_fuzz::BlockListCase`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_common::ContentHash;
use tandem_common::blocklist::{
    GROUP_BLOCKS, MAX_GROUPS, block_count, differing_groups, group, group_count, group_hashes,
    list_fits, merge,
};
use tandem_common::model::BLOCK_SIZE;
use tandem_fuzz::BlockListCase;

fuzz_target!(|data: &[u8]| {
    sizes(data);
    let case = BlockListCase::from_bytes(data);
    let theirs = their_list(&case);
    let ours = our_list(&case, &theirs);
    let tg = group_hashes(&theirs);
    assert_eq!(tg.len(), group_count(theirs.len()));

    // Completeness.
    let wanted = differing_groups(&tg, &ours);
    let really: Vec<u32> = (0..tg.len())
        .filter(|&g| group(&ours, g) != group(&theirs, g))
        .map(|g| g as u32)
        .collect();
    assert_eq!(wanted, really, "differing groups");
    let answer: Received = wanted
        .iter()
        .map(|&g| (g, group(&theirs, g as usize).to_vec()))
        .collect();
    assert_eq!(
        merge(theirs.len(), Some(&tg), &ours, answer.clone()).as_ref(),
        Ok(&theirs)
    );
    let everything: Received = (0..tg.len())
        .map(|g| (g as u32, group(&theirs, g).to_vec()))
        .collect();
    assert_eq!(
        merge(theirs.len(), None, &ours, everything).as_ref(),
        Ok(&theirs)
    );

    // Soundness.
    let (hashes, received) = attack(&case, &tg, answer);
    let blocks = theirs.len();
    match merge(blocks, hashes.as_deref(), &ours, received.clone()) {
        Err(_) => {}
        Ok(list) => {
            assert_eq!(list.len(), blocks);
            if let Some(h) = &hashes {
                assert_eq!(
                    &group_hashes(&list),
                    h,
                    "a list that does not match its hashes"
                );
            }
            for g in 0..group_count(blocks) {
                let got = group(&list, g);
                let last_received = received.iter().rev().find(|(n, _)| *n as usize == g);
                match last_received {
                    Some((_, sent)) => assert_eq!(got, &sent[..], "group {g}"),
                    None => assert_eq!(got, group(&ours, g), "group {g}"),
                }
            }
        }
    }
});

/// The peer's block list: block `i` hashes a source byte and `i`'s round.
fn their_list(case: &BlockListCase) -> Vec<ContentHash> {
    let src = if case.source.is_empty() {
        &[0u8][..]
    } else {
        &case.source
    };
    (0..case.theirs as usize)
        .map(|i| ContentHash::of(&[src[i % src.len()], (i / src.len()) as u8]))
        .collect()
}

/// Our list: the peer's, cut or extended to our length, with the edits.
fn our_list(case: &BlockListCase, theirs: &[ContentHash]) -> Vec<ContentHash> {
    let n = case.ours as usize;
    let mut ours: Vec<ContentHash> = (0..n)
        .map(|i| {
            theirs
                .get(i)
                .copied()
                .unwrap_or_else(|| ContentHash::of(&[0xee, i as u8, (i >> 8) as u8]))
        })
        .collect();
    if n > 0 {
        for &(at, byte) in &case.edits {
            ours[at as usize % n] = ContentHash::of(&[byte, 0xaa]);
        }
    }
    ours
}

/// Groups received: (group index, its block hashes).
type Received = Vec<(u32, Vec<ContentHash>)>;

/// What a hostile or broken peer might send instead of the right answer:
/// the group hashes (if any) and the groups.
fn attack(
    case: &BlockListCase,
    tg: &[ContentHash],
    mut received: Received,
) -> (Option<Vec<ContentHash>>, Received) {
    let mut hashes = Some(tg.to_vec());
    let pick = case.edits.first().map_or(0, |e| e.0 as usize);
    let junk = ContentHash::of(b"junk");
    let n = received.len();
    match case.attack % 10 {
        1 if n > 0 => {
            received.remove(pick % n);
        }
        2 if n > 0 => {
            received[pick % n].1.pop();
        }
        3 if n > 0 => received[pick % n].1.push(junk),
        4 if n > 0 => {
            let list = &mut received[pick % n].1;
            if !list.is_empty() {
                let at = pick % list.len();
                list[at] = junk;
            }
        }
        5 => received.push((tg.len() as u32 + (pick % 3) as u32, vec![junk])),
        6 => hashes = None,
        7 => {
            if let Some(h) = hashes.as_mut() {
                h.push(junk);
            }
        }
        8 => {
            if let Some(h) = hashes.as_mut()
                && !h.is_empty()
            {
                let at = pick % h.len();
                h[at] = junk;
            }
        }
        9 if n > 1 => {
            // The same group twice: the last one counts.
            let dup = received[pick % n].clone();
            received.insert(0, (dup.0, vec![junk; dup.1.len()]));
        }
        _ => {}
    }
    (hashes, received)
}

/// The size arithmetic for the first eight bytes as a size.
fn sizes(data: &[u8]) {
    let mut b = [0u8; 8];
    let n = data.len().min(8);
    b[..n].copy_from_slice(&data[..n]);
    let size = u64::from_le_bytes(b);
    let blocks = block_count(size);
    assert_eq!(blocks as u64, size.div_ceil(BLOCK_SIZE));
    // Every byte in a block, and no block left empty (in u128: 2^47 blocks
    // of 2^17 bytes overflow a u64).
    let covered = blocks as u128 * BLOCK_SIZE as u128;
    assert!(covered >= size as u128 && covered < size as u128 + BLOCK_SIZE as u128);
    let groups = group_count(blocks);
    assert!(groups * GROUP_BLOCKS >= blocks && groups * GROUP_BLOCKS < blocks + GROUP_BLOCKS);
    assert_eq!(list_fits(size), groups <= MAX_GROUPS);
}
