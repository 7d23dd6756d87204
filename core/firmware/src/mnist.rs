//! MNIST read from the host's uncompressed IDX files a few records at a time, as firmware reads
//! examples from flash or an SD card: the split never sits in RAM, only the records asked for.

use ienk::idx::{Header, IMAGE_PIXELS, IdxError, IdxKind};

use crate::failure::Failure;
use crate::host::{File, FileName, Mode};

/// The two files of a split.
#[derive(Clone, Copy)]
pub enum Which {
    /// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`.
    Train,
    /// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`.
    Test,
}

/// One IDX file, its header checked against its length.
struct IdxFile<'a> {
    file: File,
    header: Header,
    name: FileName<'a>,
}

impl<'a> IdxFile<'a> {
    /// Opens `name` and checks its header (magic, sizes, length).
    fn open(name: FileName<'a>, kind: IdxKind) -> Result<IdxFile<'a>, Failure<'a>> {
        let path = name.path().ok_or(Failure::PathTooLong(name))?;
        let host = |error| Failure::Host { path: name, error };
        let mut file = File::open(&path, Mode::Read).map_err(host)?;
        let len = file.len().map_err(host)?;
        let mut start = [0u8; IdxKind::Images.header_len()]; // the longer header
        let start = &mut start[..kind.header_len().min(len)];
        file.read_at(0, start).map_err(host)?;
        match Header::parse(kind, start, len) {
            Ok(header) => Ok(IdxFile { file, header, name }),
            Err(error) => Err(Failure::Idx { path: name, error }),
        }
    }

    /// Reads the records from `first` on into `buf` (whole records).
    fn read(&mut self, first: usize, buf: &mut [u8]) -> Result<(), Failure<'a>> {
        let at = self
            .header
            .record_offset(first)
            .expect("callers read records below count()");
        self.file.read_at(at, buf).map_err(|error| Failure::Host {
            path: self.name,
            error,
        })
    }
}

/// A split of MNIST on the host: images and labels, the same count of each.
pub struct Split<'a> {
    images: IdxFile<'a>,
    labels: IdxFile<'a>,
}

impl<'a> Split<'a> {
    /// Opens and checks the split's two files in `dir`.
    pub fn open(dir: &'a str, which: Which) -> Result<Split<'a>, Failure<'a>> {
        let (images, labels) = match which {
            Which::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
            Which::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        };
        let images = IdxFile::open(FileName { dir, name: images }, IdxKind::Images)?;
        let labels = IdxFile::open(FileName { dir, name: labels }, IdxKind::Labels)?;
        let (n, m) = (images.header.count(), labels.header.count());
        if n != m {
            let error = IdxError::CountMismatch { images: n, labels: m };
            return Err(Failure::Idx {
                path: labels.name,
                error,
            });
        }
        Ok(Split { images, labels })
    }

    /// Examples in the split.
    pub fn len(&self) -> usize {
        self.images.header.count()
    }

    /// Reads examples `first..first + labels.len()`: their pixels into `pixels` (784 bytes each)
    /// and their labels, checked to be digits, into `labels`. `first + labels.len()` must not
    /// pass [`Split::len`]. Two host reads.
    pub fn read(&mut self, first: usize, pixels: &mut [u8], labels: &mut [u8]) -> Result<(), Failure<'a>> {
        let n = labels.len();
        assert!(first + n <= self.len() && pixels.len() == n * IMAGE_PIXELS);
        self.images.read(first, pixels)?;
        self.labels.read(first, labels)?;
        for (k, label) in labels.iter().enumerate() {
            if let Err(error) = Header::label(first + k, *label) {
                let path = self.labels.name;
                return Err(Failure::Idx { path, error });
            }
        }
        Ok(())
    }
}
