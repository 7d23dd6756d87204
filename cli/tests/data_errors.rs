//! End-to-end: `ienk-cli info` on synthetic IDX files, one malformation at a time. Each must exit
//! with status 2 and one line naming the file and its own problem, never a panic.

use std::io::Write;
use std::path::Path;
use std::process::Command;

mod common;

use common::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_ienk-cli");

fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut h = magic.to_be_bytes().to_vec();
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn images(count: u32) -> Vec<u8> {
    let mut v = header(0x803, &[count, 28, 28]);
    v.extend((0..count as usize * 784).map(|i| (i % 251) as u8));
    v
}

fn labels(count: u32) -> Vec<u8> {
    let mut v = header(0x801, &[count]);
    v.extend((0..count).map(|i| (i % 10) as u8));
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes a valid 3-train / 2-test data set, with `train_images` replacing the train images file
/// (named `name`).
fn dataset(dir: &Path, name: &str, train_images: &[u8]) {
    std::fs::write(dir.join(name), train_images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels(3)).unwrap();
    std::fs::write(dir.join("t10k-images.idx3-ubyte.gz"), gz(&images(2))).unwrap();
    std::fs::write(dir.join("t10k-labels.idx1-ubyte"), labels(2)).unwrap();
}

fn info(dir: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("info")
        .arg("--data-dir")
        .arg(dir)
        .env_remove("IENK_DATA")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_rejected(tag: &str, train_images: Vec<u8>, expected: &str) {
    assert_rejected_named(tag, "train-images-idx3-ubyte", train_images, expected);
}

fn assert_rejected_named(tag: &str, name: &str, train_images: Vec<u8>, expected: &str) {
    let dir = TempDir::new(tag);
    dataset(&dir.0, name, &train_images);
    let (code, _, err) = info(&dir.0);
    assert_eq!(code, 2, "{tag}: stderr {err}");
    assert_eq!(err.lines().count(), 1, "{tag}: one line expected: {err}");
    assert!(!err.contains("panicked"), "{tag}: {err}");
    assert!(err.contains(name), "{tag}: names the file: {err}");
    assert!(err.contains(expected), "{tag}: expected {expected:?} in {err}");
}

#[test]
fn valid_synthetic_set_is_summarised() {
    let dir = TempDir::new("valid");
    dataset(&dir.0, "train-images-idx3-ubyte.gz", &gz(&images(3)));
    let (code, out, err) = info(&dir.0);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("train: 3 examples of 28x28 pixels"), "{out}");
    assert!(out.contains("class counts: 0:1 1:1 2:1 3:0"), "{out}");
    assert!(out.contains("test: 2 examples"), "{out}");
}

#[test]
fn empty_file() {
    assert_rejected("empty", vec![], "the file is empty");
}

#[test]
fn short_header() {
    assert_rejected(
        "short",
        vec![0, 0, 8, 3, 0, 0],
        "expected a 16-byte IDX header for images, found only 6 bytes",
    );
}

#[test]
fn wrong_magic() {
    assert_rejected(
        "magic",
        header(0x0d03, &[3, 28, 28]),
        "expected magic number 0x00000803",
    );
}

#[test]
fn wrong_dimension_count() {
    assert_rejected(
        "dims",
        header(0x0802, &[3, 784]),
        "expected 3 dimension(s) for IDX images, found 2",
    );
}

#[test]
fn wrong_image_size() {
    assert_rejected(
        "size",
        header(0x0803, &[3, 32, 32]),
        "expected 28x28 images, found 32x32",
    );
}

#[test]
fn truncated_data() {
    let mut v = images(3);
    v.truncate(1000);
    assert_rejected(
        "trunc",
        v,
        "truncated: expected 2368 bytes for 3x28x28 images, found 1000",
    );
}

#[test]
fn trailing_bytes() {
    let mut v = images(3);
    v.push(0);
    assert_rejected(
        "trailing",
        v,
        "trailing bytes: expected 2368 bytes for 3x28x28 images, found 2369",
    );
}

#[test]
fn label_out_of_range() {
    let dir = TempDir::new("label10");
    dataset(&dir.0, "train-images-idx3-ubyte", &images(3));
    let mut bad = labels(3);
    bad[9] = 10;
    std::fs::write(dir.0.join("train-labels-idx1-ubyte"), bad).unwrap();
    let (code, _, err) = info(&dir.0);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("train-labels-idx1-ubyte: label 1 is 10, expected a digit 0..=9"),
        "{err}"
    );
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = TempDir::new("count");
    dataset(&dir.0, "train-images-idx3-ubyte", &images(4));
    let (code, _, err) = info(&dir.0);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train-images-idx3-ubyte and"), "{err}");
    assert!(
        err.contains("train-labels-idx1-ubyte: the split holds 4 images but 3 labels"),
        "{err}"
    );
}

#[test]
fn corrupt_gzip() {
    let mut z = gz(&images(3));
    let mid = z.len() / 2;
    z[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
    assert_rejected_named("gzip", "train-images-idx3-ubyte.gz", z, "corrupt gzip data");
}

#[test]
fn missing_files_list_what_was_looked_for_and_how_to_get_mnist() {
    let dir = TempDir::new("missing");
    let (code, _, err) = info(&dir.0);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(err.contains("train-images.idx3-ubyte"), "{err}");
    assert!(err.contains("scripts/fetch-mnist.sh"), "{err}");
}

#[test]
fn data_dir_comes_from_ienk_data_when_no_flag() {
    let dir = TempDir::new("envvar");
    dataset(&dir.0, "train-images-idx3-ubyte", &images(3));
    let out = Command::new(BIN)
        .arg("info")
        .env("IENK_DATA", &dir.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&*dir.0.to_string_lossy()));
}
