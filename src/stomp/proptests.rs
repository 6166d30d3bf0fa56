//! Properties tying the encoder to the decoder: whatever [`encode`] writes,
//! [`Decoder`] reads back as the same frame, however the bytes are split across
//! WebSocket messages; and no input, however hostile, makes the decoder panic or
//! return an item without consuming bytes.

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// Text that exercises escaping: any characters, with the special ones made common.
fn wild_text() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![':', '\n', '\r', '\\', '\0']);
    prop::collection::vec(prop_oneof![3 => any::<char>(), 2 => special], 0..12)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Text without the characters in `forbidden` (for frames that are not escaped).
fn text_without(forbidden: &'static [char]) -> impl Strategy<Value = String> {
    prop::collection::vec(
        any::<char>().prop_filter("forbidden", |c| !forbidden.contains(c)),
        0..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![4 => any::<u8>(), 1 => Just(0u8)], 0..300)
}

fn frame_from(
    commands: Vec<Command>,
    header: impl Strategy<Value = (String, String)>,
) -> impl Strategy<Value = Frame> {
    (
        prop::sample::select(commands),
        prop::collection::vec(header, 0..6),
        body(),
    )
        .prop_filter(
            "content-length is added by the encoder",
            |(_, headers, _)| headers.iter().all(|(n, _)| n != "content-length"),
        )
        .prop_map(|(command, headers, body)| Frame {
            command,
            headers,
            body: body.into(),
        })
}

/// Frames whose headers are escaped, with arbitrary header text.
fn escaped_frame() -> impl Strategy<Value = Frame> {
    let commands = Command::ALL
        .into_iter()
        .filter(Command::escapes_headers)
        .collect();
    frame_from(commands, (wild_text(), wild_text()))
}

/// CONNECT and CONNECTED frames, whose headers are sent raw: names cannot hold a
/// colon or line break, values no line break.
fn raw_frame() -> impl Strategy<Value = Frame> {
    let header = (
        text_without(&[':', '\n', '\r']),
        text_without(&['\n', '\r']),
    );
    frame_from(vec![Command::Connect, Command::Connected], header)
}

/// The frame a decoder should produce from `encode(frame)`.
fn expected(frame: &Frame) -> Frame {
    let mut want = frame.clone();
    if !want.body.is_empty() {
        want.headers
            .push(("content-length".into(), want.body.len().to_string()));
    }
    want
}

fn encoded(frame: &Frame, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_for(frame, version, &mut out);
    out.to_vec()
}

/// Feeds `bytes` in two parts split at `at`; the frame must appear only once both are in.
fn decode_split(bytes: &[u8], at: usize, version: Version) -> Result<Frame, TestCaseError> {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    decoder.set_version(version);
    let mut buf = BytesMut::from(&bytes[..at]);
    if at < bytes.len() {
        prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
        prop_assert_eq!(&buf[..], &bytes[..at]);
    }
    buf.extend_from_slice(&bytes[at..]);
    match decoder.decode(&mut buf) {
        Ok(Some(Item::Frame(frame))) => {
            prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
            Ok(frame)
        }
        other => Err(TestCaseError::fail(format!(
            "expected a frame, got {other:?}"
        ))),
    }
}

proptest! {
    #[test]
    fn escaped_frames_round_trip(frame in escaped_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(&frame, Version::V1_2);
        prop_assert_eq!(decode_split(&bytes, bytes.len(), Version::V1_2)?, expected(&frame));
        let at = cut.index(bytes.len() + 1);
        prop_assert_eq!(decode_split(&bytes, at, Version::V1_2)?, expected(&frame));
    }

    #[test]
    fn connect_frames_round_trip(frame in raw_frame(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(&frame, Version::V1_2);
        let at = cut.index(bytes.len() + 1);
        prop_assert_eq!(decode_split(&bytes, at, Version::V1_2)?, expected(&frame));
    }

    #[test]
    fn stomp_1_1_frames_round_trip(
        frame in frame_from(
            vec![Command::Send, Command::Message, Command::Error],
            (text_without(&['\r']), text_without(&['\r'])),
        ),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = encoded(&frame, Version::V1_1);
        let at = cut.index(bytes.len() + 1);
        prop_assert_eq!(decode_split(&bytes, at, Version::V1_1)?, expected(&frame));
    }

    #[test]
    fn a_stream_decodes_the_same_however_it_is_chunked(
        items in prop::collection::vec(
            prop_oneof![1 => Just(None), 3 => escaped_frame().prop_map(Some)], 1..6),
        chunk in 1usize..40,
    ) {
        let mut stream = BytesMut::new();
        let mut want = Vec::new();
        for item in &items {
            match item {
                Some(frame) => {
                    encode(frame, &mut stream);
                    want.push(Item::Frame(expected(frame)));
                }
                None => {
                    heartbeat(&mut stream);
                    want.push(Item::HeartBeat);
                }
            }
        }
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for part in stream.chunks(chunk) {
            buf.extend_from_slice(part);
            while let Some(item) = decoder.decode(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                got.push(item);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn arbitrary_bytes_never_stall_the_decoder(
        input in prop::collection::vec(
            prop_oneof![
                4 => any::<u8>(),
                2 => prop::sample::select(b"\n\r:\\\0".to_vec()),
            ],
            0..400,
        ),
        prefix in prop::sample::select(vec!["", "SEND\n", "CONNECT\n", "MESSAGE\ncontent-length:3\n"]),
    ) {
        let mut decoder = Decoder::new(256);
        let mut buf = BytesMut::from(prefix.as_bytes());
        buf.extend_from_slice(&input);
        let total = buf.len();
        let mut steps = 0;
        while let Ok(Some(_)) = decoder.decode(&mut buf) {
            steps += 1;
            prop_assert!(buf.len() + steps <= total, "an item consumed no bytes");
        }
        prop_assert!(steps <= total);
    }
}
