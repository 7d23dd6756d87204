//! Prints the GEMM table of the README: GFLOP/s of ienk on each kernel path, matrixmultiply and
//! a naive loop, on the model's shapes, with the ratio ienk / matrixmultiply. The candidates
//! take turns, a few milliseconds each, round after round (in reverse order every other round);
//! each column is the median over the rounds and the ratio is the median of the per-round
//! ratios, so that a shared machine's drift (often 20% within a minute here) moves both sides
//! of a ratio alike.
//! `cargo bench --bench gemm_table [-- M K N]` (one shape only when given).

mod support;

use std::time::Instant;
use support::{Operands, SHAPES, Shape, bench_paths};

/// Rounds per shape: every candidate runs once per round.
const ROUNDS: usize = 31;

/// Seconds of one call of `f`, averaged over `calls` calls after one untimed call, so that each
/// candidate is timed with its own data in cache whatever ran before it.
fn secs_per_call(calls: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..calls {
        f();
    }
    t.elapsed().as_secs_f64() / calls as f64
}

/// Calls per timing so that one timing lasts about 3 ms.
fn calls_for(mut f: impl FnMut()) -> usize {
    let once = secs_per_call(1, &mut f).max(1e-7);
    ((3e-3 / once) as usize).max(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// GFLOP/s of `chains(iters)`, which runs `iters x flops_per_iter` flops: the best of 5 runs.
#[cfg(target_arch = "x86_64")]
fn best_gflops(flops_per_iter: usize, chains: impl Fn(usize) -> f32) -> f64 {
    let iters = 50_000_000;
    (0..5)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(chains(iters));
            (iters * flops_per_iter) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// GFLOP/s of 12 independent chains of AVX2 FMAs on registers: this core's practical AVX2
/// peak, or `None` without AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn avx2_peak() -> Option<f64> {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps};
    #[target_feature(enable = "avx2,fma")]
    fn chains(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let mut sum = 0.0;
        for x in acc {
            // SAFETY: `lanes` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
            sum += lanes.iter().sum::<f32>();
        }
        sum
    }
    if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
        return None;
    }
    // SAFETY: AVX2 and FMA were detected above.
    Some(best_gflops(12 * 8 * 2, |iters| unsafe { chains(iters) }))
}

/// GFLOP/s of 24 independent chains of AVX-512 FMAs on registers, in inline assembly (two FMA
/// pipes of latency up to 12 cycles; written with intrinsics over an array of accumulators,
/// LLVM's code ran at 60% to 100% of this depending on the chain count): this core's practical
/// AVX-512 peak, or `None` without AVX-512F.
#[cfg(target_arch = "x86_64")]
fn avx512_peak() -> Option<f64> {
    #[target_feature(enable = "avx512f")]
    fn chains(iters: usize) -> f32 {
        // SAFETY: register-only arithmetic on the zmm registers it declares clobbered, and a
        // counter; AVX-512F is enabled for this function.
        unsafe {
            std::arch::asm!(
                "vxorps xmm30, xmm30, xmm30",
                "vxorps xmm31, xmm31, xmm31",
                "2:",
                "vfmadd231ps zmm0, zmm30, zmm31",
                "vfmadd231ps zmm1, zmm30, zmm31",
                "vfmadd231ps zmm2, zmm30, zmm31",
                "vfmadd231ps zmm3, zmm30, zmm31",
                "vfmadd231ps zmm4, zmm30, zmm31",
                "vfmadd231ps zmm5, zmm30, zmm31",
                "vfmadd231ps zmm6, zmm30, zmm31",
                "vfmadd231ps zmm7, zmm30, zmm31",
                "vfmadd231ps zmm8, zmm30, zmm31",
                "vfmadd231ps zmm9, zmm30, zmm31",
                "vfmadd231ps zmm10, zmm30, zmm31",
                "vfmadd231ps zmm11, zmm30, zmm31",
                "vfmadd231ps zmm12, zmm30, zmm31",
                "vfmadd231ps zmm13, zmm30, zmm31",
                "vfmadd231ps zmm14, zmm30, zmm31",
                "vfmadd231ps zmm15, zmm30, zmm31",
                "vfmadd231ps zmm16, zmm30, zmm31",
                "vfmadd231ps zmm17, zmm30, zmm31",
                "vfmadd231ps zmm18, zmm30, zmm31",
                "vfmadd231ps zmm19, zmm30, zmm31",
                "vfmadd231ps zmm20, zmm30, zmm31",
                "vfmadd231ps zmm21, zmm30, zmm31",
                "vfmadd231ps zmm22, zmm30, zmm31",
                "vfmadd231ps zmm23, zmm30, zmm31",
                "dec {n}",
                "jnz 2b",
                n = inout(reg) iters.max(1) => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm30") _, out("zmm31") _,
                options(nomem, nostack),
            );
        }
        0.0
    }
    if !std::is_x86_feature_detected!("avx512f") {
        return None;
    }
    // SAFETY: AVX-512F was detected above.
    Some(best_gflops(24 * 16 * 2, |iters| unsafe { chains(iters) }))
}

#[cfg(not(target_arch = "x86_64"))]
fn avx2_peak() -> Option<f64> {
    None
}

#[cfg(not(target_arch = "x86_64"))]
fn avx512_peak() -> Option<f64> {
    None
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let shapes: Vec<Shape> = match args[..] {
        [m, k, n, ..] => vec![Shape { m, k, n }],
        _ => SHAPES.to_vec(),
    };
    if let Some(peak) = avx2_peak() {
        println!("AVX2 FMA peak of this core (12 register chains): {peak:.1} GFLOP/s");
    }
    let peak512 = avx512_peak();
    if let Some(peak) = peak512 {
        println!("AVX-512 FMA peak of this core (24 register chains): {peak:.1} GFLOP/s");
    }
    println!();
    let paths = bench_paths();
    let auto = ienk::gemm::active_kernel();
    print!("| shape (m x k x n) | naive | matrixmultiply |");
    for p in &paths {
        print!(" ienk {p} |");
    }
    print!(" ienk auto ({auto}) / matrixmultiply |");
    // The AVX-512 path's share of the AVX-512 peak, when both were measured.
    let avx512 = paths.iter().position(|&p| p == ienk::gemm::KernelPath::Avx512);
    let share_of_peak = peak512.zip(avx512);
    if share_of_peak.is_some() {
        print!(" ienk avx512 / AVX-512 peak |");
    }
    println!();
    println!(
        "|{}",
        "---|".repeat(paths.len() + 4 + usize::from(share_of_peak.is_some()))
    );
    for shape in shapes {
        let mut ops = Operands::new(shape);
        let gf = |secs: f64| shape.flops() / secs / 1e9;
        let naive = if shape.flops() < 2e9 {
            let calls = calls_for(|| ops.naive());
            let times = (0..5).map(|_| secs_per_call(calls, || ops.naive())).collect();
            format!("{:.1}", gf(median(times)))
        } else {
            "-".into()
        };
        let mm_calls = calls_for(|| ops.matrixmultiply());
        let path_calls: Vec<usize> = paths.iter().map(|&p| calls_for(|| ops.ienk(p))).collect();
        let mut mm = Vec::with_capacity(ROUNDS);
        let mut ours = vec![Vec::with_capacity(ROUNDS); paths.len()];
        let mut ratios = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            // Candidates 0 (matrixmultiply) and 1.. (ienk's paths), in reverse order every other
            // round, so that no candidate always runs after the same one.
            let mut order: Vec<usize> = (0..=paths.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            let mut times = vec![0.0; paths.len() + 1];
            for c in order {
                times[c] = match c {
                    0 => secs_per_call(mm_calls, || ops.matrixmultiply()),
                    _ => secs_per_call(path_calls[c - 1], || ops.ienk(paths[c - 1])),
                };
            }
            mm.push(times[0]);
            for (q, &p) in paths.iter().enumerate() {
                ours[q].push(times[q + 1]);
                if p == auto {
                    ratios.push(times[0] / times[q + 1]);
                }
            }
        }
        print!("| {} | {naive} | {:.1} |", shape.label(), gf(median(mm)));
        let ours: Vec<f64> = ours.into_iter().map(|times| gf(median(times))).collect();
        for g in &ours {
            print!(" {g:.1} |");
        }
        if ratios.is_empty() {
            print!(" - |");
        } else {
            print!(" {:.2}x |", median(ratios));
        }
        if let Some((peak, q)) = share_of_peak {
            print!(" {:.0}% |", 100.0 * ours[q] / peak);
        }
        println!();
    }
}
