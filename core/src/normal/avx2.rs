//! The 8-lane sampler in AVX2 intrinsics: xoshiro128++ in one ymm register per state word,
//! the ziggurat's tables read by scalar loads of (edge, ratio) pairs, the accept test as one compare and a movemask.

use core::arch::x86_64::{
    __m256i, _CMP_LT_OQ, _mm_load_sd, _mm_loadh_pd, _mm256_add_epi32, _mm256_and_si256, _mm256_castpd_ps,
    _mm256_castps_si256, _mm256_castsi256_ps, _mm256_cmp_ps, _mm256_cvtepi32_ps, _mm256_loadu_si256,
    _mm256_movemask_ps, _mm256_mul_ps, _mm256_or_si256, _mm256_set_m128d, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_shuffle_ps, _mm256_slli_epi32, _mm256_srli_epi32, _mm256_storeu_ps, _mm256_storeu_si256,
    _mm256_xor_si256,
};

use rand_core::Rng;

use super::lanes::Lanes;
use super::{CHUNK, LAYER_MASK, Normal, SIGN_BIT, U23};

/// The same numbers as the portable sampler, 8 at a time.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn fill_lanes<G: Rng + ?Sized>(
    normal: &Normal,
    lanes: &mut Lanes,
    aux: &mut G,
    out: &mut [f32],
    scale: f32,
) {
    let mut s = load_state(lanes);
    let mut bits = [0u32; CHUNK];
    let mut spare = [0f32; CHUNK];
    for chunk in out.chunks_mut(CHUNK) {
        let full = chunk.len() == CHUNK;
        let dst: &mut [f32] = if full { &mut *chunk } else { &mut spare };
        let mut rejected = 0u64;
        // The generator's steps first, then the table lookups: the loads of one group then
        // do not wait on the generator's dependency chain.
        for words in bits.chunks_exact_mut(8) {
            store_words(words, next_words(&mut s));
        }
        for (g, (words, vals)) in bits.chunks_exact(8).zip(dst.chunks_exact_mut(8)).enumerate() {
            let (z, accepted) = fast8(normal, load_words(words), words, scale);
            store_samples(vals, z);
            rejected |= u64::from(!accepted as u8) << (8 * g);
        }
        if !full {
            let n = chunk.len();
            chunk.copy_from_slice(&spare[..n]);
        }
        redo_rejected(normal, chunk, &bits, rejected, aux, scale);
    }
    store_state(lanes, &s);
}

/// Replaces the samples of `chunk` flagged in `rejected` (bit i = sample i, from the 32 random
/// bits `bits[i]`) by the exact slow path's, in increasing order (as the portable sampler).
/// O(rejected).
#[inline(always)]
fn redo_rejected<G: Rng + ?Sized>(
    normal: &Normal,
    chunk: &mut [f32],
    bits: &[u32; CHUNK],
    mut rejected: u64,
    aux: &mut G,
    scale: f32,
) {
    if chunk.len() < CHUNK {
        rejected &= (1u64 << chunk.len()) - 1;
    }
    while rejected != 0 {
        let i = rejected.trailing_zeros() as usize;
        chunk[i] = scale * normal.slow(bits[i], aux);
        rejected &= rejected - 1;
    }
}

/// The four state words of the 8 lanes, one register each.
#[target_feature(enable = "avx2")]
#[inline]
fn load_state(lanes: &Lanes) -> [__m256i; 4] {
    // SAFETY: each row of `lanes.s` is 8 u32 = 32 readable bytes; loadu has no alignment need.
    lanes
        .s
        .map(|row| unsafe { _mm256_loadu_si256(row.as_ptr().cast()) })
}

#[target_feature(enable = "avx2")]
#[inline]
fn store_state(lanes: &mut Lanes, s: &[__m256i; 4]) {
    for (row, v) in lanes.s.iter_mut().zip(s) {
        // SAFETY: each row is 8 u32 = 32 writable bytes; storeu has no alignment need.
        unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast(), *v) };
    }
}

