//! The PNG reader of `predict --image` against images that other encoders wrote
//! (`data/png/make_fixtures.sh`: ImageMagick, and a few lines of Python for the filter types and
//! bit depths ImageMagick would not pick), each compared with the PGM it was made from; and its
//! refusals of broken files.

use std::path::PathBuf;

use ienk_cli::png;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/png")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The 784 pixels of one of the fixtures' binary PGMs (header `P5\n28 28\n255\n`).
fn pgm(name: &str) -> Vec<u8> {
    let bytes = fixture(name);
    assert!(
        bytes.starts_with(b"P5\n28 28\n255\n") && bytes.len() == 13 + 784,
        "{name}"
    );
    bytes[13..].to_vec()
}

#[test]
fn every_colour_type_bit_depth_and_filter_reads_as_its_source() {
    let digit = pgm("digit.pgm");
    assert!(
        digit.iter().any(|&v| v != 0 && v != 255),
        "the digit has grey levels"
    );
    for name in [
        "gray8.png",
        "gray8-sub.png",
        "gray8-up.png",
        "gray8-average.png",
        "gray8-paeth.png",
        "gray16.png",
        "rgb8.png",
        "rgb16.png",
        "palette8.png",
    ] {
        assert_eq!(png::parse(&fixture(name)).unwrap(), digit, "{name}");
    }
    for (name, source) in [
        ("gray1.png", "levels2.pgm"),
        ("gray2.png", "levels4.pgm"),
        ("gray2-average.png", "levels4.pgm"),
        ("gray2-paeth.png", "levels4.pgm"),
        ("palette2.png", "levels4.pgm"),
        ("gray4.png", "levels16.pgm"),
    ] {
        assert_eq!(png::parse(&fixture(name)).unwrap(), pgm(source), "{name}");
    }
}

#[test]
fn noise_takes_every_filter_branch() {
    // Random grey levels: the Paeth predictor's ties between different neighbours, and the
    // wrapping sums of every filter, come up on most rows.
    let noise = pgm("noise.pgm");
    for name in [
        "noise-im.png",
        "noise-sub.png",
        "noise-up.png",
        "noise-average.png",
        "noise-paeth.png",
    ] {
        assert_eq!(png::parse(&fixture(name)).unwrap(), noise, "{name}");
    }
}

#[test]
fn colour_is_read_as_its_luma() {
    let ppm = fixture("colour.ppm");
    assert!(ppm.starts_with(b"P6\n28 28\n255\n") && ppm.len() == 13 + 3 * 784);
    // ITU-R BT.601's weights, rounded to the nearest level.
    let want: Vec<u8> = ppm[13..]
        .chunks_exact(3)
        .map(|p| {
            let (r, g, b) = (f64::from(p[0]), f64::from(p[1]), f64::from(p[2]));
            (0.299 * r + 0.587 * g + 0.114 * b).round() as u8
        })
        .collect();
    for name in [
        "colour-rgb8.png",
        "colour-rgb16.png",
        "colour-rgb8-average.png",
        "colour-rgb8-paeth.png",
    ] {
        assert_eq!(png::parse(&fixture(name)).unwrap(), want, "{name}");
    }
}

#[test]
fn transparency_is_composited_over_black() {
    let (digit, alpha) = (pgm("digit.pgm"), pgm("alpha.pgm"));
    let want: Vec<u8> = digit
        .iter()
        .zip(&alpha)
        .map(|(&g, &a)| ((u32::from(g) * u32::from(a) + 127) / 255) as u8)
        .collect();
    assert_ne!(want, digit);
    for name in ["rgba8.png", "gray-alpha8.png"] {
        assert_eq!(png::parse(&fixture(name)).unwrap(), want, "{name}");
    }
}

/// `bytes` with the CRC of the chunk whose data starts at `data` (`len` bytes) recomputed.
fn fix_crc(bytes: &mut [u8], data: usize, len: usize) {
    let crc = crc32_bitwise(&bytes[data - 4..data + len]);
    bytes[data + len..data + len + 4].copy_from_slice(&crc.to_be_bytes());
}

/// A 28x28 8-bit greyscale PNG whose zlib stream holds `raw` (filtered rows).
fn grey_png(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(raw).unwrap();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&28u32.to_be_bytes());
    ihdr.extend_from_slice(&28u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (b"IHDR", ihdr),
        (b"IDAT", z.finish().unwrap()),
        (b"IEND", Vec::new()),
    ] {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = png.len();
        png.extend_from_slice(kind);
        png.extend_from_slice(&data);
        let crc = crc32_bitwise(&png[start..]);
        png.extend_from_slice(&crc.to_be_bytes());
    }
    png
}

/// CRC-32 bit by bit, as PNG's specification defines it (independent of the reader's table).
fn crc32_bitwise(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn broken_files_are_refused_with_the_reason() {
    let good = fixture("gray8.png");
    let err = |bytes: &[u8]| png::parse(bytes).unwrap_err();
    assert!(err(&fixture("interlaced.png")).contains("interlaced"));
    assert!(err(b"GIF89a").contains("signature"));
    // Every truncation is an error, never a panic.
    for len in 0..good.len() {
        assert!(png::parse(&good[..len]).is_err(), "truncated to {len} bytes");
    }
    let mut extra = good.clone();
    extra.push(0);
    assert!(err(&extra).contains("after IEND"));
    // A flipped bit in the image data: the chunk's CRC no longer matches.
    let idat = good.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
    let mut flipped = good.clone();
    flipped[idat + 3] ^= 0x10;
    assert!(err(&flipped).contains("CRC mismatch"), "{}", err(&flipped));
    // The same with the CRC made right: the zlib stream's own checksum or structure fails.
    let idat_len = u32::from_be_bytes(good[idat - 8..idat - 4].try_into().unwrap()) as usize;
    fix_crc(&mut flipped, idat, idat_len);
    assert!(err(&flipped).contains("image data"), "{}", err(&flipped));
    // A width other than 28, its CRC right.
    let mut wide = good.clone();
    wide[16..20].copy_from_slice(&32u32.to_be_bytes());
    fix_crc(&mut wide, 16, 13);
    assert!(
        err(&wide).contains("expected a 28x28 image, found 32x28"),
        "{}",
        err(&wide)
    );
    // Image data of a row more or a row less than 28 rows of 28 grey bytes and a filter byte.
    for (rows, needle) in [(29, "more than 812 bytes"), (27, "783 bytes, expected 812")] {
        let png = grey_png(&vec![0u8; rows * 29]);
        assert!(err(&png).contains(needle), "{rows} rows: {}", err(&png));
    }
    assert_eq!(png::parse(&grey_png(&[0u8; 28 * 29])).unwrap(), vec![0u8; 784]);
    // A bit depth colour type 2 does not allow.
    let mut depth = fixture("rgb8.png");
    depth[24] = 4;
    fix_crc(&mut depth, 16, 13);
    assert!(err(&depth).contains("bit depth 4 is not allowed with colour type 2"));
}
