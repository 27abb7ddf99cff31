//! Pure quorum arithmetic, kept apart so it can be tested against a simple reference
//! (etcd's `quorum/` package does the same).

/// The number of voters that make a majority of `voters` (0 voters: 1, unreachable).
pub const fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The largest value that a majority of `values` (one per voter) has reached: sort
/// descending, take the majority-th. `None` when fewer than a majority have a value.
/// Used for the commit index (match indexes) and the lease (acknowledged send times).
pub fn quorum_value<T: Ord + Copy, const N: usize>(
    values: &mut heapless::Vec<T, N>,
    voters: usize,
) -> Option<T> {
    let needed = majority(voters);
    if values.len() < needed {
        return None;
    }
    // Insertion sort, descending: at most 64 values, and core's quicksort would cost
    // ~4.7 KB of a board's flash.
    for i in 1..values.len() {
        let mut j = i;
        while j > 0 && values[j - 1] < values[j] {
            values.swap(j - 1, j);
            j -= 1;
        }
    }
    values.get(needed - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::{majority, quorum_value};

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(2), 2);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }

    #[test]
    fn quorum_value_matches_a_brute_force_reference() {
        // Reference: the largest v such that at least majority values are >= v.
        let mut seed = 1u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let voters = (seed % 7 + 1) as usize;
            let present = (seed >> 8) as usize % (voters + 1);
            let mut values = heapless::Vec::<u64, 8>::new();
            for i in 0..present {
                values.push((seed >> (i * 5)) % 10).unwrap();
            }
            let reference = (0..10u64)
                .rev()
                .find(|v| values.iter().filter(|x| *x >= v).count() >= majority(voters));
            assert_eq!(quorum_value(&mut values.clone(), voters), reference);
        }
    }
}
