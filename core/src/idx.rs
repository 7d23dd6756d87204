//! Zero-copy parser of the IDX files that hold MNIST.
//!
//! IDX layout: a big-endian u32 magic `0x0000_08DD` (`08` = unsigned bytes, `DD` = number of
//! dimensions), one big-endian u32 per dimension, then the data row-major. Images are
//! `0x0000_0803` with dimensions `count x 28 x 28`, labels `0x0000_0801` with dimension `count`.
//!
//! Every function here is O(1) apart from the label range check, which is O(count); nothing is
//! copied and no input can make it panic.

use core::fmt;

/// Side of an MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one MNIST image (28 x 28).
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (digits 0 to 9).
pub const NUM_CLASSES: usize = 10;
/// Magic number of an IDX file of u8 images (type 0x08, 3 dimensions).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (type 0x08, 1 dimension).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// What kind of IDX file is being parsed; used in error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxKind {
    /// A file of 28x28 u8 images.
    Images,
    /// A file of u8 labels.
    Labels,
}

impl IdxKind {
    fn magic(self) -> u32 {
        match self {
            IdxKind::Images => IMAGES_MAGIC,
            IdxKind::Labels => LABELS_MAGIC,
        }
    }

    const fn dims(self) -> usize {
        match self {
            IdxKind::Images => 3,
            IdxKind::Labels => 1,
        }
    }

    /// Bytes of this kind's header: 16 for images (magic and three sizes), 8 for labels.
    pub const fn header_len(self) -> usize {
        4 + 4 * self.dims()
    }

    /// Bytes of one record: 784 for an image, 1 for a label.
    pub const fn record_len(self) -> usize {
        match self {
            IdxKind::Images => IMAGE_PIXELS,
            IdxKind::Labels => 1,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            IdxKind::Images => "images",
            IdxKind::Labels => "labels",
        }
    }
}

/// Why an IDX file (or a pair of them) was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdxError {
    /// The file holds no byte at all.
    Empty,
    /// The file ends inside its header.
    ShortHeader {
        /// Which file kind was expected.
        kind: IdxKind,
        /// Bytes the header needs.
        expected: usize,
        /// Bytes the file has.
        found: usize,
    },
    /// The magic number is not the one of the expected file kind.
    WrongMagic {
        /// Which file kind was expected.
        kind: IdxKind,
        /// The magic number found.
        found: u32,
    },
    /// The magic announces u8 data but another number of dimensions.
    WrongDimensionCount {
        /// Which file kind was expected.
        kind: IdxKind,
        /// Number of dimensions found in the magic.
        found: u8,
    },
    /// An image file whose images are not 28x28.
    WrongImageSize {
        /// Rows per image found.
        rows: u32,
        /// Columns per image found.
        cols: u32,
    },
    /// The data is shorter than the header announces.
    Truncated {
        /// Which file kind was parsed.
        kind: IdxKind,
        /// Number of records the header announces.
        count: u32,
        /// Total file length the header implies.
        expected: u64,
        /// Actual file length.
        found: usize,
    },
    /// Bytes follow the data the header announces.
    TrailingBytes {
        /// Which file kind was parsed.
        kind: IdxKind,
        /// Number of records the header announces.
        count: u32,
        /// Total file length the header implies.
        expected: u64,
        /// Actual file length.
        found: usize,
    },
    /// A label outside 0..=9.
    LabelOutOfRange {
        /// Position of the label in the file.
        index: usize,
        /// The label found.
        value: u8,
    },
    /// The image and label files of a split hold different counts.
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IdxError::Empty => write!(f, "the file is empty"),
            IdxError::ShortHeader {
                kind,
                expected,
                found,
            } => write!(
                f,
                "expected a {expected}-byte IDX header for {}, found only {found} bytes",
                kind.noun()
            ),
            IdxError::WrongMagic { kind, found } => write!(
                f,
                "expected magic number 0x{:08x} (IDX u8 {}), found 0x{found:08x}",
                kind.magic(),
                kind.noun()
            ),
            IdxError::WrongDimensionCount { kind, found } => write!(
                f,
                "expected {} dimension(s) for IDX {}, found {found}",
                kind.dims(),
                kind.noun()
            ),
            IdxError::WrongImageSize { rows, cols } => write!(
                f,
                "expected {IMAGE_SIDE}x{IMAGE_SIDE} images, found {rows}x{cols}"
            ),
            IdxError::Truncated {
                kind,
                count,
                expected,
                found,
            } => write!(
                f,
                "truncated: expected {expected} bytes for {} {}, found {found}",
                record_shape(kind, count),
                kind.noun()
            ),
            IdxError::TrailingBytes {
                kind,
                count,
                expected,
                found,
            } => write!(
                f,
                "trailing bytes: expected {expected} bytes for {} {}, found {found}",
                record_shape(kind, count),
                kind.noun()
            ),
            IdxError::LabelOutOfRange { index, value } => {
                write!(f, "label {index} is {value}, expected a digit 0..=9")
            }
            IdxError::CountMismatch { images, labels } => {
                write!(f, "the split holds {images} images but {labels} labels")
            }
        }
    }
}

