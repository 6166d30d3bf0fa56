//! STOMP encoder: a [`Frame`] in, wire bytes appended to a `BytesMut` out.
//!
//! The output buffer is the caller's, so one buffer can be reused across frames (or
//! collect several frames for one WebSocket message). Header names and values are
//! escaped for the target version, except on CONNECT and CONNECTED, and a
//! `content-length` header is added to any non-empty body so that bodies may carry
//! NUL bytes. What [`encode_for`] writes, [`super::Decoder`] reads back unchanged: a
//! frame it could not write that way (a header character the version has no escape
//! for, a `content-length` that contradicts the body) is refused with an
//! [`EncodeError`], and nothing is appended.

use bytes::{BufMut, BytesMut};

use super::decode::Escapes;
use super::frame::{Command, Frame, Version};

/// Why a frame cannot be written for a peer. The frame is not sent; nothing is appended.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error(
        "header {header:?} of a STOMP {version} {command} frame cannot carry {character:?} in \
         its {part}: {why}; remove it from the {part}"
    )]
    Unrepresentable {
        command: Command,
        version: Version,
        /// The header name, cut to 80 characters.
        header: String,
        /// `"name"` or `"value"`.
        part: &'static str,
        character: char,
        why: &'static str,
    },

    #[error(
        "content-length {value:?} does not match the {body_len}-byte body; drop the header \
         (the encoder adds the right one) or correct it"
    )]
    ContentLength { value: String, body_len: usize },
}

/// Appends `frame` to `out` as STOMP 1.2, for frames built by the program itself.
///
/// # Panics
///
/// If the frame cannot be written as STOMP 1.2 (see [`EncodeError`]): a CONNECT or
/// CONNECTED header holding CR or LF (or `:` in a name), or a `content-length` that
/// does not match the body. Frames carrying text from a peer or a file go through
/// [`encode_for`], which returns the error instead.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    if let Err(e) = encode_for(frame, Version::V1_2, out) {
        panic!("frame cannot be encoded: {e}");
    }
}

/// Appends `frame` to `out` for a peer speaking `version`: 1.2 escapes `\r \n : \`
/// in header names and values, 1.1 all but `\r`, 1.0 nothing; CONNECT and CONNECTED
/// headers are never escaped. A character that must be escaped but cannot be (CR or LF,
/// or `:` in a name) is an error, as is a `content-length` header that does not match
/// the body; `out` is then left as it was.
pub fn encode_for(frame: &Frame, version: Version, out: &mut BytesMut) -> Result<(), EncodeError> {
    let escapes = Escapes::for_frame(frame.command, version);
    let declared = frame.get("content-length");
    if let Some(value) = declared {
        if parse_decimal(value) != Some(frame.body.len()) {
            return Err(EncodeError::ContentLength {
                value: value.chars().take(QUOTE_LIMIT).collect(),
                body_len: frame.body.len(),
            });
        }
    }
    let add_length = !frame.body.is_empty() && declared.is_none();
    let command = frame.command.as_str().as_bytes();

    // Unescaped size, plus room for the content-length line; escapes may grow it.
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    let length_line = if add_length { 16 + 20 + 1 } else { 0 };
    out.reserve(command.len() + 1 + headers + length_line + 1 + frame.body.len() + 1);

    let start = out.len();
    out.put_slice(command);
    out.put_u8(b'\n');
    for (name, value) in frame.headers.iter() {
        let written = put_escaped(out, name.as_bytes(), escapes, true)
            .map_err(|c| (c, "name"))
            .and_then(|()| {
                out.put_u8(b':');
                put_escaped(out, value.as_bytes(), escapes, false).map_err(|c| (c, "value"))
            });
        if let Err((character, part)) = written {
            out.truncate(start);
            return Err(EncodeError::Unrepresentable {
                command: frame.command,
                version,
                header: name.chars().take(QUOTE_LIMIT).collect(),
                part,
                character: char::from(character),
                why: why_unescaped(escapes, frame.command),
            });
        }
        out.put_u8(b'\n');
    }
    if add_length {
        out.put_slice(b"content-length:");
        put_decimal(out, frame.body.len());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
    Ok(())
}

/// Appends a heart-beat: a single EOL.
pub fn heartbeat(out: &mut BytesMut) {
    out.put_u8(b'\n');
}

/// Longest header name quoted in an error.
const QUOTE_LIMIT: usize = 80;

/// Why a frame's header text is sent (partly) unescaped, for [`EncodeError`].
fn why_unescaped(escapes: Escapes, command: Command) -> &'static str {
    if !command.escapes_headers() {
        "CONNECT and CONNECTED headers are never escaped, so they cannot hold CR or LF, \
         nor ':' in a name"
    } else if escapes == Escapes::None {
        "STOMP 1.0 has no header escapes, so headers cannot hold CR or LF, nor ':' in a name"
    } else {
        "STOMP 1.1 has no escape for CR (1.2 added \\r)"
    }
}

