//! Finding, reading and validating the four MNIST files.
//!
//! Each file is looked for under both common namings (`train-images-idx3-ubyte` and
//! `train-images.idx3-ubyte`), raw or gzipped. Images stay u8 in memory (55 MB for all of MNIST).

use std::io::Read;
use std::path::{Path, PathBuf};

use ienk::idx::{Images, Labels, Split};

use crate::error::{CliError, Result};
use crate::huge_pages;

/// Where a user gets MNIST; printed when the files are missing.
pub const HOW_TO_GET_MNIST: &str = "get MNIST with `scripts/fetch-mnist.sh DIR` \
(or `scripts/fetch-mnist.sh --from LOCAL_DIR DIR` offline), then pass --data-dir DIR or set IENK_DATA";

/// One of the two MNIST splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitName {
    /// 60,000 training examples.
    Train,
    /// 10,000 test examples.
    Test,
}

impl SplitName {
    /// "train" or "test".
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Test => "test",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Test => "t10k",
        }
    }
}

/// The file names tried for one IDX file, in order.
fn candidates(dir: &Path, stem: &str, idx: &str) -> Vec<PathBuf> {
    let mut out = Vec::with_capacity(4);
    for name in [format!("{stem}-{idx}-ubyte"), format!("{stem}.{idx}-ubyte")] {
        out.push(dir.join(&name));
        out.push(dir.join(format!("{name}.gz")));
    }
    out
}

/// The first existing candidate, or an error listing every path tried.
fn find(dir: &Path, stem: &str, idx: &str) -> Result<PathBuf> {
    let tried = candidates(dir, stem, idx);
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(CliError::BadInput(format!(
        "MNIST not found in {}: looked for {}; {HOW_TO_GET_MNIST}",
        dir.display(),
        list.join(", ")
    )))
}

/// Reads a file, gunzipping it when its name ends in `.gz`, into a buffer advised for huge
/// pages (see [`crate::huge_pages`]) sized from the file (or from the gzip trailer's size).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut file = std::fs::File::open(path).map_err(|e| CliError::read(path, e))?;
    if !gz {
        let len = file.metadata().map_err(|e| CliError::read(path, e))?.len();
        let mut out = usize::try_from(len)
            .ok()
            .and_then(huge_pages::buffer)
            .unwrap_or_default();
        file.read_to_end(&mut out).map_err(|e| CliError::read(path, e))?;
        return Ok(out);
    }
    let mut raw = Vec::new();
    file.read_to_end(&mut raw).map_err(|e| CliError::read(path, e))?;
    let mut out = huge_pages::buffer(gzip_size_hint(&raw)).unwrap_or_default();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| CliError::bad_file(path, format_args!("corrupt gzip data: {e}")))?;
    Ok(out)
}

/// The uncompressed size a gzip file records in its last 4 bytes (modulo 2^32, and only its
/// last member's), bounded by deflate's largest ratio (1032:1) so that a corrupt trailer cannot
/// ask for more than the data could hold: a capacity hint, never trusted for the contents.
fn gzip_size_hint(raw: &[u8]) -> usize {
    let trailer = raw.len().checked_sub(4).map(|at| &raw[at..]);
    let recorded = trailer.map_or(0, |t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]));
    usize::try_from(recorded)
        .unwrap_or(usize::MAX)
        .min(raw.len().saturating_mul(1032))
}

/// One split held in memory: the raw IDX bytes of its image and label files.
#[derive(Debug)]
pub struct SplitFiles {
    /// Path of the image file.
    pub images_path: PathBuf,
    /// Path of the label file.
    pub labels_path: PathBuf,
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl SplitFiles {
    /// Finds, reads and validates one split in `dir`.
    pub fn load(dir: &Path, split: SplitName) -> Result<SplitFiles> {
        let images_path = find(dir, &format!("{}-images", split.prefix()), "idx3")?;
        let labels_path = find(dir, &format!("{}-labels", split.prefix()), "idx1")?;
        let files = SplitFiles {
            images: read_maybe_gz(&images_path)?,
            labels: read_maybe_gz(&labels_path)?,
            images_path,
            labels_path,
        };
        files.view()?;
        Ok(files)
    }

    /// A zero-copy view of the split. O(count) (the labels are re-checked).
    pub fn view(&self) -> Result<Split<'_>> {
        let images = Images::parse(&self.images).map_err(|e| CliError::bad_file(&self.images_path, e))?;
        let labels = Labels::parse(&self.labels).map_err(|e| CliError::bad_file(&self.labels_path, e))?;
        Split::new(images, labels).map_err(|e| {
            CliError::BadInput(format!(
                "{} and {}: {e}",
                self.images_path.display(),
                self.labels_path.display()
            ))
        })
    }
}

/// Both splits of MNIST.
#[derive(Debug)]
pub struct Mnist {
    /// The directory they were read from.
    pub dir: PathBuf,
    /// The training split.
    pub train: SplitFiles,
    /// The test split.
    pub test: SplitFiles,
}

impl Mnist {
    /// Finds, reads and validates both splits in `dir`.
    pub fn load(dir: &Path) -> Result<Mnist> {
        Ok(Mnist {
            dir: dir.to_path_buf(),
            train: SplitFiles::load(dir, SplitName::Train)?,
            test: SplitFiles::load(dir, SplitName::Test)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_namings_raw_and_gz_are_tried_in_order() {
        let c = candidates(Path::new("d"), "train-images", "idx3");
        let names: Vec<String> = c
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "train-images-idx3-ubyte",
                "train-images-idx3-ubyte.gz",
                "train-images.idx3-ubyte",
                "train-images.idx3-ubyte.gz"
            ]
        );
    }

    #[test]
    fn gzip_size_hint_reads_the_trailer_and_bounds_it() {
        // Trailer: 12 bytes uncompressed, little-endian.
        let mut small = vec![0u8; 20];
        small[16..].copy_from_slice(&12u32.to_le_bytes());
        assert_eq!(gzip_size_hint(&small), 12);
        // A corrupt trailer claiming 4 GiB from 20 bytes is capped at deflate's ratio.
        small[16..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(gzip_size_hint(&small), 20 * 1032);
        assert_eq!(gzip_size_hint(&[1, 2, 3]), 0);
    }

    #[test]
    fn raw_and_gzipped_files_read_back_exactly() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("ienk-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let raw = dir.join("x-idx3-ubyte");
        std::fs::write(&raw, &data).unwrap();
        let gz = dir.join("x-idx3-ubyte.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_maybe_gz(&raw).unwrap(), data);
        assert_eq!(read_maybe_gz(&gz).unwrap(), data);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
