//! The model file: round trip, and each malformation the strict reader must reject.

mod common;

use ienk::mlp::Layout;
use ienk::safetensors::{SafetensorsError, WriteError, read, serialized_len, write, write_to};

const LAYOUT: Layout = Layout {
    inputs: 784,
    hidden: 3,
    outputs: 10,
};

/// A file with the given header JSON and `data_len` bytes of data.
fn file(header: &str, data_len: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data_len));
    v
}

/// The header of a valid H = 3 file, with tensor entries replaceable.
fn header(w1: &str, b1: &str, w2: &str, b2: &str) -> String {
    format!(
        r#"{{"__metadata__":{{"optimizer":"adam"}},"0.weight":{w1},"0.bias":{b1},"2.weight":{w2},"2.bias":{b2}}}"#
    )
}

const W1: &str = r#"{"dtype":"F32","shape":[3,784],"data_offsets":[0,9408]}"#;
const B1: &str = r#"{"dtype":"F32","shape":[3],"data_offsets":[9408,9420]}"#;
const W2: &str = r#"{"dtype":"F32","shape":[10,3],"data_offsets":[9420,9540]}"#;
const B2: &str = r#"{"dtype":"F32","shape":[10],"data_offsets":[9540,9580]}"#;
const DATA: usize = 9580;

