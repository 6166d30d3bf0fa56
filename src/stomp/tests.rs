//! Decoder tests: the STOMP 1.2 specification's example frames, its escaping and
//! repeated-header rules, and the streaming cases a WebSocket connection produces
//! (several frames per message, frames split across messages, heart-beats, peers
//! that never finish a frame).

use bytes::BytesMut;

use super::*;

/// Decodes everything in `input` at once; fails the test on a decode error.
fn decode_all(input: &[u8]) -> Vec<Item> {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::from(input);
    let mut items = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(e) => panic!("unexpected decode error: {e}"),
        }
    }
    assert!(buf.is_empty(), "left over: {:?}", &buf[..]);
    items
}

fn decode_one(input: &[u8]) -> Frame {
    match decode_all(input).as_slice() {
        [Item::Frame(f)] => f.clone(),
        other => panic!("expected exactly one frame, got {other:?}"),
    }
}

fn decode_err(input: &[u8]) -> DecodeError {
    decode_err_with(Decoder::new(DEFAULT_MAX_FRAME_SIZE), input)
}

fn decode_err_with(mut decoder: Decoder, input: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(input);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("expected an error, input was accepted as incomplete"),
            Err(e) => return e,
        }
    }
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

// ---- Specification examples ----

#[test]
fn spec_connect() {
    let f = decode_one(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
    assert_eq!(f.command, Command::Connect);
    assert_eq!(
        f.headers,
        headers(&[("accept-version", "1.2"), ("host", "stomp.github.org")])
    );
    assert!(f.body.is_empty());
}

#[test]
fn spec_send_with_body() {
    let f = decode_one(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0");
    assert_eq!(f.command, Command::Send);
    assert_eq!(f.get("destination"), Some("/queue/a"));
    assert_eq!(f.get("content-type"), Some("text/plain"));
    assert_eq!(&f.body[..], b"hello queue a");
}

#[test]
fn spec_subscribe() {
    let f = decode_one(b"SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\0");
    assert_eq!(f.command, Command::Subscribe);
    assert_eq!(
        f.headers,
        headers(&[
            ("id", "0"),
            ("destination", "/queue/foo"),
            ("ack", "client")
        ])
    );
}

#[test]
fn spec_message() {
    let f = decode_one(
        b"MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\n\
          content-type:text/plain\n\nhello queue a\0",
    );
    assert_eq!(f.command, Command::Message);
    assert_eq!(f.get("message-id"), Some("007"));
    assert_eq!(f.get("subscription"), Some("0"));
    assert_eq!(&f.body[..], b"hello queue a");
}

#[test]
fn spec_error_with_content_length_and_nul_in_body() {
    let body: &[u8] =
        b"The message:\n-----\nMESSAGE\ndestined:/queue/a\n\0\nHello queue a!\n-----\n\
        Did not contain a destination header, which is REQUIRED\nfor message propagation.\n";
    let mut input = format!(
        "ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:{}\n\
         message:malformed frame received\n\n",
        body.len()
    )
    .into_bytes();
    input.extend_from_slice(body);
    input.push(0);
    let f = decode_one(&input);
    assert_eq!(f.command, Command::Error);
    assert_eq!(f.get("message"), Some("malformed frame received"));
    assert_eq!(&f.body[..], body);
}

#[test]
fn repeated_headers_first_wins_and_all_are_kept() {
    let f = decode_one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(f.get("foo"), Some("World"));
    assert_eq!(f.headers, headers(&[("foo", "World"), ("foo", "Hello")]));
}

#[test]
fn first_content_length_wins() {
    let f = decode_one(b"SEND\ncontent-length:3\ncontent-length:5\n\na\0b\0");
    assert_eq!(&f.body[..], b"a\0b");
}

#[test]
fn header_escapes_are_decoded() {
    let f = decode_one(b"MESSAGE\nk\\ce\\\\y:a\\cb\\nc\\\\d\\re\n\n\0");
    assert_eq!(f.headers, headers(&[("k:e\\y", "a:b\nc\\d\re")]));
}

#[test]
fn connect_and_connected_keep_raw_header_text() {
    let f = decode_one(b"CONNECT\nlogin:a\\cb\\n\npasscode:x:y\n\n\0");
    assert_eq!(
        f.headers,
        headers(&[("login", "a\\cb\\n"), ("passcode", "x:y")])
    );
    let f = decode_one(b"CONNECTED\nserver:s\\t\n\n\0");
    assert_eq!(f.get("server"), Some("s\\t"));
}

#[test]
fn value_split_at_first_colon() {
    let f = decode_one(b"SEND\ntime:12:30:00\n\n\0");
    assert_eq!(f.headers, headers(&[("time", "12:30:00")]));
}

#[test]
fn unknown_escape_is_an_error() {
    let err = decode_err(b"SEND\nfoo:a\\tb\n\n\0");
    assert!(matches!(
        &err,
        DecodeError::UnknownEscape { header, sequence, .. } if header == "foo" && sequence == "\\t"
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("\"foo\"") && msg.contains(r"\r \n \c \\"),
        "{msg}"
    );
}

#[test]
fn trailing_backslash_is_an_error() {
    let err = decode_err(b"SEND\nfoo:a\\\n\n\0");
    assert!(matches!(
        err,
        DecodeError::UnknownEscape { ref sequence, .. } if sequence == "\\"
    ));
}

#[test]
fn escapes_follow_the_negotiated_version() {
    let input: &[u8] = b"MESSAGE\nfoo:a\\rb\\cc\n\n\0";
    let mut v11 = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    v11.set_version(Version::V1_1);
    assert!(matches!(
        decode_err_with(v11, input),
        DecodeError::UnknownEscape { ref sequence, version: Version::V1_1, .. } if sequence == "\\r"
    ));

    let mut v10 = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    v10.set_version(Version::V1_0);
    let mut buf = BytesMut::from(input);
    let item = v10.decode(&mut buf);
    let Ok(Some(Item::Frame(f))) = item else {
        panic!("expected a frame, got {item:?}");
    };
    assert_eq!(f.get("foo"), Some("a\\rb\\cc"));
}

#[test]
fn crlf_line_endings() {
    let items = decode_all(b"SEND\r\ndestination:/a\r\nx:\r\n\r\nhi\0\r\n");
    assert_eq!(
        items,
        vec![
            Item::Frame(
                Frame::new(Command::Send)
                    .header("destination", "/a")
                    .header("x", "")
                    .with_body("hi")
            ),
            Item::HeartBeat
        ]
    );
}

// ---- Malformed input ----

#[test]
fn unknown_command_is_reported_as_soon_as_its_line_ends() {
    // The rest of the frame has not arrived; the command line alone is enough.
    let err = decode_err(b"GET / HTTP/1.1\r\nHost: x");
    assert_eq!(err, DecodeError::UnknownCommand("GET / HTTP/1.1".into()));
    assert!(err.to_string().contains("is the peer speaking STOMP?"));
    assert!(matches!(
        decode_err(b"send\n\n\0"),
        DecodeError::UnknownCommand(_)
    ));
    assert!(matches!(
        decode_err(b"\rSEND\n\n\0"),
        DecodeError::UnknownCommand(_)
    ));
}

#[test]
fn header_without_colon_is_an_error() {
    assert_eq!(
        decode_err(b"SEND\ndestination /a\n\n\0"),
        DecodeError::MalformedHeader("destination /a".into())
    );
}

#[test]
fn bad_content_length_is_an_error() {
    for value in ["abc", "", "-1", "1 ", "99999999999999999999999999"] {
        let input = format!("SEND\ncontent-length:{value}\n\nx\0");
        assert_eq!(
            decode_err(input.as_bytes()),
            DecodeError::InvalidContentLength(value.into()),
            "content-length {value:?}"
        );
    }
}

#[test]
fn body_longer_than_content_length_is_missing_nul() {
    assert_eq!(
        decode_err(b"SEND\ncontent-length:2\n\nabc\0"),
        DecodeError::MissingNul {
            content_length: 2,
            found: b'c'
        }
    );
}

#[test]
fn headers_must_be_utf8_but_body_need_not_be() {
    assert!(matches!(
        decode_err(b"SEND\nfoo:\xff\n\n\0"),
        DecodeError::InvalidUtf8(_)
    ));
    assert!(matches!(
        decode_err(b"SEND\n\xfe:x\n\n\0"),
        DecodeError::InvalidUtf8(_)
    ));
    let f = decode_one(b"SEND\n\n\xff\xfe\0");
    assert_eq!(&f.body[..], b"\xff\xfe");
}

// ---- Streaming ----

#[test]
fn several_frames_and_heartbeats_in_one_buffer() {
    let items = decode_all(b"\nSEND\ndestination:/a\n\none\0\r\n\nMESSAGE\n\ntwo\0\n");
    assert_eq!(
        items,
        vec![
            Item::HeartBeat,
            Item::Frame(
                Frame::new(Command::Send)
                    .header("destination", "/a")
                    .with_body("one")
            ),
            Item::HeartBeat,
            Item::HeartBeat,
            Item::Frame(Frame::new(Command::Message).with_body("two")),
            Item::HeartBeat,
        ]
    );
}

#[test]
fn byte_by_byte_matches_one_shot() {
    let input: &[u8] = b"\r\nSEND\r\ndestination:/a\\c1\ncontent-length:4\n\nab\0c\0\n\
        MESSAGE\nmessage-id:7\n\nhello\0\r\nRECEIPT\nreceipt-id:1\n\n\0";
    let whole = decode_all(input);
    assert_eq!(whole.len(), 6);

    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for &byte in input {
        buf.extend_from_slice(&[byte]);
        while let Some(item) = decoder.decode(&mut buf).expect("valid input") {
            items.push(item);
        }
    }
    assert_eq!(items, whole);
    assert!(buf.is_empty());
}

#[test]
fn incomplete_frame_returns_none_without_consuming() {
    let full: &[u8] = b"SEND\ncontent-length:3\n\nab\0\0";
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    for cut in 1..full.len() {
        let mut buf = BytesMut::from(&full[..cut]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "prefix of {cut} bytes");
        assert_eq!(&buf[..], &full[..cut], "prefix of {cut} bytes was modified");
        // The same decoder, fed the rest, still finds the frame.
        buf.extend_from_slice(&full[cut..]);
        let item = decoder.decode(&mut buf);
        assert!(matches!(item, Ok(Some(Item::Frame(ref f))) if &f.body[..] == b"ab\0"));
        assert!(buf.is_empty());
    }
}

#[test]
fn lone_cr_waits_for_its_lf() {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"\r");
    buf.extend_from_slice(b"\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Item::HeartBeat)));
    assert!(buf.is_empty());
}

#[test]
fn frame_without_nul_beyond_limit_is_too_large() {
    let mut decoder = Decoder::new(64);
    let mut buf = BytesMut::from(&b"SEND\ndestination:/a\n\n"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    // A peer that never sends NUL: the decoder gives up at the limit.
    let mut result = Ok(None);
    for _ in 0..100 {
        buf.extend_from_slice(b"x");
        result = decoder.decode(&mut buf);
        if result != Ok(None) {
            break;
        }
    }
    assert!(
        buf.len() <= 64,
        "buffered {} bytes past the limit",
        buf.len()
    );
    assert_eq!(
        result,
        Err(DecodeError::FrameTooLarge {
            limit: 64,
            size: 65
        })
    );
}

#[test]
fn endless_headers_are_too_large() {
    let mut decoder = Decoder::new(32);
    let mut buf = BytesMut::from(&b"SEND\n"[..]);
    let mut result = Ok(None);
    for i in 0..20 {
        buf.extend_from_slice(format!("h{i}:v\n").as_bytes());
        result = decoder.decode(&mut buf);
        if result != Ok(None) {
            break;
        }
    }
    assert!(matches!(
        result,
        Err(DecodeError::FrameTooLarge { limit: 32, .. })
    ));
    assert!(buf.len() <= 36);
}

#[test]
fn oversize_content_length_fails_before_the_body_arrives() {
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
    let mut buf = BytesMut::from(&b"SEND\ncontent-length:100000\n\n"[..]);
    let err = decoder
        .decode(&mut buf)
        .expect_err("should refuse the frame");
    assert_eq!(
        err,
        DecodeError::FrameTooLarge {
            limit: DEFAULT_MAX_FRAME_SIZE,
            size: 28 + 100_000 + 1
        }
    );
    assert!(err.to_string().contains("65536-byte limit"), "{err}");
}

#[test]
fn limit_counts_the_whole_frame() {
    // "SEND\n\n" + body + NUL: 7 bytes of framing.
    let exact = [b"SEND\n\n".as_slice(), &[b'x'; 25], b"\0"].concat();
    assert_eq!(exact.len(), 32);
    let mut buf = BytesMut::from(exact.as_slice());
    assert!(matches!(
        Decoder::new(32).decode(&mut buf),
        Ok(Some(Item::Frame(_)))
    ));
    let mut buf = BytesMut::from(exact.as_slice());
    assert_eq!(
        Decoder::new(31).decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            limit: 31,
            size: 32
        })
    );
    // The same with content-length: over the limit by one byte.
    let with_len = [
        b"SEND\ncontent-length:10\n\n".as_slice(),
        &[b'y'; 10],
        b"\0",
    ]
    .concat();
    let limit = with_len.len() - 1;
    let mut buf = BytesMut::from(with_len.as_slice());
    assert!(matches!(
        Decoder::new(limit).decode(&mut buf),
        Err(DecodeError::FrameTooLarge { size, .. }) if size == with_len.len()
    ));
}

#[test]
fn heartbeats_do_not_count_toward_the_limit() {
    let mut decoder = Decoder::new(8);
    let mut buf = BytesMut::from(&b"\n\n\n\n\n\n\n\n\n\n\r\nSEND\n\n\0"[..]);
    let mut beats = 0;
    while let Some(item) = decoder.decode(&mut buf).expect("within the limit") {
        match item {
            Item::HeartBeat => beats += 1,
            Item::Frame(f) => assert_eq!(f.command, Command::Send),
        }
    }
    assert_eq!(beats, 11);
    assert!(buf.is_empty());
}

#[test]
fn body_is_a_slice_of_the_received_bytes() {
    let mut buf = BytesMut::from(&b"MESSAGE\n\nhello\0tail"[..]);
    let start = buf.as_ptr() as usize;
    let item = Decoder::default().decode(&mut buf);
    let Ok(Some(Item::Frame(f))) = item else {
        panic!("expected a frame, got {item:?}");
    };
    assert_eq!(f.body.as_ptr() as usize, start + 9, "body was copied");
    assert_eq!(&buf[..], b"tail");
}

// ---- Cost of hostile chunking ----

/// Feeds `input` one byte per call, as a peer sending one byte per WebSocket message
/// would; returns the first error (or `None`), the frames decoded and the bytes scanned.
fn trickle(mut decoder: Decoder, input: &[u8]) -> (Option<DecodeError>, Vec<Item>, u64) {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for &byte in input {
        buf.extend_from_slice(&[byte]);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (Some(e), items, decoder.bytes_scanned()),
            }
        }
    }
    (None, items, decoder.bytes_scanned())
}