impl core::error::Error for IdxError {}

/// `60000x28x28` or `60000`, for messages.
fn record_shape(kind: IdxKind, count: u32) -> RecordShape {
    RecordShape { kind, count }
}

struct RecordShape {
    kind: IdxKind,
    count: u32,
}

impl fmt::Display for RecordShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            IdxKind::Images => write!(f, "{}x{IMAGE_SIDE}x{IMAGE_SIDE}", self.count),
            IdxKind::Labels => write!(f, "{}", self.count),
        }
    }
}

/// Reads the big-endian u32 at `at`; the caller has checked the length.
fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

/// Checks the magic and header length; returns the dimensions.
fn parse_header(bytes: &[u8], kind: IdxKind) -> Result<[u32; 3], IdxError> {
    if bytes.is_empty() {
        return Err(IdxError::Empty);
    }
    if bytes.len() < 4 {
        return Err(IdxError::ShortHeader {
            kind,
            expected: kind.header_len(),
            found: bytes.len(),
        });
    }
    let magic = be_u32(bytes, 0);
    if magic >> 8 != kind.magic() >> 8 {
        return Err(IdxError::WrongMagic { kind, found: magic });
    }
    let dims = (magic & 0xff) as u8;
    if usize::from(dims) != kind.dims() {
        return Err(IdxError::WrongDimensionCount { kind, found: dims });
    }
    if bytes.len() < kind.header_len() {
        return Err(IdxError::ShortHeader {
            kind,
            expected: kind.header_len(),
            found: bytes.len(),
        });
    }
    let mut out = [0u32; 3];
    for (d, slot) in out.iter_mut().take(kind.dims()).enumerate() {
        *slot = be_u32(bytes, 4 + 4 * d);
    }
    Ok(out)
}

/// Returns the data after the header, checking its exact length.
fn checked_body(bytes: &[u8], kind: IdxKind, count: u32) -> Result<&[u8], IdxError> {
    check_file_len(kind, count, bytes.len())?;
    Ok(&bytes[kind.header_len()..])
}

/// Checks that a file of `found` bytes holds exactly the header and `count` records of `kind`.
fn check_file_len(kind: IdxKind, count: u32, found: usize) -> Result<(), IdxError> {
    let expected = kind.header_len() as u64 + u64::from(count) * kind.record_len() as u64;
    if (found as u64) < expected {
        return Err(IdxError::Truncated {
            kind,
            count,
            expected,
            found,
        });
    }
    if found as u64 > expected {
        return Err(IdxError::TrailingBytes {
            kind,
            count,
            expected,
            found,
        });
    }
    Ok(())
}

