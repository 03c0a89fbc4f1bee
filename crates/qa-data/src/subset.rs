//! run_qa's `max_*_samples`, with an optional seeded shuffle first.

use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Keeps the first `max_samples` items (all when `None`), after a seeded shuffle if `seed` is given.
pub fn select_subset<T>(
    mut items: Vec<T>,
    max_samples: Option<usize>,
    seed: Option<u64>,
) -> Vec<T> {
    if let Some(seed) = seed {
        items.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    if let Some(max) = max_samples {
        items.truncate(max);
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_without_shuffle() {
        assert_eq!(
            select_subset((0..10).collect(), Some(3), None),
            vec![0, 1, 2]
        );
    }

    #[test]
    fn seeded_shuffle_is_reproducible_and_a_permutation() {
        let a = select_subset((0..100).collect::<Vec<_>>(), Some(10), Some(42));
        let b = select_subset((0..100).collect::<Vec<_>>(), Some(10), Some(42));
        let c = select_subset((0..100).collect::<Vec<_>>(), Some(10), Some(7));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, (0..10).collect::<Vec<_>>());
        let mut all = select_subset((0..100).collect::<Vec<_>>(), None, Some(42));
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }
}
