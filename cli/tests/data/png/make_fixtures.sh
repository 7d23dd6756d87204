#!/usr/bin/env bash
# Remakes the PNG reader's fixtures (cli/tests/png.rs), which are committed: the sources are
# binary PGMs/PPMs (MNIST's first test image and quantised copies of it, random grey levels and
# colours, an alpha gradient), and each PNG is one of them encoded by another program, ImageMagick
# 6 (apt: imagemagick) where it can be told the colour type and bit depth, else the few lines of
# Python below, which write every row with one chosen filter type. Needs IENK_DATA (MNIST).
set -euo pipefail
cd "$(dirname "$0")"
: "${IENK_DATA:?set IENK_DATA to the MNIST directory}"
python3 - "$IENK_DATA" <<'PY'
import gzip, os, random, sys
path = os.path.join(sys.argv[1], 't10k-images-idx3-ubyte')
raw = open(path, 'rb').read() if os.path.exists(path) else gzip.open(path + '.gz').read()
img = raw[16:16 + 784]
def pgm(name, px): open(name, 'wb').write(b'P5\n28 28\n255\n' + bytes(px))
pgm('digit.pgm', img)
pgm('levels2.pgm', [255 if v >= 128 else 0 for v in img])
pgm('levels4.pgm', [round(v / 85) * 85 for v in img])
pgm('levels16.pgm', [round(v / 17) * 17 for v in img])
pgm('alpha.pgm', [(x * 9 + y * 4) % 256 for y in range(28) for x in range(28)])
random.seed(7)
pgm('noise.pgm', [random.randrange(256) for _ in range(784)])
open('colour.ppm', 'wb').write(b'P6\n28 28\n255\n' + bytes(random.randrange(256) for _ in range(3 * 784)))
PY
png() { # SOURCE COLOUR_TYPE BIT_DEPTH OUT [EXTRA...]
  local src="$1" type="$2" depth="$3" out="$4"
  shift 4
  convert "$src" "$@" -define png:color-type="$type" -define png:bit-depth="$depth" "PNG:$out"
}
png digit.pgm 0 8 gray8.png
png digit.pgm 0 16 gray16.png -depth 16
png digit.pgm 2 8 rgb8.png
png digit.pgm 2 16 rgb16.png -depth 16
png digit.pgm 3 8 palette8.png
png levels2.pgm 0 1 gray1.png
png levels4.pgm 0 2 gray2.png
png levels16.pgm 0 4 gray4.png
png levels4.pgm 3 2 palette2.png
png noise.pgm 0 8 noise-im.png
png colour.ppm 2 8 colour-rgb8.png
png colour.ppm 2 16 colour-rgb16.png -depth 16
convert digit.pgm alpha.pgm -alpha off -compose CopyOpacity -composite \
  -define png:color-type=6 -define png:bit-depth=8 PNG:rgba8.png
convert digit.pgm alpha.pgm -alpha off -compose CopyOpacity -composite \
  -define png:color-type=4 -define png:bit-depth=8 PNG:gray-alpha8.png
convert digit.pgm -interlace PNG PNG:interlaced.png
python3 - <<'PY'
import struct, zlib
def chunk(k, d): return struct.pack('>I', len(d)) + k + d + struct.pack('>I', zlib.crc32(k + d) & 0xffffffff)
def paeth(a, b, c):
    p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)
def encode(rows, depth, ctype, ftype, bpp):
    out, prev = b'', bytes(len(rows[0]))
    for r in rows:
        f = bytearray()
        for i, x in enumerate(r):
            a = r[i - bpp] if i >= bpp else 0; b = prev[i]; c = prev[i - bpp] if i >= bpp else 0
            f.append((x - [0, a, b, (a + b) // 2, paeth(a, b, c)][ftype]) & 255)
        out += bytes([ftype]) + bytes(f); prev = r
    ihdr = struct.pack('>IIBBBBB', 28, 28, depth, ctype, 0, 0, 0)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(out, 9)) + chunk(b'IEND', b'')
def rows_of(name, width):
    px = open(name, 'rb').read()[-28 * width:]
    return [px[y * width:(y + 1) * width] for y in range(28)]
filters = [(1, 'sub'), (2, 'up'), (3, 'average'), (4, 'paeth')]
for ftype, name in filters:
    open(f'gray8-{name}.png', 'wb').write(encode(rows_of('digit.pgm', 28), 8, 0, ftype, 1))
    open(f'noise-{name}.png', 'wb').write(encode(rows_of('noise.pgm', 28), 8, 0, ftype, 1))
for ftype, name in filters[2:]:
    open(f'colour-rgb8-{name}.png', 'wb').write(encode(rows_of('colour.ppm', 84), 8, 2, ftype, 3))
    # Two bits a sample, four samples a byte.
    rows2 = [bytes(sum((r[i + k] // 85) << (6 - 2 * k) for k in range(4)) for i in range(0, 28, 4))
             for r in rows_of('levels4.pgm', 28)]
    open(f'gray2-{name}.png', 'wb').write(encode(rows2, 2, 0, ftype, 1))
PY
