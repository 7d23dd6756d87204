//! Training on the real MNIST through the CLI's library: accuracy, determinism, divergence.
//! Needs the data (see `common::mnist_dir`).

mod common;

use ienk::ensemble::resampled::Form;
use ienk::mlp::{Layout, pixels_to_unit};
use ienk_cli::data::Mnist;
use ienk_cli::train::{EnsembleSettings, OptimizerKind, TrainConfig, train};

fn config(optimizer: OptimizerKind, out: &std::path::Path) -> TrainConfig {
    TrainConfig {
        optimizer,
        epochs: 1,
        batch_size: 500,
        lr: 0.001,
        hidden: 128,
        seed: 0,
        threads: 1,
        out: out.to_path_buf(),
        log: None,
        limit: None,
        validation: None,
        keep_best: false,
        progress_lines: 1,
        save_every_epoch: false,
        resume: false,
        lr_decay: None,
        sparse_inputs: true,
        ensemble: Default::default(),
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ienk-training-{}-{name}", std::process::id()))
}

#[test]
fn one_epoch_of_adam_exceeds_90_percent() {
    let Some(dir) = common::mnist_dir("one_epoch_of_adam_exceeds_90_percent") else {
        return;
    };
    let mnist = Mnist::load(&dir).unwrap();
    let out = temp("adam.safetensors");
    let summary = train(
        &config(OptimizerKind::Adam, &out),
        &mnist.train.view().unwrap(),
        &mnist.test.view().unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    let acc = summary.epochs[0].test_accuracy;
    assert!(acc > 0.9, "test accuracy {acc}");
    // The saved model evaluates to the same accuracy.
    let model = ienk_cli::model_io::load_model(&out).unwrap();
    let eval = ienk_cli::eval::evaluate(&model.layout, &model.theta, &mnist.test.view().unwrap(), 2).unwrap();
    assert_eq!(eval.stats.accuracy(), acc);
    let _ = std::fs::remove_file(out);
}

#[test]
fn same_seed_one_thread_gives_byte_identical_models() {
    let Some(dir) = common::mnist_dir("same_seed_one_thread_gives_byte_identical_models") else {
        return;
    };
    let mnist = Mnist::load(&dir).unwrap();
    let (train_split, test) = (mnist.train.view().unwrap(), mnist.test.view().unwrap().take(500));
    let mut files = Vec::new();
    for (i, seed) in [7, 7, 8].into_iter().enumerate() {
        let out = temp(&format!("det{i}.safetensors"));
        let cfg = TrainConfig {
            seed,
            limit: Some(3000),
            batch_size: 100,
            ..config(OptimizerKind::Nag, &out)
        };
        train(&cfg, &train_split, &test, &mut std::io::sink()).unwrap();
        files.push(std::fs::read(&out).unwrap());
        let _ = std::fs::remove_file(out);
    }
    assert!(files[0] == files[1], "same seed, different bytes");
    assert!(files[0] != files[2], "another seed gave the same model");
}

#[test]
fn divergence_stops_training_and_writes_no_model() {
    let Some(dir) = common::mnist_dir("divergence_stops_training_and_writes_no_model") else {
        return;
    };
    let mnist = Mnist::load(&dir).unwrap();
    let out = temp("diverged.safetensors");
    let cfg = TrainConfig {
        lr: 1e30,
        limit: Some(2000),
        ..config(OptimizerKind::Sgd, &out)
    };
    let err = train(
        &cfg,
        &mnist.train.view().unwrap(),
        &mnist.test.view().unwrap(),
        &mut std::io::sink(),
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("diverged"), "{err}");
    assert!(!out.exists(), "a model was written");
}

/// The sparse input layer (with W1 kept transposed between steps) and the dense GEMM passes train
/// the same model up to the order of floating-point sums: SGD, two workers, six steps.
#[test]
fn sparse_and_dense_input_layers_train_the_same_model() {
    let Some(dir) = common::mnist_dir("sparse_and_dense_input_layers_train_the_same_model") else {
        return;
    };
    let mnist = Mnist::load(&dir).unwrap();
    let run = |sparse_inputs: bool| {
        let out = temp(&format!("sparse-{sparse_inputs}.safetensors"));
        let cfg = TrainConfig {
            lr: 0.1,
            threads: 2,
            limit: Some(3000),
            sparse_inputs,
            ..config(OptimizerKind::Sgd, &out)
        };
        parameters_after(&mnist, &cfg)
    };
    let (sparse, dense) = (run(true), run(false));
    let start = run_untrained(&mnist);
    let moved = sparse.iter().zip(&start).filter(|(a, b)| a != b).count();
    assert!(moved > sparse.len() / 2, "only {moved} parameters moved");
    for (k, (a, b)) in sparse.iter().zip(&dense).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "parameter {k}: {a} vs {b}"
        );
    }
}

