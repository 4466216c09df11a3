//! The in-memory index: blob id → pack, offset, length.
//!
//! Loaded entries live in one vector sorted by id (52 bytes a blob, no
//! hash-table slack); blobs added during a session go into a small hash
//! map, which `compact` folds into the vector once it holds a sixteenth as
//! many (a map entry with its slack costs about twice a sorted one). Pack
//! ids are interned so each entry holds a 4-byte pack number instead of a
//! 32-byte id.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::format::blob::{BlobType, Compression};
use super::format::index::{IndexBlob, IndexFile};
use super::id::Id;

/// The first 8 bytes of an id as a number: comparing these first orders
/// ids as their bytes do, without a memcmp call for most comparisons.
fn prefix(id: &Id) -> u64 {
    u64::from_be_bytes(id.0[..8].try_into().expect("ids are 32 bytes"))
}

/// Below this many session blobs `compact` leaves them in the map.
const COMPACT_FROM: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    id: Id,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    flags: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 64);

impl Entry {
    fn new(pack: u32, b: &IndexBlob) -> Entry {
        Entry {
            id: b.id,
            pack,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            flags: (b.blob_type as u8) | ((b.compression as u8) << 2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: Id,
    pub blob_type: BlobType,
    pub compression: Compression,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Default)]
pub struct MasterIndex {
    packs: Vec<Id>,
    pack_numbers: HashMap<Id, u32>,
    sorted: Vec<Entry>,
    recent: HashMap<Id, Entry>,
}

impl MasterIndex {
    pub fn new() -> MasterIndex {
        MasterIndex::default()
    }

    fn intern_pack(&mut self, pack: Id) -> u32 {
        if let Some(n) = self.pack_numbers.get(&pack) {
            return *n;
        }
        let n = self.packs.len() as u32;
        self.packs.push(pack);
        self.pack_numbers.insert(pack, n);
        n
    }

    /// Add every entry of an index file; call `seal_loaded` after the last.
    pub fn load_file(&mut self, file: &IndexFile) {
        self.sorted.reserve_exact(file.blob_count());
        for p in &file.packs {
            let n = self.intern_pack(p.id);
            self.sorted.extend(p.blobs.iter().map(|b| Entry::new(n, b)));
        }
    }

    /// Sort loaded entries for lookup. A blob stored in two packs (after an
    /// interrupted prune, or two concurrent creates) keeps one location.
    pub fn seal_loaded(&mut self) {
        self.sorted.sort_unstable_by_key(|e| e.id);
        self.sorted.dedup_by(|a, b| a.id == b.id);
        self.sorted.shrink_to_fit();
    }

    /// Record blobs of a pack written in this session.
    pub fn add_pack(&mut self, pack: Id, blobs: &[IndexBlob]) {
        let n = self.intern_pack(pack);
        for b in blobs {
            self.recent.entry(b.id).or_insert_with(|| Entry::new(n, b));
        }
    }

    /// Fold the blobs added this session into the sorted vector once they
    /// are a sixteenth of it (and at least `COMPACT_FROM`), so a long backup
    /// of small chunks holds under 64 bytes a blob, not a hash map's ~150.
    /// Moves loaded entries: positions from `loaded_position` are invalid
    /// afterwards, so callers that keep them (prune) must not call this.
    pub fn compact(&mut self) {
        if self.recent.len() < COMPACT_FROM.max(self.sorted.len() / 16) {
            return;
        }
        let mut fresh: Vec<Entry> = std::mem::take(&mut self.recent).into_values().collect();
        // A blob stored again keeps its loaded location, as lookups did.
        fresh.retain(|e| self.find_sorted(&e.id).is_none());
        fresh.sort_unstable_by_key(|e| e.id);
        let Some(&filler) = fresh.first() else { return };
        // Merged from the back, in place: no second copy of the vector.
        let (old, added) = (self.sorted.len(), fresh.len());
        self.sorted.reserve_exact(added);
        self.sorted.resize(old + added, filler);
        let (mut i, mut j) = (old, added);
        for k in (0..old + added).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.sorted[i - 1].id > fresh[j - 1].id {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = fresh[j - 1];
                j -= 1;
            }
        }
    }

    fn find(&self, id: &Id) -> Option<&Entry> {
        match self.find_sorted(id) {
            Some(i) => Some(&self.sorted[i]),
            None => self.recent.get(id),
        }
    }

    /// Ids are keyed hashes, uniformly spread, so an id's place in the
    /// sorted vector is close to `prefix / 2^64 × len`: start there and
    /// gallop outwards, touching a few neighbouring cache lines instead of
    /// the ~18 far-apart ones of a plain binary search (those misses were
    /// 11% of a database restore's CPU). Any distribution gives the right
    /// answer, a skewed one only more steps.
    fn find_sorted(&self, id: &Id) -> Option<usize> {
        let s = &self.sorted;
        if s.is_empty() {
            return None;
        }
        let key = prefix(id);
        let cmp = |e: &Entry| prefix(&e.id).cmp(&key).then_with(|| e.id.cmp(id));
        let guess = ((u128::from(key) * s.len() as u128) >> 64) as usize;
        let (mut lo, mut hi) = (0, s.len());
        match cmp(&s[guess]) {
            Ordering::Equal => return Some(guess),
            Ordering::Less => {
                lo = guess + 1;
                let mut step = 1;
                while guess + step < s.len() {
                    let probe = guess + step;
                    match cmp(&s[probe]) {
                        Ordering::Equal => return Some(probe),
                        Ordering::Less => lo = probe + 1,
                        Ordering::Greater => {
                            hi = probe;
                            break;
                        }
                    }
                    step *= 2;
                }
            }
            Ordering::Greater => {
                hi = guess;
                let mut step = 1;
                while step <= guess {
                    let probe = guess - step;
                    match cmp(&s[probe]) {
                        Ordering::Equal => return Some(probe),
                        Ordering::Greater => hi = probe,
                        Ordering::Less => {
                            lo = probe + 1;
                            break;
                        }
                    }
                    step *= 2;
                }
            }
        }
        s[lo..hi].binary_search_by(cmp).ok().map(|i| lo + i)
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.find(id).is_some()
    }

    pub fn get(&self, id: &Id) -> Option<BlobLocation> {
        let e = self.find(id)?;
        Some(BlobLocation {
            pack: self.packs[e.pack as usize],
            // Both were valid enum values when the entry was made.
            blob_type: BlobType::from_u8(e.flags & 3).unwrap_or(BlobType::Data),
            compression: Compression::from_u8(e.flags >> 2).unwrap_or(Compression::None),
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Bytes held per blob by the lookup structure, for reporting.
    pub fn bytes_per_blob() -> usize {
        std::mem::size_of::<Entry>()
    }

    /// Position of `id` among the loaded (sorted) entries. Positions stay
    /// valid until the next load, so callers can keep one bit per blob.
    pub fn loaded_position(&self, id: &Id) -> Option<usize> {
        self.sorted.binary_search_by(|e| e.id.cmp(id)).ok()
    }

    pub fn loaded_len(&self) -> usize {
        self.sorted.len()
    }

    /// The loaded entry at `pos`: its id, pack number and stored length.
    pub fn loaded_at(&self, pos: usize) -> (Id, u32, u32) {
        let e = &self.sorted[pos];
        (e.id, e.pack, e.length)
    }

    /// Positions of the loaded dictionary blobs.
    pub fn loaded_dictionaries(&self) -> impl Iterator<Item = usize> + '_ {
        self.sorted.iter().enumerate().filter(|(_, e)| e.flags & 3 == BlobType::Dictionary as u8).map(|(pos, _)| pos)
    }

    /// The pack number `get` reports for `id` (the copy lookups resolve to).
    pub fn pack_number_of(&self, id: &Id) -> Option<u32> {
        self.find(id).map(|e| e.pack)
    }

    /// Pack id for a pack number.
    pub fn pack_id(&self, n: u32) -> Id {
        self.packs[n as usize]
    }

    /// Number of a known pack.
    pub fn pack_number(&self, pack: &Id) -> Option<u32> {
        self.pack_numbers.get(pack).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Id, BlobLocation)> + '_ {
        self.sorted.iter().chain(self.recent.values()).map(|e| (e.id, self.get(&e.id).expect("entry present")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::format::index::IndexPack;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lookups_match_a_hash_map(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..200), split in 0usize..200) {
            let mut reference = HashMap::new();
            let mut idx = MasterIndex::new();
            let mut file = IndexFile::default();
            for (i, raw) in ids.iter().enumerate() {
                let blob = IndexBlob { blob_type: BlobType::Data, compression: Compression::Zstd, id: Id(*raw), offset: i as u32, length: 10, raw_length: 20 };
                let pack = Id([(i % 3) as u8; 32]);
                if i < split {
                    file.packs.push(IndexPack { id: pack, blobs: vec![blob] });
                } else {
                    idx.add_pack(pack, &[blob]);
                }
                reference.entry(Id(*raw)).or_insert((pack, i as u32));
            }
            idx.load_file(&file);
            idx.seal_loaded();
            for (id, (pack, offset)) in &reference {
                let loc = idx.get(id).unwrap();
                prop_assert_eq!(loc.pack, *pack);
                // Duplicates may resolve to either copy, but never to garbage.
                prop_assert!(ids[loc.offset as usize] == id.0);
                let _ = offset;
            }
            prop_assert!(!idx.contains(&Id([0xEE; 32])) || reference.contains_key(&Id([0xEE; 32])));
        }
    }

    proptest! {
        /// The guessed start assumes uniform ids; skewed ones (here all in a
        /// narrow band, or sharing long prefixes) must still be found, and
        /// ids that are absent never are.
        #[test]
        fn lookups_are_right_for_skewed_ids(
            tails in proptest::collection::vec(any::<u16>(), 1..400),
            band in any::<u8>(),
            probes in proptest::collection::vec(any::<u16>(), 0..50),
        ) {
            let make = |t: u16| {
                let mut raw = [band; 32];
                raw[6..8].copy_from_slice(&t.to_be_bytes());
                raw[31] = (t % 7) as u8;
                Id(raw)
            };
            let present: std::collections::HashSet<Id> = tails.iter().map(|t| make(*t)).collect();
            let mut file = IndexFile::default();
            let blobs = tails.iter().enumerate().map(|(i, t)| IndexBlob {
                blob_type: BlobType::Data, compression: Compression::None, id: make(*t),
                offset: i as u32, length: 1, raw_length: 1,
            }).collect();
            file.packs.push(IndexPack { id: Id([1; 32]), blobs });
            let mut idx = MasterIndex::new();
            idx.load_file(&file);
            idx.seal_loaded();
            for id in &present {
                prop_assert!(idx.contains(id));
            }
            for p in probes {
                let id = make(p);
                prop_assert_eq!(idx.contains(&id), present.contains(&id));
                let mut other = id;
                other.0[0] = other.0[0].wrapping_add(1);
                prop_assert_eq!(idx.contains(&other), present.contains(&other));
            }
        }
    }

    proptest! {
        /// Compacting after any mix of loads and session packs keeps every
        /// lookup's answer, including which copy a duplicate resolves to.
        #[test]
        fn compaction_keeps_every_lookup(
            loaded in proptest::collection::vec(any::<[u8; 32]>(), 0..300),
            batches in proptest::collection::vec(proptest::collection::vec(any::<[u8; 32]>(), 0..3000), 1..4),
            again in proptest::collection::vec(0usize..300, 0..20),
        ) {
            let blob = |raw: [u8; 32], offset: u32| IndexBlob {
                blob_type: BlobType::Tree, compression: Compression::None, id: Id(raw), offset, length: 3, raw_length: 4,
            };
            let mut file = IndexFile::default();
            file.packs.push(IndexPack { id: Id([9; 32]), blobs: loaded.iter().map(|r| blob(*r, 1)).collect() });
            let mut idx = MasterIndex::new();
            idx.load_file(&file);
            idx.seal_loaded();
            // Where each id must resolve: the first location recorded.
            let mut reference: HashMap<Id, BlobLocation> = idx.iter().collect();
            for (n, batch) in batches.iter().enumerate() {
                let mut blobs: Vec<IndexBlob> = batch.iter().map(|r| blob(*r, 2 + n as u32)).collect();
                // Blobs stored again that the loaded index already has.
                blobs.extend(again.iter().filter_map(|i| loaded.get(*i)).map(|r| blob(*r, 99)));
                idx.add_pack(Id([n as u8; 32]), &blobs);
                for b in &blobs {
                    reference.entry(b.id).or_insert(BlobLocation {
                        pack: Id([n as u8; 32]), blob_type: b.blob_type, compression: b.compression,
                        offset: b.offset, length: b.length, raw_length: b.raw_length,
                    });
                }
                idx.compact();
                prop_assert!(idx.recent.len() < COMPACT_FROM.max(idx.sorted.len() / 16));
                for (id, loc) in &reference {
                    prop_assert_eq!(idx.get(id), Some(*loc));
                }
            }
            let mut listed: Vec<Id> = idx.iter().map(|(id, _)| id).collect();
            listed.sort();
            listed.dedup();
            prop_assert_eq!(listed.len(), reference.len());
            prop_assert!(idx.sorted.windows(2).all(|w| w[0].id < w[1].id));
        }
    }

    #[test]
    fn entry_is_compact() {
        assert!(MasterIndex::bytes_per_blob() <= 52, "{}", MasterIndex::bytes_per_blob());
    }
}
