//! A strict parser of 28x28 PGM images (P5 binary or P2 ASCII, maxval 1..=255).
//!
//! Pixels are scaled to 0..=255 as in MNIST, where 0 is the background and 255 the ink.

use ienk::idx::{IMAGE_PIXELS, IMAGE_SIDE};

/// Parses a PGM file into 784 pixels, or says what is wrong.
pub fn parse(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut pos = 0;
    let magic = token(bytes, &mut pos).ok_or("empty file, expected a P5 or P2 header")?;
    let binary = match magic {
        b"P5" => true,
        b"P2" => false,
        _ => {
            return Err(format!(
                "neither a PNG nor a PGM (magic P5 or P2): starts with {:?}",
                String::from_utf8_lossy(magic)
            ));
        }
    };
    let mut header = [0usize; 3];
    for (slot, what) in header.iter_mut().zip(["width", "height", "maxval"]) {
        let t = token(bytes, &mut pos).ok_or_else(|| format!("header ends before the {what}"))?;
        *slot =
            number(t).ok_or_else(|| format!("{what} is not a number: {:?}", String::from_utf8_lossy(t)))?;
    }
    let [width, height, maxval] = header;
    if width != IMAGE_SIDE || height != IMAGE_SIDE {
        return Err(format!(
            "expected a {IMAGE_SIDE}x{IMAGE_SIDE} image, found {width}x{height}"
        ));
    }
    if !(1..=255).contains(&maxval) {
        return Err(format!("maxval {maxval} is not in 1..=255"));
    }
    let scale = |v: usize| ((v * 255 + maxval / 2) / maxval) as u8;
    let mut pixels = Vec::with_capacity(IMAGE_PIXELS);
    if binary {
        // Exactly one whitespace byte separates maxval from the raster.
        if !bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
            return Err("expected one whitespace byte after maxval".into());
        }
        let raster = &bytes[pos + 1..];
        if raster.len() != IMAGE_PIXELS {
            return Err(format!(
                "expected {IMAGE_PIXELS} bytes of pixels, found {}",
                raster.len()
            ));
        }
        for &v in raster {
            if usize::from(v) > maxval {
                return Err(format!("pixel value {v} exceeds maxval {maxval}"));
            }
            pixels.push(scale(usize::from(v)));
        }
    } else {
        while let Some(t) = token(bytes, &mut pos) {
            let v = number(t)
                .ok_or_else(|| format!("pixel is not a number: {:?}", String::from_utf8_lossy(t)))?;
            if v > maxval {
                return Err(format!("pixel value {v} exceeds maxval {maxval}"));
            }
            if pixels.len() == IMAGE_PIXELS {
                return Err(format!("more than {IMAGE_PIXELS} pixel values"));
            }
            pixels.push(scale(v));
        }
        if pixels.len() != IMAGE_PIXELS {
            return Err(format!(
                "expected {IMAGE_PIXELS} pixel values, found {}",
                pixels.len()
            ));
        }
    }
    Ok(pixels)
}

/// Next whitespace-separated token, skipping `#` comments.
fn token<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    loop {
        while bytes.get(*pos).is_some_and(u8::is_ascii_whitespace) {
            *pos += 1;
        }
        if bytes.get(*pos) == Some(&b'#') {
            while bytes.get(*pos).is_some_and(|&b| b != b'\n') {
                *pos += 1;
            }
            continue;
        }
        break;
    }
    let start = *pos;
    while bytes.get(*pos).is_some_and(|b| !b.is_ascii_whitespace()) {
        *pos += 1;
    }
    (start < *pos).then(|| &bytes[start..*pos])
}

fn number(t: &[u8]) -> Option<usize> {
    if t.is_empty() || t.len() > 6 || !t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(t).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p5(maxval: usize, raster: &[u8]) -> Vec<u8> {
        let mut v = format!("P5\n# a comment\n28 28\n{maxval}\n").into_bytes();
        v.extend_from_slice(raster);
        v
    }

    #[test]
    fn binary_and_ascii_agree() {
        let raster: Vec<u8> = (0..784).map(|i| (i % 16) as u8).collect();
        let a = parse(&p5(15, &raster)).unwrap();
        let text: Vec<String> = raster.iter().map(|v| v.to_string()).collect();
        let b = parse(format!("P2 28 28 15\n{}\n", text.join(" ")).as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[15], 255);
        assert_eq!(a[1], 17);
    }

    #[test]
    fn malformed_images_are_rejected() {
        let raster = vec![0u8; 784];
        assert!(parse(b"").is_err());
        assert!(parse(b"P6 28 28 255\n").unwrap_err().contains("magic"));
        assert!(parse(b"P5 27 28 255\n").unwrap_err().contains("28x28"));
        assert!(parse(&p5(256, &raster)).unwrap_err().contains("maxval"));
        assert!(parse(&p5(255, &raster[..700])).unwrap_err().contains("784 bytes"));
        let mut long = raster.clone();
        long.push(0);
        assert!(parse(&p5(255, &long)).is_err());
        let mut hot = raster.clone();
        hot[3] = 200;
        assert!(parse(&p5(100, &hot)).unwrap_err().contains("exceeds"));
        assert!(parse(b"P2 28 28 255 1 2 x").unwrap_err().contains("not a number"));
        assert!(parse(b"P2 28 28 255 1 2 3").unwrap_err().contains("found 3"));
    }
}