/// Checks the header of an image file and returns its image count.
fn image_count(bytes: &[u8]) -> Result<u32, IdxError> {
    let [count, rows, cols] = parse_header(bytes, IdxKind::Images)?;
    if rows as usize != IMAGE_SIDE || cols as usize != IMAGE_SIDE {
        return Err(IdxError::WrongImageSize { rows, cols });
    }
    Ok(count)
}

/// The header of an IDX file that is read a record at a time from storage (firmware streaming
/// examples from flash, or from a host file through semihosting) instead of held whole: the
/// record count, checked against the file's length, and where each record starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    kind: IdxKind,
    count: u32,
}

impl Header {
    /// Parses the start of a `kind` file of `file_len` bytes: `first` holds at least its
    /// [`IdxKind::header_len`] first bytes. Checks what [`Images::parse`] and [`Labels::parse`]
    /// check before the records (the magic, the dimensions, 28x28 images, a file of exactly the
    /// announced records), with the same errors; the labels' values are the reader's to check
    /// ([`Header::label`]). O(1).
    pub fn parse(kind: IdxKind, first: &[u8], file_len: usize) -> Result<Header, IdxError> {
        if file_len == 0 {
            return Err(IdxError::Empty);
        }
        let first = &first[..first.len().min(file_len)];
        let count = match kind {
            IdxKind::Images => image_count(first)?,
            IdxKind::Labels => parse_header(first, kind)?[0],
        };
        check_file_len(kind, count, file_len)?;
        Ok(Header { kind, count })
    }

    /// Records in the file.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Byte offset of record `i` in the file ([`IdxKind::record_len`] bytes long), or `None`
    /// past the last record. O(1).
    pub fn record_offset(&self, i: usize) -> Option<u64> {
        (i < self.count()).then(|| self.kind.header_len() as u64 + i as u64 * self.kind.record_len() as u64)
    }

    /// Checks label record `index` read from a label file: its `value` is a digit.
    pub fn label(index: usize, value: u8) -> Result<u8, IdxError> {
        if usize::from(value) < NUM_CLASSES {
            Ok(value)
        } else {
            Err(IdxError::LabelOutOfRange { index, value })
        }
    }
}

/// A validated view of an IDX image file: `len()` images of 28x28 u8 pixels, row-major.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pixels: &'a [u8],
}

impl<'a> Images<'a> {
    /// Parses an IDX image file held in `bytes` without copying. O(1).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, IdxError> {
        let pixels = checked_body(bytes, IdxKind::Images, image_count(bytes)?)?;
        Ok(Images { pixels })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / IMAGE_PIXELS
    }

    /// True when the file holds no image.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// All pixels, `len() * 784` bytes, image after image.
    pub fn pixels(&self) -> &'a [u8] {
        self.pixels
    }
}

/// A validated view of an IDX label file: `len()` digits in 0..=9.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    labels: &'a [u8],
}

impl<'a> Labels<'a> {
    /// Parses an IDX label file held in `bytes` without copying; checks every label is a digit.
    /// O(count).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, IdxError> {
        let kind = IdxKind::Labels;
        let [count, ..] = parse_header(bytes, kind)?;
        let labels = checked_body(bytes, kind, count)?;
        for (index, &value) in labels.iter().enumerate() {
            Header::label(index, value)?;
        }
        Ok(Labels { labels })
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the file holds no label.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels, one byte each.
    pub fn as_slice(&self) -> &'a [u8] {
        self.labels
    }
}

/// A split of MNIST (train or test): images with their labels, the same count of each.
#[derive(Clone, Copy, Debug)]
pub struct Split<'a> {
    pixels: &'a [u8],
    labels: &'a [u8],
}

