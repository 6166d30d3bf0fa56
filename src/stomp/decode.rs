//! Streaming STOMP decoder: bytes received so far in, whole items out.
//!
//! The caller appends each WebSocket message to one `BytesMut` and calls
//! [`Decoder::decode`] until it returns `Ok(None)`. A message may hold several frames,
//! a lone heart-beat EOL, or half a frame, so decoding runs in two steps:
//!
//! 1. **Check** ([`Decoder::check`]) walks the buffered bytes, without allocating, to
//!    find where the frame's headers end and where its NUL terminator is. Progress is
//!    remembered between calls, down to the byte inside an unfinished line, so a frame
//!    trickling in byte by byte is scanned once, not once per byte. The size limit is
//!    enforced here, before anything is built, and no search looks past it.
//! 2. **Parse** ([`Decoder::parse`]) runs only on a complete frame: it builds the
//!    headers (unescaping them per the negotiated version), then splits the frame off
//!    the buffer; the body is a zero-copy slice of it.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{Command, Frame, Item, Version};
use super::headers::Headers;

/// Why a byte stream is not valid STOMP. Any of these is fatal to the connection.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "unknown STOMP command {0:?}; expected CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, \
         ACK, NACK, BEGIN, COMMIT, ABORT, DISCONNECT, CONNECTED, MESSAGE, RECEIPT or ERROR \
         in upper case (is the peer speaking STOMP?)"
    )]
    UnknownCommand(String),

    #[error(
        "STOMP frame of at least {size} bytes exceeds the {limit}-byte limit; send smaller \
         frames or raise the maximum frame size"
    )]
    FrameTooLarge { limit: usize, size: usize },

    #[error(
        "header {header:?} contains the undefined escape {sequence:?}; STOMP {version} \
         allows only {allowed} (write a literal backslash as \\\\)"
    )]
    UnknownEscape {
        header: String,
        sequence: String,
        version: Version,
        allowed: &'static str,
    },

    #[error("header line {0:?} has no ':' between name and value")]
    MalformedHeader(String),

    #[error("content-length {0:?} is not a decimal byte count")]
    InvalidContentLength(String),

    #[error(
        "the {content_length}-byte body given by content-length is followed by {found:#04x}, \
         not the NUL that ends a frame; the sender's content-length is wrong"
    )]
    MissingNul { content_length: usize, found: u8 },

    #[error("header line {0:?} is not valid UTF-8; header names and values must be UTF-8")]
    InvalidUtf8(String),
}

/// Longest input excerpt quoted in an error message.
const QUOTE_LIMIT: usize = 80;

/// Input bytes as text for an error message: lossy UTF-8, cut at [`QUOTE_LIMIT`] chars.
fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.into_owned(),
    }
}

/// Progress of the check step through the frame at the front of the buffer. Offsets
/// count from the start of the buffer, which stays put until the frame is consumed.
///
/// Every search resumes where the previous call stopped (`eol_from`, `nul_from`), so
/// however the frame is chunked each byte is searched once: a long line arriving one
/// byte per WebSocket message costs as much as the same line arriving whole.
#[derive(Debug, Default, Clone)]
struct Scan {
    /// Start of the first line not yet complete.
    next_line: usize,
    /// Where the search for the LF ending the line at `next_line` resumes.
    eol_from: usize,
    /// Set once the command line is complete and known.
    command: Option<Command>,
    /// Value of the first `content-length` header seen so far.
    content_length: Option<usize>,
    /// Offset of the body, once the blank line after the headers has been seen.
    body_start: Option<usize>,
    /// Where the search for the NUL ending a body without content-length resumes.
    nul_from: usize,
    /// Header lines seen so far.
    header_lines: usize,
}

impl Scan {
    fn is_fresh(&self) -> bool {
        self.next_line == 0
    }

    /// The furthest offset this scan has relied on.
    fn high_water(&self) -> usize {
        self.eol_from.max(self.nul_from)
    }
}

/// Where a complete frame lies in the buffer.
struct Bounds {
    command: Command,
    body_start: usize,
    /// Offset of the terminating NUL; the body is `body_start..nul`.
    nul: usize,
    header_lines: usize,
}

/// Which header escapes a frame uses (STOMP 1.1 added `\n \c \\`, 1.2 added `\r`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escapes {
    None,
    V1_1,
    V1_2,
}

impl Escapes {
    pub(crate) fn for_frame(command: Command, version: Version) -> Escapes {
        if !command.escapes_headers() {
            return Escapes::None;
        }
        match version {
            Version::V1_0 => Escapes::None,
            Version::V1_1 => Escapes::V1_1,
            Version::V1_2 => Escapes::V1_2,
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            Escapes::V1_2 => "\\r \\n \\c \\\\",
            _ => "\\n \\c \\\\",
        }
    }
}

/// Streaming decoder for one connection. See the module docs for how it is driven.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame_size: usize,
    version: Version,
    scan: Scan,
    /// Bytes examined so far, for tests of the cost of hostile chunking.
    scanned: u64,
}

