//! Training on the real MNIST through the CLI's library: accuracy, determinism, divergence.
//! Needs the data (see `common::mnist_dir`).

mod common;

use ienk_cli::data::Mnist;
use ienk_cli::train::{OptimizerKind, TrainConfig, train};

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
