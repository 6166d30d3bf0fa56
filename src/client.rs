//! A small STOMP-over-WebSocket client on the shared codec: what the tests drive the
//! server with, and the connection layer of the virtual users.
//!
//! [`StompClient::connect`] opens the WebSocket (offering `v12.stomp`, `v11.stomp`,
//! `v10.stomp`), sends CONNECT and waits for CONNECTED. After that, frames go out with
//! [`StompClient::send_frame`] and come back from [`StompClient::recv`], which answers
//! nothing by itself: heart-beats are the caller's business ([`StompClient::heartbeat`]).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
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

/// Small socket buffers: tungstenite's defaults (128 KiB each way) would cost a quarter
/// of a gigabyte per 2,000 virtual users. The read buffer is allocated for every session,
/// idle or not, so it holds a few chat frames (a 256-byte message arrives as about 450
/// bytes), not more. Frames larger than the buffer still work; the buffer grows for
/// them, and they take a read per 2 KiB. (`connect_async_with_config(.., true)` also
/// disables Nagle, so small frames go out at once.)
fn ws_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(16 * 1024 * 1024))
}

/// One STOMP session.
pub struct StompClient {
    ws: Ws,
    decoder: Decoder,
    inbuf: BytesMut,
    ready: VecDeque<Frame>,
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
        let (ws, response) = match options.source {
            Some(source) if request.uri().scheme_str() == Some("ws") => {
                let host = request.uri().host().unwrap_or("localhost").to_string();
                let port = request.uri().port_u16().unwrap_or(80);
                let stream =
                    connect_from(source, &host, port)
                        .await
                        .map_err(|e| ClientError::Connect {
                            url: url.to_string(),
                            source: tokio_tungstenite::tungstenite::Error::Io(e),
                        })?;
                tokio_tungstenite::client_async_with_config(
                    request,
                    MaybeTlsStream::Plain(stream),
                    Some(ws_config()),
                )
                .await
                .map_err(connect_error)?
            }
            _ => tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true)
                .await
                .map_err(connect_error)?,
        };
        let subprotocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok((ws, subprotocol))
    }

    /// Connects and completes the STOMP handshake.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<StompClient, ClientError> {
        let (ws, subprotocol) = Self::open(url, options).await?;
        let mut client = StompClient {
            ws,
            decoder: Decoder::new(DEFAULT_MAX_FRAME_SIZE * 16),
            inbuf: BytesMut::new(),
            ready: VecDeque::new(),
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
    pub async fn recv(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            loop {
                match self.decoder.decode(&mut self.inbuf)? {
                    Some(Item::Frame(frame)) => self.ready.push_back(frame),
                    Some(Item::HeartBeat) => self.heartbeats += 1,
                    None => break,
                }
            }
            if !self.ready.is_empty() {
                continue;
            }
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
