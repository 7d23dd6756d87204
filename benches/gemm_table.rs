//! Prints the GEMM table of the README: GFLOP/s (median of repeated runs) of ienk on each kernel
//! path, matrixmultiply and a naive loop, on the model's shapes, with the ratio ienk / matrixmultiply
//! measured in the same run. `cargo bench --bench gemm_table`.

mod support;

use std::time::Instant;
use support::{Operands, SHAPES, bench_paths};

/// Median seconds of one call, over enough calls to fill about `budget` seconds.
fn median_secs(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let t0 = Instant::now();
    f();
    let once = t0.elapsed().as_secs_f64().max(1e-7);
    let reps = ((budget / once) as usize).clamp(3, 2001);
    // Batch very short calls so the timer's resolution does not dominate.
    let batch = ((1e-4 / once) as usize).max(1);
    let mut times: Vec<f64> = (0..reps.div_ceil(batch).max(3))
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_secs_f64() / batch as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
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
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Some(peak) = fma_peak() {
        println!("AVX2 FMA peak of this core (12 register chains): {peak:.1} GFLOP/s\n");
    }
    let paths = bench_paths();
    let auto = ienk::gemm::active_kernel();
    print!("| shape (m x k x n) | naive |  matrixmultiply |");
    for p in &paths {
        print!(" ienk {p} |");
    }
    println!(" ienk auto ({auto}) / matrixmultiply |");
    println!("|{}", "---|".repeat(paths.len() + 4));
    for shape in SHAPES {
        let mut ops = Operands::new(shape);
        let gf = |secs: f64| shape.flops() / secs / 1e9;
        let naive = if shape.flops() < 2e9 {
            format!("{:.1}", gf(median_secs(1.0, || ops.naive())))
        } else {
            "-".into()
        };
        let mm = gf(median_secs(1.0, || ops.matrixmultiply()));
        print!("| {} | {naive} | {mm:.1} |", shape.label());
        let mut auto_gf = 0.0;
        for &p in &paths {
            let g = gf(median_secs(1.0, || ops.ienk(p)));
            if p == auto {
                auto_gf = g;
            }
            print!(" {g:.1} |");
        }
        println!(" {:.2}x |", auto_gf / mm);
    }
}
