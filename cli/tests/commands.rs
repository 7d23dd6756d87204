//! End-to-end: train / eval / predict on a tiny synthetic data set, and their error paths.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{TempDir, idx};

const BIN: &str = env!("CARGO_BIN_EXE_ienk-cli");

/// 40 train and 20 test images: digit d has a bright row d.
fn dataset(dir: &Path) {
    for (prefix, n) in [("train", 40u32), ("t10k", 20u32)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels = labels
            .iter()
            .flat_map(|&l| (0..784).map(move |p| if p / 28 == 2 * l as usize { 255 } else { 0 }));
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(0x803, &[n, 28, 28], pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(0x801, &[n], labels.into_iter()),
        )
        .unwrap();
    }
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("IENK_DATA")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn train_eval_predict_round_trip() {
    let d = TempDir::new("roundtrip");
    dataset(&d.0);
    let model = d.0.join("m.safetensors");
    let log = d.0.join("m.csv");
    let m = model.to_str().unwrap();
    let out = cli(
        &d.0,
        &[
            "train",
            "--optimizer",
            "adam",
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--lr",
            "0.01",
            "--out",
            m,
            "--log",
            log.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("=== Epoch: 0/3 === Iter:"), "{stdout}");
    assert!(stdout.contains("Remain:"), "{stdout}");
    let csv = std::fs::read_to_string(&log).unwrap();
    assert!(csv.starts_with(
        "kind,epoch,step,examples,seconds,loss,accuracy,test_loss,test_accuracy,val_loss,val_accuracy\n"
    ));
    // No validation split: its columns stay empty.
    assert!(csv.lines().skip(1).all(|l| l.ends_with(",,")), "{csv}");
    assert_eq!(csv.lines().filter(|l| l.starts_with("epoch,")).count(), 3);

    let out = cli(&d.0, &["eval", "--model", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.starts_with("test accuracy: "), "{report}");
    assert!(
        report.contains("/20)") && report.contains("confusion matrix"),
        "{report}"
    );
    // The model's provenance, from the command above.
    assert!(
        report.contains("model: 784-128-10 MLP trained by adam for 3 epochs, test accuracy "),
        "{report}"
    );
    assert!(
        report.contains("\nsettings: optimizer=adam lr=0.01 batch-size=8 hidden=128 seed=0"),
        "{report}"
    );

    let out = cli(&d.0, &["predict", "--model", m, "--index", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("true label: 3"));

    let pgm = d.0.join("digit.pgm");
    let mut bytes = b"P5 28 28 255\n".to_vec();
    bytes.extend((0..784).map(|p| if p / 28 == 8 { 255u8 } else { 0 }));
    std::fs::write(&pgm, bytes).unwrap();
    let out = cli(&d.0, &["predict", "--model", m, "--image", pgm.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("predicted digit: "));

    // A PNG (ImageMagick's, of the PGM beside it) gives the PGM's report; --invert another.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/png");
    let report = |args: &[&str]| {
        let out = cli(&d.0, &[&["predict", "--model", m, "--image"][..], args].concat());
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let (png, pgm) = (fixtures.join("rgb8.png"), fixtures.join("digit.pgm"));
    let (png, pgm) = (png.to_str().unwrap(), pgm.to_str().unwrap());
    assert_eq!(report(&[png]), report(&[pgm]));
    assert_eq!(report(&[png, "--invert"]), report(&[pgm, "--invert"]));
    assert_ne!(report(&[png, "--invert"]), report(&[png]));
    let out = cli(&d.0, &["predict", "--model", m, "--index", "3", "--invert"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn eval_prints_each_tensors_frobenius_norm() {
    let d = TempDir::new("norms");
    dataset(&d.0);
    // Every entry of a tensor the same: its norm is |value| sqrt(entries), worked out by hand
    // for a 784-16-10 network: 0.5 sqrt(12544) = 56.00, 1 sqrt(16) = 4, 2 sqrt(160) = 25.30,
    // 3 sqrt(10) = 9.49.
    let layout = ienk::mlp::Layout::mnist(16);
    let [w1, b1, w2, b2] = layout.ranges();
    let mut theta = vec![0f32; layout.num_params()];
    theta[w1].fill(0.5);
    theta[b1].fill(-1.0);
    theta[w2].fill(2.0);
    theta[b2].fill(-3.0);
    let mut bytes = vec![0u8; ienk::safetensors::serialized_len(&layout, &[])];
    ienk::safetensors::write(&layout, &theta, &[], &mut bytes).unwrap();
    let model = d.0.join("constant.safetensors");
    std::fs::write(&model, &bytes).unwrap();
    let out = cli(&d.0, &["eval", "--model", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.ends_with(
            "weights (Frobenius norms): 0.weight 56.00, 0.bias 4.00, 2.weight 25.30, 2.bias 9.49\n"
        ),
        "{report}"
    );
}

fn assert_bad_input(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_models_images_and_indices_are_exit_2_with_the_file_named() {
    let d = TempDir::new("bad");
    dataset(&d.0);
    let junk = d.0.join("junk.safetensors");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let j = junk.to_str().unwrap();
    assert_bad_input(
        &cli(&d.0, &["eval", "--model", j]),
        "junk.safetensors: not a valid ienk model",
    );
    assert_bad_input(
        &cli(&d.0, &["eval", "--model", "/nonexistent/m.safetensors"]),
        "/nonexistent/m.safetensors: cannot read",
    );

    let model = d.0.join("m.safetensors");
    let m = model.to_str().unwrap();
    assert!(
        cli(
            &d.0,
            &["train", "--optimizer", "sgd", "--epochs", "1", "--out", m]
        )
        .status
        .success()
    );
    assert_bad_input(
        &cli(&d.0, &["predict", "--model", m, "--index", "20"]),
        "out of range",
    );
    let pgm = d.0.join("bad.pgm");
    std::fs::write(&pgm, b"P5 32 32 255\n").unwrap();
    assert_bad_input(
        &cli(&d.0, &["predict", "--model", m, "--image", pgm.to_str().unwrap()]),
        "bad.pgm: expected a 28x28 image",
    );
    // Flags: clap's own errors also exit 2.
    assert_eq!(
        cli(&d.0, &["train", "--optimizer", "sgd", "--lr", "-1"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(cli(&d.0, &["predict", "--model", m]).status.code(), Some(2));
}

#[test]
fn an_unwritable_output_is_refused_before_training_and_leaves_nothing_behind() {
    let d = TempDir::new("unwritable");
    dataset(&d.0);
    let dir = d.0.to_str().unwrap().to_string();
    let model = d.0.join("m.safetensors");
    let model = model.to_str().unwrap();
    for (flag, target, reason) in [
        ("--out", "/nonexistent-dir/m.safetensors", "cannot write there"),
        ("--out", dir.as_str(), "is a directory"),
        ("--log", "/nonexistent-dir/m.csv", "cannot write there"),
    ] {
        let mut args = vec!["train", "--optimizer", "sgd", "--epochs", "1"];
        if flag == "--log" {
            args.extend_from_slice(&["--out", model]);
        }
        args.extend_from_slice(&[flag, target]);
        let out = cli(&d.0, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("{flag} {target}: {reason}")), "{err}");
        assert!(
            text(&out.stdout).is_empty(),
            "trained anyway: {}",
            text(&out.stdout)
        );
    }
    assert!(!Path::new(model).exists());
    let left: Vec<_> = std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn help_explains_every_train_flag() {
    let out = Command::new(BIN).args(["train", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    for flag in [
        "--optimizer",
        "--epochs",
        "--batch-size",
        "--lr",
        "--hidden",
        "--seed",
        "--threads",
        "--out",
        "--save-every-epoch",
        "--resume",
        "--center",
        "--log",
        "--limit",
        "--lr-decay",
        "--lr-decay-every",
        "--validation",
        "--keep-best",
        "--data-dir",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

/// Each example command at the end of `train --help` runs as written (on the small data set,
/// with `--epochs 1`, which overrides the default's 10, and `--out` in a temporary directory).
#[test]
fn the_examples_in_train_help_run_as_written() {
    let d = TempDir::new("examples");
    dataset(&d.0);
    let out = Command::new(BIN).args(["train", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    let examples = help
        .split_once("\nExamples")
        .expect("no examples in train --help")
        .1;
    // Commands, their continuation lines (after a trailing `\`) joined.
    let mut commands = Vec::new();
    let mut lines = examples.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(mut command) = line.strip_prefix("ienk-cli ").map(str::to_owned) {
            while command.ends_with('\\') {
                command.pop();
                command.push_str(lines.next().unwrap_or_default());
            }
            commands.push(command);
        }
    }
    assert_eq!(commands.len(), 4, "{examples}");
    let model = d.0.join("example.safetensors");
    for command in &commands {
        let args: Vec<&str> = command.split_whitespace().collect();
        let args = [&args[..], &["--epochs", "1", "--out", model.to_str().unwrap()]].concat();
        let out = cli(&d.0, &args);
        assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        assert!(model.exists(), "{command} wrote no model");
        std::fs::remove_file(&model).unwrap();
    }
}

#[test]
fn compare_writes_the_table_the_csv_and_the_plot() {
    let d = TempDir::new("compare");
    dataset(&d.0);
    let out_dir = d.0.join("cmp");
    let o = out_dir.to_str().unwrap();
    let out = cli(
        &d.0,
        &[
            "compare",
            "--epochs",
            "2",
            "--runs",
            "sgd,adam,ienk-thesis,ienk-thesis-clip",
            "--out-dir",
            o,
            "--threads",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("| SGD | batch 500, lr 0.001 | 0.8922 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| Adam | batch 500, lr 0.001 | 0.9699 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "| IEnK (thesis scheme, clip 2) | 10 particles, batch 1, lr 0.001, thesis form, c_k clipped to 2 | 0.8860 |"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("the thesis's figures match rates about ten times larger"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out_dir.join("compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4 * 2, "{csv}");
    // Each row's best epoch: the CSV's highest test accuracy of that run, first epoch reaching it.
    for (slug, label) in [
        ("sgd", "SGD"),
        ("adam", "Adam"),
        ("ienk-thesis", "IEnK (thesis scheme)"),
    ] {
        let mut best = (0, f64::NEG_INFINITY);
        for line in csv.lines().filter(|l| l.starts_with(&format!("{slug},"))) {
            let fields: Vec<&str> = line.split(',').collect();
            let (epoch, accuracy): (usize, f64) = (fields[1].parse().unwrap(), fields[5].parse().unwrap());
            if accuracy > best.1 {
                best = (epoch, accuracy);
            }
        }
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label}: {stdout}"));
        let cell = format!("| {:.4} (epoch {}) |", best.1, best.0);
        assert!(row.contains(&cell), "{row} lacks {cell}");
    }
    let svg = std::fs::read_to_string(out_dir.join("accuracy.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<polyline").count() == 4,
        "{svg}"
    );
    assert!(out_dir.join("adam.safetensors").exists() && out_dir.join("sgd.csv").exists());
    assert!(out_dir.join("ienk-thesis-clip.safetensors").exists());
}

#[test]
fn compare_notes_the_gradient_baselines_rate_only_when_they_ran() {
    let d = TempDir::new("compare-note");
    dataset(&d.0);
    let out_dir = d.0.join("cmp");
    let args = [
        "compare",
        "--epochs",
        "1",
        "--runs",
        "adam",
        "--threads",
        "1",
        "--out-dir",
    ];
    let out = cli(&d.0, &[&args[..], &[out_dir.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("| Adam | batch 500, lr 0.001 | 0.9699 |"),
        "{stdout}"
    );
    assert!(!stdout.contains("about ten times larger"), "{stdout}");
}

#[test]
fn lr_decay_steps_the_rate_down_at_the_stated_epochs() {
    let d = TempDir::new("decay");
    dataset(&d.0);
    let model = |name: &str| d.0.join(name).to_str().unwrap().to_string();
    let (a, b, c) = (
        model("a.safetensors"),
        model("b.safetensors"),
        model("c.safetensors"),
    );
    let base = [
        "train",
        "--optimizer",
        "sgd",
        "--epochs",
        "5",
        "--lr",
        "0.1",
        "--batch-size",
        "8",
    ];
    let run = |extra: &[&str], out: &str| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out]);
        let o = cli(&d.0, &args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let decayed = run(&["--lr-decay", "0.5", "--lr-decay-every", "2"], &a);
    assert!(
        decayed.contains("--- epoch 3: learning rate now 0.05"),
        "{decayed}"
    );
    assert!(
        decayed.contains("--- epoch 5: learning rate now 0.025"),
        "{decayed}"
    );
    assert!(!decayed.contains("epoch 2: learning rate"), "{decayed}");
    // A factor of 1 is no decay (the same parameters; the files' records of the settings
    // differ); a factor below 1 changes the model.
    run(&["--lr-decay", "1"], &b);
    run(&[], &c);
    let params = |p: &str| {
        let bytes = std::fs::read(p).unwrap();
        let model = ienk::safetensors::read(&bytes, 784, 10).unwrap();
        let mut theta = vec![0f32; model.layout.num_params()];
        model.copy_params(&mut theta).unwrap();
        theta.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
    };
    assert_eq!(params(&b), params(&c));
    assert_ne!(params(&a), params(&c));
    // Bad values and a period without a factor are refused with exit 2.
    for bad in [
        &["--lr-decay", "1.5"][..],
        &["--lr-decay", "0"],
        &["--lr-decay-every", "2"],
    ] {
        let mut args = base.to_vec();
        args.extend_from_slice(bad);
        let o = cli(&d.0, &args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(
            text(&o.stderr).contains("--lr-decay"),
            "{bad:?}: {}",
            text(&o.stderr)
        );
    }
}

#[test]
fn ensemble_optimizers_train_end_to_end() {
    let d = TempDir::new("ensemble");
    dataset(&d.0);
    let m = d.0.join("e.safetensors");
    let m = m.to_str().unwrap();
    for args in [
        &[
            "--optimizer",
            "ienk",
            "--form",
            "thesis",
            "--particles",
            "4",
            "--batch-size",
            "1",
        ][..],
        &[
            "--optimizer",
            "ienk",
            "--particles",
            "6",
            "--rank",
            "2",
            "--antithetic",
            "--batch-size",
            "8",
            "--lr",
            "0.05",
        ],
        &[
            "--optimizer",
            "ienk",
            "--particles",
            "5",
            "--store-perturbations",
            "--threads",
            "2",
        ],
        &[
            "--optimizer",
            "eki",
            "--particles",
            "6",
            "--randomize-every",
            "2",
            "--inflation",
            "0.01",
            "--lr",
            "0.5",
        ],
    ] {
        let mut all = vec!["train", "--epochs", "2", "--out", m];
        all.extend_from_slice(args);
        let out = cli(&d.0, &all);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("--- epoch 2/2"), "{args:?}");
        assert!(cli(&d.0, &["eval", "--model", m]).status.success());
    }
}

#[test]
fn an_exploding_ensemble_stops_with_exit_1_and_no_model() {
    let d = TempDir::new("explode");
    dataset(&d.0);
    let m = d.0.join("x.safetensors");
    let out = cli(
        &d.0,
        &[
            "train",
            "--optimizer",
            "ienk",
            "--particles",
            "8",
            "--lr",
            "1e6",
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--out",
            m.to_str().unwrap(),
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged in epoch 1/3"), "{err}");
    assert!(err.contains("no model was written"), "{err}");
    assert!(!m.exists());
}

#[test]
fn a_run_that_diverges_after_a_checkpoint_says_which_epoch_the_file_keeps() {
    let d = TempDir::new("explode-late");
    dataset(&d.0);
    let m = d.0.join("x.safetensors");
    let m_str = m.to_str().unwrap();
    // EKI with a large h0 on this set blows up after a few epochs of one step each.
    let out = cli(
        &d.0,
        &[
            "train",
            "--optimizer",
            "eki",
            "--particles",
            "20",
            "--batch-size",
            "40",
            "--lr",
            "300",
            "--epochs",
            "60",
            "--save-every-epoch",
            "--out",
            m_str,
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let kept = err
        .split(&format!("{m_str} keeps the model of epoch "))
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no checkpoint named: {err}"));
    let diverged: u32 = kept.parse::<u32>().unwrap() + 1;
    assert!(
        err.contains(&format!("training diverged in epoch {diverged}/60")),
        "{err}"
    );
    let bytes = std::fs::read(&m).unwrap();
    let model = ienk::safetensors::read(&bytes, 784, 10).unwrap();
    assert_eq!(model.metadata("epochs"), Some(kept));
    assert!(cli(&d.0, &["eval", "--model", m_str]).status.success());
}

#[test]
fn kernel_flag_forces_a_path_or_explains_why_not() {
    let d = TempDir::new("kernel");
    dataset(&d.0);
    let out = cli(&d.0, &["info", "--kernel", "portable"]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("matrix kernel: portable"),
        "{}",
        text(&out.stdout)
    );
    #[cfg(target_arch = "x86_64")]
    let has_avx512 = std::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let has_avx512 = false;
    let out = cli(&d.0, &["info", "--kernel", "avx512"]);
    if has_avx512 {
        assert!(text(&out.stdout).contains("matrix kernel: avx512"));
    } else {
        assert_bad_input(&out, "--kernel avx512: this CPU lacks its instructions");
    }
}

/// Trains `train ARGS` in `dir` on 1, 2 and 3 threads and asserts that the three model files
/// are the same bytes (`what` names the setting in the failure).
fn assert_same_model_on_any_thread_count(dir: &Path, args: &[&str], what: &str) {
    let mut models = Vec::new();
    for threads in ["1", "2", "3"] {
        let m = dir.join(format!("t{threads}.safetensors"));
        let mut all = vec!["train", "--threads", threads, "--out", m.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = cli(dir, &all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        models.push(std::fs::read(&m).unwrap());
    }
    assert!(
        models.windows(2).all(|w| w[0] == w[1]),
        "{what}: models differ across thread counts"
    );
}

/// With batches too small to split (under 64 rows a thread) only the update is spread over the
/// threads, in parameter ranges: the model must not change.
#[test]
fn gradient_updates_split_over_threads_give_the_same_model() {
    let d = TempDir::new("update-threads");
    dataset(&d.0);
    for optimizer in ["sgd", "nag", "adam"] {
        let args = [
            "--optimizer",
            optimizer,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
        ];
        assert_same_model_on_any_thread_count(&d.0, &args, optimizer);
    }
}

#[test]
fn ienk_models_do_not_depend_on_the_thread_count() {
    let d = TempDir::new("ienk-threads");
    dataset(&d.0);
    for rank in ["0", "2"] {
        let args = [
            "--optimizer",
            "ienk",
            "--particles",
            "7",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--rank",
            rank,
        ];
        assert_same_model_on_any_thread_count(&d.0, &args, &format!("--rank {rank}"));
    }
}

#[test]
fn sizes_and_rates_out_of_range_are_refused_with_the_flag_named() {
    let d = TempDir::new("ranges");
    dataset(&d.0);
    let m = d.0.join("m.safetensors");
    let out_path = m.to_str().unwrap();
    for (optimizer, bad, flag) in [
        ("adam", &["--hidden", "1048577"][..], "--hidden"),
        ("adam", &["--threads", "1025"], "--threads"),
        ("ienk", &["--particles", "16777217"], "--particles"),
        ("ienk", &["--rank", "785"], "--rank"),
        ("ienk", &["--momentum", "1"], "--momentum"),
        ("ienk", &["--momentum=-0.5"], "--momentum"),
        ("ienk", &["--momentum", "NaN"], "--momentum"),
        ("eki", &["--inflation=-0.1"], "--inflation"),
        ("eki", &["--inflation", "inf"], "--inflation"),
    ] {
        let mut args = vec![
            "train",
            "--optimizer",
            optimizer,
            "--epochs",
            "1",
            "--out",
            out_path,
        ];
        args.extend_from_slice(bad);
        let o = cli(&d.0, &args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(flag), "{bad:?}: {err}");
    }
    assert!(
        cli(&d.0, &["eval", "--model", out_path, "--threads", "1025"])
            .status
            .code()
            == Some(2)
    );
    // The bounds themselves are accepted.
    let o = cli(
        &d.0,
        &[
            "train",
            "--optimizer",
            "ienk",
            "--epochs",
            "1",
            "--rank",
            "784",
            "--out",
            out_path,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(m.exists());
}

#[test]
fn a_run_too_large_for_memory_stops_before_any_work_with_the_buffer_named() {
    let d = TempDir::new("too-large");
    dataset(&d.0);
    let m = d.0.join("m.safetensors");
    let log = d.0.join("m.csv");
    // 16.7 M members of 52 M parameters: 3.5 PB, past any address space.
    let out = cli(
        &d.0,
        &[
            "train",
            "--optimizer",
            "eki",
            "--particles",
            "16777216",
            "--hidden",
            "65536",
            "--out",
            m.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot allocate the ensemble (3.5 PB)"), "{err}");
    assert!(err.contains("--particles"), "{err}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    assert!(!m.exists() && !log.exists());
}

#[test]
fn save_every_epoch_leaves_a_stopped_run_its_last_finished_epoch() {
    let d = TempDir::new("checkpoint");
    dataset(&d.0);
    let (stopped, reference) = (d.0.join("stopped.safetensors"), d.0.join("reference.safetensors"));
    let flags = [
        "train",
        "--optimizer",
        "ienk",
        "--particles",
        "50",
        "--batch-size",
        "1",
        "--threads",
        "1",
        "--progress",
        "1",
    ];
    // A run of 50 epochs (a second or two), killed once its first checkpoint is on disk; if it
    // got further, or even finished, the file must still be a complete epoch's model.
    let mut child = Command::new(BIN)
        .args(flags)
        .args(["--epochs", "50", "--save-every-epoch", "--out"])
        .arg(&stopped)
        .arg("--data-dir")
        .arg(&d.0)
        .env_remove("IENK_DATA")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.starts_with("--- saved")))
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.contains(" (epoch 1/50, test accuracy "), "{first}");
    // The checkpoint (epoch 1, or a later one written before the kill landed) is the model of an
    // uninterrupted run of that many epochs, byte for byte.
    let bytes = std::fs::read(&stopped).unwrap();
    let epochs = ienk::safetensors::read(&bytes, 784, 10)
        .unwrap()
        .metadata("epochs")
        .unwrap()
        .to_string();
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--epochs", &epochs, "--out", reference.to_str().unwrap()]);
    let out = cli(&d.0, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        bytes == std::fs::read(&reference).unwrap(),
        "checkpoint of epoch {epochs} differs"
    );
    assert!(
        !text(&out.stdout).contains("--- saved"),
        "checkpoints without the flag"
    );

    // Resumed for two more epochs, the stopped run ends where an uninterrupted run does.
    let more = (epochs.parse::<u32>().unwrap() + 2).to_string();
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--epochs", &more, "--resume", "--out", stopped.to_str().unwrap()]);
    let out = cli(&d.0, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!(
            "resuming {} after epoch {epochs}/{more}",
            stopped.display()
        )),
        "{}",
        text(&out.stdout)
    );
    let mut args = flags.to_vec();
    args.extend_from_slice(&["--epochs", &more, "--out", reference.to_str().unwrap()]);
    assert!(cli(&d.0, &args).status.success());
    assert!(
        std::fs::read(&stopped).unwrap() == std::fs::read(&reference).unwrap(),
        "the resumed run differs from the uninterrupted one"
    );
}

/// `train` flags of a short SGD run with a step decay, on one thread (bit-reproducible).
const SGD_DECAY: [&str; 12] = [
    "train",
    "--optimizer",
    "sgd",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--lr-decay",
    "0.5",
    "--lr-decay-every",
    "1",
    "--lr=0.05",
];

#[test]
fn resume_continues_the_run_to_the_uninterrupted_model_and_log() {
    let d = TempDir::new("resume");
    dataset(&d.0);
    let (run, reference) = (d.0.join("run.safetensors"), d.0.join("reference.safetensors"));
    let (log, reference_log) = (d.0.join("run.csv"), d.0.join("reference.csv"));
    let train = |epochs: &str, out: &Path, log: &Path, resume: bool| {
        let mut args = SGD_DECAY.to_vec();
        args.extend_from_slice(&["--epochs", epochs, "--out", out.to_str().unwrap()]);
        args.extend_from_slice(&["--log", log.to_str().unwrap()]);
        if resume {
            args.push("--resume");
        }
        let o = cli(&d.0, &args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    train("2", &run, &log, false);
    let resumed = train("4", &run, &log, true);
    // The third epoch runs at the rate of the third epoch.
    assert!(
        resumed.contains("--- epoch 3: learning rate now 0.0125"),
        "{resumed}"
    );
    train("4", &reference, &reference_log, false);
    assert!(std::fs::read(&run).unwrap() == std::fs::read(&reference).unwrap());
    // One header, then the rows of epochs 0 to 3, as in the uninterrupted run's log (but for
    // the seconds, which restart with the resumed process).
    let rows = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut fields: Vec<&str> = l.split(',').collect();
                if fields.len() > 4 && fields[0] != "kind" {
                    fields[4] = "_";
                }
                fields.join(",")
            })
            .collect()
    };
    assert_eq!(rows(&log), rows(&reference_log));
    assert_eq!(rows(&log).iter().filter(|l| l.starts_with("kind,")).count(), 1);
}

#[test]
fn resume_refuses_what_cannot_continue_the_run_and_leaves_the_file() {
    let d = TempDir::new("resume_refusals");
    dataset(&d.0);
    let m = d.0.join("m.safetensors");
    let path = m.to_str().unwrap();
    let mut args = SGD_DECAY.to_vec();
    args.extend_from_slice(&["--epochs", "2", "--out", path]);
    assert!(cli(&d.0, &args).status.success());
    let before = std::fs::read(&m).unwrap();
    let refused = |extra: &[&str], needle: &str| {
        let mut args = SGD_DECAY.to_vec();
        args.extend_from_slice(&["--out", path, "--resume"]);
        args.extend_from_slice(extra);
        let o = cli(&d.0, &args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(needle), "{extra:?}: {}", text(&o.stderr));
        assert!(text(&o.stdout).is_empty(), "{extra:?}: {}", text(&o.stdout));
        assert!(std::fs::read(&m).unwrap() == before, "{extra:?} changed the file");
    };
    refused(&["--epochs", "2"], "has had 2 epochs already");
    refused(
        &["--epochs", "4", "--seed", "3", "--limit", "30"],
        "--seed 0 there, 3 here; --limit none there, 30 here",
    );
    refused(
        &["--epochs", "4", "--hidden", "16"],
        "--hidden 128 there, 16 here",
    );
    let log = d.0.join("notes.csv");
    std::fs::write(&log, "my notes\n").unwrap();
    refused(
        &["--epochs", "4", "--log", log.to_str().unwrap()],
        "not a metrics log of ienk-cli train",
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "my notes\n");

    // Optimizers whose state the file does not hold.
    for (optimizer, needle) in [
        ("nag", "nag keeps its velocity"),
        ("adam", "adam keeps its moment estimates"),
    ] {
        let args = ["train", "--optimizer", optimizer, "--epochs", "1", "--out", path];
        assert!(cli(&d.0, &args).status.success());
        let o = cli(&d.0, &[&args[..4], &["2", "--out", path, "--resume"]].concat());
        assert_eq!(o.status.code(), Some(2));
        assert!(text(&o.stderr).contains(needle), "{}", text(&o.stderr));
    }

    // A file without the record of its settings, and no file at all.
    let layout = ienk::mlp::Layout::mnist(128);
    let theta = vec![0f32; layout.num_params()];
    let metadata = [("epochs", "1"), ("test_accuracy", "0.5")];
    let mut bytes = vec![0u8; ienk::safetensors::serialized_len(&layout, &metadata)];
    ienk::safetensors::write(&layout, &theta, &metadata, &mut bytes).unwrap();
    std::fs::write(&m, &bytes).unwrap();
    let o = cli(
        &d.0,
        &[&SGD_DECAY[..], &["--epochs", "4", "--out", path, "--resume"]].concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("does not record its run's settings"),
        "{}",
        text(&o.stderr)
    );
    let gone = d.0.join("gone.safetensors");
    let o = cli(
        &d.0,
        &[
            &SGD_DECAY[..],
            &["--epochs", "4", "--out", gone.to_str().unwrap(), "--resume"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no such file"), "{}", text(&o.stderr));
    assert!(!gone.exists());
}

/// `train` flags of a short EKI(R) run: 40 examples in batches of 10, 4 steps an epoch.
const EKI_RUN: [&str; 11] = [
    "train",
    "--optimizer",
    "eki",
    "--particles",
    "6",
    "--batch-size",
    "10",
    "--lr",
    "2",
    "--threads",
    "2",
];

#[test]
fn eki_resumes_where_its_members_were_redrawn_and_refuses_elsewhere() {
    let d = TempDir::new("eki_resume");
    dataset(&d.0);
    let (run, reference) = (d.0.join("run.safetensors"), d.0.join("reference.safetensors"));
    let train = |out: &Path, extra: &[&str]| {
        let mut args = EKI_RUN.to_vec();
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        cli(&d.0, &args)
    };
    // Redrawn every 2 steps: the epoch's end (step 4) is a redraw, and 2 more epochs continue
    // the run as if it had not stopped, byte for byte.
    let every = ["--randomize-every", "2"];
    assert!(
        train(&run, &[&every[..], &["--epochs", "1"]].concat())
            .status
            .success()
    );
    let o = train(&run, &[&every[..], &["--epochs", "3", "--resume"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        train(&reference, &[&every[..], &["--epochs", "3"]].concat())
            .status
            .success()
    );
    assert!(
        std::fs::read(&run).unwrap() == std::fs::read(&reference).unwrap(),
        "the resumed EKI run differs from the uninterrupted one"
    );

    // Redrawn every 3 steps, or never: step 4 leaves state the file does not hold.
    for (r, needle) in [
        (
            "3",
            "redraws them every 3 steps (--randomize-every) and stopped after step 4",
        ),
        ("0", "never redraws them (--randomize-every 0)"),
    ] {
        let every = ["--randomize-every", r];
        assert!(
            train(&run, &[&every[..], &["--epochs", "1"]].concat())
                .status
                .success()
        );
        let before = std::fs::read(&run).unwrap();
        let o = train(&run, &[&every[..], &["--epochs", "2", "--resume"]].concat());
        assert_eq!(o.status.code(), Some(2), "{r}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(needle), "{r}: {}", text(&o.stderr));
        assert!(
            std::fs::read(&run).unwrap() == before,
            "{r}: the refusal changed the file"
        );
    }
}

#[test]
fn center_changes_the_update_and_is_announced() {
    let d = TempDir::new("center");
    dataset(&d.0);
    let (a, b) = (d.0.join("a.safetensors"), d.0.join("b.safetensors"));
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--optimizer",
            "ienk",
            "--form",
            "thesis",
            "--particles",
            "4",
            "--batch-size",
            "1",
            "--epochs",
            "1",
            "--out",
        ];
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        let o = cli(&d.0, &args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    assert!(!run(&a, &[]).contains("centred"));
    assert!(run(&b, &["--center"]).contains(", centred coefficients"));
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn flags_the_optimizer_would_ignore_are_refused_before_anything_runs() {
    let d = TempDir::new("ignored_flags");
    dataset(&d.0);
    let model = d.0.join("m.safetensors");
    let m = model.to_str().unwrap();
    for (flags, needle) in [
        (
            &["--optimizer", "sgd", "--particles", "100"][..],
            "--particles is read by the ensemble optimizers (ienk, eki) only, not by --optimizer sgd",
        ),
        (
            &[
                "--optimizer",
                "adam",
                "--clip",
                "2",
                "--inflation",
                "1",
                "--sigma-scale",
                "2",
            ],
            "--sigma-scale, --clip and --inflation are read by",
        ),
        (
            &["--optimizer", "eki", "--rank", "1", "--form", "thesis"],
            "--form and --rank are read by ienk only, not by --optimizer eki",
        ),
        (
            &["--optimizer", "ienk", "--randomize-every", "5"],
            "--randomize-every is read by eki only, not by --optimizer ienk",
        ),
        (
            &["--optimizer", "ienk", "--rank", "2", "--store-perturbations"],
            "--store-perturbations applies to full-rank members (--rank 0) only",
        ),
        (
            &["--optimizer", "ienk", "--low-memory"],
            "--low-memory applies to low-rank members (--rank above 0) only",
        ),
        (
            &["--optimizer", "ienk", "--rank", "1", "--low-memory", "--center"],
            "--low-memory cannot go with --center, which needs every member's coefficient",
        ),
        (
            &[
                "--optimizer",
                "ienk",
                "--rank",
                "1",
                "--low-memory",
                "--threads",
                "2",
            ],
            "--low-memory sums the direction on one thread: give --threads 1, not 2",
        ),
        (
            &["--optimizer", "ienk", "--update", "adam", "--normalize"],
            "--normalize works with --update plain only",
        ),
        (
            &["--optimizer", "ienk", "--update", "adam", "--momentum", "0"],
            "--momentum works with --update plain only",
        ),
        (
            &["--optimizer", "ienk", "--antithetic", "--particles", "7"],
            "--particles must be even, not 7",
        ),
        (
            &["--optimizer", "eki", "--particles", "1"],
            "eki moves the members along their spread around their mean: one member has no spread, so \
             the model would never move; give --particles 2 or more",
        ),
        (
            &["--optimizer", "ienk", "--center", "--particles", "1"],
            "--center keeps only each member's difference from the members' mean coefficient: one",
        ),
    ] {
        let args = [&["train", "--epochs", "1", "--out", m][..], flags].concat();
        assert_bad_input(&cli(&d.0, &args), needle);
        assert!(!model.exists(), "{flags:?} wrote a model");
    }
    // The same flags where they are read, and the default values typed out, run.
    for flags in [
        &["--optimizer", "eki", "--particles", "4", "--inflation", "0.1"][..],
        &[
            "--optimizer",
            "ienk",
            "--particles",
            "4",
            "--antithetic",
            "--rank",
            "1",
            "--clip",
            "2",
        ],
        &[
            "--optimizer",
            "ienk",
            "--update",
            "plain",
            "--momentum",
            "0.5",
            "--normalize",
        ],
        &["--optimizer", "sgd", "--lr", "0.01", "--batch-size", "8"],
    ] {
        let args = [&["train", "--epochs", "1", "--out", m][..], flags].concat();
        let out = cli(&d.0, &args);
        assert!(out.status.success(), "{flags:?}: {}", text(&out.stderr));
    }
}

/// `--validation` prints and logs the held-out examples' loss and accuracy after every epoch
/// and records the saved epoch's in the model; what it cannot do is refused with the flag named.
#[test]
fn validation_is_reported_logged_and_recorded_and_its_misuse_refused() {
    let d = TempDir::new("validation");
    dataset(&d.0);
    let m = d.0.join("m.safetensors");
    let log = d.0.join("m.csv");
    let (path, log_path) = (m.to_str().unwrap(), log.to_str().unwrap());
    let run = |extra: &[&str]| {
        let args = [
            "train",
            "--optimizer",
            "sgd",
            "--lr",
            "0.5",
            "--batch-size",
            "5",
            "--out",
            path,
        ];
        cli(&d.0, &[&args[..], extra].concat())
    };
    let out = run(&[
        "--epochs",
        "3",
        "--validation",
        "10",
        "--keep-best",
        "--log",
        log_path,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // 40 examples, 10 held out: the epochs train on 30.
    assert!(stdout.contains("with sgd on 30 examples"), "{stdout}");
    let epochs: Vec<&str> = stdout.lines().filter(|l| l.starts_with("--- epoch")).collect();
    assert_eq!(epochs.len(), 3, "{stdout}");
    assert!(epochs.iter().all(|l| l.contains(" | val loss ")), "{stdout}");
    assert!(
        stdout.contains("the best validation accuracy of 3 epochs"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(&log).unwrap();
    for line in csv.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 11, "{line}");
        let filled = !cells[9].is_empty() && !cells[10].is_empty();
        assert_eq!(filled, cells[0] == "epoch", "{line}");
    }
    let report = text(&cli(&d.0, &["eval", "--model", path]).stdout);
    assert!(report.contains("(validation accuracy "), "{report}");
    assert!(report.contains(" validation=10 keep-best=true"), "{report}");

    assert_bad_input(
        &run(&["--validation", "40"]),
        "--validation 40 holds out every training example (there are 40)",
    );
    assert_bad_input(&run(&["--limit", "20", "--validation", "25"]), "(there are 20)");
    assert_bad_input(&run(&["--keep-best"]), "--validation <N>");
    assert_bad_input(
        &run(&["--epochs", "4", "--validation", "10", "--keep-best", "--resume"]),
        "cannot be used with '--resume'",
    );
    let before = std::fs::read(&m).unwrap();
    assert_bad_input(
        &run(&["--epochs", "4", "--validation", "10", "--resume"]),
        "the run kept its best epoch (--keep-best), which may not be its last",
    );
    assert!(std::fs::read(&m).unwrap() == before);

    // A log of an older ienk-cli, without the validation columns, is not appended to.
    assert!(run(&["--epochs", "1"]).status.success());
    let old = "kind,epoch,step,examples,seconds,loss,accuracy,test_loss,test_accuracy\n";
    std::fs::write(&log, old).unwrap();
    assert_bad_input(
        &run(&["--epochs", "2", "--resume", "--log", log_path]),
        "a metrics log of an older ienk-cli train, without the val_loss and val_accuracy columns",
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), old);
}

/// `--low-memory` sums the low-rank direction draw by draw on one thread: announced, recorded in
/// the model (so that a resume must say it too), and a model that scores as the default's,
/// from which it differs in the last bits of the sums at most.
#[test]
fn low_memory_trains_the_low_rank_run_one_draw_at_a_time_and_is_recorded() {
    let d = TempDir::new("low_memory");
    dataset(&d.0);
    let (a, b) = (d.0.join("a.safetensors"), d.0.join("b.safetensors"));
    // The low-rank run, with or without --low-memory.
    const TRAIN: [&str; 12] = [
        "train",
        "--optimizer",
        "ienk",
        "--rank",
        "2",
        "--antithetic",
        "--particles",
        "40",
        "--batch-size",
        "4",
        "--lr",
        "0.05",
    ];
    let run = |out: &Path, extra: &[&str]| {
        let args = [&TRAIN[..], &["--out", out.to_str().unwrap()], extra].concat();
        let o = cli(&d.0, &args);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        text(&o.stdout)
    };
    let default = run(&a, &["--epochs", "2"]);
    assert!(
        default.contains("2 threads") || default.contains("1 thread"),
        "{default}"
    );
    assert!(!default.contains("low memory"), "{default}");
    let low = run(&b, &["--epochs", "1", "--low-memory", "--save-every-epoch"]);
    assert!(low.contains(", 1 thread;"), "{low}");
    assert!(
        low.contains(", low memory (the direction summed draw by draw)"),
        "{low}"
    );
    let eval = |model: &Path| {
        let o = cli(&d.0, &["eval", "--model", model.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    assert!(eval(&b).contains("low-memory=true"), "{}", eval(&b));
    assert!(!eval(&a).contains("low-memory"), "{}", eval(&a));
    // Resumed without the flag, the run is refused and the file kept; with it, it continues.
    let before = std::fs::read(&b).unwrap();
    let o = cli(
        &d.0,
        &[
            &TRAIN[..],
            &["--epochs", "2", "--out", b.to_str().unwrap(), "--resume"],
        ]
        .concat(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("--low-memory true there, (not recorded) here"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(std::fs::read(&b).unwrap(), before);
    run(&b, &["--epochs", "2", "--low-memory", "--resume"]);
    // The same test accuracy and loss as the default's after two epochs, to the printed digits.
    let scores = |report: String| {
        report
            .lines()
            .filter(|l| l.starts_with("test accuracy") || l.starts_with("test loss"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(scores(eval(&a)), scores(eval(&b)));
    assert_eq!(scores(eval(&a)).len(), 2, "{}", eval(&a));
}
