//! Seconds per training epoch on the real MNIST (needs `IENK_DATA` or `data/mnist`): Adam at
//! batch 500 and 32, one thread and all threads (and on one thread with the dense input layer,
//! for the sparse path's gain), the IEnK settings of the README, and the firmware's low-rank
//! setting with and without `--low-memory` (one thread). Prints the
//! median over several epochs of the training time (evaluation excluded).
//! `cargo bench --bench train_speed` (`-- --quick` for fewer epochs).

use std::path::PathBuf;

use ienk_cli::data::Mnist;
use ienk_cli::train::{EnsembleSettings, OptimizerKind, TrainConfig, train};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("IENK_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist"));
    dir.is_dir().then_some(dir)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let Some(dir) = data_dir() else {
        eprintln!("train_speed: no MNIST (set IENK_DATA or run scripts/fetch-mnist.sh data/mnist)");
        return;
    };
    let quick = args.iter().any(|a| a == "--quick");
    let mnist = Mnist::load(&dir).expect("MNIST loads");
    let (train_split, test) = (mnist.train.view().unwrap(), mnist.test.view().unwrap().take(1000));
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    let base = EnsembleSettings::default();
    let ienk_best = EnsembleSettings {
        particles: 1000,
        rank: 1,
        antithetic: true,
        ..base
    };
    let thesis = EnsembleSettings {
        particles: 10,
        form: ienk::ensemble::resampled::Form::Thesis,
        store: true,
        ..base
    };
    // (label, optimizer, batch, lr, threads, ensemble, limit of examples per epoch, sparse inputs)
    let mut runs = vec![];
    for threads in [1, all] {
        runs.push((
            "adam, batch 500",
            OptimizerKind::Adam,
            500,
            0.001,
            threads,
            base,
            None,
            true,
        ));
        runs.push((
            "adam, batch 32",
            OptimizerKind::Adam,
            32,
            0.001,
            threads,
            base,
            None,
            true,
        ));
        runs.push((
            "ienk 1000 rank-1 particles, batch 500",
            OptimizerKind::Ienk,
            500,
            0.05,
            threads,
            ienk_best,
            Some(10_000),
            true,
        ));
        runs.push((
            "ienk thesis (10 particles, batch 1)",
            OptimizerKind::Ienk,
            1,
            0.001,
            threads,
            thesis,
            Some(5_000),
            true,
        ));
    }
    // The firmware's low-rank setting on one thread: the draws' factors kept for the update's
    // matrix products, or their shares summed into the direction as they come (--low-memory).
    let small = EnsembleSettings {
        particles: 200,
        ..ienk_best
    };
    let summed = EnsembleSettings {
        low_memory: true,
        ..small
    };
    for (label, ensemble) in [
        ("ienk 200 rank-1 particles, batch 10", small),
        ("ienk 200 rank-1 particles, batch 10, --low-memory", summed),
    ] {
        runs.push((
            label,
            OptimizerKind::Ienk,
            10,
            0.002,
            1,
            ensemble,
            Some(10_000),
            true,
        ));
    }
    // The same Adam runs with the dense input layer, for the ratio.
    for batch in [500, 32] {
        let label = if batch == 500 {
            "adam, batch 500, dense input layer"
        } else {
            "adam, batch 32, dense input layer"
        };
        runs.insert(
            0,
            (label, OptimizerKind::Adam, batch, 0.001, 1, base, None, false),
        );
    }
    println!("| run | threads | seconds per epoch (median) | examples per second |");
    println!("|---|---|---|---|");
    let out = std::env::temp_dir().join(format!("ienk-train-speed-{}.safetensors", std::process::id()));
    for (label, optimizer, batch, lr, threads, ensemble, limit, sparse_inputs) in runs {
        let epochs = if quick { 2 } else { 5 };
        let cfg = TrainConfig {
            optimizer,
            epochs,
            batch_size: batch,
            lr,
            hidden: 128,
            seed: 0,
            threads,
            out: out.clone(),
            log: None,
            limit,
            validation: None,
            keep_best: false,
            progress_lines: 1,
            save_every_epoch: false,
            resume: false,
            lr_decay: None,
            sparse_inputs,
            ensemble,
        };
        let summary = train(&cfg, &train_split, &test, &mut std::io::sink()).expect("training runs");
        let mut secs: Vec<f64> = summary.epochs.iter().map(|e| e.train_seconds).collect();
        secs.sort_by(f64::total_cmp);
        let median = secs[secs.len() / 2];
        let n = limit.unwrap_or(train_split.len());
        let per_epoch = median * 60_000.0 / n as f64;
        let note = if n < 60_000 {
            format!(" (timed on {n} examples, scaled to 60000)")
        } else {
            String::new()
        };
        println!(
            "| {label}{note} | {threads} | {per_epoch:.3} | {:.0} |",
            n as f64 / median
        );
    }
    let _ = std::fs::remove_file(out);
}
