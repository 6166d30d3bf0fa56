//! A small STOMP-over-WebSocket client on the shared codec: what the tests drive the
//! server with, and the connection layer of the virtual users.
//!
//! [`StompClient::connect`] opens the WebSocket (offering `v12.stomp`, `v11.stomp`,
//! `v10.stomp`), sends CONNECT and waits for CONNECTED. After that, frames go out with
//! [`StompClient::send_frame`] and come back from [`StompClient::recv`], which answers
//! nothing by itself: heart-beats are the caller's business ([`StompClient::heartbeat`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError, SubProtocolError};
use tokio_tungstenite::tungstenite::handshake::client::{generate_request, Request, Response};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::machine::TryParse;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stomp::{
    encode_for, Command, DecodeError, Decoder, EncodeError, Frame, Item, Version,
    DEFAULT_MAX_FRAME_SIZE,
};

/// What can go wrong on a client connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("WebSocket connection to {url} failed: {source}")]
    Connect {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
    #[error("WebSocket error: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("malformed frame from the server: {0}")]
    Decode(#[from] DecodeError),
    #[error("frame not sent: {0}")]
    Encode(#[from] EncodeError),
    #[error("the server answered CONNECT with {command}: {message}")]
    Refused {
        command: &'static str,
        message: String,
    },
    #[error("the connection closed")]
    Closed,
    #[error("no frame within {0:?}")]
    Timeout(Duration),
}

/// How to CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `accept-version`.
    pub accept_version: String,
    /// `(cx, cy)` in milliseconds, as sent in `heart-beat`.
    pub heartbeat: (u64, u64),
    /// Extra CONNECT headers (login, passcode, host).
    pub headers: Vec<(String, String)>,
    /// WebSocket subprotocols offered; empty offers none.
    pub subprotocols: Vec<String>,
    /// Send binary WebSocket messages instead of text.
    pub binary: bool,
    /// Local address to connect from (`ws://` only): local shards each use their own
    /// loopback address, so their connections do not share one address's ports.
    pub source: Option<std::net::IpAddr>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            accept_version: "1.0,1.1,1.2".into(),
            heartbeat: (0, 0),
            headers: vec![("host".into(), "localhost".into())],
            subprotocols: vec!["v12.stomp".into(), "v11.stomp".into(), "v10.stomp".into()],
            binary: false,
            source: None,
        }
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A TCP connection to `host:port` from address `source`. The port is left for the
/// kernel to choose at connect time (`IP_BIND_ADDRESS_NO_PORT`), so one source address
/// serves up to the ephemeral range per destination, not per machine.
async fn connect_from(
    source: std::net::IpAddr,
    host: &str,
    port: u16,
) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        if addr.is_ipv4() != source.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: a valid socket descriptor and a c_int option of the right size.
            unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        socket.bind(std::net::SocketAddr::new(source, 0))?;
        match socket.connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{host}:{port} has no address of the family of source {source}"),
        )
    }))
}

/// Largest HTTP response head accepted for the opening handshake (a `101` is a few
/// hundred bytes).
const MAX_HANDSHAKE_RESPONSE: usize = 8 * 1024;

