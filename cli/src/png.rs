//! A strict reader of 28x28 PNG images, for `ienk-cli predict --image`.
//!
//! Every standard non-interlaced PNG is read: grayscale, RGB, palette, grayscale with alpha and
//! RGBA, at every bit depth the format allows (1 to 16). Each pixel becomes one 0..=255 gray
//! level in MNIST's convention (0 the background, 255 the ink): RGB by its luma (`(299 R + 587
//! G + 114 B) / 1000`), samples wider than 8 bits scaled and rounded, an alpha channel
//! composited over a black background. A `tRNS` chunk (a transparent colour or palette alpha)
//! is ignored. Chunk CRCs and the zlib stream's checksum are verified; an interlaced file, an
//! unknown critical chunk, or any inconsistency is an error that says what is wrong.

use std::io::Read;

use ienk::idx::{IMAGE_PIXELS, IMAGE_SIDE};

/// The eight bytes every PNG file starts with.
const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// Whether `bytes` start with the PNG signature. O(1).
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

/// CRC-32 (ISO 3309, as PNG's chunks use), a byte at a time from a 256-entry table.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
};

/// The CRC-32 of the concatenation of `parts`. O(total length).
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for &b in parts.iter().flat_map(|p| p.iter()) {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The image header's fields that decide how the pixels are laid out.
#[derive(Clone, Copy, Debug)]
struct Header {
    bit_depth: u8,
    color_type: u8,
}

impl Header {
    /// Samples per pixel: gray 1, RGB 3, palette index 1, gray + alpha 2, RGBA 4.
    fn channels(self) -> usize {
        match self.color_type {
            2 => 3,
            4 => 2,
            6 => 4,
            _ => 1,
        }
    }

    /// Bytes of one filtered row, without its filter-type byte. O(1).
    fn row_bytes(self) -> usize {
        (IMAGE_SIDE * self.channels() * usize::from(self.bit_depth)).div_ceil(8)
    }

    /// Bytes between a byte and the one it is filtered against (at least 1). O(1).
    fn pixel_bytes(self) -> usize {
        (self.channels() * usize::from(self.bit_depth)).div_ceil(8)
    }
}

/// Parses the IHDR chunk's 13 bytes: 28x28, a valid colour type and bit depth, the standard
/// compression and filter methods, no interlacing.
fn header(data: &[u8]) -> Result<Header, String> {
    let [
        w0,
        w1,
        w2,
        w3,
        h0,
        h1,
        h2,
        h3,
        bit_depth,
        color_type,
        compression,
        filter,
        interlace,
    ] = data
    else {
        return Err(format!("IHDR has {} bytes, expected 13", data.len()));
    };
    let (width, height) = (
        u32::from_be_bytes([*w0, *w1, *w2, *w3]),
        u32::from_be_bytes([*h0, *h1, *h2, *h3]),
    );
    if (width, height) != (IMAGE_SIDE as u32, IMAGE_SIDE as u32) {
        return Err(format!(
            "expected a {IMAGE_SIDE}x{IMAGE_SIDE} image, found {width}x{height}"
        ));
    }
    let depths: &[u8] = match color_type {
        0 => &[1, 2, 4, 8, 16],
        3 => &[1, 2, 4, 8],
        2 | 4 | 6 => &[8, 16],
        _ => return Err(format!("colour type {color_type} is not a PNG colour type")),
    };
    if !depths.contains(bit_depth) {
        return Err(format!(
            "bit depth {bit_depth} is not allowed with colour type {color_type}"
        ));
    }
    if (*compression, *filter) != (0, 0) {
        return Err(format!(
            "unknown compression method {compression} or filter method {filter}"
        ));
    }
    if *interlace != 0 {
        return Err("interlaced (Adam7) PNGs are not supported: save it without interlacing".into());
    }
    Ok(Header {
        bit_depth: *bit_depth,
        color_type: *color_type,
    })
}

/// What the chunks hold: the header, the palette (RGB triples) and the zlib stream.
struct Chunks {
    header: Header,
    palette: Vec<u8>,
    compressed: Vec<u8>,
}

/// Walks the chunks after the signature, checking each CRC, up to IEND.
fn chunks(bytes: &[u8]) -> Result<Chunks, String> {
    let mut pos = SIGNATURE.len();
    let (mut header_seen, mut palette, mut compressed) = (None, Vec::new(), Vec::new());
    loop {
        let fields = bytes
            .get(pos..pos + 8)
            .ok_or("the file ends before its IEND chunk")?;
        let len = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]) as usize;
        let kind = &fields[4..8];
        let name = String::from_utf8_lossy(kind).into_owned();
        let data = pos
            .checked_add(8 + len)
            .and_then(|end| bytes.get(pos + 8..end))
            .ok_or_else(|| format!("chunk {name} runs past the end of the file"))?;
        let crc = bytes
            .get(pos + 8 + len..pos + 12 + len)
            .ok_or_else(|| format!("chunk {name} has no CRC"))?;
        // Fuzzing (`tests/fuzz`) skips the check, so that mutated files reach the decoder.
        if !cfg!(fuzzing) && crc32(&[kind, data]) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(format!("chunk {name}: CRC mismatch (the file is corrupt)"));
        }
        pos += 12 + len;
        match (kind, header_seen) {
            (b"IHDR", None) => header_seen = Some(header(data)?),
            (b"IHDR", Some(_)) => return Err("a second IHDR chunk".into()),
            (_, None) => return Err(format!("the first chunk is {name}, expected IHDR")),
            (b"PLTE", _) => {
                if data.is_empty() || data.len() % 3 != 0 || data.len() > 3 * 256 {
                    return Err(format!(
                        "PLTE has {} bytes, not 3 per entry for 1 to 256",
                        data.len()
                    ));
                }
                palette = data.to_vec();
            }
            (b"IDAT", _) => compressed.extend_from_slice(data),
            (b"IEND", Some(header)) => {
                if pos != bytes.len() {
                    return Err(format!("{} bytes after IEND", bytes.len() - pos));
                }
                return Ok(Chunks {
                    header,
                    palette,
                    compressed,
                });
            }
            // Ancillary chunks (lower-case first letter) may be skipped; critical ones may not.
            _ if kind[0].is_ascii_lowercase() => {}
            _ => return Err(format!("unknown critical chunk {name}")),
        }
    }
}

