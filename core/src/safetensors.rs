//! The model file: safetensors, written and read over byte slices without allocation.
//!
//! Tensor names follow `torch.nn.Sequential(nn.Linear(784, H), nn.ReLU(), nn.Linear(H, 10))`:
//! "0.weight" `[H, 784]`, "0.bias" `[H]`, "2.weight" `[10, H]`, "2.bias" `[10]`, all F32
//! little-endian, stored in that order, which is the order of the flat parameter vector. The
//! reader is as strict as the reference implementation: bounded header length, UTF-8 JSON starting
//! with `{`, offsets contiguous from 0 with no hole or overlap, each size `numel * 4`, the data
//! ending exactly at the end of the file, and the shapes of the layout.

use core::fmt;

use crate::json::{JsonError, Scanner};
use crate::mlp::Layout;

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;
/// Header padding: the data section starts on a multiple of 8 bytes (spaces fill the header).
const HEADER_ALIGN: usize = 8;
/// The four tensor names, in storage order.
pub const TENSOR_NAMES: [&str; 4] = ["0.weight", "0.bias", "2.weight", "2.bias"];

/// Why a model file could not be written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SafetensorsError<'a> {
    /// Fewer than 8 bytes: no header length.
    Truncated {
        /// Bytes found.
        found: usize,
    },
    /// A header length over [`MAX_HEADER_LEN`].
    HeaderTooLarge {
        /// The announced length.
        len: u64,
    },
    /// A header length pointing past the end of the file.
    HeaderPastEnd {
        /// The announced length.
        len: u64,
        /// The file's length.
        file_len: usize,
    },
    /// A header that is not UTF-8.
    NotUtf8,
    /// A header that is not the expected JSON.
    Json(JsonError),
    /// A tensor name other than the four of the model, or repeated.
    UnexpectedTensor(&'a str),
    /// One of the four tensors is missing.
    MissingTensor(&'static str),
    /// A dtype other than F32.
    WrongDtype {
        /// The tensor.
        tensor: &'a str,
        /// Its dtype.
        dtype: &'a str,
    },
    /// More than 4 dimensions.
    TooManyDims(&'a str),
    /// A shape other than the layout's.
    WrongShape {
        /// The tensor.
        tensor: &'static str,
    },
    /// `end - begin` is not `numel * 4`.
    WrongSize {
        /// The tensor.
        tensor: &'a str,
        /// Bytes its shape needs.
        expected: u64,
        /// Bytes its offsets span.
        found: u64,
    },
    /// Data offsets that leave a hole or overlap, or do not start at 0.
    NotContiguous {
        /// The tensor.
        tensor: &'a str,
        /// Where it should begin.
        expected: u64,
        /// Where it begins.
        found: u64,
    },
    /// The data section is longer than the tensors (trailing bytes) or shorter.
    DataLength {
        /// Bytes the tensors span.
        expected: u64,
        /// Bytes after the header.
        found: u64,
    },
    /// A metadata key or value needing JSON escapes (the writer does not escape).
    MetadataNotPlain,
    /// The output buffer is not [`serialized_len`] bytes.
    OutputLength {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        found: usize,
    },
    /// The parameter vector does not fit the layout.
    ParamsLength {
        /// Floats needed.
        expected: usize,
        /// Floats given.
        found: usize,
    },
}

impl fmt::Display for SafetensorsError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SafetensorsError as E;
        match *self {
            E::Truncated { found } => write!(f, "truncated: {found} bytes, no 8-byte header length"),
            E::HeaderTooLarge { len } => write!(f, "header length {len} exceeds {MAX_HEADER_LEN}"),
            E::HeaderPastEnd { len, file_len } => {
                write!(
                    f,
                    "header length {len} runs past the end of the {file_len}-byte file"
                )
            }
            E::NotUtf8 => write!(f, "the header is not UTF-8"),
            E::Json(e) => write!(
                f,
                "header is not valid: expected {} at byte {}",
                e.expected, e.offset
            ),
            E::UnexpectedTensor(name) => write!(f, "unexpected or repeated tensor \"{name}\""),
            E::MissingTensor(name) => write!(f, "tensor \"{name}\" is missing"),
            E::WrongDtype { tensor, dtype } => {
                write!(f, "tensor \"{tensor}\" has dtype {dtype}, expected F32")
            }
            E::TooManyDims(tensor) => write!(f, "tensor \"{tensor}\" has more than 4 dimensions"),
            E::WrongShape { tensor } => write!(
                f,
                "tensor \"{tensor}\" has a shape that does not fit a 784-H-10 MLP"
            ),
            E::WrongSize {
                tensor,
                expected,
                found,
            } => {
                write!(
                    f,
                    "tensor \"{tensor}\" spans {found} bytes, its shape needs {expected}"
                )
            }
            E::NotContiguous {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "tensor \"{tensor}\" begins at byte {found} of the data, expected {expected} (hole or overlap)"
            ),
            E::DataLength { expected, found } => {
                write!(
                    f,
                    "the tensors span {expected} bytes but the data section holds {found}"
                )
            }
            E::MetadataNotPlain => write!(
                f,
                "metadata must be plain printable ASCII without quotes or backslashes"
            ),
            E::OutputLength { expected, found } => {
                write!(f, "output buffer has {found} bytes, expected {expected}")
            }
            E::ParamsLength { expected, found } => {
                write!(f, "parameter vector has {found} floats, expected {expected}")
            }
        }
    }
}