/// The client's side of the WebSocket opening handshake (RFC 6455 §4.1) on `stream`;
/// returns the WebSocket and the subprotocol the server chose.
///
/// Done here rather than by tungstenite's client handshake, which reads the response
/// through a 4 KiB buffer that then stays on as the connection's read buffer for its
/// whole life: a cost per idle virtual user. Here the response is read in small pieces
/// and dropped; the connection starts with a [`ws_config`]-sized read buffer (plus any
/// bytes that came after the response). The checks are tungstenite's: status 101,
/// `Upgrade: websocket`, `Connection` holding `upgrade`, the accept key, and a
/// subprotocol that was offered (one must be chosen when any was offered).
async fn handshake(
    mut stream: TcpStream,
    request: Request,
) -> Result<(Ws, Option<String>), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::Error;
    let offered: Option<Vec<String>> = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|p| p.trim().to_string()).collect());
    let (bytes, key) = generate_request(request)?;
    stream.write_all(&bytes).await?;
    let mut head: Vec<u8> = Vec::with_capacity(512);
    let (size, response) = loop {
        let mut piece = [0u8; 512];
        let n = stream.read(&mut piece).await?;
        if n == 0 {
            return Err(Error::Protocol(ProtocolError::HandshakeIncomplete));
        }
        head.extend_from_slice(&piece[..n]);
        if let Some(done) = Response::try_parse(&head)? {
            break done;
        }
        if head.len() > MAX_HANDSHAKE_RESPONSE {
            return Err(Error::Capacity(CapacityError::MessageTooLong {
                size: head.len(),
                max_size: MAX_HANDSHAKE_RESPONSE,
            }));
        }
    };
    let subprotocol = verify_response(&response, &key, offered.as_deref())?;
    let rest = head.split_off(size);
    drop(head);
    let stream = MaybeTlsStream::Plain(stream);
    let ws = if rest.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Client, Some(ws_config())).await
    } else {
        WebSocketStream::from_partially_read(stream, rest, Role::Client, Some(ws_config())).await
    };
    Ok((ws, subprotocol))
}

/// The checks of RFC 6455 §4.1 on the server's response; returns the chosen subprotocol.
fn verify_response(
    response: &Response,
    key: &str,
    offered: Option<&[String]>,
) -> Result<Option<String>, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::Error;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let mut refused = Response::new(None);
        *refused.status_mut() = response.status();
        *refused.headers_mut() = response.headers().clone();
        return Err(Error::Http(Box::new(refused)));
    }
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
    if !header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket")) {
        return Err(Error::Protocol(
            ProtocolError::MissingUpgradeWebSocketHeader,
        ));
    }
    if !header("connection").is_some_and(|v| {
        v.split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Err(Error::Protocol(
            ProtocolError::MissingConnectionUpgradeHeader,
        ));
    }
    if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(Error::Protocol(
            ProtocolError::SecWebSocketAcceptKeyMismatch,
        ));
    }
    let chosen = header("sec-websocket-protocol").map(|v| v.trim().to_string());
    let refuse = |e| {
        Err(Error::Protocol(
            ProtocolError::SecWebSocketSubProtocolError(e),
        ))
    };
    match (&chosen, offered) {
        (None, Some(_)) => refuse(SubProtocolError::NoSubProtocol),
        (Some(_), None) => refuse(SubProtocolError::ServerSentSubProtocolNoneRequested),
        (Some(c), Some(o)) if !o.contains(c) => refuse(SubProtocolError::InvalidSubProtocol),
        _ => Ok(chosen),
    }
}

/// Small socket buffers: tungstenite's defaults (128 KiB each way) would cost a quarter
/// of a gigabyte per 2,000 virtual users. The read buffer is allocated for every session,
/// idle or not (and tungstenite zero-fills its free part before every read), so it
/// holds two chat frames (a 256-byte message arrives as about 450 bytes), not more.
/// Larger frames still work: the buffer grows for them, and they take a read per
/// 1 KiB. (Nagle is off on every connection, so small frames go out at once.)
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 * 1024 * 1024))
}

/// One STOMP session.
pub struct StompClient {
    ws: Ws,
    decoder: Decoder,
    inbuf: BytesMut,
    binary: bool,
    /// Negotiated version.
    pub version: Version,
    /// The CONNECTED frame.
    pub connected: Frame,
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
    /// Heart-beats received so far.
    pub heartbeats: u64,
    /// When the last WebSocket message (a frame, a heart-beat, anything) came in.
    pub last_read: std::time::Instant,
    /// The negotiated server-to-client heart-beat period (ms; 0 for none).
    pub server_beat_ms: u64,
}

/// A server silent for this many heart-beat periods is taken for dead (the tolerance
/// `@stomp/stompjs` applies too).
pub const HEARTBEAT_TOLERANCE: u32 = 2;