/// Inflates the zlib stream into exactly `len` bytes, its checksum verified.
fn inflate(compressed: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut raw = Vec::with_capacity(len);
    flate2::read::ZlibDecoder::new(compressed)
        .take(len as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("the image data does not inflate: {e}"))?;
    if raw.len() != len {
        let found = match raw.len() > len {
            true => format!("more than {len}"),
            false => raw.len().to_string(),
        };
        return Err(format!(
            "the image data inflates to {found} bytes, expected {len}"
        ));
    }
    Ok(raw)
}

/// The Paeth predictor of PNG's filter type 4.
fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = (
        (p - i16::from(a)).abs(),
        (p - i16::from(b)).abs(),
        (p - i16::from(c)).abs(),
    );
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Undoes the rows' filters in place: `raw` holds `IMAGE_SIDE` rows of a filter-type byte and
/// `row` bytes; returns the rows without their type bytes. O(raw).
fn unfilter(raw: &[u8], row: usize, bpp: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; IMAGE_SIDE * row];
    for (r, line) in raw.chunks_exact(row + 1).enumerate() {
        let (kind, line) = (line[0], &line[1..]);
        let (done, rest) = out.split_at_mut(r * row);
        let prior = if r == 0 {
            None
        } else {
            Some(&done[(r - 1) * row..])
        };
        let cur = &mut rest[..row];
        for i in 0..row {
            let a = if i >= bpp { cur[i - bpp] } else { 0 };
            let b = prior.map_or(0, |p| p[i]);
            let c = if i >= bpp {
                prior.map_or(0, |p| p[i - bpp])
            } else {
                0
            };
            let predicted = match kind {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => paeth(a, b, c),
                _ => return Err(format!("row {r} has filter type {kind}, not 0 to 4")),
            };
            cur[i] = line[i].wrapping_add(predicted);
        }
    }
    Ok(out)
}

/// Sample `index` of an unfiltered row, for `depth` bits per sample. O(1).
fn sample(row: &[u8], index: usize, depth: u8) -> u16 {
    match depth {
        16 => u16::from_be_bytes([row[2 * index], row[2 * index + 1]]),
        8 => u16::from(row[index]),
        _ => {
            let bit = index * usize::from(depth);
            let shift = 8 - usize::from(depth) - bit % 8;
            u16::from(row[bit / 8] >> shift) & ((1 << depth) - 1)
        }
    }
}

/// `v` of `depth` bits scaled to 0..=255, rounded. O(1).
fn to_8_bits(v: u16, depth: u8) -> u32 {
    let max = (1u32 << depth) - 1;
    (u32::from(v) * 255 + max / 2) / max
}

/// Parses a PNG file into 784 gray levels (see the module's documentation), or says what is
/// wrong.
pub fn parse(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if !is_png(bytes) {
        return Err("not a PNG file (no PNG signature)".into());
    }
    let Chunks {
        header,
        palette,
        compressed,
    } = chunks(bytes)?;
    if header.color_type == 3 && palette.is_empty() {
        return Err("a palette image without a PLTE chunk".into());
    }
    let row = header.row_bytes();
    let raw = inflate(&compressed, IMAGE_SIDE * (row + 1))?;
    let rows = unfilter(&raw, row, header.pixel_bytes())?;
    let (depth, channels) = (header.bit_depth, header.channels());
    let luma = |r: u32, g: u32, b: u32| (299 * r + 587 * g + 114 * b + 500) / 1000;
    let mut pixels = Vec::with_capacity(IMAGE_PIXELS);
    for line in rows.chunks_exact(row) {
        for x in 0..IMAGE_SIDE {
            let s = |c: usize| to_8_bits(sample(line, x * channels + c, depth), depth);
            let (gray, alpha) = match header.color_type {
                0 => (s(0), 255),
                2 => (luma(s(0), s(1), s(2)), 255),
                3 => {
                    let i = usize::from(sample(line, x, depth));
                    let rgb = palette.get(3 * i..3 * i + 3).ok_or_else(|| {
                        format!(
                            "palette index {i} past the palette's {} entries",
                            palette.len() / 3
                        )
                    })?;
                    (luma(rgb[0].into(), rgb[1].into(), rgb[2].into()), 255)
                }
                4 => (s(0), s(1)),
                _ => (luma(s(0), s(1), s(2)), s(3)),
            };
            // Over a black background.
            pixels.push(((gray * alpha + 127) / 255) as u8);
        }
    }
    Ok(pixels)
}