impl Decoder {
    /// A decoder for STOMP 1.2 that rejects frames (command, headers and body
    /// together) larger than `max_frame_size` bytes.
    pub fn new(max_frame_size: usize) -> Decoder {
        Decoder {
            max_frame_size,
            version: Version::V1_2,
            scan: Scan::default(),
            scanned: 0,
        }
    }

    /// Sets the negotiated version, which decides how header values are unescaped:
    /// 1.0 not at all, 1.1 `\n \c \\`, 1.2 also `\r`.
    pub fn set_version(&mut self, v: Version) {
        self.version = v;
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Bytes this decoder has examined since it was made: each byte searched for an
    /// EOL or NUL, plus each header byte parsed. Stays within a small multiple of the
    /// bytes decoded, however they were chunked; tests, benches and fuzz targets check
    /// that, as it does not depend on the speed of the machine.
    #[doc(hidden)]
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    /// Takes the next item off the front of `buf`, which holds all bytes received so
    /// far (append each WebSocket message to it). Returns `Ok(None)` when no complete
    /// item is buffered yet, leaving `buf` as it was; otherwise consumes exactly the
    /// bytes of the returned item. After an error the stream cannot be resynchronised
    /// and the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, DecodeError> {
        if buf.len() < self.scan.high_water() {
            // Not the buffer we were scanning (the caller cleared it): start over.
            self.scan = Scan::default();
        }
        if self.scan.is_fresh() {
            match buf.first() {
                None => return Ok(None),
                Some(b'\n') => {
                    buf.advance(1);
                    return Ok(Some(Item::HeartBeat));
                }
                Some(b'\r') => match buf.get(1) {
                    None => return Ok(None),
                    Some(b'\n') => {
                        buf.advance(2);
                        return Ok(Some(Item::HeartBeat));
                    }
                    // A command line starting with CR; the check reports it.
                    Some(_) => {}
                },
                Some(_) => {}
            }
        }
        let Some(bounds) = self.check(buf)? else {
            return Ok(None);
        };
        self.scan = Scan::default();
        let frame = self.parse(buf, bounds)?;
        Ok(Some(Item::Frame(frame)))
    }

    /// Step 1: finds a complete frame at the front of `buf` without allocating. No
    /// search looks past the size limit, so a flood without EOL or NUL costs at most
    /// `max_frame_size` bytes of searching before it is refused.
    fn check(&mut self, buf: &[u8]) -> Result<Option<Bounds>, DecodeError> {
        let limit = self.max_frame_size;
        let too_large = |size: usize| DecodeError::FrameTooLarge { limit, size };
        // Searches stop at the limit: a frame not finished within it is refused anyway.
        let end = buf.len().min(limit);

        // Command line, then header lines, up to the blank line.
        let body_start = loop {
            if let Some(start) = self.scan.body_start {
                break start;
            }
            let from = self.scan.eol_from.max(self.scan.next_line);
            let Some(eol) = self.search(b'\n', buf, from, end) else {
                self.scan.eol_from = end.max(from);
                // The frame needs at least one more byte than is buffered.
                return if buf.len() >= limit {
                    Err(too_large(limit + 1))
                } else {
                    Ok(None)
                };
            };
            let start = self.scan.next_line;
            let line = strip_cr(&buf[start..eol]);
            self.scan.next_line = eol + 1;
            self.scan.eol_from = eol + 1;
            if self.scan.next_line >= limit {
                // Headers alone fill the limit; the NUL is still to come.
                return Err(too_large(self.scan.next_line + 1));
            }
            if self.scan.command.is_none() {
                let command = Command::from_bytes(line)
                    .ok_or_else(|| DecodeError::UnknownCommand(quote(line)))?;
                self.scan.command = Some(command);
            } else if line.is_empty() {
                self.scan.body_start = Some(eol + 1);
                self.scan.nul_from = eol + 1;
            } else {
                self.scan.header_lines += 1;
                if self.scan.content_length.is_none() {
                    if let Some(value) = line.strip_prefix(b"content-length:") {
                        self.scan.content_length = Some(parse_content_length(value)?);
                    }
                }
            }
        };
        let Some(command) = self.scan.command else {
            // Unreachable: the body starts only after a command line was accepted.
            return Ok(None);
        };

        // Body, up to and including the NUL.
        let nul = match self.scan.content_length {
            Some(len) => {
                let nul = body_start
                    .checked_add(len)
                    .ok_or_else(|| too_large(usize::MAX))?;
                if nul >= limit {
                    return Err(too_large(nul.saturating_add(1)));
                }
                match buf.get(nul) {
                    None => return Ok(None),
                    Some(0) => nul,
                    Some(&found) => {
                        return Err(DecodeError::MissingNul {
                            content_length: len,
                            found,
                        })
                    }
                }
            }
            None => {
                let from = self.scan.nul_from;
                match self.search(0, buf, from, end) {
                    Some(nul) => nul,
                    None => {
                        self.scan.nul_from = end.max(from);
                        if buf.len() >= limit {
                            return Err(too_large(limit + 1));
                        }
                        return Ok(None);
                    }
                }
            }
        };
        if nul >= limit {
            return Err(too_large(nul + 1));
        }
        Ok(Some(Bounds {
            command,
            body_start,
            nul,
            header_lines: self.scan.header_lines,
        }))
    }

