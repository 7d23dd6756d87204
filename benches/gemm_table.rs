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

/// GFLOP/s of 12 independent chains of AVX2 FMAs on registers: this core's practical peak.
#[cfg(target_arch = "x86_64")]
fn fma_peak() -> Option<f64> {
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
    let iters = 50_000_000;
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: AVX2 and FMA were detected above.
            std::hint::black_box(unsafe { chains(iters) });
            (iters * 12 * 8 * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max);
    Some(best)
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak() -> Option<f64> {
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
    if let Some(peak) = fma_peak() {
        println!("AVX2 FMA peak of this core (12 register chains): {peak:.1} GFLOP/s\n");
    }
    let paths = bench_paths();
    let auto = ienk::gemm::active_kernel();
    print!("| shape (m x k x n) | naive | matrixmultiply |");
    for p in &paths {
        print!(" ienk {p} |");
    }
    println!(" ienk auto ({auto}) / matrixmultiply |");
    println!("|{}", "---|".repeat(paths.len() + 4));
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
        for times in ours {
            print!(" {:.1} |", gf(median(times)));
        }
        if ratios.is_empty() {
            println!(" - |");
        } else {
            println!(" {:.2}x |", median(ratios));
        }
    }
}
