//! The real MNIST, read through the CLI's loader and parsed by the core. Needs `IENK_DATA`
//! (CI sets it); without it each test prints that it was skipped.

mod common;

use ienk_cli::data::Mnist;

#[test]
fn real_mnist_has_the_published_counts_and_first_labels() {
    let Some(dir) = common::mnist_dir("real_mnist_has_the_published_counts_and_first_labels") else {
        return;
    };
    let mnist = Mnist::load(&dir).expect("IENK_DATA holds MNIST");
    let train = mnist.train.view().unwrap();
    let test = mnist.test.view().unwrap();
    assert_eq!(train.len(), 60000);
    assert_eq!(test.len(), 10000);
    assert_eq!(
        train.class_counts(),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.class_counts(),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    assert_eq!(&train.labels()[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&test.labels()[..5], &[7, 2, 1, 0, 4]);
    // Published MNIST statistics: mean 0.1307 (train) of the [0, 1] scale.
    assert!((train.mean_pixel() / 255.0 - 0.1307).abs() < 5e-4);
}
