//! Finding, reading and validating the four MNIST files.
//!
//! Each file is looked for under both common namings (`train-images-idx3-ubyte` and
//! `train-images.idx3-ubyte`), raw or gzipped. Images stay u8 in memory (55 MB for all of MNIST).

use std::io::Read;
use std::path::{Path, PathBuf};

use ienk::idx::{Images, Labels, Split};

use crate::error::{CliError, Result};

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

/// Reads a file, gunzipping it when its name ends in `.gz`.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| CliError::read(path, e))?;
    if path.extension().is_none_or(|e| e != "gz") {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() * 4);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| CliError::bad_file(path, format_args!("corrupt gzip data: {e}")))?;
    Ok(out)
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
}