impl core::error::Error for SafetensorsError<'_> {}

/// Shapes of the four tensors for a layout (unused trailing dims are 0).
fn shapes(layout: &Layout) -> [([usize; 2], usize); 4] {
    [
        ([layout.hidden, layout.inputs], 2),
        ([layout.hidden, 0], 1),
        ([layout.outputs, layout.hidden], 2),
        ([layout.outputs, 0], 1),
    ]
}

/// Writes the JSON header (unpadded) to `w`.
fn write_header(w: &mut impl fmt::Write, layout: &Layout, metadata: &[(&str, &str)]) -> fmt::Result {
    w.write_str("{\"__metadata__\":{")?;
    for (i, (k, v)) in metadata.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        write!(w, "{sep}\"{k}\":\"{v}\"")?;
    }
    w.write_str("}")?;
    let mut offset = 0usize;
    for (name, (dims, rank)) in TENSOR_NAMES.iter().zip(shapes(layout)) {
        let bytes = dims[..rank].iter().product::<usize>() * 4;
        write!(w, ",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[")?;
        for (d, dim) in dims[..rank].iter().enumerate() {
            write!(w, "{}{dim}", if d == 0 { "" } else { "," })?;
        }
        write!(w, "],\"data_offsets\":[{offset},{}]}}", offset + bytes)?;
        offset += bytes;
    }
    w.write_str("}")
}

/// Counts bytes written.
struct Counter(usize);

impl fmt::Write for Counter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Padded header length.
fn header_len(layout: &Layout, metadata: &[(&str, &str)]) -> usize {
    padded(json_len(layout, metadata))
}

/// A header of `json` bytes padded with spaces to a multiple of [`HEADER_ALIGN`].
fn padded(json: usize) -> usize {
    json.div_ceil(HEADER_ALIGN) * HEADER_ALIGN
}

/// Length of the JSON header, before padding.
fn json_len(layout: &Layout, metadata: &[(&str, &str)]) -> usize {
    let mut c = Counter(0);
    // Counting cannot fail.
    let _ = write_header(&mut c, layout, metadata);
    c.0
}

/// Bytes of the file [`write()`] produces. O(size of the header).
pub fn serialized_len(layout: &Layout, metadata: &[(&str, &str)]) -> usize {
    8 + header_len(layout, metadata) + 4 * layout.num_params()
}

/// Writes the model `theta` of `layout` with `metadata` (plain ASCII key/value strings) into
/// `out`, which must be exactly [`serialized_len`] bytes. O(P).
pub fn write(
    layout: &Layout,
    theta: &[f32],
    metadata: &[(&str, &str)],
    out: &mut [u8],
) -> Result<(), SafetensorsError<'static>> {
    let expected = serialized_len(layout, metadata);
    if out.len() != expected {
        return Err(SafetensorsError::OutputLength {
            expected,
            found: out.len(),
        });
    }
    let mut pos = 0;
    let mut copy = |bytes: &[u8]| {
        out[pos..pos + bytes.len()].copy_from_slice(bytes);
        pos += bytes.len();
        Ok::<(), core::convert::Infallible>(())
    };
    write_to(layout, theta, metadata, &mut copy).map_err(|e| match e {
        WriteError::Format(e) => e,
        WriteError::Sink(never) => match never {},
    })
}

