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
            headers: headers.into_iter().collect(),
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
    if !want.body.is_empty() && want.get("content-length").is_none() {
        let length = want.body.len().to_string();
        want.headers.push("content-length", &length);
    }
    want
}

fn encoded(frame: &Frame, version: Version) -> Vec<u8> {
    let mut out = BytesMut::new();
    if let Err(e) = encode_for(frame, version, &mut out) {
        panic!("the strategy made a frame STOMP {version} cannot carry: {e}");
    }
    out.to_vec()
}

/// Whether STOMP `version` can carry `frame` as it is: what the encoder should accept.
fn representable(frame: &Frame, version: Version) -> bool {
    let length_ok = frame.get("content-length").is_none_or(|v| {
        !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && v.parse::<usize>() == Ok(frame.body.len())
    });
    let raw = !frame.command.escapes_headers() || version == Version::V1_0;
    let text_ok = frame.headers.iter().all(|(name, value)| {
        if raw {
            !name.contains(['\r', '\n', ':']) && !value.contains(['\r', '\n'])
        } else {
            version == Version::V1_2 || !(name.contains('\r') || value.contains('\r'))
        }
    });
    length_ok && text_ok
}

/// Any frame: any command, wild header text, sometimes a content-length header that
/// may or may not match the body.
fn any_frame() -> impl Strategy<Value = Frame> {
    (
        frame_from(Command::ALL.to_vec(), (wild_text(), wild_text())),
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(None)),
            1 => (0usize..400).prop_map(|n| Some(Some(n.to_string()))),
            1 => wild_text().prop_map(|t| Some(Some(t))),
        ],
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut frame, length, at)| {
            // Some(None): the right length; Some(Some(v)): v, right or not.
            if let Some(value) = length {
                let value = value.unwrap_or_else(|| frame.body.len().to_string());
                let at = at.index(frame.headers.len() + 1);
                frame.headers.insert(at, "content-length", &value);
            }
            frame
        })
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
    fn decoding_costs_linear_time_however_the_input_is_chunked(
        input in prop::collection::vec(
            prop_oneof![
                6 => any::<u8>(),
                1 => prop::sample::select(b"\n\r:\\\0".to_vec()),
            ],
            0..2000,
        ),
        prefix in prop::sample::select(vec!["", "SEND\n", "SEND\na:", "MESSAGE\ncontent-length:3\n"]),
        chunk in 1usize..8,
    ) {
        let mut decoder = Decoder::new(512);
        let stream = [prefix.as_bytes(), &input].concat();
        let mut buf = BytesMut::new();
        'feed: for part in stream.chunks(chunk) {
            buf.extend_from_slice(part);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        // Searched once, parsed once: at most two looks at each byte fed.
        prop_assert!(
            decoder.bytes_scanned() <= 2 * stream.len() as u64,
            "{} bytes scanned for {} fed", decoder.bytes_scanned(), stream.len()
        );
    }

    #[test]
    fn whatever_the_encoder_accepts_decodes_back_unchanged(
        frame in any_frame(),
        version in prop::sample::select(Version::ALL.to_vec()),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut out = BytesMut::new();
        match encode_for(&frame, version, &mut out) {
            Ok(()) => {
                prop_assert!(representable(&frame, version), "accepted: {:?}", &out[..]);
                let at = cut.index(out.len() + 1);
                prop_assert_eq!(decode_split(&out, at, version)?, expected(&frame));
            }
            Err(e) => {
                prop_assert!(!representable(&frame, version), "refused: {}", e);
                prop_assert!(out.is_empty(), "a refused frame left {} bytes", out.len());
            }
        }
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
