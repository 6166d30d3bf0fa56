//! The STOMP decoder on arbitrary bytes, arbitrarily chunked, for each version.
//!
//! Checks that it never panics; that every item consumes bytes; that chunking changes
//! nothing (the same items and the same error as one-shot decoding); that the bytes it
//! scans stay within twice the bytes fed, however they were chunked; and that every
//! frame it decodes either is refused by the encoder or encodes to bytes that decode to
//! the same frame again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stompede::stomp::{encode_for, DecodeError, Decoder, Frame, Item, Version};

#[derive(Debug, Arbitrary)]
struct Input {
    version: u8,
    /// Small limits reach the size checks with short inputs.
    small_limit: bool,
    /// Each chunk is one WebSocket message.
    chunks: Vec<Vec<u8>>,
}

/// Items decoded until the buffer runs dry or an error, and that error.
struct Outcome {
    items: Vec<Item>,
    error: Option<DecodeError>,
    left: BytesMut,
}

fn decode_chunks<'a>(decoder: &mut Decoder, chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => {
                    assert!(buf.len() < before, "an item consumed no bytes");
                    items.push(item);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    break;
                }
                Err(error) => {
                    return Outcome {
                        items,
                        error: Some(error),
                        left: buf,
                    }
                }
            }
        }
    }
    Outcome {
        items,
        error: None,
        left: buf,
    }
}

fn decoder(version: Version, limit: usize) -> Decoder {
    let mut d = Decoder::new(limit);
    d.set_version(version);
    d
}

/// The frame decoding `encode_for(frame)` should give: the encoder adds a
/// content-length to a non-empty body that has none.
fn expected(frame: &Frame) -> Frame {
    let mut want = frame.clone();
    if !want.body.is_empty() && want.get("content-length").is_none() {
        want.headers
            .push(("content-length".into(), want.body.len().to_string()));
    }
    want
}

fuzz_target!(|input: Input| {
    let version = Version::ALL[usize::from(input.version) % Version::ALL.len()];
    let limit = if input.small_limit { 256 } else { 64 * 1024 };
    let fed: usize = input.chunks.iter().map(Vec::len).sum();

    let mut chunked = decoder(version, limit);
    let got = decode_chunks(&mut chunked, input.chunks.iter().map(Vec::as_slice));
    assert!(
        chunked.bytes_scanned() <= 2 * fed as u64,
        "{} bytes scanned for {fed} fed",
        chunked.bytes_scanned()
    );

    let whole = input.chunks.concat();
    let once = decode_chunks(&mut decoder(version, limit), std::iter::once(&whole[..]));
    assert_eq!(got.items, once.items, "chunking changed the items");
    assert_eq!(got.error, once.error, "chunking changed the error");
    if got.error.is_none() {
        assert_eq!(got.left, once.left, "chunking changed what is left over");
    }

    for item in &got.items {
        let Item::Frame(frame) = item else { continue };
        let mut out = BytesMut::new();
        if encode_for(frame, version, &mut out).is_err() {
            assert!(out.is_empty(), "a refused frame left bytes behind");
            continue;
        }
        let mut again = decoder(version, usize::MAX);
        match again.decode(&mut out) {
            Ok(Some(Item::Frame(back))) => {
                assert_eq!(
                    back,
                    expected(frame),
                    "encode then decode changed the frame"
                );
                assert!(
                    out.is_empty(),
                    "{} bytes left after the re-encoded frame",
                    out.len()
                );
            }
            other => panic!("re-encoded {frame:?} decoded as {other:?}"),
        }
    }
});