/// Why [`write_to`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError<E> {
    /// The model or its metadata cannot be written (nothing was passed to the sink).
    Format(SafetensorsError<'static>),
    /// The sink's own error, as it returned it.
    Sink(E),
}

/// Bytes [`write_to`] hands its sink at a time.
const PIECE: usize = 256;

/// Writes the bytes of [`write()`]'s file through `sink`, in order, 256 bytes at a time
/// at most, with no buffer of the file's size: for a device that writes its model to flash page
/// by page. The first error of `sink` stops the writing. O(P), 256 bytes of stack.
pub fn write_to<E>(
    layout: &Layout,
    theta: &[f32],
    metadata: &[(&str, &str)],
    sink: &mut impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), WriteError<E>> {
    if !metadata.iter().all(|(k, v)| plain(k) && plain(v)) {
        return Err(WriteError::Format(SafetensorsError::MetadataNotPlain));
    }
    if theta.len() != layout.num_params() {
        return Err(WriteError::Format(SafetensorsError::ParamsLength {
            expected: layout.num_params(),
            found: theta.len(),
        }));
    }
    let json = json_len(layout, metadata);
    let hlen = padded(json);
    let mut w = PieceWriter {
        piece: [0; PIECE],
        len: 0,
        sink,
        failed: None,
    };
    let written = w
        .push(&(hlen as u64).to_le_bytes())
        .and_then(|()| write_header(&mut w, layout, metadata))
        .and_then(|()| (json..hlen).try_for_each(|_| w.push(b" ")))
        .and_then(|()| theta.iter().try_for_each(|v| w.push(&v.to_le_bytes())))
        .and_then(|()| w.flush());
    match (written, w.failed.take()) {
        (Ok(()), _) => Ok(()),
        (Err(fmt::Error), Some(e)) => Err(WriteError::Sink(e)),
        // Formatting numbers and plain strings does not fail by itself.
        (Err(fmt::Error), None) => Err(WriteError::Format(SafetensorsError::OutputLength {
            expected: serialized_len(layout, metadata),
            found: 0,
        })),
    }
}

/// Gathers bytes into a piece and hands each full piece to a sink, keeping the sink's first
/// error.
struct PieceWriter<'s, S, E> {
    piece: [u8; PIECE],
    len: usize,
    sink: &'s mut S,
    failed: Option<E>,
}