/// `x <<< k` on every lane.
#[target_feature(enable = "avx2")]
#[inline]
fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x))
}

/// One xoshiro128++ step of every lane: the 8 output words. As [`Lanes::next_words`].
#[target_feature(enable = "avx2")]
#[inline]
fn next_words(s: &mut [__m256i; 4]) -> __m256i {
    let [s0, s1, s2, s3] = *s;
    let out = _mm256_add_epi32(rotl::<7, 25>(_mm256_add_epi32(s0, s3)), s0);
    let t = _mm256_slli_epi32::<9>(s1);
    let s2 = _mm256_xor_si256(s2, s0);
    let s3 = _mm256_xor_si256(s3, s1);
    let s1 = _mm256_xor_si256(s1, s2);
    let s0 = _mm256_xor_si256(s0, s3);
    let s2 = _mm256_xor_si256(s2, t);
    let s3 = rotl::<11, 21>(s3);
    *s = [s0, s1, s2, s3];
    out
}

/// The ziggurat's fast path on 8 words, as [`Normal::fast`] (which tests the integer `k`
/// against `limit`, where this tests the uniform against the ratio: they decide alike, and
/// `u x_i` is `k x_step_i`): `scale` times the candidates, and the movemask of the accepted
/// lanes. `words` holds the same 8 words in memory, for the layer
/// indices: 8 scalar 8-byte loads of (edge, ratio) pairs are much cheaper than two gathers
/// on Zen 3 (about 20 cycles each there).
#[target_feature(enable = "avx2")]
#[inline]
fn fast8(normal: &Normal, w: __m256i, words: &[u32], scale: f32) -> (__m256i, i32) {
    let pair = |l: usize| -> *const f64 {
        let layer = (words[l] & LAYER_MASK) as usize;
        (&normal.pairs[layer] as *const u64).cast()
    };
    // SAFETY: each pointer addresses one u64 of `normal.pairs`, read as the 8 bytes of an f64
    // (a plain load: no float operation touches the bits).
    let (a, b) = unsafe {
        let low = |l: usize| _mm_loadh_pd(_mm_load_sd(pair(l)), pair(l + 1));
        (
            _mm256_set_m128d(low(4), low(0)), // x0 r0 x1 r1 | x4 r4 x5 r5
            _mm256_set_m128d(low(6), low(2)), // x2 r2 x3 r3 | x6 r6 x7 r7
        )
    };
    let (a, b) = (_mm256_castpd_ps(a), _mm256_castpd_ps(b));
    let edge = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    let ratio = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
    let u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<9>(w)), _mm256_set1_ps(U23));
    let sign = _mm256_slli_epi32::<23>(_mm256_and_si256(w, _mm256_set1_epi32(SIGN_BIT as i32)));
    let signed = _mm256_castsi256_ps(_mm256_or_si256(_mm256_castps_si256(_mm256_mul_ps(u, edge)), sign));
    let z = _mm256_mul_ps(_mm256_set1_ps(scale), signed);
    let accepted = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(u, ratio));
    (_mm256_castps_si256(z), accepted)
}

/// Stores the 8 words.
#[target_feature(enable = "avx2")]
#[inline]
fn store_words(words: &mut [u32], w: __m256i) {
    assert!(words.len() == 8);
    // SAFETY: the slice holds exactly 8 u32 (asserted); storeu has no alignment need.
    unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), w) };
}

/// Loads 8 words.
#[target_feature(enable = "avx2")]
#[inline]
fn load_words(words: &[u32]) -> __m256i {
    assert!(words.len() == 8);
    // SAFETY: the slice holds exactly 8 u32 (asserted); loadu has no alignment need.
    unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
}

/// Stores the 8 samples.
#[target_feature(enable = "avx2")]
#[inline]
fn store_samples(vals: &mut [f32], z: __m256i) {
    assert!(vals.len() == 8);
    // SAFETY: the slice holds exactly 8 f32 (asserted); storeu has no alignment need.
    unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), _mm256_castsi256_ps(z)) };
}
