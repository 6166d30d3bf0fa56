//! STOMP encoder: a [`Frame`] in, wire bytes appended to a `BytesMut` out.
//!
//! The output buffer is the caller's, so one buffer can be reused across frames (or
//! collect several frames for one WebSocket message). Header names and values are
//! escaped for the target version, except on CONNECT and CONNECTED, and a
//! `content-length` header is added to any non-empty body so that bodies may carry
//! NUL bytes. What [`encode`] writes, [`super::Decoder`] reads back unchanged.

use bytes::{BufMut, BytesMut};

use super::decode::Escapes;
use super::frame::{Frame, Version};

/// Appends `frame` to `out` as STOMP 1.2.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    encode_for(frame, Version::V1_2, out);
}

/// Appends `frame` to `out` for a peer speaking `version`: 1.2 escapes `\r \n : \`
/// in header names and values, 1.1 all but `\r`, 1.0 nothing (a 1.0 header must then
/// not contain a line break, which that version cannot express).
pub fn encode_for(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escapes = Escapes::for_frame(frame.command, version);
    let add_length = !frame.body.is_empty() && frame.get("content-length").is_none();
    let command = frame.command.as_str().as_bytes();

    // Unescaped size, plus room for the content-length line; escapes may grow it.
    let headers: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    let length_line = if add_length { 16 + 20 + 1 } else { 0 };
    out.reserve(command.len() + 1 + headers + length_line + 1 + frame.body.len() + 1);

    out.put_slice(command);
    out.put_u8(b'\n');
    for (name, value) in &frame.headers {
        put_escaped(out, name.as_bytes(), escapes);
        out.put_u8(b':');
        put_escaped(out, value.as_bytes(), escapes);
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
}

/// Appends a heart-beat: a single EOL.
pub fn heartbeat(out: &mut BytesMut) {
    out.put_u8(b'\n');
}

fn needs_escape(b: u8, escapes: Escapes) -> bool {
    match escapes {
        Escapes::None => false,
        Escapes::V1_1 => matches!(b, b'\n' | b':' | b'\\'),
        Escapes::V1_2 => matches!(b, b'\r' | b'\n' | b':' | b'\\'),
    }
}

fn put_escaped(out: &mut BytesMut, text: &[u8], escapes: Escapes) {
    let mut rest = text;
    while let Some(i) = rest.iter().position(|&b| needs_escape(b, escapes)) {
        out.put_slice(&rest[..i]);
        out.put_slice(match rest[i] {
            b'\r' => b"\\r",
            b'\n' => b"\\n",
            b':' => b"\\c",
            _ => b"\\\\",
        });
        rest = &rest[i + 1..];
    }
    out.put_slice(rest);
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
    use crate::stomp::Command;

    fn encoded(frame: &Frame, version: Version) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_for(frame, version, &mut out);
        out.to_vec()
    }

    #[test]
    fn escapes_per_version() {
        let f = Frame::new(Command::Message).header("a:b", "x\r\ny\\z");
        assert_eq!(
            encoded(&f, Version::V1_2),
            b"MESSAGE\na\\cb:x\\r\\ny\\\\z\n\n\0"
        );
        assert_eq!(
            encoded(&f, Version::V1_1),
            b"MESSAGE\na\\cb:x\r\\ny\\\\z\n\n\0"
        );
        assert_eq!(encoded(&f, Version::V1_0), b"MESSAGE\na:b:x\r\ny\\z\n\n\0");
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
    fn decimal_lengths() {
        for n in [0usize, 9, 10, 1234567, usize::MAX] {
            let mut out = BytesMut::new();
            put_decimal(&mut out, n);
            assert_eq!(&out[..], n.to_string().as_bytes());
        }
    }

    #[test]
    fn heartbeat_is_one_newline_and_to_bytes_matches_encode() {
        let mut out = BytesMut::from(&b"x"[..]);
        heartbeat(&mut out);
        assert_eq!(&out[..], b"x\n");
        let f = Frame::new(Command::Receipt).header("receipt-id", "7");
        assert_eq!(f.to_bytes().to_vec(), encoded(&f, Version::V1_2));
    }
}