impl<'a> Split<'a> {
    /// Pairs images with labels, checking they hold the same count. O(1).
    pub fn new(images: Images<'a>, labels: Labels<'a>) -> Result<Self, IdxError> {
        if images.len() != labels.len() {
            return Err(IdxError::CountMismatch {
                images: images.len(),
                labels: labels.len(),
            });
        }
        Ok(Split {
            pixels: images.pixels(),
            labels: labels.as_slice(),
        })
    }

    /// Parses both IDX files of a split and pairs them. O(count).
    pub fn parse(images: &'a [u8], labels: &'a [u8]) -> Result<Self, IdxError> {
        Split::new(Images::parse(images)?, Labels::parse(labels)?)
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixels of example `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&'a [u8]> {
        self.pixels.get(i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS)
    }

    /// The label of example `i`, or `None` past the end.
    pub fn label(&self, i: usize) -> Option<u8> {
        self.labels.get(i).copied()
    }

    /// All pixels, `len() * 784` bytes.
    pub fn pixels(&self) -> &'a [u8] {
        self.pixels
    }

    /// All labels.
    pub fn labels(&self) -> &'a [u8] {
        self.labels
    }

    /// The first `n` examples (all of them if `n >= len()`). O(1).
    pub fn take(&self, n: usize) -> Split<'a> {
        let n = n.min(self.len());
        Split {
            pixels: &self.pixels[..n * IMAGE_PIXELS],
            labels: &self.labels[..n],
        }
    }

    /// The first `n` examples and the rest (all of them and none if `n >= len()`): a training
    /// split and the validation examples held out of it. O(1).
    pub fn split_at(&self, n: usize) -> (Split<'a>, Split<'a>) {
        let n = n.min(self.len());
        let (pixels, rest_pixels) = self.pixels.split_at(n * IMAGE_PIXELS);
        let (labels, rest_labels) = self.labels.split_at(n);
        (
            Split { pixels, labels },
            Split {
                pixels: rest_pixels,
                labels: rest_labels,
            },
        )
    }

    /// Number of examples of each class. O(len).
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0usize; NUM_CLASSES];
        for &l in self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// Mean pixel value over the whole split, in 0..=255. O(len * 784).
    pub fn mean_pixel(&self) -> f64 {
        if self.pixels.is_empty() {
            return 0.0;
        }
        let sum: u64 = self.pixels.iter().map(|&p| u64::from(p)).sum();
        sum as f64 / self.pixels.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn header(magic: u32, dims: &[u32]) -> [u8; 16] {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&magic.to_be_bytes());
        for (i, d) in dims.iter().enumerate() {
            h[4 + 4 * i..8 + 4 * i].copy_from_slice(&d.to_be_bytes());
        }
        h
    }

    #[test]
    fn parses_two_images_and_labels() {
        let mut img = [0u8; 16 + 2 * IMAGE_PIXELS];
        img[..16].copy_from_slice(&header(IMAGES_MAGIC, &[2, 28, 28]));
        img[16 + IMAGE_PIXELS] = 200;
        let mut lab = [0u8; 10];
        lab[..8].copy_from_slice(&header(LABELS_MAGIC, &[2])[..8]);
        lab[8] = 3;
        lab[9] = 9;
        let split = Split::parse(&img, &lab).unwrap();
        assert_eq!(split.len(), 2);
        assert_eq!(split.label(1), Some(9));
        assert_eq!(split.image(1).unwrap()[0], 200);
        assert_eq!(split.image(2), None);
        assert_eq!(split.class_counts()[3], 1);
        let (first, rest) = split.split_at(1);
        assert_eq!((first.len(), first.label(0), first.image(1)), (1, Some(3), None));
        assert_eq!((rest.len(), rest.label(0)), (1, Some(9)));
        assert_eq!(rest.image(0).unwrap()[0], 200);
        let (all, none) = split.split_at(5);
        assert_eq!((all.len(), none.len(), none.pixels().len()), (2, 0, 0));
    }

    #[test]
    fn header_errors() {
        assert_eq!(Images::parse(&[]).unwrap_err(), IdxError::Empty);
        assert!(matches!(
            Images::parse(&[0, 0, 8]).unwrap_err(),
            IdxError::ShortHeader { found: 3, .. }
        ));
        assert!(matches!(
            Images::parse(&header(0x0000_0801, &[1])).unwrap_err(),
            IdxError::WrongDimensionCount { found: 1, .. }
        ));
        assert!(matches!(
            Labels::parse(&header(0x0000_0c01, &[1])).unwrap_err(),
            IdxError::WrongMagic { found: 0x0c01, .. }
        ));
        assert!(matches!(
            Images::parse(&header(IMAGES_MAGIC, &[0, 28, 27])).unwrap_err(),
            IdxError::WrongImageSize { rows: 28, cols: 27 }
        ));
    }

    #[test]
    fn huge_count_is_truncated_not_overflow() {
        let err = Images::parse(&header(IMAGES_MAGIC, &[u32::MAX, 28, 28])).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { .. }));
    }

    /// A file's start, at most `header_len` bytes, as a streaming reader holds it.
    fn start(bytes: &[u8], kind: IdxKind) -> &[u8] {
        &bytes[..bytes.len().min(kind.header_len())]
    }

    #[test]
    fn streamed_header_gives_the_count_and_offsets() {
        let mut img = [0u8; 16 + 3 * IMAGE_PIXELS];
        img[..16].copy_from_slice(&header(IMAGES_MAGIC, &[3, 28, 28]));
        let h = Header::parse(IdxKind::Images, &img[..16], img.len()).unwrap();
        assert_eq!(h.count(), 3);
        assert_eq!(h.record_offset(0), Some(16));
        assert_eq!(h.record_offset(2), Some(16 + 2 * 784));
        assert_eq!(h.record_offset(3), None);
        let mut lab = [0u8; 8 + 5];
        lab[..8].copy_from_slice(&header(LABELS_MAGIC, &[5])[..8]);
        let h = Header::parse(IdxKind::Labels, &lab, lab.len()).unwrap();
        assert_eq!(
            (h.count(), h.record_offset(4), h.record_offset(5)),
            (5, Some(12), None)
        );
        assert_eq!(Header::label(7, 9), Ok(9));
        assert_eq!(
            Header::label(7, 10),
            Err(IdxError::LabelOutOfRange { index: 7, value: 10 })
        );
    }

    #[test]
    fn streamed_header_refuses_what_the_whole_file_parsers_refuse() {
        let img = |dims: &[u32], body: usize| {
            let mut v = header(IMAGES_MAGIC, dims).to_vec();
            v.resize(16 + body, 0);
            v
        };
        let bad_images = [
            vec![],
            vec![0, 0, 8],
            header(0x0000_0801, &[1]).to_vec(),
            header(IMAGES_MAGIC, &[0, 28, 27]).to_vec(),
            img(&[2, 28, 28], 2 * IMAGE_PIXELS - 1),
            img(&[2, 28, 28], 2 * IMAGE_PIXELS + 1),
            img(&[u32::MAX, 28, 28], 0),
        ];
        for file in &bad_images {
            let whole = Images::parse(file).unwrap_err();
            let streamed = Header::parse(IdxKind::Images, start(file, IdxKind::Images), file.len());
            assert_eq!(streamed, Err(whole), "{file:?}");
        }
        let lab = |count: u32, body: usize| {
            let mut v = header(LABELS_MAGIC, &[count])[..8].to_vec();
            v.resize(8 + body, 0);
            v
        };
        let bad_labels = [header(0x0000_0c01, &[1]).to_vec(), lab(4, 3), lab(4, 5)];
        for file in &bad_labels {
            let whole = Labels::parse(file).unwrap_err();
            let streamed = Header::parse(IdxKind::Labels, start(file, IdxKind::Labels), file.len());
            assert_eq!(streamed, Err(whole), "{file:?}");
        }
    }
}