impl<S: FnMut(&[u8]) -> Result<(), E>, E> PieceWriter<'_, S, E> {
    fn push(&mut self, mut bytes: &[u8]) -> fmt::Result {
        while !bytes.is_empty() {
            let take = (PIECE - self.len).min(bytes.len());
            self.piece[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            self.len += take;
            bytes = &bytes[take..];
            if self.len == PIECE {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> fmt::Result {
        if self.len > 0 {
            let result = (self.sink)(&self.piece[..self.len]);
            self.len = 0;
            if let Err(e) = result {
                self.failed = Some(e);
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// The JSON header's text, straight into the pieces.
impl<S: FnMut(&[u8]) -> Result<(), E>, E> fmt::Write for PieceWriter<'_, S, E> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes())
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    name: &'a str,
    dims: [u64; 4],
    rank: usize,
    begin: u64,
    end: u64,
}

/// A validated model file: its layout, metadata and tensor data, borrowed from the bytes.
#[derive(Clone, Copy, Debug)]
pub struct Model<'a> {
    /// The network's layout, read from the shapes.
    pub layout: Layout,
    metadata: &'a str,
    data: &'a [u8],
    /// Byte offsets into `data` of the tensors in [`TENSOR_NAMES`] order.
    offsets: [u64; 4],
}

impl<'a> Model<'a> {
    /// The raw (JSON-escaped) value of a metadata key, if present.
    pub fn metadata(&self, key: &str) -> Option<&'a str> {
        let mut s = Scanner::new(self.metadata);
        s.expect(b'{', "{").ok()?;
        if s.eat(b'}') {
            return None;
        }
        loop {
            let k = s.string().ok()?;
            s.expect(b':', ":").ok()?;
            let v = s.string().ok()?;
            if k == key {
                return Some(v);
            }
            if !s.eat(b',') {
                return None;
            }
        }
    }

    /// Copies the parameters into `theta` (length P of the layout). O(P).
    pub fn copy_params(&self, theta: &mut [f32]) -> Result<(), SafetensorsError<'a>> {
        let expected = self.layout.num_params();
        if theta.len() != expected {
            return Err(SafetensorsError::ParamsLength {
                expected,
                found: theta.len(),
            });
        }
        for (range, &offset) in self.layout.ranges().into_iter().zip(&self.offsets) {
            let start = offset as usize;
            let bytes = &self.data[start..start + 4 * range.len()];
            for (t, b) in theta[range].iter_mut().zip(bytes.chunks_exact(4)) {
                *t = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(())
    }
}

/// Parses and validates a model file of a network with `inputs` inputs and `outputs` outputs
/// (the hidden size is read from the file). O(size of the header); nothing is copied.
pub fn read(bytes: &[u8], inputs: usize, outputs: usize) -> Result<Model<'_>, SafetensorsError<'_>> {
    use SafetensorsError as E;
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(E::Truncated { found: bytes.len() });
    };
    let mut n = [0u8; 8];
    n.copy_from_slice(len_bytes);
    let hlen = u64::from_le_bytes(n);
    if hlen > MAX_HEADER_LEN {
        return Err(E::HeaderTooLarge { len: hlen });
    }
    let Some(header) = bytes.get(8..8 + hlen as usize) else {
        return Err(E::HeaderPastEnd {
            len: hlen,
            file_len: bytes.len(),
        });
    };
    let header = core::str::from_utf8(header).map_err(|_| E::NotUtf8)?;
    let data = &bytes[8 + hlen as usize..];
    let (metadata, entries, count) = parse_header(header)?;
    let entries = &entries[..count];

    // Offsets: sorted by begin, contiguous from 0, ending at the end of the file.
    let mut order = [0usize, 1, 2, 3];
    order[..count].sort_unstable_by_key(|&i| (entries[i].begin, entries[i].end));
    let mut expected_begin = 0u64;
    for &i in &order[..count] {
        let e = &entries[i];
        if e.begin != expected_begin {
            return Err(E::NotContiguous {
                tensor: e.name,
                expected: expected_begin,
                found: e.begin,
            });
        }
        let numel = e.dims[..e.rank]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let need = numel.and_then(|n| n.checked_mul(4)).unwrap_or(u64::MAX);
        let span = e.end.checked_sub(e.begin).unwrap_or(u64::MAX);
        if need != span {
            return Err(E::WrongSize {
                tensor: e.name,
                expected: need,
                found: span,
            });
        }
        expected_begin = e.end;
    }
    if expected_begin != data.len() as u64 {
        return Err(E::DataLength {
            expected: expected_begin,
            found: data.len() as u64,
        });
    }

    // Names and shapes of the layout.
    let find = |name: &'static str| {
        entries
            .iter()
            .find(|e| e.name == name)
            .ok_or(E::MissingTensor(name))
    };
    let hidden = {
        let b1 = find(TENSOR_NAMES[1])?;
        if b1.rank != 1 {
            return Err(E::WrongShape {
                tensor: TENSOR_NAMES[1],
            });
        }
        b1.dims[0] as usize
    };
    let layout = Layout {
        inputs,
        hidden,
        outputs,
    };
    let mut offsets = [0u64; 4];
    for ((name, (dims, rank)), offset) in TENSOR_NAMES.iter().zip(shapes(&layout)).zip(&mut offsets) {
        let e = find(name)?;
        let same = e.rank == rank
            && e.dims[..rank]
                .iter()
                .zip(&dims[..rank])
                .all(|(&a, &b)| a == b as u64);
        if !same {
            return Err(E::WrongShape { tensor: name });
        }
        *offset = e.begin;
    }
    Ok(Model {
        layout,
        metadata,
        data,
        offsets,
    })
}

type Header<'a> = (&'a str, [Entry<'a>; 4], usize);

/// Parses the header JSON into the metadata object's raw text and up to 4 tensor entries.
fn parse_header(header: &str) -> Result<Header<'_>, SafetensorsError<'_>> {
    use SafetensorsError as E;
    let json = |e: JsonError| E::Json(e);
    let empty = Entry {
        name: "",
        dims: [0; 4],
        rank: 0,
        begin: 0,
        end: 0,
    };
    let mut entries = [empty; 4];
    let mut count = 0;
    let mut metadata = "{}";
    if !header.starts_with('{') {
        return Err(E::Json(JsonError {
            offset: 0,
            expected: "{ at the start of the header",
        }));
    }
    let mut s = Scanner::new(header);
    s.expect(b'{', "{").map_err(json)?;
    if !s.eat(b'}') {
        loop {
            let key = s.string().map_err(json)?;
            s.expect(b':', ":").map_err(json)?;
            if key == "__metadata__" {
                let start = s.position();
                s.expect(b'{', "a metadata object").map_err(json)?;
                if !s.eat(b'}') {
                    loop {
                        s.string().map_err(json)?;
                        s.expect(b':', ":").map_err(json)?;
                        s.string().map_err(json)?;
                        if !s.eat(b',') {
                            break;
                        }
                    }
                    s.expect(b'}', "} closing the metadata").map_err(json)?;
                }
                metadata = &header[start..s.position()];
            } else {
                if count == 4
                    || !TENSOR_NAMES.contains(&key)
                    || entries[..count].iter().any(|e| e.name == key)
                {
                    return Err(E::UnexpectedTensor(key));
                }
                entries[count] = parse_entry(&mut s, key)?;
                count += 1;
            }
            if !s.eat(b',') {
                break;
            }
        }
        s.expect(b'}', "} closing the header").map_err(json)?;
    }
    if !s.at_end() {
        return Err(E::Json(JsonError {
            offset: s.position(),
            expected: "only spaces after the header",
        }));
    }
    Ok((metadata, entries, count))
}

/// Parses `{"dtype": .., "shape": [..], "data_offsets": [b, e]}` in any key order.
fn parse_entry<'a>(s: &mut Scanner<'a>, name: &'a str) -> Result<Entry<'a>, SafetensorsError<'a>> {
    use SafetensorsError as E;
    let json = |e: JsonError| E::Json(e);
    let mut entry = Entry {
        name,
        dims: [0; 4],
        rank: 0,
        begin: 0,
        end: 0,
    };
    let (mut dtype, mut shape, mut offsets) = (None, false, false);
    s.expect(b'{', "a tensor object").map_err(json)?;
    loop {
        let key = s.string().map_err(json)?;
        s.expect(b':', ":").map_err(json)?;
        match key {
            "dtype" if dtype.is_none() => dtype = Some(s.string().map_err(json)?),
            "shape" if !shape => {
                shape = true;
                s.expect(b'[', "a shape array").map_err(json)?;
                if !s.eat(b']') {
                    loop {
                        if entry.rank == 4 {
                            return Err(E::TooManyDims(name));
                        }
                        entry.dims[entry.rank] = s.integer().map_err(json)?;
                        entry.rank += 1;
                        if !s.eat(b',') {
                            break;
                        }
                    }
                    s.expect(b']', "] closing the shape").map_err(json)?;
                }
            }
            "data_offsets" if !offsets => {
                offsets = true;
                s.expect(b'[', "a data_offsets array").map_err(json)?;
                entry.begin = s.integer().map_err(json)?;
                s.expect(b',', ", between the two offsets").map_err(json)?;
                entry.end = s.integer().map_err(json)?;
                s.expect(b']', "] closing data_offsets").map_err(json)?;
            }
            _ => {
                return Err(E::Json(JsonError {
                    offset: s.position(),
                    expected: "dtype, shape or data_offsets once each",
                }));
            }
        }
        if !s.eat(b',') {
            break;
        }
    }
    s.expect(b'}', "} closing the tensor").map_err(json)?;
    match dtype {
        Some("F32") if shape && offsets => Ok(entry),
        Some(d) if d != "F32" => Err(E::WrongDtype {
            tensor: name,
            dtype: d,
        }),
        _ => Err(E::Json(JsonError {
            offset: s.position(),
            expected: "dtype, shape and data_offsets",
        })),
    }
}
