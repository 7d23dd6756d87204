#!/usr/bin/env bash
# Gets the four MNIST IDX files (gzipped) into DEST and verifies them.
#
#   scripts/fetch-mnist.sh [DEST]                  download (default DEST: data/mnist)
#   scripts/fetch-mnist.sh --from DIR [DEST]       copy from a local directory (offline machines)
#
# Downloads come from the mirrors libraries use today: torchvision's ossci-datasets bucket, then
# Google's cvdf-datasets bucket. Each downloaded .gz is checked against the SHA-256 listed in
# TensorFlow Datasets' url_checksums/mnist.txt. Every file, downloaded or copied, is also checked
# by the SHA-256 of its decompressed content (a recompressed .gz has other bytes, same content).
# Files already present and valid are kept. Exit status: 0 done, 1 a file could not be had or
# failed its check (a bad file is removed, never left behind).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

from=""
dest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) [ $# -ge 2 ] || { usage >&2; exit 1; }; from="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "fetch-mnist: unknown option $1" >&2; usage >&2; exit 1 ;;
    *) [ -z "$dest" ] || { usage >&2; exit 1; }; dest="$1"; shift ;;
  esac
done
dest="${dest:-data/mnist}"

mirrors=(
  "https://ossci-datasets.s3.amazonaws.com/mnist"
  "https://storage.googleapis.com/cvdf-datasets/mnist"
)
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
# SHA-256 of the original .gz files (TensorFlow Datasets, url_checksums/mnist.txt).
declare -A gz_sha=(
  [train-images-idx3-ubyte]=440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
  [train-labels-idx1-ubyte]=3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
  [t10k-images-idx3-ubyte]=8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
  [t10k-labels-idx1-ubyte]=f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
)
# SHA-256 of the decompressed IDX files.
declare -A raw_sha=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

content_ok() { # FILE.gz NAME
  [ "$(gunzip -c "$1" 2>/dev/null | sha256sum | cut -d' ' -f1)" = "${raw_sha[$2]}" ]
}

mkdir -p "$dest"
for name in "${files[@]}"; do
  out="$dest/$name.gz"
  if [ -f "$out" ] && content_ok "$out" "$name"; then
    echo "ok      $out (already present)"
    continue
  fi
  tmp="$out.part"
  rm -f "$tmp"
  if [ -n "$from" ]; then
    if [ -f "$from/$name.gz" ]; then
      cp "$from/$name.gz" "$tmp"
    elif [ -f "$from/$name" ]; then
      gzip -c "$from/$name" > "$tmp"
    else
      echo "fetch-mnist: $from has neither $name.gz nor $name" >&2; exit 1
    fi
  else
    got=""
    for m in "${mirrors[@]}"; do
      if curl -fsSL --retry 2 -o "$tmp" "$m/$name.gz"; then
        if [ "$(sha256sum "$tmp" | cut -d' ' -f1)" = "${gz_sha[$name]}" ]; then got=1; break; fi
        echo "fetch-mnist: $m/$name.gz has the wrong SHA-256, trying the next mirror" >&2
      else
        echo "fetch-mnist: could not download $m/$name.gz, trying the next mirror" >&2
      fi
    done
    if [ -z "$got" ]; then rm -f "$tmp"; echo "fetch-mnist: no mirror gave a valid $name.gz" >&2; exit 1; fi
  fi
  if ! content_ok "$tmp" "$name"; then
    rm -f "$tmp"
    echo "fetch-mnist: $name: decompressed content does not match SHA-256 ${raw_sha[$name]}" >&2
    exit 1
  fi
  mv "$tmp" "$out"
  echo "ok      $out"
done
echo "MNIST is ready in $dest (use --data-dir $dest or IENK_DATA=$dest)"
