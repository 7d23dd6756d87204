//! The BLIS loop nest, generic over the micro-kernel, plus an unpacked path for a few rows.
//!
//! Every function here is `#[inline(always)]` so that the per-ISA entry points in `mod.rs`, which
//! carry `#[target_feature]`, compile the whole hot path (packing and edges included) for their ISA.

use super::kernel::Kernel;

/// At most this many rows of C go through the unpacked path: packing B costs as much as the
/// product itself when it is reused by so few rows.
pub const SMALL_M: usize = 4;

/// A validated GEMM problem over raw pointers: `C = alpha op(A) op(B) + beta C`, then the
/// epilogue. Element (i, p) of op(A) is `a[i rsa + p csa]`; (p, j) of op(B) is `b[p rsb + j csb]`;
/// C is row-major with leading dimension `ldc`.
#[derive(Clone, Copy)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: *const f32,
    pub rsa: usize,
    pub csa: usize,
    pub b: *const f32,
    pub rsb: usize,
    pub csb: usize,
    pub c: *mut f32,
    pub ldc: usize,
    /// `n` biases added to every row of C, or null.
    pub bias: *const f32,
    pub relu: bool,
}

/// Floats of packed A the loop nest needs for kernel `K`.
pub(crate) const fn a_pack_len<K: Kernel>(m: usize, k: usize) -> usize {
    round_up(min(m, K::MC), K::MR) * min(k, K::KC)
}

/// Floats of packed B the loop nest needs for kernel `K`.
pub(crate) const fn b_pack_len<K: Kernel>(n: usize, k: usize) -> usize {
    min(k, K::KC) * round_up(min(n, K::NC), K::NR)
}

const fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

const fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// Runs the problem with kernel `K`.
///
/// # Safety
/// The pointers of `p` address every element its shapes and strides name; `apack` and `bpack`
/// are valid for `a_pack_len` and `b_pack_len` writes and do not overlap anything else; the CPU
/// supports `K`'s ISA.
#[inline(always)]
pub(crate) unsafe fn run<K: Kernel>(p: &Problem, apack: *mut f32, bpack: *mut f32) {
    if p.m == 0 || p.n == 0 {
        return;
    }
    if p.k == 0 {
        // SAFETY: forwarded contract.
        unsafe { scale_only(p) };
    } else if p.m <= SMALL_M && p.rsb == 1 {
        // SAFETY: forwarded contract.
        unsafe {
            match (K::DOT_COLUMNS, p.csa == 1) {
                (8, true) => small_dot::<8, true>(p),
                (8, false) => small_dot::<8, false>(p),
                (1, true) => small_dot::<1, true>(p),
                (1, false) => small_dot::<1, false>(p),
                (_, true) => small_dot::<4, true>(p),
                (_, false) => small_dot::<4, false>(p),
            }
        };
    } else if p.m <= SMALL_M && p.csb == 1 {
        // SAFETY: forwarded contract.
        unsafe { small_axpy(p) };
    } else {
        // SAFETY: forwarded contract.
        unsafe { packed::<K>(p, apack, bpack) };
    }
}

/// `C = beta C` (C not read when beta = 0) then the epilogue: the whole product when k = 0.
#[inline(always)]
unsafe fn scale_only(p: &Problem) {
    for i in 0..p.m {
        // SAFETY: row `i < m` of C holds `n` writable floats.
        let row = unsafe { core::slice::from_raw_parts_mut(p.c.add(i * p.ldc), p.n) };
        if p.beta == 0.0 {
            row.fill(0.0);
        } else {
            row.iter_mut().for_each(|v| *v *= p.beta);
        }
        // SAFETY: forwarded contract (bias holds `n` floats when not null).
        unsafe { epilogue_row(row, p.bias, p.relu) };
    }
}

