//! The 8-lane normal sampler: each lane is the reference xoshiro128++ generator, and every
//! instruction-set path gives the portable path's numbers bit for bit, on lengths that cut its
//! 8-sample groups and 64-sample chunks anywhere.

mod common;

use ienk::gemm::KernelPath;
use ienk::normal::{Lanes, Normal};
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::{Xoshiro128PlusPlus, Xoshiro256PlusPlus};

/// Lengths around the group (8) and chunk (64) sizes, primes, and a perturbation block.
const LENGTHS: [usize; 12] = [0, 1, 7, 8, 9, 63, 64, 65, 127, 131, 4096, 4099];

#[test]
fn each_lane_is_the_reference_xoshiro128_plus_plus() {
    let mut seeder = Xoshiro256PlusPlus::seed_from_u64(11);
    let mut lanes = Lanes::from_rng(&mut seeder.clone());
    // Lane l is seeded with the l-th pair of 64-bit draws, as four little-endian u32 words.
    let mut reference: Vec<Xoshiro128PlusPlus> = (0..8)
        .map(|_| {
            let mut seed = [0u8; 16];
            seed[..8].copy_from_slice(&seeder.next_u64().to_le_bytes());
            seed[8..].copy_from_slice(&seeder.next_u64().to_le_bytes());
            Xoshiro128PlusPlus::from_seed(seed)
        })
        .collect();
    for _ in 0..1000 {
        let words = lanes.next_words();
        for (lane, r) in reference.iter_mut().enumerate() {
            assert_eq!(words[lane], r.next_u32(), "lane {lane}");
        }
    }
    // Groups a lane at a time continue the same streams, whatever their number.
    for count in [0, 1, 7, 8, 13] {
        let mut groups = vec![[0u32; 8]; count];
        lanes.fill_groups(&mut groups);
        for words in groups {
            for (lane, r) in reference.iter_mut().enumerate() {
                assert_eq!(words[lane], r.next_u32(), "lane {lane}, {count} groups");
            }
        }
        let words = lanes.next_words();
        for (lane, r) in reference.iter_mut().enumerate() {
            assert_eq!(words[lane], r.next_u32(), "lane {lane} after {count} groups");
        }
    }
}

#[test]
fn every_path_gives_the_portable_samples() {
    let normal = Normal::new();
    for path in common::supported_paths("normal sampler") {
        let mut seeder = Xoshiro256PlusPlus::seed_from_u64(5);
        let (mut lanes, mut aux) = (Lanes::from_rng(&mut seeder), seeder.clone());
        let (mut ref_lanes, mut ref_aux) = (lanes.clone(), aux.clone());
        for (i, &len) in LENGTHS.iter().enumerate() {
            let scale = if i % 2 == 0 { 1.0 } else { -0.37 };
            let mut got = vec![f32::NAN; len];
            let mut want = vec![f32::NAN; len];
            normal
                .fill_lanes_on(path, &mut lanes, &mut aux, &mut got, scale)
                .expect("supported path");
            normal
                .fill_lanes_on(
                    KernelPath::Portable,
                    &mut ref_lanes,
                    &mut ref_aux,
                    &mut want,
                    scale,
                )
                .expect("portable runs everywhere");
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{path}, length {len}: samples differ from the portable path"
            );
        }
        // Both generators were advanced alike.
        assert_eq!(lanes.next_words(), ref_lanes.next_words(), "{path}");
        assert_eq!(aux.next_u64(), ref_aux.next_u64(), "{path}");
    }
}

#[test]
fn an_unsupported_path_is_refused() {
    let normal = Normal::new();
    let mut seeder = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut lanes = Lanes::from_rng(&mut seeder);
    for path in KernelPath::ALL.into_iter().filter(|p| !p.is_supported()) {
        let mut out = [7.0f32; 16];
        assert_eq!(
            normal.fill_lanes_on(path, &mut lanes, &mut seeder, &mut out, 1.0),
            Err(path)
        );
        assert!(out.iter().all(|&v| v == 7.0), "{path} wrote samples");
    }
}
