//! Mini-batches: a seeded shuffle of example indices, and a batch as a view of a split that
//! consumers read as dense f32 rows or as raw pixels.

use rand_core::Rng;

use crate::idx::{IMAGE_PIXELS, Split};

/// Uniform integer in `0..n` by Lemire's multiply-shift (bias below 2^-32 for n < 2^32).
fn below<G: Rng + ?Sized>(rng: &mut G, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

/// Shuffles `items` in place (Fisher-Yates). The permutation depends only on the length and the
/// generator, not on the item type: a firmware's `u16` example order is shuffled as the CLI's
/// `u32` one. O(len).
pub fn shuffle<T, G: Rng + ?Sized>(items: &mut [T], rng: &mut G) {
    for i in (1..items.len()).rev() {
        items.swap(i, below(rng, i + 1));
    }
}

/// A mini-batch named by example indices into a split. Nothing is copied until a consumer asks:
/// for dense rows ([`Batch::gather`]), or for each image's pixels ([`Batch::image`]), which the
/// sparse input layer compresses straight from the split. O(1) to copy.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    split: Split<'a>,
    indices: &'a [u32],
}

impl<'a> Batch<'a> {
    /// The examples `indices` of `split`, or `None` when an index is out of range. O(len).
    pub fn new(split: Split<'a>, indices: &'a [u32]) -> Option<Self> {
        indices
            .iter()
            .all(|&i| (i as usize) < split.len())
            .then_some(Batch { split, indices })
    }

    /// Examples in the batch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True when the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The 784 pixels of the batch's example `k` (empty past the end). O(1).
    pub fn image(&self, k: usize) -> &'a [u8] {
        self.indices
            .get(k)
            .and_then(|&i| self.split.image(i as usize))
            .unwrap_or_default()
    }

    /// Examples `start..start + len` of the batch (clamped to its end), as a batch. O(1).
    pub fn slice(&self, start: usize, len: usize) -> Batch<'a> {
        let start = start.min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Batch {
            indices: &self.indices[start..end],
            ..*self
        }
    }

    /// Copies the labels into `y`; `false`, writing nothing, unless `y.len() == len()`. O(len).
    pub fn labels_into(&self, y: &mut [u8]) -> bool {
        if y.len() != self.len() {
            return false;
        }
        for (&i, label) in self.indices.iter().zip(y.iter_mut()) {
            *label = self.split.label(i as usize).unwrap_or_default();
        }
        true
    }

    /// Copies the examples into `x` (`len x 784`, pixels / 255) and their labels into `y`.
    /// Returns `false`, writing nothing, when a buffer has the wrong length. O(len x 784).
    pub fn gather(&self, x: &mut [f32], y: &mut [u8]) -> bool {
        if x.len() != self.len() * IMAGE_PIXELS || !self.labels_into(y) {
            return false;
        }
        for (k, row) in x.chunks_exact_mut(IMAGE_PIXELS).enumerate() {
            // The images come from anywhere in a 47 MB split: ask for the next ones early.
            crate::prefetch::bytes(self.image(k + crate::prefetch::ROWS_AHEAD));
            crate::mlp::pixels_to_unit(self.image(k), row);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{Images, Labels};
    use std::vec;
    use std::vec::Vec;

    /// IDX files of `n` images whose pixels are `(3 i + j) % 7 * 30` and labels `i % 10`.
    fn idx_files(n: usize) -> (Vec<u8>, Vec<u8>) {
        let mut images = vec![0, 0, 8, 3];
        for d in [n as u32, 28, 28] {
            images.extend_from_slice(&d.to_be_bytes());
        }
        images.extend(
            (0..n * IMAGE_PIXELS).map(|e| ((3 * (e / IMAGE_PIXELS) + e % IMAGE_PIXELS) % 7 * 30) as u8),
        );
        let mut labels = vec![0, 0, 8, 1];
        labels.extend_from_slice(&(n as u32).to_be_bytes());
        labels.extend((0..n).map(|i| (i % 10) as u8));
        (images, labels)
    }

    #[test]
    fn a_batch_reads_the_examples_it_names() {
        let (images, labels) = idx_files(12);
        let split = Split::new(Images::parse(&images).unwrap(), Labels::parse(&labels).unwrap()).unwrap();
        assert!(Batch::new(split, &[0, 12]).is_none());
        let indices = [11u32, 2, 7];
        let batch = Batch::new(split, &indices).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.image(1), split.image(2).unwrap());
        assert!(batch.image(3).is_empty());
        let mut x = vec![f32::NAN; 3 * IMAGE_PIXELS];
        let mut y = [0u8; 3];
        assert!(!batch.gather(&mut x[1..], &mut y));
        assert!(!batch.gather(&mut x, &mut y[1..]));
        assert!(x[0].is_nan() && y == [0, 0, 0]);
        assert!(batch.gather(&mut x, &mut y));
        assert_eq!(y, [1, 2, 7]);
        for (k, &i) in indices.iter().enumerate() {
            for j in 0..IMAGE_PIXELS {
                let pixel = (3 * i as usize + j) % 7 * 30;
                let got = x[k * IMAGE_PIXELS + j];
                assert!(
                    (got - pixel as f32 / 255.0).abs() <= 1e-7,
                    "example {k} pixel {j}: {got}"
                );
            }
        }
        let tail = batch.slice(1, 5);
        assert_eq!(tail.len(), 2);
        let mut y2 = [0u8; 2];
        assert!(tail.labels_into(&mut y2));
        assert_eq!(y2, [2, 7]);
        assert!(batch.slice(4, 2).is_empty());
    }
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn shuffle_is_a_permutation_and_roughly_uniform() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut first = [0usize; 5];
        for _ in 0..20000 {
            let mut v = [0u32, 1, 2, 3, 4];
            shuffle(&mut v, &mut rng);
            let mut sorted = v;
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            first[v[0] as usize] += 1;
        }
        // Each value leads 4000 +- 5 sd (sd = sqrt(20000 * 0.2 * 0.8) = 57).
        assert!(first.iter().all(|&c| (3715..=4285).contains(&c)), "{first:?}");
    }

    #[test]
    fn the_permutation_does_not_depend_on_the_item_type() {
        let mut wide: [u32; 97] = core::array::from_fn(|i| i as u32);
        let mut narrow: [u16; 97] = core::array::from_fn(|i| i as u16);
        shuffle(&mut wide, &mut Xoshiro256PlusPlus::seed_from_u64(9));
        shuffle(&mut narrow, &mut Xoshiro256PlusPlus::seed_from_u64(9));
        assert!(wide.iter().zip(&narrow).all(|(&w, &n)| w == u32::from(n)));
        assert_ne!(wide[..10], core::array::from_fn::<u32, 10, _>(|i| i as u32));
    }
}
