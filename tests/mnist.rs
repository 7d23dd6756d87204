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

/// A streaming reader's view (the header and each record's offset, as `core/firmware` reads the
/// files) finds the records the whole-file parser finds.
#[test]
fn streamed_headers_find_the_records_of_the_real_files() {
    use ienk::idx::{Header, IdxKind};
    use ienk_cli::data::read_maybe_gz;
    let Some(dir) = common::mnist_dir("streamed_headers_find_the_records_of_the_real_files") else {
        return;
    };
    let mnist = Mnist::load(&dir).expect("IENK_DATA holds MNIST");
    for (files, count) in [(&mnist.train, 60000), (&mnist.test, 10000)] {
        let split = files.view().unwrap();
        let images = read_maybe_gz(&files.images_path).unwrap();
        let labels = read_maybe_gz(&files.labels_path).unwrap();
        let image_header = Header::parse(IdxKind::Images, &images[..16], images.len()).unwrap();
        let label_header = Header::parse(IdxKind::Labels, &labels[..8], labels.len()).unwrap();
        assert_eq!((image_header.count(), label_header.count()), (count, count));
        for i in [0, 1, 4999, count - 1] {
            let at = image_header.record_offset(i).unwrap() as usize;
            assert_eq!(&images[at..at + 784], split.image(i).unwrap(), "image {i}");
            let at = label_header.record_offset(i).unwrap() as usize;
            assert_eq!(Some(labels[at]), split.label(i), "label {i}");
        }
        assert_eq!(image_header.record_offset(count), None);
        let short = Header::parse(IdxKind::Images, &images[..16], images.len() - 1);
        assert!(short.is_err(), "a file one byte short is refused");
    }
}