/// The initial parameters of seed 0 (a run of zero epochs).
fn run_untrained(mnist: &Mnist) -> Vec<f32> {
    let out = temp("untrained.safetensors");
    let cfg = TrainConfig {
        epochs: 0,
        ..config(OptimizerKind::Sgd, &out)
    };
    parameters_after(mnist, &cfg)
}

/// The parameters after training with `cfg` on MNIST (the saved model is deleted).
fn parameters_after(mnist: &Mnist, cfg: &TrainConfig) -> Vec<f32> {
    let summary = train(
        cfg,
        &mnist.train.view().unwrap(),
        &mnist.test.view().unwrap(),
        &mut std::io::sink(),
    )
    .unwrap();
    let _ = std::fs::remove_file(&cfg.out);
    summary.theta
}

/// `--validation 300` on 1300 examples trains on the first 1000 only (the same parameters as
/// `--limit 1000`), and `--keep-best` saves the epoch of the best validation accuracy: the
/// parameters a run stopped after that epoch ends with. The thesis form at h = 0.015 peaks and
/// then runs away, so the best epoch is not the last.
#[test]
fn validation_holds_out_the_last_examples_and_keep_best_saves_the_best_epoch() {
    let Some(dir) =
        common::mnist_dir("validation_holds_out_the_last_examples_and_keep_best_saves_the_best_epoch")
    else {
        return;
    };
    let mnist = Mnist::load(&dir).unwrap();
    let (train_split, test) = (mnist.train.view().unwrap(), mnist.test.view().unwrap().take(500));
    let runaway = |out: &std::path::Path, epochs: u32, limit: usize| TrainConfig {
        epochs,
        batch_size: 1,
        lr: 0.015,
        limit: Some(limit),
        ensemble: EnsembleSettings {
            particles: 10,
            form: Form::Thesis,
            ..Default::default()
        },
        ..config(OptimizerKind::Ienk, out)
    };
    let kept = temp("keep-best.safetensors");
    let cfg = TrainConfig {
        validation: Some(300),
        keep_best: true,
        ..runaway(&kept, 3, 1300)
    };
    let summary = train(&cfg, &train_split, &test, &mut std::io::sink()).unwrap();
    let accuracies: Vec<f64> = summary.epochs.iter().map(|e| e.validation.unwrap().1).collect();
    let best = (0..accuracies.len())
        .find(|&e| accuracies.iter().all(|&a| a <= accuracies[e]))
        .unwrap();
    assert!(best + 1 < accuracies.len(), "no runaway to skip: {accuracies:?}");

    // The held-out examples: the last 300 of the 1300, scored by a plain forward pass.
    let held_out = train_split.take(1300).split_at(1000).1;
    let layout = Layout::mnist(128);
    let mut x = vec![0f32; held_out.pixels().len()];
    pixels_to_unit(held_out.pixels(), &mut x);
    let logits = common::logits_of(&layout, &summary.theta, &x);
    let correct = logits
        .chunks_exact(10)
        .zip(held_out.labels())
        .filter(|(z, y)| (0..10).all(|k| z[k] <= z[usize::from(**y)]))
        .count();
    assert_eq!(correct as f64 / 300.0, *accuracies.last().unwrap());

    // Trained on the first 1000 only: the parameters of --limit 1000 without a validation split.
    let plain = temp("first-1000.safetensors");
    let without = train(
        &runaway(&plain, 3, 1000),
        &train_split,
        &test,
        &mut std::io::sink(),
    )
    .unwrap();
    assert_eq!(common::bits(&summary.theta), common::bits(&without.theta));

    // The kept model is the run stopped after the best epoch.
    let stopped = train(
        &runaway(&plain, best as u32 + 1, 1000),
        &train_split,
        &test,
        &mut std::io::sink(),
    )
    .unwrap();
    let bytes = std::fs::read(&kept).unwrap();
    let model = ienk::safetensors::read(&bytes, 784, 10).unwrap();
    let mut theta = vec![0f32; layout.num_params()];
    model.copy_params(&mut theta).unwrap();
    assert_eq!(common::bits(&theta), common::bits(&stopped.theta));
    assert_eq!(model.metadata("epochs"), Some((best + 1).to_string().as_str()));
    let recorded = format!("{:.4}", accuracies[best]);
    assert_eq!(model.metadata("validation_accuracy"), Some(recorded.as_str()));
    for file in [kept, plain] {
        let _ = std::fs::remove_file(file);
    }
}