#[test]
fn round_trip_keeps_every_bit_and_the_metadata() {
    let mut rng = common::TestRng::new(1);
    let theta = rng.vec(LAYOUT.num_params());
    let meta = [
        ("format", "ienk-model-1"),
        ("optimizer", "adam"),
        ("test_accuracy", "0.9800"),
    ];
    let mut buf = vec![0u8; serialized_len(&LAYOUT, &meta)];
    write(&LAYOUT, &theta, &meta, &mut buf).unwrap();
    assert_eq!(
        (u64::from_le_bytes(buf[..8].try_into().unwrap()) % 8),
        0,
        "header padded to 8"
    );
    let model = read(&buf, 784, 10).unwrap();
    assert_eq!(model.layout, LAYOUT);
    assert_eq!(model.metadata("optimizer"), Some("adam"));
    assert_eq!(model.metadata("test_accuracy"), Some("0.9800"));
    assert_eq!(model.metadata("missing"), None);
    let mut back = vec![0f32; LAYOUT.num_params()];
    model.copy_params(&mut back).unwrap();
    assert!(theta.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn valid_hand_written_header_in_any_order_is_read() {
    // Keys in another order, entries in another order, whitespace, padding: all legal.
    let h = format!(r#"{{ "2.bias": {B2}, "0.weight" : {W1}, "0.bias":{B1},"2.weight":{W2} }}   "#);
    assert!(read(&file(&h, DATA), 784, 10).is_ok());
}

fn rejects(bytes: Vec<u8>, what: fn(&SafetensorsError<'_>) -> bool) {
    match read(&bytes, 784, 10) {
        Ok(_) => panic!("accepted a malformed file"),
        Err(e) => assert!(what(&e), "wrong error: {e} ({e:?})"),
    }
}

#[test]
fn truncated_header_length() {
    rejects(vec![1, 2, 3], |e| {
        matches!(e, SafetensorsError::Truncated { found: 3 })
    });
}

#[test]
fn header_length_past_the_file() {
    let mut f = file(&header(W1, B1, W2, B2), DATA);
    let past = f.len() as u64;
    f[..8].copy_from_slice(&past.to_le_bytes());
    rejects(f, |e| matches!(e, SafetensorsError::HeaderPastEnd { .. }));
    let mut f = file("{}", 0);
    f[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    rejects(f, |e| matches!(e, SafetensorsError::HeaderTooLarge { .. }));
}

#[test]
fn a_hole_between_tensors() {
    let b1 = r#"{"dtype":"F32","shape":[3],"data_offsets":[9412,9424]}"#;
    rejects(file(&header(W1, b1, W2, B2), DATA), |e| {
        matches!(e, SafetensorsError::NotContiguous { .. })
    });
}

#[test]
fn overlapping_tensors() {
    let b1 = r#"{"dtype":"F32","shape":[3],"data_offsets":[9404,9416]}"#;
    rejects(file(&header(W1, b1, W2, B2), DATA), |e| {
        matches!(e, SafetensorsError::NotContiguous { .. })
    });
}

#[test]
fn a_wrong_size() {
    let b2 = r#"{"dtype":"F32","shape":[10],"data_offsets":[9540,9584]}"#;
    rejects(file(&header(W1, B1, W2, b2), DATA + 4), |e| {
        matches!(e, SafetensorsError::WrongSize { .. })
    });
}

#[test]
fn a_wrong_dtype() {
    let b2 = r#"{"dtype":"F64","shape":[10],"data_offsets":[9540,9580]}"#;
    rejects(file(&header(W1, B1, W2, b2), DATA), |e| {
        matches!(e, SafetensorsError::WrongDtype { dtype: "F64", .. })
    });
}

#[test]
fn a_wrong_shape() {
    let w2 = r#"{"dtype":"F32","shape":[3,10],"data_offsets":[9420,9540]}"#;
    rejects(file(&header(W1, B1, w2, B2), DATA), |e| {
        matches!(e, SafetensorsError::WrongShape { tensor: "2.weight" })
    });
}

#[test]
fn trailing_bytes_after_the_data() {
    rejects(file(&header(W1, B1, W2, B2), DATA + 1), |e| {
        matches!(e, SafetensorsError::DataLength { .. })
    });
}

#[test]
fn a_header_that_is_not_utf8_json() {
    let mut f = file(&header(W1, B1, W2, B2), DATA);
    f[20] = 0xff;
    rejects(f, |e| matches!(e, SafetensorsError::NotUtf8));
    rejects(file("[1, 2]", 0), |e| matches!(e, SafetensorsError::Json(_)));
    rejects(file(r#"{"0.weight": nope}"#, 0), |e| {
        matches!(e, SafetensorsError::Json(_))
    });
    let cut = header(W1, B1, W2, B2);
    rejects(file(&cut[..cut.len() - 1], DATA), |e| {
        matches!(e, SafetensorsError::Json(_))
    });
}

#[test]
fn unknown_repeated_or_missing_tensors() {
    let h = format!(r#"{{"0.weight":{W1},"0.bias":{B1},"2.weight":{W2},"2.bias":{B2},"3.bias":{B2}}}"#);
    rejects(file(&h, DATA), |e| {
        matches!(e, SafetensorsError::UnexpectedTensor(_))
    });
    let h = format!(r#"{{"0.weight":{W1},"0.weight":{W1}}}"#);
    rejects(file(&h, DATA), |e| {
        matches!(e, SafetensorsError::UnexpectedTensor("0.weight"))
    });
    let h = format!(r#"{{"0.weight":{W1},"0.bias":{B1},"2.weight":{W2}}}"#);
    rejects(file(&h, 9540), |e| {
        matches!(e, SafetensorsError::MissingTensor("2.bias"))
    });
}

#[test]
fn writer_refuses_metadata_it_would_have_to_escape() {
    let theta = vec![0f32; LAYOUT.num_params()];
    let meta = [("note", "a \"quoted\" word")];
    let mut buf = vec![0u8; serialized_len(&LAYOUT, &meta)];
    assert_eq!(
        write(&LAYOUT, &theta, &meta, &mut buf),
        Err(SafetensorsError::MetadataNotPlain)
    );
}

#[test]
fn reader_never_panics_on_mangled_files() {
    let mut rng = common::TestRng::new(9);
    let mut good = vec![0u8; serialized_len(&LAYOUT, &[("k", "v")])];
    write(&LAYOUT, &vec![0.5; LAYOUT.num_params()], &[("k", "v")], &mut good).unwrap();
    for _ in 0..3000 {
        let mut f = good.clone();
        match rng.below(3) {
            0 => f.truncate(rng.below(good.len())),
            1 => {
                let i = rng.below(400.min(f.len()));
                f[i] = rng.below(256) as u8;
            }
            _ => {
                let i = 8 + rng.below(300);
                f.insert(i, b"{}[],:\" 09"[rng.below(10)]);
            }
        }
        let _ = read(&f, 784, 10);
    }
}

/// The streamed file: the sink gets pieces of at most 256 bytes which, put together, are a file
/// the strict reader takes back to the same bits and metadata, and the bytes `write` puts in a
/// buffer; the sink's first error stops the writing; a model that cannot be written reaches no
/// sink.
#[test]
fn streamed_writing_gives_the_file_in_small_pieces_and_stops_at_the_sinks_error() {
    let mut rng = common::TestRng::new(2);
    let theta = rng.vec(LAYOUT.num_params());
    let meta = [("optimizer", "ienk"), ("trainer", "firmware")];
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut keep = |bytes: &[u8]| {
        pieces.push(bytes.to_vec());
        Ok::<(), ()>(())
    };
    write_to(&LAYOUT, &theta, &meta, &mut keep).unwrap();
    assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= 256));
    let streamed = pieces.concat();
    assert_eq!(streamed.len(), serialized_len(&LAYOUT, &meta));
    let model = read(&streamed, 784, 10).unwrap();
    assert_eq!(model.metadata("trainer"), Some("firmware"));
    let mut back = vec![0f32; LAYOUT.num_params()];
    model.copy_params(&mut back).unwrap();
    assert!(theta.iter().zip(&back).all(|(a, b)| a.to_bits() == b.to_bits()));
    let mut buf = vec![0u8; streamed.len()];
    write(&LAYOUT, &theta, &meta, &mut buf).unwrap();
    assert!(buf == streamed);

    let mut calls = 0;
    let mut full_after_two = |_: &[u8]| {
        calls += 1;
        if calls == 3 { Err("flash full") } else { Ok(()) }
    };
    let stopped = write_to(&LAYOUT, &theta, &meta, &mut full_after_two);
    assert_eq!(stopped, Err(WriteError::Sink("flash full")));
    assert_eq!(calls, 3);

    let mut untouched = |_: &[u8]| -> Result<(), ()> { panic!("a bad model reached the sink") };
    let bad = write_to(&LAYOUT, &theta, &[("quote", "a\"b")], &mut untouched);
    assert_eq!(bad, Err(WriteError::Format(SafetensorsError::MetadataNotPlain)));
    let short = write_to(&LAYOUT, &theta[1..], &meta, &mut untouched);
    assert!(matches!(
        short,
        Err(WriteError::Format(SafetensorsError::ParamsLength { .. }))
    ));
}