    /// The offset of the first `needle` in `buf[from..end]`, counting the bytes examined.
    fn search(&mut self, needle: u8, buf: &[u8], from: usize, end: usize) -> Option<usize> {
        if from >= end {
            return None;
        }
        let found = find(needle, &buf[from..end]);
        self.scanned += found.map_or(end - from, |i| i + 1) as u64;
        found.map(|i| from + i)
    }

    /// Step 2: builds the frame found by [`Decoder::check`] and consumes its bytes.
    fn parse(&mut self, buf: &mut BytesMut, bounds: Bounds) -> Result<Frame, DecodeError> {
        let escapes = Escapes::for_frame(bounds.command, self.version);
        let head = &buf[..bounds.body_start];
        self.scanned += head.len() as u64;
        // The head is checked as UTF-8 once; its lines and their parts are then cut at
        // ASCII bytes, so every piece is text without checking it again.
        if let Err(e) = std::str::from_utf8(head) {
            {
                let at = e.valid_up_to();
                let start = head[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = find(b'\n', &head[at..]).map_or(head.len(), |i| at + i);
                return Err(DecodeError::InvalidUtf8(quote(strip_cr(&head[start..end]))));
            }
        }
        let frame: Bytes = buf.split_to(bounds.nul + 1).freeze();
        // SAFETY: these are the bytes checked as UTF-8 just above, moved, not changed.
        let head = unsafe { std::str::from_utf8_unchecked(&frame[..bounds.body_start]) };
        // Names and values point into the frame's own bytes; only a value with escapes
        // is unescaped into a copy. One line is one header after the command line.
        let mut headers = Headers::over(frame.slice(..bounds.body_start), bounds.header_lines);
        // One search of the whole head for escapes, not one per name and value.
        let escaped = escapes != Escapes::None && find(b'\\', head.as_bytes()).is_some();
        let mut at = match find(b'\n', head.as_bytes()) {
            Some(eol) => eol + 1,
            None => head.len(),
        };
        let mut unescaped = String::new();
        while at < head.len() {
            let eol = find(b'\n', &head.as_bytes()[at..]).map_or(head.len(), |i| at + i);
            let line = &head[at..eol];
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let colon = find(b':', line.as_bytes())
                .ok_or_else(|| DecodeError::MalformedHeader(quote(line.as_bytes())))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if escaped && find(b'\\', name.as_bytes()).is_some() {
                // A name with escapes: rare enough to take the general path for it.
                let unescaped_name = header_text(name, escapes, name)?;
                let value = header_text(value, escapes, name)?;
                headers.push(&unescaped_name, &value);
            } else {
                let name_at = at..at + colon;
                let value_at = at + colon + 1..at + line.len();
                if escaped && find(b'\\', value.as_bytes()).is_some() {
                    unescaped.clear();
                    unescape_into(&mut unescaped, value, escapes, name)?;
                    headers.push_received(name_at, Err(&unescaped));
                } else {
                    headers.push_received(name_at, Ok(value_at));
                }
            }
            at = eol + 1;
        }
        Ok(Frame {
            command: bounds.command,
            headers,
            body: frame.slice(bounds.body_start..bounds.nul),
        })
    }
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(super::DEFAULT_MAX_FRAME_SIZE)
    }
}

fn find(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn parse_content_length(value: &[u8]) -> Result<usize, DecodeError> {
    let invalid = || DecodeError::InvalidContentLength(quote(value));
    if value.is_empty() {
        return Err(invalid());
    }
    value.iter().try_fold(0usize, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(b - b'0')))
            .ok_or_else(invalid)
    })
}

/// One header name or value, unescaped according to `escapes`; `name` is the raw header
/// name, quoted in errors.
fn header_text(text: &str, escapes: Escapes, name: &str) -> Result<String, DecodeError> {
    let mut out = String::with_capacity(text.len());
    unescape_into(&mut out, text, escapes, name)?;
    Ok(out)
}

/// Appends `text` to `out`, unescaped according to `escapes`.
fn unescape_into(
    out: &mut String,
    text: &str,
    escapes: Escapes,
    name: &str,
) -> Result<(), DecodeError> {
    if escapes == Escapes::None {
        out.push_str(text);
        return Ok(());
    }
    let mut rest = text;
    while let Some(i) = find(b'\\', rest.as_bytes()) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let decoded = match after.chars().next() {
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            Some('r') if escapes == Escapes::V1_2 => '\r',
            other => {
                return Err(DecodeError::UnknownEscape {
                    header: quote(name.as_bytes()),
                    sequence: other.map_or_else(|| "\\".to_owned(), |c| format!("\\{c}")),
                    version: match escapes {
                        Escapes::V1_1 => Version::V1_1,
                        _ => Version::V1_2,
                    },
                    allowed: escapes.allowed(),
                })
            }
        };
        out.push(decoded);
        // Every accepted escape letter is one ASCII byte.
        rest = &after[1..];
    }
    out.push_str(rest);
    Ok(())
}