/// Adds the bias and applies ReLU to one row segment of C; NaN passes through.
///
/// # Safety
/// `bias` is null or valid for `row.len()` reads.
#[inline(always)]
unsafe fn epilogue_row(row: &mut [f32], bias: *const f32, relu: bool) {
    if !bias.is_null() {
        // SAFETY: the caller guarantees `row.len()` readable biases.
        let bias = unsafe { core::slice::from_raw_parts(bias, row.len()) };
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
    if relu {
        // A select that always writes (not a conditional store), so that it vectorises.
        row.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
    }
}

/// Few rows, op(B) columns contiguous (e.g. `x W^T`): one dot product per element of C, each in
/// 16 partial sums, `COLS` columns at a time so that their `COLS x 16` partial sums are
/// independent chains the compiler keeps in vector registers; a column's sum is the same
/// whatever `COLS`. `A_CONTIGUOUS` says op(A) rows are contiguous (`csa == 1`); otherwise each
/// row is first gathered into `row_buf` chunk by chunk.
#[inline(always)]
unsafe fn small_dot<const COLS: usize, const A_CONTIGUOUS: bool>(p: &Problem) {
    const LANES: usize = 16;
    const ROW_CHUNK: usize = 1024;
    let k = p.k;
    if !A_CONTIGUOUS && k > ROW_CHUNK {
        // Rare layout (both operands transposed, few rows, long k): split k so the gathered row
        // fits the stack buffer; later chunks accumulate into C.
        let mut start = 0;
        while start < k {
            let len = ROW_CHUNK.min(k - start);
            let part = Problem {
                k: len,
                // SAFETY: columns `start..start + len` of op(A) and rows of op(B) exist.
                a: unsafe { p.a.add(start * p.csa) },
                // SAFETY: as above.
                b: unsafe { p.b.add(start * p.rsb) },
                beta: if start == 0 { p.beta } else { 1.0 },
                bias: if start + len == k {
                    p.bias
                } else {
                    core::ptr::null()
                },
                relu: p.relu && start + len == k,
                ..*p
            };
            // SAFETY: forwarded contract on the sub-problem.
            unsafe { small_dot::<COLS, false>(&part) };
            start += len;
        }
        return;
    }
    let mut row_buf = [0f32; ROW_CHUNK];
    for i in 0..p.m {
        let a: &[f32] = if A_CONTIGUOUS {
            // SAFETY: row `i` of op(A) holds `k` contiguous floats (csa = 1).
            unsafe { core::slice::from_raw_parts(p.a.add(i * p.rsa), k) }
        } else {
            for (q, v) in row_buf[..k].iter_mut().enumerate() {
                // SAFETY: (i, q) with q < k is inside op(A).
                *v = unsafe { *p.a.add(i * p.rsa + q * p.csa) };
            }
            &row_buf[..k]
        };
        // SAFETY: row `i < m` of C holds `n` writable floats.
        let crow = unsafe { core::slice::from_raw_parts_mut(p.c.add(i * p.ldc), p.n) };
        let mut j = 0;
        while j < p.n {
            let cols = COLS.min(p.n - j);
            let mut cols_b: [&[f32]; COLS] = [&[]; COLS];
            for (q, col) in cols_b.iter_mut().enumerate().take(cols) {
                // SAFETY: column `j + q < n` of op(B) holds `k` contiguous floats (rsb = 1).
                *col = unsafe { core::slice::from_raw_parts(p.b.add((j + q) * p.csb), k) };
            }
            let mut acc = [[0f32; LANES]; COLS];
            let full = k / LANES * LANES;
            for s in (0..full).step_by(LANES) {
                let av = &a[s..s + LANES];
                for q in 0..cols {
                    let bv = &cols_b[q][s..s + LANES];
                    for l in 0..LANES {
                        acc[q][l] += av[l] * bv[l];
                    }
                }
            }
            for q in 0..cols {
                let mut sum: f32 = acc[q].iter().sum();
                for s in full..k {
                    sum += a[s] * cols_b[q][s];
                }
                let out = &mut crow[j + q];
                *out = if p.beta == 0.0 {
                    p.alpha * sum
                } else {
                    p.alpha * sum + p.beta * *out
                };
            }
            j += cols;
        }
        // SAFETY: forwarded contract.
        unsafe { epilogue_row(crow, p.bias, p.relu) };
    }
}

/// Few rows, op(B) rows contiguous (e.g. `x W`): C row += a_ip * B row, four rows of B per pass
/// over C.
#[inline(always)]
unsafe fn small_axpy(p: &Problem) {
    const DEPTH: usize = 4;
    let n = p.n;
    for i in 0..p.m {
        // SAFETY: row `i < m` of C holds `n` writable floats.
        let crow = unsafe { core::slice::from_raw_parts_mut(p.c.add(i * p.ldc), n) };
        if p.beta == 0.0 {
            crow.fill(0.0);
        } else if p.beta != 1.0 {
            crow.iter_mut().for_each(|v| *v *= p.beta);
        }
        let mut q = 0;
        while q < p.k {
            let depth = DEPTH.min(p.k - q);
            let mut coef = [0f32; DEPTH];
            let mut rows: [&[f32]; DEPTH] = [&[]; DEPTH];
            for d in 0..depth {
                // SAFETY: (i, q + d) is inside op(A); row `q + d < k` of op(B) holds `n`
                // contiguous floats (csb = 1).
                unsafe {
                    coef[d] = p.alpha * *p.a.add(i * p.rsa + (q + d) * p.csa);
                    rows[d] = core::slice::from_raw_parts(p.b.add((q + d) * p.rsb), n);
                }
            }
            if depth == DEPTH {
                for (j, out) in crow.iter_mut().enumerate() {
                    *out += coef[0] * rows[0][j]
                        + coef[1] * rows[1][j]
                        + coef[2] * rows[2][j]
                        + coef[3] * rows[3][j];
                }
            } else {
                for d in 0..depth {
                    crow.iter_mut().zip(rows[d]).for_each(|(o, &b)| *o += coef[d] * b);
                }
            }
            q += depth;
        }
        // SAFETY: forwarded contract.
        unsafe { epilogue_row(crow, p.bias, p.relu) };
    }
}

/// The BLIS loop nest: NC columns of B, KC deep, MC rows of A, then NR x MR tiles.
#[inline(always)]
unsafe fn packed<K: Kernel>(p: &Problem, apack: *mut f32, bpack: *mut f32) {
    // Balanced depth: 784 = 4 x 196 rather than 3 x 256 + 16.
    let kc_even = p.k.div_ceil(p.k.div_ceil(K::KC));
    let single_block = p.m <= K::MC;
    for jc in (0..p.n).step_by(K::NC) {
        let nc = K::NC.min(p.n - jc);
        let mut pc = 0;
        while pc < p.k {
            let kc = kc_even.min(p.k - pc);
            let beta = if pc == 0 { p.beta } else { 1.0 };
            let last = pc + kc == p.k;
            for ic in (0..p.m).step_by(K::MC) {
                let mc = K::MC.min(p.m - ic);
                // SAFETY: the block starts inside op(A); `apack` holds `a_pack_len` floats.
                unsafe {
                    super::pack::pack_a::<K>(mc, kc, p.a.add(ic * p.rsa + pc * p.csa), p.rsa, p.csa, apack)
                };
                for jr in (0..nc).step_by(K::NR) {
                    let nr = K::NR.min(nc - jr);
                    // With a single row block no panel is used twice, so every panel goes to
                    // the same slot, which stays in L1 instead of filling L2 and L3 with
                    // packed B that is never read again.
                    let slot = if single_block { 0 } else { jr * kc };
                    if ic == 0 {
                        // B is packed one panel at a time by the first row block, just before
                        // its tiles use it, so the panel is still in L1; later row blocks
                        // reuse it from L2 or L3. Packing all of B first would stream it out
                        // to L3 and back in, which costs as much as the product when m is small.
                        // SAFETY: the panel's `kc x nr` block lies inside op(B); its packed
                        // copy lies at `slot <= jr kc` inside `bpack` (`b_pack_len` floats).
                        unsafe {
                            super::pack::pack_b::<K>(
                                kc,
                                nr,
                                p.b.add(pc * p.rsb + (jc + jr) * p.csb),
                                p.rsb,
                                p.csb,
                                bpack.add(slot),
                            )
                        };
                    }
                    for ir in (0..mc).step_by(K::MR) {
                        let mr = K::MR.min(mc - ir);
                        // SAFETY: the panels lie inside the packed buffers; the tile of C at
                        // (ic + ir, jc + jr) of `mr x nr` lies inside C.
                        unsafe {
                            let ap = apack.add(ir * kc);
                            let bp = bpack.add(slot);
                            let c = p.c.add((ic + ir) * p.ldc + jc + jr);
                            prefetch_tile(c, p.ldc, mr, nr);
                            if mr == K::MR && nr == K::NR {
                                K::tile(kc, p.alpha, ap, bp, beta, c, p.ldc);
                            } else {
                                K::edge(mr, nr, kc, p.alpha, ap, bp, beta, c, p.ldc);
                            }
                            if last {
                                let bias = if p.bias.is_null() {
                                    p.bias
                                } else {
                                    p.bias.add(jc + jr)
                                };
                                for r in 0..mr {
                                    let row = core::slice::from_raw_parts_mut(c.add(r * p.ldc), nr);
                                    epilogue_row(row, bias, p.relu);
                                }
                            }
                        }
                    }
                }
            }
            pc += kc;
        }
    }
}

/// Starts loading the `mr x nr` tile of C at `c` into L1 (every line of each row), so that the
/// kernel's final read and write of C do not wait on L3 or memory: when C is larger than L2
/// every tile misses. Hints only; O(mr nr / 16) instructions.
#[inline(always)]
fn prefetch_tile(c: *const f32, ldc: usize, mr: usize, nr: usize) {
    for r in 0..mr {
        crate::prefetch::span(c.wrapping_add(r * ldc).cast(), nr * core::mem::size_of::<f32>());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// `small_dot` gives the same bits whatever the number of columns it sums at once (1 on
    /// 32-bit Arm's portable kernel, 4 elsewhere, 8 with AVX-512), with contiguous and strided
    /// rows of A, on depths around its 16 lanes and its 1024-float row buffer, with beta, bias
    /// and ReLU.
    #[test]
    fn small_dot_sums_alike_for_any_column_count() {
        let value = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
        for (m, k, n) in [
            (1, 0, 3),
            (1, 1, 1),
            (2, 15, 5),
            (4, 16, 9),
            (3, 17, 8),
            (1, 129, 13),
            (2, 1031, 6),
        ] {
            let a: [Vec<f32>; 2] = [
                (0..m * k).map(value).collect(),
                (0..m * k).map(|i| value(i + 3)).collect(),
            ];
            let b: Vec<f32> = (0..k * n).map(|i| value(i + 11)).collect();
            let bias: Vec<f32> = (0..n).map(|i| value(i + 5)).collect();
            for contiguous in [true, false] {
                let results = [1usize, 4, 8].map(|cols| {
                    let mut c: Vec<f32> = (0..m * n).map(|i| value(i + 17)).collect();
                    let p = Problem {
                        m,
                        n,
                        k,
                        alpha: 0.75,
                        beta: 0.5,
                        a: a[usize::from(contiguous)].as_ptr(),
                        rsa: if contiguous { k } else { 1 },
                        csa: if contiguous { 1 } else { m },
                        b: b.as_ptr(),
                        rsb: 1,
                        csb: k,
                        c: c.as_mut_ptr(),
                        ldc: n,
                        bias: bias.as_ptr(),
                        relu: true,
                    };
                    // SAFETY: A is m x k (row- or column-major), op(B) is k x n with contiguous
                    // columns, C is m x n, and there are n biases.
                    unsafe {
                        match (cols, contiguous) {
                            (1, true) => small_dot::<1, true>(&p),
                            (1, false) => small_dot::<1, false>(&p),
                            (4, true) => small_dot::<4, true>(&p),
                            (4, false) => small_dot::<4, false>(&p),
                            (_, true) => small_dot::<8, true>(&p),
                            (_, false) => small_dot::<8, false>(&p),
                        }
                    }
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                });
                assert!(
                    results[1..].iter().all(|r| *r == results[0]),
                    "{m} x {k} x {n}, contiguous {contiguous}"
                );
            }
        }
    }
}
