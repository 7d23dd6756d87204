//! The IDX readers on any bytes: the first two bytes say where the images file ends and the labels
//! file begins; then the split, each file alone and the streamed headers of both kinds, and the
//! first records of whatever parses: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let cut = (usize::from(data[0]) << 8 | usize::from(data[1])).min(data.len() - 2);
    let (images, labels) = data[2..].split_at(cut);
    if let Ok(split) = ienk::idx::Split::parse(images, labels) {
        for i in 0..split.len().min(50) {
            let _ = split.image(i);
            let _ = split.label(i);
        }
    }
    let _ = ienk::idx::Images::parse(&data[2..]);
    let _ = ienk::idx::Labels::parse(&data[2..]);
    for kind in [ienk::idx::IdxKind::Images, ienk::idx::IdxKind::Labels] {
        if let Ok(h) = ienk::idx::Header::parse(kind, &data[2..], cut) {
            let n = h.count();
            let _ = h.record_offset(n.saturating_sub(1));
            let _ = h.record_offset(n);
        }
    }
});
