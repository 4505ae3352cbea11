//! Building a large `BTreeMap` from items already sorted by key without
//! holding them twice. `collect` keeps every item in a vector while the
//! tree is made from it (and a sort's scratch space beside): at a million
//! records that is the index's size again at its peak.

use std::collections::BTreeMap;

/// Items moved into the tree at a time: what is held twice at most. Each
/// merge moves the whole tree again, so smaller slices cost time: for a
/// million records, 2^17 took 0.48 s against `collect`'s 0.13 s, 2^19 0.24
/// s. 2^17 all the same: a warm start on a million files peaked at 281.5
/// MiB (three runs) against 300.7-322.5 MiB with 2^19 and 295.3 with 2^18,
/// in 2.5-2.9 s to "indexed" against 2.1-3.1 s (the memory target is 300
/// MB, the time target 3 s). Maps of up to this many items are made by
/// `collect` alone.
const SLICE: usize = 1 << 17;

/// The map of `items`, which are sorted by key, each key once. Slices are
/// cut from the vector's end, which then gives their memory back, and
/// merged into the tree; each merge makes the tree again from both, freeing
/// the old one as it goes, so the tree ends as full as `collect` makes it.
pub(super) fn map_from_sorted<K: Ord, V>(mut items: Vec<(K, V)>) -> BTreeMap<K, V> {
    let mut map = BTreeMap::new();
    while !items.is_empty() {
        let tail = items.split_off(items.len().saturating_sub(SLICE));
        items.shrink_to_fit();
        let mut part: BTreeMap<K, V> = tail.into_iter().collect();
        map.append(&mut part);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_holds_every_item_in_order() {
        for n in [0, 1, SLICE - 1, SLICE, SLICE + 1, 2 * SLICE + 7] {
            let items: Vec<(u64, u64)> = (0..n as u64).map(|k| (k * 3, k)).collect();
            let map = map_from_sorted(items.clone());
            assert_eq!(map.len(), n);
            assert!(map.into_iter().eq(items), "{n} items");
        }
    }
}