/// Bytes that cannot be written as they are: they end a line, split name from value,
/// or start an escape. Which of them can be escaped depends on the version.
fn is_special(b: u8, escapes: Escapes, in_name: bool) -> bool {
    match escapes {
        Escapes::None => b == b'\r' || b == b'\n' || (in_name && b == b':'),
        Escapes::V1_1 | Escapes::V1_2 => matches!(b, b'\r' | b'\n' | b':' | b'\\'),
    }
}

/// Writes `text` escaped per `escapes`; on a byte the version cannot express, stops and
/// returns it (the caller discards the partial output).
fn put_escaped(out: &mut BytesMut, text: &[u8], escapes: Escapes, in_name: bool) -> Result<(), u8> {
    let mut rest = text;
    while let Some(i) = rest.iter().position(|&b| is_special(b, escapes, in_name)) {
        out.put_slice(&rest[..i]);
        let escaped: &[u8] = match (rest[i], escapes) {
            (_, Escapes::None) | (b'\r', Escapes::V1_1) => return Err(rest[i]),
            (b'\r', _) => b"\\r",
            (b'\n', _) => b"\\n",
            (b':', _) => b"\\c",
            _ => b"\\\\",
        };
        out.put_slice(escaped);
        rest = &rest[i + 1..];
    }
    out.put_slice(rest);
    Ok(())
}

/// A `content-length` value as the decoder reads it: ASCII digits only.
fn parse_decimal(value: &str) -> Option<usize> {
    if value.is_empty() {
        return None;
    }
    value.bytes().try_fold(0usize, |n, b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(usize::from(b - b'0'))
    })
}

fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::{Command, Decoder, Item};

    fn encoded(frame: &Frame, version: Version) -> Vec<u8> {
        try_encoded(frame, version).unwrap_or_else(|e| panic!("refused: {e}"))
    }

    fn try_encoded(frame: &Frame, version: Version) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::from(&b"prefix"[..]);
        let result = encode_for(frame, version, &mut out);
        match result {
            Ok(()) => Ok(out[6..].to_vec()),
            Err(e) => {
                assert_eq!(&out[..], b"prefix", "a refused frame left bytes behind");
                Err(e)
            }
        }
    }

    /// Encodes for `version`, decodes with a decoder set to `version`.
    fn round_trip(frame: &Frame, version: Version) -> Result<Frame, EncodeError> {
        let bytes = try_encoded(frame, version)?;
        let mut decoder = Decoder::default();
        decoder.set_version(version);
        let mut buf = BytesMut::from(&bytes[..]);
        match decoder.decode(&mut buf) {
            Ok(Some(Item::Frame(f))) if buf.is_empty() => Ok(f),
            other => panic!("{bytes:?} did not decode to one frame: {other:?}"),
        }
    }

    #[test]
    fn escapes_per_version() {
        let f = Frame::new(Command::Message).header("a:b", "x\r\ny\\z");
        assert_eq!(
            encoded(&f, Version::V1_2),
            b"MESSAGE\na\\cb:x\\r\\ny\\\\z\n\n\0"
        );
        let f = Frame::new(Command::Message).header("a:b", "x\ny\\z");
        assert_eq!(
            encoded(&f, Version::V1_1),
            b"MESSAGE\na\\cb:x\\ny\\\\z\n\n\0"
        );
        let f = Frame::new(Command::Message).header("ab", "x:y\\z");
        assert_eq!(encoded(&f, Version::V1_0), b"MESSAGE\nab:x:y\\z\n\n\0");
    }

    #[test]
    fn connect_and_connected_are_not_escaped() {
        for command in [Command::Connect, Command::Connected] {
            let f = Frame::new(command).header("passcode", "a:b\\c");
            let mut want = command.as_str().as_bytes().to_vec();
            want.extend_from_slice(b"\npasscode:a:b\\c\n\n\0");
            assert_eq!(encoded(&f, Version::V1_2), want);
        }
    }

    #[test]
    fn trailing_cr_round_trips_or_is_refused() {
        // Found by fuzzing: `a:b\r\r\n` decodes to "b\r", which was written back as
        // `a:b\r\n` and so read as "b".
        let value = "b\r";
        for version in Version::ALL {
            for command in [Command::Connect, Command::Connected, Command::Send] {
                let f = Frame::new(command).header("a", value);
                let escapable = command.escapes_headers() && version == Version::V1_2;
                match round_trip(&f, version) {
                    Ok(back) => {
                        assert!(escapable, "{command} {version}: sent unescaped CR");
                        assert_eq!(back, f, "{command} {version}");
                    }
                    Err(e) => {
                        assert!(!escapable, "{command} {version}: refused: {e}");
                        assert!(
                            matches!(
                                e,
                                EncodeError::Unrepresentable {
                                    character: '\r',
                                    part: "value",
                                    ..
                                }
                            ),
                            "{e:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unescapable_characters_are_refused_with_the_reason() {
        let connect = Frame::new(Command::Connect).header("login", "x\ny");
        let err = try_encoded(&connect, Version::V1_2).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("\"login\"") && msg.contains("'\\n'") && msg.contains("never escaped"),
            "{msg}"
        );
        assert!(
            !msg.contains(['\r', '\n']),
            "the message itself is one line: {msg:?}"
        );

        let colon_name = Frame::new(Command::Send).header("a:b", "v");
        let err = try_encoded(&colon_name, Version::V1_0).unwrap_err();
        assert!(
            matches!(
                err,
                EncodeError::Unrepresentable {
                    character: ':',
                    part: "name",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("STOMP 1.0 has no header escapes"),
            "{err}"
        );

        let cr = Frame::new(Command::Message).header("k", "a\rb");
        let err = try_encoded(&cr, Version::V1_1).unwrap_err();
        assert!(err.to_string().contains("1.2 added \\r"), "{err}");
        // The same frame is fine in 1.2, and a colon in a value is fine everywhere.
        assert_eq!(round_trip(&cr, Version::V1_2), Ok(cr));
        let f = Frame::new(Command::Connect).header("host", "a:b");
        for version in Version::ALL {
            assert_eq!(round_trip(&f, version), Ok(f.clone()));
        }
    }

    #[test]
    fn content_length_added_only_when_needed() {
        let f = Frame::new(Command::Send).with_body(&b"a\0b"[..]);
        assert_eq!(
            encoded(&f, Version::V1_2),
            b"SEND\ncontent-length:3\n\na\0b\0"
        );
        let f = f.header("content-length", "3");
        assert_eq!(
            encoded(&f, Version::V1_2),
            b"SEND\ncontent-length:3\n\na\0b\0"
        );
        assert_eq!(
            encoded(&Frame::new(Command::Send), Version::V1_2),
            b"SEND\n\n\0"
        );
    }

    #[test]
    fn a_content_length_that_contradicts_the_body_is_refused() {
        for (value, body) in [
            ("2", "abc"),
            ("", "abc"),
            ("x", ""),
            ("1", ""),
            ("-3", "abc"),
        ] {
            let f = Frame::new(Command::Send)
                .header("content-length", value)
                .with_body(body);
            assert_eq!(
                try_encoded(&f, Version::V1_2),
                Err(EncodeError::ContentLength {
                    value: value.into(),
                    body_len: body.len()
                }),
                "content-length {value:?}, body {body:?}"
            );
        }
        // The decoder accepts leading zeros, so the encoder does too; only the first
        // content-length counts, as in the decoder.
        let f = Frame::new(Command::Send)
            .header("content-length", "003")
            .header("content-length", "junk")
            .with_body("abc");
        assert_eq!(round_trip(&f, Version::V1_2), Ok(f));
    }

    #[test]
    fn decimal_lengths() {
        for n in [0usize, 9, 10, 1234567, usize::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
            assert_eq!(parse_decimal(&n.to_string()), Some(n));
        }
        assert_eq!(parse_decimal("18446744073709551616"), None);
    }

    #[test]
    fn heartbeat_is_one_newline_and_to_bytes_matches_encode() {
        let mut out = BytesMut::from(&b"x"[..]);
        heartbeat(&mut out);
        assert_eq!(&out[..], b"x\n");
        let f = Frame::new(Command::Receipt).header("receipt-id", "7");
        assert_eq!(f.to_bytes().to_vec(), encoded(&f, Version::V1_2));
    }

    #[test]
    #[should_panic(expected = "frame cannot be encoded")]
    fn encode_panics_rather_than_write_a_frame_that_reads_back_differently() {
        let f = Frame::new(Command::Connected).header("server", "x\r");
        encode(&f, &mut BytesMut::new());
    }
}
