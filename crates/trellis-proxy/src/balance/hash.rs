//! Consistent hashing: a stable 64-bit hash for request keys and endpoint names (the same in
//! every proxy, so every client maps a key to the same endpoint), and the two tables Envoy
//! offers: a ring (`RING_HASH`) and a Maglev lookup table (`MAGLEV`).

/// FNV-1a over `bytes`, then a SplitMix64 finalizer to spread nearby inputs.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Envoy's way of folding several hash policies' values into one.
pub(crate) fn combine(acc: u64, next: u64) -> u64 {
    acc.rotate_left(1) ^ next
}

/// A hash ring: each endpoint owns points in proportion to its weight; a key goes to the owner
/// of the first point at or after its hash.
#[derive(Debug)]
pub(super) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring for endpoints named `names` with `weights`. The lightest endpoint gets a
    /// quarter of `min_size` points and the others proportionally more, whatever the number of
    /// endpoints, so the points an endpoint owns do not depend on the others and removing one
    /// moves only its keys (Envoy instead sizes the whole ring to at least `min_size`, which
    /// reshuffles small rings; here a ring reaches `min_size` from four endpoints on). A ring
    /// that would exceed `max_size` is scaled down.
    pub(super) fn build(names: &[String], weights: &[u32], min_size: u64, max_size: u64) -> Ring {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let Some(lightest) = weights.iter().copied().filter(|w| *w > 0).min() else {
            return Ring { points: Vec::new() };
        };
        let per_unit = min_size.div_ceil(4).max(1) as f64 / f64::from(lightest);
        let natural = per_unit * total as f64;
        let scale = if natural > max_size as f64 {
            max_size as f64 / natural
        } else {
            1.0
        };
        let mut points = Vec::new();
        for (i, (name, weight)) in names.iter().zip(weights).enumerate() {
            let count = (f64::from(*weight) * per_unit * scale).ceil() as u64;
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            for n in 0..count {
                points.push((hash(format!("{name}_{n}").as_bytes()), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// Endpoint indices in ring order from `key`'s point: the owner first, then the next
    /// distinct owners (where a key goes when its owner cannot take it).
    pub(super) fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|(h, _)| *h < key);
        let len = self.points.len();
        (0..len).map(move |i| self.points[(start + i) % len].1 as usize)
    }
}

/// A Maglev table: each slot names an endpoint; endpoints fill slots in turn, in proportion to
/// their weights, each following its own permutation, so a removal moves few keys.
#[derive(Debug)]
pub(super) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// Builds a table of `size` slots (a prime, 65537 by default in Envoy).
    pub(super) fn build(names: &[String], weights: &[u32], size: u64) -> Maglev {
        let max_weight = weights.iter().copied().max().unwrap_or(0);
        if max_weight == 0 || size == 0 {
            return Maglev { table: Vec::new() };
        }
        let size_usize = usize::try_from(size).unwrap_or(usize::MAX);
        let mut table = vec![u32::MAX; size_usize];
        let mut entries: Vec<(u64, u64, u64, u64, u32)> = names
            .iter()
            .zip(weights)
            .map(|(name, weight)| {
                let offset = hash(name.as_bytes()) % size;
                let skip =
                    mix(hash(name.as_bytes()) ^ 0x9e37_79b9_7f4a_7c15) % (size - 1).max(1) + 1;
                // (offset, skip, next, target, weight)
                (offset, skip, 0, 0, *weight)
            })
            .collect();
        let mut filled = 0;
        let mut round: u64 = 1;
        while filled < size_usize {
            for (i, (offset, skip, next, target, weight)) in entries.iter_mut().enumerate() {
                if filled == size_usize {
                    break;
                }
                if round * u64::from(*weight) < *target || *weight == 0 {
                    continue;
                }
                *target += u64::from(max_weight);
                let mut slot = (*offset + *skip * *next) % size;
                while table[slot as usize] != u32::MAX {
                    *next += 1;
                    slot = (*offset + *skip * *next) % size;
                }
                table[slot as usize] = u32::try_from(i).unwrap_or(u32::MAX);
                *next += 1;
                filled += 1;
            }
            round += 1;
        }
        Maglev { table }
    }

    /// The endpoint index for `key`.
    pub(super) fn lookup(&self, key: u64) -> Option<usize> {
        let len = u64::try_from(self.table.len()).ok().filter(|l| *l > 0)?;
        let slot = usize::try_from(key % len).ok()?;
        self.table.get(slot).map(|i| *i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    fn owners(lookup: impl Fn(u64) -> usize, keys: u64) -> Vec<usize> {
        (0..keys).map(|k| lookup(hash(&k.to_le_bytes()))).collect()
    }

    #[test]
    fn the_ring_spreads_keys_by_weight_and_moves_about_one_in_n_on_a_removal() {
        let five = names(5);
        let ring = Ring::build(&five, &[1; 5], 1024, 8 << 20);
        let before = owners(|k| ring.walk(k).next().unwrap(), 20_000);
        for i in 0..5 {
            let share = before.iter().filter(|o| **o == i).count() as f64 / 20_000.0;
            assert!((0.14..0.26).contains(&share), "endpoint {i} got {share}");
        }
        let four = Ring::build(&five[..4], &[1; 4], 1024, 8 << 20);
        let after = owners(|k| four.walk(k).next().unwrap(), 20_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / 20_000.0;
        let owned = before.iter().filter(|o| **o == 4).count() as f64 / 20_000.0;
        assert!(
            (moved - owned).abs() < 1e-9,
            "only the removed endpoint's keys move"
        );
        assert!(
            (0.14..0.26).contains(&moved),
            "moved {moved}, expected ~1/5"
        );
        let heavy = Ring::build(&five[..2], &[3, 1], 1024, 8 << 20);
        let heavy_share = owners(|k| heavy.walk(k).next().unwrap(), 20_000)
            .iter()
            .filter(|o| **o == 0)
            .count() as f64
            / 20_000.0;
        assert!(
            (0.7..0.8).contains(&heavy_share),
            "weight 3:1 gave {heavy_share}"
        );
    }

    #[test]
    fn maglev_fills_every_slot_by_weight_and_moves_about_one_in_n() {
        let four = names(4);
        let table = Maglev::build(&four, &[1, 1, 1, 1], 65537);
        assert!(table.table.iter().all(|i| *i < 4));
        let before = owners(|k| table.lookup(k).unwrap(), 20_000);
        let three = Maglev::build(&four[..3], &[1, 1, 1], 65537);
        let after = owners(|k| three.lookup(k).unwrap(), 20_000);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / 20_000.0;
        assert!((0.2..0.35).contains(&moved), "moved {moved}, expected ~1/4");
        let heavy = Maglev::build(&four[..2], &[3, 1], 65537);
        let share = heavy.table.iter().filter(|i| **i == 0).count() as f64 / 65537.0;
        assert!((0.74..0.76).contains(&share), "weight 3:1 gave {share}");
    }
}
