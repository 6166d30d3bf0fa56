//! The STOMP frame model shared by the server and the virtual users.
//!
//! Bytes from the wire become a [`Frame`] in [`super::decode`], and a [`Frame`] becomes
//! bytes again in [`super::encode`]; in between, both sides only ever handle the
//! values defined here. Header names and values are kept unescaped, in wire order, so
//! repeated headers survive a round trip and [`Frame::get`] can apply the spec rule
//! that the first occurrence wins.

use std::fmt;

use bytes::Bytes;

use super::headers::Headers;

/// A STOMP command: the first line of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    // Client frames.
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    // Server frames.
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// Every command, client frames first.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Connected,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command as it appears on the wire, e.g. `"CONNECT"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command line (without its EOL). Commands are case-sensitive.
    pub fn parse(s: &str) -> Option<Command> {
        Command::from_bytes(s.as_bytes())
    }

    pub(crate) fn from_bytes(line: &[u8]) -> Option<Command> {
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.as_str().as_bytes() == line)
    }

    /// CONNECT and CONNECTED headers are never escaped, so that a 1.0 peer can still
    /// read them before a version has been negotiated (STOMP 1.2, "Value Encoding").
    pub fn escapes_headers(&self) -> bool {
        !matches!(self, Command::Connect | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP protocol version. Ordered oldest first, so the highest common version of
/// two peers is a `max` over the intersection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Version {
    V1_0,
    V1_1,
    #[default]
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` and `version` headers, e.g. `"1.2"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `"1.0"`, `"1.1"` or `"1.2"`.
    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.iter().copied().find(|v| v.as_str() == s)
    }

    /// The WebSocket subprotocol name for this version, e.g. `"v12.stomp"`.
    pub fn subprotocol(&self) -> &'static str {
        match self {
            Version::V1_0 => "v10.stomp",
            Version::V1_1 => "v11.stomp",
            Version::V1_2 => "v12.stomp",
        }
    }

    /// Parses a WebSocket subprotocol name such as `"v12.stomp"`.
    pub fn from_subprotocol(s: &str) -> Option<Version> {
        Version::ALL.iter().copied().find(|v| v.subprotocol() == s)
    }

    /// The highest version in a comma-separated `accept-version` header value that
    /// is also at most `ours`; `None` if the lists share no version. Unknown entries
    /// (a future "1.3") are skipped rather than rejected.
    pub fn negotiate(accept_version: &str, ours: Version) -> Option<Version> {
        accept_version
            .split(',')
            .filter_map(|v| Version::parse(v.trim()))
            .filter(|v| *v <= ours)
            .max()
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One STOMP frame: a command, its headers in wire order (unescaped), and a raw body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub headers: Headers,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Appends a header (builder style). Repeating a name keeps both entries; readers
    /// see the first.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Frame {
        self.headers.push(name.as_ref(), value.as_ref());
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The value of the first header called `name` (names are case-sensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The frame encoded for STOMP 1.2, as [`super::encode`] writes it (and, like it,
    /// panicking on a frame STOMP 1.2 cannot carry; see [`super::encode_for`]).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = bytes::BytesMut::new();
        super::encode(self, &mut out);
        out.freeze()
    }
}

/// What the decoder yields: a frame, or a heart-beat (a lone EOL between frames).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    HeartBeat,
}

/// Parses a `heart-beat` header value `"cx,cy"` into `(cx, cy)` in milliseconds.
/// Spaces around either number are tolerated; anything else gives `None`.
pub fn parse_heart_beat(value: &str) -> Option<(u64, u64)> {
    let (cx, cy) = value.split_once(',')?;
    let num = |s: &str| {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse::<u64>().ok()
    };
    Some((num(cx)?, num(cy)?))
}

/// The heart-beat period in one direction, in milliseconds, from what the sender
/// offers (its `cx`, or the server's `sx`) and what the receiver asks for (its `cy`
/// or `sy`). `0` means no heart-beats flow that way (STOMP 1.2, "Heart-beating").
pub fn heart_beat_period(sender_can_send: u64, receiver_wants: u64) -> u64 {
    if sender_can_send == 0 || receiver_wants == 0 {
        0
    } else {
        sender_can_send.max(receiver_wants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_names_round_trip_and_are_case_sensitive() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str()), Some(c));
            assert_eq!(Command::parse(&c.as_str().to_lowercase()), None);
        }
        assert_eq!(Command::Connect.as_str(), "CONNECT");
        assert_eq!(Command::parse("SEND "), None);
    }

    #[test]
    fn versions_are_ordered_and_named() {
        assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
        assert_eq!(Version::default(), Version::V1_2);
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
            assert_eq!(Version::from_subprotocol(v.subprotocol()), Some(v));
        }
        assert_eq!(Version::V1_2.subprotocol(), "v12.stomp");
        assert_eq!(Version::parse("1.3"), None);
    }

    #[test]
    fn negotiate_picks_the_highest_common_version() {
        assert_eq!(
            Version::negotiate("1.0,1.1,1.2", Version::V1_2),
            Some(Version::V1_2)
        );
        assert_eq!(
            Version::negotiate("1.2, 1.1", Version::V1_1),
            Some(Version::V1_1)
        );
        assert_eq!(
            Version::negotiate("1.3,1.0", Version::V1_2),
            Some(Version::V1_0)
        );
        assert_eq!(Version::negotiate("2.0", Version::V1_2), None);
    }

    #[test]
    fn first_header_wins_and_builder_appends() {
        let f = Frame::new(Command::Message)
            .header("foo", "World")
            .header("foo", "Hello")
            .with_body("x");
        assert_eq!(f.get("foo"), Some("World"));
        assert_eq!(f.headers.len(), 2);
        assert_eq!(f.get("Foo"), None);
        assert_eq!(&f.body[..], b"x");
    }

    #[test]
    fn heart_beat_values() {
        assert_eq!(parse_heart_beat("0,0"), Some((0, 0)));
        assert_eq!(parse_heart_beat("10000, 5000"), Some((10000, 5000)));
        assert_eq!(parse_heart_beat("10000"), None);
        assert_eq!(parse_heart_beat("-1,0"), None);
        assert_eq!(parse_heart_beat("+1,0"), None);
        assert_eq!(parse_heart_beat("1,2,3"), None);
        assert_eq!(heart_beat_period(0, 500), 0);
        assert_eq!(heart_beat_period(1000, 0), 0);
        assert_eq!(heart_beat_period(1000, 2500), 2500);
    }
}