impl StompClient {
    /// Opens the WebSocket without sending CONNECT (for tests of raw input).
    pub async fn open(
        url: &str,
        options: &ConnectOptions,
    ) -> Result<(Ws, Option<String>), ClientError> {
        let connect_error = |source| ClientError::Connect {
            url: url.to_string(),
            source,
        };
        let mut request = url.into_client_request().map_err(connect_error)?;
        if !options.subprotocols.is_empty() {
            let offered = options.subprotocols.join(", ");
            if let Ok(value) = HeaderValue::from_str(&offered) {
                request
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
            }
        }
        if request.uri().scheme_str() != Some("ws") {
            return Err(connect_error(
                tokio_tungstenite::tungstenite::error::UrlError::UnsupportedUrlScheme.into(),
            ));
        }
        let host = request
            .uri()
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let stream = match options.source {
            Some(source) => connect_from(source, &host, port).await,
            None => match TcpStream::connect((host.as_str(), port)).await {
                Ok(stream) => stream.set_nodelay(true).map(|()| stream),
                Err(e) => Err(e),
            },
        }
        .map_err(|e| connect_error(e.into()))?;
        handshake(stream, request).await.map_err(connect_error)
    }

    /// Connects and completes the STOMP handshake.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<StompClient, ClientError> {
        let (ws, subprotocol) = Self::open(url, options).await?;
        let mut client = StompClient {
            ws,
            decoder: Decoder::new(DEFAULT_MAX_FRAME_SIZE * 16),
            inbuf: BytesMut::new(),
            binary: options.binary,
            version: Version::V1_2,
            connected: Frame::new(Command::Connected),
            subprotocol,
            heartbeats: 0,
            last_read: std::time::Instant::now(),
            server_beat_ms: 0,
        };
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", options.accept_version.as_str())
            .header(
                "heart-beat",
                format!("{},{}", options.heartbeat.0, options.heartbeat.1),
            );
        for (name, value) in &options.headers {
            connect = connect.header(name.as_str(), value.as_str());
        }
        client.send_frame(&connect).await?;
        let reply = client.recv().await?.ok_or(ClientError::Closed)?;
        if reply.command != Command::Connected {
            let message = reply.get("message").unwrap_or("").to_string();
            return Err(ClientError::Refused {
                command: reply.command.as_str(),
                message,
            });
        }
        client.version = reply
            .get("version")
            .and_then(Version::parse)
            .unwrap_or(Version::V1_0);
        client.decoder.set_version(client.version);
        let server_can_send = reply
            .get("heart-beat")
            .and_then(crate::stomp::parse_heart_beat)
            .map_or(0, |(sx, _)| sx);
        client.server_beat_ms =
            crate::stomp::heart_beat_period(server_can_send, options.heartbeat.1);
        client.connected = reply;
        Ok(client)
    }

    /// How long nothing has come from a server that promised heart-beats, once that is
    /// longer than [`HEARTBEAT_TOLERANCE`] periods: the connection is dead even if the
    /// socket is still open (a cut network, a frozen server). `None` while it is alive
    /// or when no heart-beats were negotiated.
    pub fn server_silent(&self) -> Option<Duration> {
        if self.server_beat_ms == 0 {
            return None;
        }
        let silent = self.last_read.elapsed();
        (silent > Duration::from_millis(self.server_beat_ms) * HEARTBEAT_TOLERANCE)
            .then_some(silent)
    }

    /// Sends raw bytes as one WebSocket message (tests use this for malformed input).
    pub async fn send_raw(&mut self, bytes: impl Into<Bytes>) -> Result<(), ClientError> {
        let bytes = bytes.into();
        let message = match (self.binary, Utf8Bytes::try_from(bytes.clone())) {
            (false, Ok(text)) => Message::Text(text),
            _ => Message::Binary(bytes),
        };
        self.ws.send(message).await?;
        Ok(())
    }

    pub async fn send_frame(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let mut out = BytesMut::with_capacity(128 + frame.body.len());
        encode_for(frame, self.version, &mut out)?;
        self.send_raw(out.freeze()).await
    }

    /// SEND to `destination`, optionally asking for a receipt.
    pub async fn send(
        &mut self,
        destination: &str,
        body: impl Into<Bytes>,
        receipt: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut frame = Frame::new(Command::Send)
            .header("destination", destination)
            .header("content-type", "application/json");
        if let Some(receipt) = receipt {
            frame = frame.header("receipt", receipt);
        }
        self.send_frame(&frame.with_body(body.into())).await
    }

    pub async fn subscribe(&mut self, id: &str, destination: &str) -> Result<(), ClientError> {
        let frame = Frame::new(Command::Subscribe)
            .header("id", id)
            .header("destination", destination)
            .header("ack", "auto");
        self.send_frame(&frame).await
    }

    /// Sends one heart-beat EOL.
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        self.send_raw(Bytes::from_static(b"\n")).await
    }

    /// The next frame (heart-beats skipped); `None` once the server closed the connection.
    /// Frames decode one per call from what has arrived; only the WebSocket read waits,
    /// so dropping the call (a `select!` taking another branch) loses nothing.
    pub async fn recv(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            while let Some(item) = self.decoder.decode(&mut self.inbuf)? {
                match item {
                    Item::Frame(frame) => {
                        self.release_input();
                        return Ok(Some(frame));
                    }
                    Item::HeartBeat => self.heartbeats += 1,
                }
            }
            self.release_input();
            let message = self.ws.next().await;
            self.last_read = std::time::Instant::now();
            match message {
                Some(Ok(Message::Text(text))) => self.inbuf.extend_from_slice(text.as_bytes()),
                Some(Ok(Message::Binary(data))) => self.inbuf.extend_from_slice(&data),
                Some(Ok(Message::Close(_))) | None => return Ok(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Gives the input buffer's memory back once everything in it is decoded: an idle
    /// session holds none (the next message allocates what it needs; the frames handed
    /// out keep their own bytes). A drained buffer can have no room left and still share
    /// the last message's allocation, so it is replaced whenever it is empty
    /// (`BytesMut::new` allocates nothing).
    fn release_input(&mut self) {
        if self.inbuf.is_empty() {
            self.inbuf = BytesMut::new();
        }
    }

    /// [`recv`](Self::recv) with a deadline.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Frame>, ClientError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Sends DISCONNECT with a receipt and waits for it.
    pub async fn disconnect(mut self) -> Result<(), ClientError> {
        let frame = Frame::new(Command::Disconnect).header("receipt", "bye");
        self.send_frame(&frame).await?;
        while let Some(frame) = self.recv().await? {
            if frame.command == Command::Receipt && frame.get("receipt-id") == Some("bye") {
                break;
            }
        }
        let _ = self.ws.close(None).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers CONNECT with `heart-beat: <beat>,0`, then sends `then` (raw
    /// STOMP bytes) and stays silent with the connection open.
    async fn silent_server(beat: &'static str, then: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let _connect = ws.next().await;
            let connected = format!("CONNECTED\nversion:1.2\nheart-beat:{beat},0\n\n\0");
            ws.send(Message::text(connected)).await.unwrap();
            if !then.is_empty() {
                ws.send(Message::text(then)).await.unwrap();
            }
            // Holds the socket open and says nothing more until the client goes.
            while ws.next().await.is_some() {}
        });
        format!("ws://{addr}/ws")
    }

    fn options(wanted_ms: u64) -> ConnectOptions {
        ConnectOptions {
            heartbeat: (0, wanted_ms),
            // This bare server answers no subprotocol.
            subprotocols: Vec::new(),
            ..ConnectOptions::default()
        }
    }

    #[tokio::test]
    async fn a_server_silent_past_twice_its_heart_beat_is_taken_for_dead() {
        let url = silent_server("100", "\nMESSAGE\ndestination:/x\n\nhi\0").await;
        let mut c = StompClient::connect(&url, &options(300)).await.unwrap();
        // Negotiated: the larger of what the server can send and what we want.
        assert_eq!(c.server_beat_ms, 300);
        assert_eq!(c.server_silent(), None, "just connected");
        let before = c.last_read;
        let f = c.recv().await.unwrap().unwrap();
        assert_eq!(f.command, Command::Message);
        assert_eq!(c.heartbeats, 1);
        assert!(c.last_read >= before, "reading moves the last-read time");
        // Nothing for 0.5 s is within 2 × 300 ms; 0.7 s is not.
        c.last_read = std::time::Instant::now() - Duration::from_millis(500);
        assert_eq!(c.server_silent(), None);
        c.last_read = std::time::Instant::now() - Duration::from_millis(700);
        let silent = c.server_silent().expect("taken for dead");
        assert!(silent >= Duration::from_millis(700));
    }

    /// A server that reads the upgrade request and answers with `answer(key)` raw bytes
    /// (its HTTP response, and whatever follows it), then keeps the connection open.
    async fn raw_server(answer: fn(&str) -> Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if tcp.read(&mut byte).await.unwrap() == 0 {
                    return;
                }
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .expect("a key")
                .trim()
                .to_string();
            tcp.write_all(&answer(&key)).await.unwrap();
            let mut rest = [0u8; 256];
            while tcp.read(&mut rest).await.is_ok_and(|n| n > 0) {}
        });
        format!("ws://{addr}/ws")
    }

    fn switching(key: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
            derive_accept_key(key.as_bytes())
        )
    }

    #[tokio::test]
    async fn the_handshake_keeps_what_follows_the_response_and_checks_the_server() {
        // The response and a first WebSocket text frame in one write: the frame is kept.
        let url = raw_server(|key| {
            let mut out = switching(key, "Sec-WebSocket-Protocol: v12.stomp\r\n").into_bytes();
            out.extend_from_slice(&[0x81, 2, b'h', b'i']);
            out
        })
        .await;
        let (mut ws, subprotocol) = StompClient::open(&url, &ConnectOptions::default())
            .await
            .unwrap();
        assert_eq!(subprotocol.as_deref(), Some("v12.stomp"));
        match ws.next().await {
            Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "hi"),
            other => panic!("{other:?}"),
        }

        let refused = |url: String, options: ConnectOptions| async move {
            match StompClient::open(&url, &options).await {
                Err(ClientError::Connect { source, .. }) => source.to_string(),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("{url}: the handshake must fail"),
            }
        };
        let bare = || ConnectOptions {
            subprotocols: Vec::new(),
            ..ConnectOptions::default()
        };
        // Not 101: the status is named.
        let url =
            raw_server(|_| b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        assert!(refused(url, bare()).await.contains("404"));
        // A wrong accept key.
        let url = raw_server(|_| switching("not the key", "").into_bytes()).await;
        let e = refused(url, bare()).await;
        assert!(e.to_lowercase().contains("accept"), "{e}");
        // A subprotocol that was not offered, and none when some were.
        let url =
            raw_server(|key| switching(key, "Sec-WebSocket-Protocol: mqtt\r\n").into_bytes()).await;
        let e = refused(url, ConnectOptions::default()).await;
        assert!(e.to_lowercase().contains("subprotocol"), "{e}");
        let url = raw_server(|key| switching(key, "").into_bytes()).await;
        let e = refused(url, ConnectOptions::default()).await;
        assert!(e.to_lowercase().contains("subprotocol"), "{e}");
        // A head that never ends is refused at its limit, not read for ever.
        let url = raw_server(|_| {
            let mut out = b"HTTP/1.1 101 Switching Protocols\r\nX-Padding: ".to_vec();
            out.resize(MAX_HANDSHAKE_RESPONSE + 600, b'a');
            out
        })
        .await;
        let e = refused(url, bare()).await;
        assert!(e.contains(&MAX_HANDSHAKE_RESPONSE.to_string()), "{e}");
    }

    #[tokio::test]
    async fn without_heart_beats_silence_is_no_sign_of_death() {
        // The server offers none, or we asked for none.
        let url = silent_server("0", "").await;
        let mut c = StompClient::connect(&url, &options(300)).await.unwrap();
        assert_eq!(c.server_beat_ms, 0);
        c.last_read = std::time::Instant::now() - Duration::from_secs(3600);
        assert_eq!(c.server_silent(), None);
        let url = silent_server("100", "").await;
        let mut c = StompClient::connect(&url, &options(0)).await.unwrap();
        assert_eq!(c.server_beat_ms, 0);
        c.last_read = std::time::Instant::now() - Duration::from_secs(3600);
        assert_eq!(c.server_silent(), None);
    }
}
