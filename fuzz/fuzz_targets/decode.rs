//! The STOMP decoder on arbitrary bytes, arbitrarily chunked, for each version.
//!
//! Checks that it never panics; that every item consumes bytes; that chunking changes
//! nothing (the same items and the same error as one-shot decoding); that the bytes it
//! scans stay within twice the bytes fed, however they were chunked; and that every
//! frame it decodes either is refused by the encoder or encodes to bytes that decode to
//! the same frame again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stompede::stomp::{encode_for, DecodeError, Decoder, Frame, Item, Version};

/// The input: one byte of settings (version, frame limit), one byte choosing how the
/// rest is cut into WebSocket messages, then the byte stream itself, kept contiguous so
/// that the fuzzer's dictionary words and splices land in it whole.
struct Input<'a> {
    version: Version,
    limit: usize,
    chunks: Vec<&'a [u8]>,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Option<Input<'a>> {
        let (&settings, rest) = data.split_first()?;
        let (&cutting, stream) = rest.split_first()?;
        let version = Version::ALL[usize::from(settings % 3)];
        let limit = if settings & 4 != 0 { 256 } else { 64 * 1024 };
        // 0: one message; otherwise pseudo-random sizes from 1 to 1 + cutting % 32.
        let mut chunks = Vec::new();
        let mut rest = stream;
        let mut state = u32::from(cutting) | 0x9e37_0000;
        while !rest.is_empty() {
            let size = if cutting == 0 {
                rest.len()
            } else {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                1 + (state as usize) % (1 + usize::from(cutting % 32))
            };
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        Some(Input {
            version,
            limit,
            chunks,
        })
    }
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
        let length = want.body.len().to_string();
        want.headers.push("content-length", &length);
    }
    want
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let (version, limit) = (input.version, input.limit);
    let fed: usize = input.chunks.iter().map(|c| c.len()).sum();

    let mut chunked = decoder(version, limit);
    let got = decode_chunks(&mut chunked, input.chunks.iter().copied());
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