#[test]
fn a_long_header_line_trickling_in_is_scanned_once() {
    // Found by fuzzing: each byte of an unfinished line rescanned the line from its
    // start, so a 64 KiB line sent a byte at a time cost 2 billion byte comparisons.
    let mut input = b"SEND\ndestination:".to_vec();
    input.resize(DEFAULT_MAX_FRAME_SIZE + 100, b'x');
    let (err, items, scanned) = trickle(Decoder::default(), &input);
    assert!(items.is_empty());
    assert_eq!(
        err,
        Some(DecodeError::FrameTooLarge {
            limit: DEFAULT_MAX_FRAME_SIZE,
            size: DEFAULT_MAX_FRAME_SIZE + 1
        })
    );
    assert!(
        scanned <= 2 * DEFAULT_MAX_FRAME_SIZE as u64,
        "{scanned} bytes scanned for a {DEFAULT_MAX_FRAME_SIZE}-byte line"
    );
}

#[test]
fn long_lines_and_bodies_that_do_finish_are_scanned_once_too() {
    let line = "v".repeat(128 * 1024);
    let body = "b".repeat(128 * 1024);
    let frame = format!("SEND\r\nlong:{line}\r\nshort:1\n\n{body}\0\n");
    let (err, items, scanned) = trickle(Decoder::new(1024 * 1024), frame.as_bytes());
    assert_eq!(err, None);
    let [Item::Frame(f), Item::HeartBeat] = items.as_slice() else {
        panic!(
            "expected a frame and a heart-beat, got {} items",
            items.len()
        );
    };
    assert_eq!(f.get("long").map(str::len), Some(line.len()));
    assert_eq!(f.body.len(), body.len());
    // Each head byte is searched once and parsed once; each body byte searched once.
    let head = frame.len() - body.len() - 2;
    assert!(
        scanned <= (2 * head + body.len() + 1) as u64,
        "{scanned} bytes scanned for a {}-byte frame",
        frame.len()
    );
}

#[test]
fn a_flood_in_one_chunk_is_not_searched_past_the_limit() {
    let mut decoder = Decoder::new(1024);
    let mut buf = BytesMut::from(&b"SEND\n"[..]);
    buf.resize(1024 * 1024, b'x');
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            limit: 1024,
            size: 1025
        })
    );
    assert!(
        decoder.bytes_scanned() <= 1024,
        "{}",
        decoder.bytes_scanned()
    );
}
