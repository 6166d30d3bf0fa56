//! A WebSocket relay that misbehaves on purpose, so tests can prove the harness reports
//! exactly what happened on the wire.
//!
//! It listens on `127.0.0.1:0` and, per client, opens one connection to a fixed upstream
//! URL, then pumps WebSocket messages both ways:
//!
//! ```text
//! client ──read──▶ [c2s queue] ──write at t+delay──▶ upstream      (bytes as-is)
//! client ◀─write at t+delay── [s2c queue] ◀──filter◀──read── upstream
//! ```
//!
//! - **Handshake.** The client's HTTP request head is read first and its
//!   `Sec-WebSocket-Protocol` offer forwarded upstream; only then is the client answered,
//!   with the upstream's choice (or the upstream's refusal status, or 502).
//! - **Filter (server→client only).** Each message goes through the crate's STOMP
//!   [`Decoder`]; each decoded item (frame or heart-beat EOL) is forwarded as its exact
//!   wire bytes, so other frames and heart-beats pass through unchanged. MESSAGE frames
//!   are numbered across all connections (`messages_seen`): the n-th is dropped if
//!   `drop_every` divides n, else sent twice if `duplicate_every` divides n. **Dropping
//!   wins** when both do; `Some(0)` disables a rule. The items of one WebSocket message
//!   leave as one message; half a frame waits for its rest. Should the stream stop
//!   being STOMP, the rest of the connection is forwarded raw.
//! - **Delay.** A reader stamps each message with a release time (receipt + `delay`);
//!   the writer sleeps until then and sends. Order is kept per direction and delays
//!   overlap rather than add up. Both sockets set `TCP_NODELAY`, so Nagle adds nothing.
//! - **Rate cap (server→client MESSAGE frames).** With `message_rate`, one pacer shared
//!   by every connection lets MESSAGE frames out at that many per second in total: a
//!   writer holding a message of k MESSAGE frames takes the next free slot and the k
//!   following ones are reserved after it. Nothing is dropped; excess waits in the queue
//!   and then backs up into the upstream's socket, like a server that cannot push any
//!   faster. Other frames and heart-beats are not paced.
//! - **Closing.** A Close (or a read error) queues behind the data and is delivered to
//!   the other side; once a Close went out, the connection ends after `CLOSE_LINGER`
//!   at most. [`Relay::stop`] cancels every loop. Ping and Pong are answered per hop.
//! - **Network faults, at run time.** [`Relay::control`] is a switch shared by every
//!   connection; [`NetControl::set`] applies a [`NetFault`] while they are live (details
//!   in [`relay_net`](super::relay_net)). `Delay(d)` adds `d` to the release time of each
//!   message read while it is set; `Drop` makes the readers discard data messages
//!   (counted in `fault_dropped_messages`, their MESSAGE frames in `fault_dropped_frames`)
//!   but not Close; `Partition` holds each writer before its next send, messages already
//!   queued included, until lifted, when everything goes out in order (the longest hold
//!   is `held_max_ms`). While it holds, the bounded queues fill and the readers stop, so
//!   the rest waits in TCP; Ping answering goes on per hop while a reader still reads.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncReadExt, Chain, Join};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{
    header::SEC_WEBSOCKET_PROTOCOL, HeaderValue, StatusCode,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use super::relay_net::{NetControl, NetFault};
use crate::stomp::{Command, Decoder, Item, Version, DEFAULT_MAX_FRAME_SIZE};

/// Messages buffered per direction before the reader waits for the writer.
pub(super) const QUEUE: usize = 1024;
/// Longest HTTP request head accepted from a client.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Time allowed for both handshakes together.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection lives after a Close went out in either direction.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// What the relay connects to and how it tampers with the traffic. The default
/// forwards everything untouched and at once.
#[derive(Debug, Clone, Default)]
pub struct RelayConfig {
    /// Upstream WebSocket URL, e.g. `ws://127.0.0.1:8080/ws-stomp`.
    pub upstream: String,
    /// Drop the n-th, 2n-th, … server→client MESSAGE frame.
    pub drop_every: Option<u64>,
    /// Send the m-th, 2m-th, … server→client MESSAGE frame twice (unless dropped).
    pub duplicate_every: Option<u64>,
    /// Added to every WebSocket message, in each direction.
    pub delay: Duration,
    /// Forward at most this many server→client MESSAGE frames per second, summed over
    /// all connections (`None`: no cap). Excess frames wait; none are dropped.
    pub message_rate: Option<f64>,
}

/// What the relay did, shared with the test that reads it.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Server→client MESSAGE frames decoded, across all connections.
    pub messages_seen: AtomicU64,
    /// MESSAGE frames not forwarded.
    pub dropped: AtomicU64,
    /// MESSAGE frames forwarded twice.
    pub duplicated: AtomicU64,
    /// Client connections relayed (both handshakes succeeded).
    pub connections: AtomicU64,
    /// WebSocket data messages discarded by [`NetFault::Drop`], both directions.
    pub fault_dropped_messages: AtomicU64,
    /// Server→client MESSAGE frames inside those (not counted in `messages_seen`).
    pub fault_dropped_frames: AtomicU64,
    /// Longest a message waited beyond its release time because of
    /// [`NetFault::Partition`], in milliseconds.
    pub held_max_ms: AtomicU64,
}

/// A running relay; see the module docs.
pub struct Relay {
    /// Where virtual users connect: `ws://127.0.0.1:PORT/ws-stomp` (any path works).
    pub url: String,
    pub counters: Arc<RelayCounters>,
    control: Arc<NetControl>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Relay {
    /// Binds `127.0.0.1:0` and starts accepting clients in the background.
    pub async fn start(config: RelayConfig) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}/ws-stomp", listener.local_addr()?);
        let counters = Arc::new(RelayCounters::default());
        let control = Arc::new(NetControl::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::new(config),
            counters.clone(),
            control.clone(),
            shutdown.clone(),
        ));
        Ok(Relay {
            url,
            counters,
            control,
            shutdown,
            task,
        })
    }

    /// The switch for this relay's network faults (starts as `NetFault::Pass`).
    pub fn control(&self) -> Arc<NetControl> {
        self.control.clone()
    }

    /// Stops accepting, ends every relayed connection and waits for all of it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<RelayConfig>,
    counters: Arc<RelayCounters>,
    control: Arc<NetControl>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let pacer = config.message_rate.and_then(Pacer::new).map(Arc::new);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors; give some back before retrying.
                    tracing::warn!("relay: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        tracker.spawn(serve(
            stream,
            config.clone(),
            counters.clone(),
            control.clone(),
            pacer.clone(),
            shutdown.child_token(),
        ));
    }
    tracker.close();
    tracker.wait().await;
}

/// The client's socket, with the request head already read put back in front.
type ClientWs = WebSocketStream<Join<Chain<io::Cursor<Vec<u8>>, OwnedReadHalf>, OwnedWriteHalf>>;
type UpstreamWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Relays one client until either side closes or the relay stops.
async fn serve(
    stream: TcpStream,
    config: Arc<RelayConfig>,
    counters: Arc<RelayCounters>,
    control: Arc<NetControl>,
    pacer: Option<Arc<Pacer>>,
    cancel: CancellationToken,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &config.upstream));
    let outcome = tokio::select! {
        _ = cancel.cancelled() => return,
        outcome = handshake => outcome.unwrap_or_else(|_| Err(format!("handshakes took over {HANDSHAKE_TIMEOUT:?}"))),
    };
    let (client, upstream) = match outcome {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!("relay: {e}");
            return;
        }
    };
    counters.connections.fetch_add(1, Relaxed);
    let (client_out, client_in) = client.split();
    let (upstream_out, upstream_in) = upstream.split();
    let (c2s_tx, c2s_rx) = mpsc::channel(QUEUE);
    let (s2c_tx, s2c_rx) = mpsc::channel(QUEUE);
    let filter = Filter::new(&config, counters.clone());
    let closing = CancellationToken::new();
    let net = Net {
        control: &control,
        counters: &counters,
    };
    let pumps = async {
        tokio::join!(
            read_side(client_in, c2s_tx, None, config.delay, net, &cancel),
            read_side(
                upstream_in,
                s2c_tx,
                Some(filter),
                config.delay,
                net,
                &cancel
            ),
            write_side(upstream_out, c2s_rx, None, net, &closing, &cancel),
            write_side(client_out, s2c_rx, pacer.as_deref(), net, &closing, &cancel),
        )
    };
    tokio::select! {
        _ = pumps => {}
        _ = async { closing.cancelled().await; tokio::time::sleep(CLOSE_LINGER).await } => {}
    }
}

/// Reads the client's request head, connects upstream with the same subprotocol offer,
/// then answers the client with the upstream's choice or refusal. Errors say which
/// handshake failed.
// The handshake callback's error type is tungstenite's own (an HTTP response).
#[allow(clippy::result_large_err)]
async fn handshake(
    mut stream: TcpStream,
    upstream: &str,
) -> Result<(ClientWs, UpstreamWs), String> {
    // Nagle would hold a small message back until the previous one is acknowledged.
    let _ = stream.set_nodelay(true);
    let head = read_request_head(&mut stream).await?;
    let offer = offered_protocols(&head);
    let upstream_error = |e: &WsError| format!("connecting to upstream {upstream} failed: {e}");
    let mut request = upstream
        .into_client_request()
        .map_err(|e| upstream_error(&e))?;
    if let Some(value) = offer.and_then(|offer| HeaderValue::from_str(&offer).ok()) {
        request.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, value);
    }
    let connected = tokio_tungstenite::connect_async_with_config(request, None, true).await;
    // Give tungstenite the client's bytes again, head first.
    let (read, write) = stream.into_split();
    let client_io = tokio::io::join(io::Cursor::new(head).chain(read), write);
    let reply = match &connected {
        Ok((_, response)) => Ok(response.headers().get(SEC_WEBSOCKET_PROTOCOL).cloned()),
        Err(e) => {
            let status = if let WsError::Http(refusal) = e {
                refusal.status()
            } else {
                StatusCode::BAD_GATEWAY
            };
            Err((status, upstream_error(e)))
        }
    };
    let answer = move |_: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        match reply {
            Ok(chosen) => {
                if let Some(chosen) = chosen {
                    response
                        .headers_mut()
                        .insert(SEC_WEBSOCKET_PROTOCOL, chosen);
                }
                Ok(response)
            }
            Err((status, why)) => {
                let mut refusal = ErrorResponse::new(Some(format!("relay: {why}\n")));
                *refusal.status_mut() = status;
                Err(refusal)
            }
        }
    };
    let client_ws = tokio_tungstenite::accept_hdr_async(client_io, answer).await;
    let (upstream_ws, _) = connected.map_err(|e| upstream_error(&e))?;
    let client_ws =
        client_ws.map_err(|e| format!("the client's WebSocket handshake failed: {e}"))?;
    Ok((client_ws, upstream_ws))
}

/// The client's bytes up to the end of its HTTP request head (and any after it).
async fn read_request_head(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut head = Vec::with_capacity(1024);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Err(format!(
                "the client's HTTP request head exceeds {MAX_REQUEST_HEAD} bytes"
            ));
        }
        match stream.read_buf(&mut head).await {
            Ok(0) => return Err("the client closed before finishing its HTTP request".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the client's HTTP request failed: {e}")),
        }
    }
    Ok(head)
}

/// Every `Sec-WebSocket-Protocol` value in a request head, joined with ", ".
fn offered_protocols(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head);
    let header_block = text.split("\r\n\r\n").next().unwrap_or("");
    let offers: Vec<&str> = header_block
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-protocol"))
        .map(|(_, value)| value.trim())
        .collect();
    (!offers.is_empty()).then(|| offers.join(", "))
}

/// What the pumps of one connection need for the network faults.
#[derive(Clone, Copy)]
struct Net<'a> {
    control: &'a NetControl,
    counters: &'a RelayCounters,
}

/// A message, the instant it may be forwarded, and the MESSAGE frames in it (paced).
struct Timed {
    release: Instant,
    message: Message,
    frames: u32,
}

/// The relay-wide MESSAGE frame budget: slots `1 / rate` apart, handed out in the order
/// writers ask for them.
struct Pacer {
    interval: Duration,
    next: std::sync::Mutex<Instant>,
}

impl Pacer {
    fn new(rate: f64) -> Option<Pacer> {
        (rate.is_finite() && rate > 0.0).then(|| Pacer {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// When a message of `frames` frames may leave: at the slot of its last frame, so a
    /// message carrying several frames never gets ahead of the rate (now, if the budget
    /// is idle and it carries one); the slots of all `frames` are taken.
    fn reserve(&self, frames: u32) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let first = (*next).max(Instant::now());
        *next = first + self.interval * frames;
        first + self.interval * frames.saturating_sub(1)
    }
}

/// Reads one side, filters if asked, and queues each message for `delay` later (plus a
/// [`NetFault::Delay`] set now), or discards it under [`NetFault::Drop`]. Returns after
/// queueing a Close (received, or standing in for a read error).
async fn read_side<S>(
    mut source: S,
    queue: mpsc::Sender<Timed>,
    mut filter: Option<Filter>,
    delay: Duration,
    net: Net<'_>,
    cancel: &CancellationToken,
) where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = source.next() => next,
        };
        let fault = net.control.now();
        let release = release_time(match fault {
            NetFault::Delay(extra) => delay.saturating_add(extra),
            _ => delay,
        });
        let discard = fault == NetFault::Drop;
        let (message, frames, last) = match next {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                let (kept, frames) = if let Some(filter) = filter.as_mut() {
                    (filter.apply(message, discard), filter.emitted)
                } else {
                    (Some(message).filter(|_| !discard), 0)
                };
                if discard {
                    // After the filter counted its frames.
                    net.counters.fault_dropped_messages.fetch_add(1, Relaxed);
                }
                let Some(kept) = kept else { continue };
                (kept, frames, false)
            }
            Some(Ok(close @ Message::Close(_))) => (close, 0, true),
            // Ping and Pong are answered by each hop; raw frames never surface on read.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(_)) | None => (Message::Close(None), 0, true),
        };
        let timed = Timed {
            release,
            message,
            frames,
        };
        let queued = tokio::select! {
            _ = cancel.cancelled() => return,
            queued = queue.send(timed) => queued,
        };
        if queued.is_err() || last {
            return;
        }
    }
}

/// `delay` from now, or as far as the clock goes.
fn release_time(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

/// Forwards queued messages to one side, each at its release time and, with a pacer,
/// in the MESSAGE frame slots it hands out, and not while a [`NetFault::Partition`] is
/// set. Returns once a Close went out or the side cannot be written, and then starts
/// the linger.
async fn write_side<S>(
    mut sink: S,
    mut queue: mpsc::Receiver<Timed>,
    pacer: Option<&Pacer>,
    net: Net<'_>,
    closing: &CancellationToken,
    cancel: &CancellationToken,
) where
    S: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        let Timed {
            release,
            message,
            frames,
        } = tokio::select! {
            _ = cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(timed) => timed,
                None => return,
            },
        };
        let is_close = matches!(message, Message::Close(_));
        let sent = tokio::select! {
            _ = cancel.cancelled() => return,
            sent = async {
                tokio::time::sleep_until(release).await;
                if let Some(pacer) = pacer.filter(|_| frames > 0) {
                    tokio::time::sleep_until(pacer.reserve(frames)).await;
                }
                if net.control.pass_partition().await {
                    let held = u64::try_from(release.elapsed().as_millis()).unwrap_or(u64::MAX);
                    net.counters.held_max_ms.fetch_max(held, Relaxed);
                }
                sink.send(message).await
            } => sent,
        };
        if sent.is_err() || is_close {
            closing.cancel();
            return;
        }
    }
}

/// Server→client STOMP filter for one connection: drops and duplicates MESSAGE frames.
struct Filter {
    decoder: Decoder,
    /// Bytes received and not yet decoded; the decoder consumes from the front.
    pending: BytesMut,
    /// The same bytes, from which each decoded item's exact wire bytes are split off.
    raw: BytesMut,
    /// Set once the stream failed to decode; everything after is forwarded raw.
    raw_only: bool,
    drop_every: Option<u64>,
    duplicate_every: Option<u64>,
    counters: Arc<RelayCounters>,
    /// MESSAGE frames in the last message [`Filter::apply`] returned, copies included.
    emitted: u32,
}

impl Filter {
    fn new(config: &RelayConfig, counters: Arc<RelayCounters>) -> Filter {
        Filter {
            decoder: Decoder::new(DEFAULT_MAX_FRAME_SIZE * 16),
            pending: BytesMut::new(),
            raw: BytesMut::new(),
            raw_only: false,
            drop_every: config.drop_every.filter(|&n| n > 0),
            duplicate_every: config.duplicate_every.filter(|&n| n > 0),
            counters,
            emitted: 0,
        }
    }

    /// The message to forward in place of `message`, or `None` if nothing is left. With
    /// `discard` (a [`NetFault::Drop`]) nothing is, and its MESSAGE frames are counted
    /// as dropped by the fault instead of numbered.
    fn apply(&mut self, message: Message, discard: bool) -> Option<Message> {
        let (data, binary) = match message {
            Message::Text(text) => (Bytes::from(text), false),
            Message::Binary(data) => (data, true),
            other => return Some(other),
        };
        self.emitted = 0;
        if self.raw_only {
            return (!discard).then(|| ws_message(data, binary));
        }
        self.pending.extend_from_slice(&data);
        self.raw.extend_from_slice(&data);
        let mut out = BytesMut::with_capacity(data.len());
        loop {
            let before = self.pending.len();
            match self.decoder.decode(&mut self.pending) {
                Ok(None) => break,
                Ok(Some(item)) => {
                    let wire = self.raw.split_to(before - self.pending.len());
                    let copies = self.copies(&item, discard);
                    if matches!(&item, Item::Frame(f) if f.command == Command::Message) {
                        self.emitted += copies as u32;
                    }
                    for _ in 0..copies {
                        out.extend_from_slice(&wire);
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "relay: upstream stopped speaking STOMP ({e}); forwarding the rest raw"
                    );
                    self.raw_only = true;
                    self.pending.clear();
                    let rest = self.raw.split();
                    if !discard {
                        out.extend_from_slice(&rest);
                    }
                    break;
                }
            }
        }
        (!out.is_empty()).then(|| ws_message(out.freeze(), binary))
    }

    /// How many times to forward `item`: MESSAGE frames are numbered and judged, unless
    /// the fault discards them all.
    fn copies(&mut self, item: &Item, discard: bool) -> usize {
        let once = usize::from(!discard);
        let Item::Frame(frame) = item else {
            return once;
        };
        match frame.command {
            Command::Connected => {
                // Header escapes depend on the version; 1.0 has none.
                self.decoder.set_version(
                    frame
                        .get("version")
                        .and_then(Version::parse)
                        .unwrap_or(Version::V1_0),
                );
                once
            }
            Command::Message if discard => {
                self.counters.fault_dropped_frames.fetch_add(1, Relaxed);
                0
            }
            Command::Message => {
                let n = self.counters.messages_seen.fetch_add(1, Relaxed) + 1;
                if self.drop_every.is_some_and(|k| n % k == 0) {
                    self.counters.dropped.fetch_add(1, Relaxed);
                    0
                } else if self.duplicate_every.is_some_and(|k| n % k == 0) {
                    self.counters.duplicated.fetch_add(1, Relaxed);
                    2
                } else {
                    1
                }
            }
            _ => once,
        }
    }
}

/// Text if the input was text and the bytes are still UTF-8, else binary.
fn ws_message(data: Bytes, binary: bool) -> Message {
    if !binary {
        if let Ok(text) = Utf8Bytes::try_from(data.clone()) {
            return Message::Text(text);
        }
    }
    Message::Binary(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::{encode, heartbeat, Frame};

    type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
    type Served = WebSocketStream<TcpStream>;
    const PATIENCE: Duration = Duration::from_secs(5);

    /// A one-connection upstream on port 0 that picks `v12.stomp` when offered.
    #[allow(clippy::result_large_err)]
    async fn upstream<F: std::future::Future<Output = ()> + Send + 'static>(
        serve: fn(Served) -> F,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws-stomp", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let choose = |request: &Request, mut response: Response| {
                let offer = request
                    .headers()
                    .get(SEC_WEBSOCKET_PROTOCOL)
                    .and_then(|v| v.to_str().ok());
                if offer.is_some_and(|v| v.contains("v12.stomp")) {
                    response.headers_mut().insert(
                        SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static("v12.stomp"),
                    );
                }
                Ok(response)
            };
            serve(
                tokio_tungstenite::accept_hdr_async(stream, choose)
                    .await
                    .unwrap(),
            )
            .await;
        });
        url
    }

    /// Connects offering two subprotocols; returns the one chosen.
    async fn connect(url: &str) -> Result<(Ws, Option<String>), WsError> {
        let mut request = url.into_client_request()?;
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v11.stomp, v12.stomp"),
        );
        let (ws, response) =
            tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        let chosen = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        Ok((ws, chosen.map(str::to_string)))
    }

    fn frame(command: Command, id: u64) -> Frame {
        let frame = Frame::new(command).header("destination", "/topic/room.1");
        frame
            .header("message-id", id.to_string())
            .with_body(format!("{{\"n\":{id}}}"))
    }

    fn text(bytes: BytesMut) -> Message {
        Message::Text(Utf8Bytes::try_from(bytes.freeze()).unwrap())
    }

    async fn next_text(ws: &mut Ws) -> Utf8Bytes {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            other => panic!("expected a text message through the relay, got {other:?}"),
        }
    }

    /// On any message: MESSAGE 1..=100, two plus a heart-beat per WebSocket message, or
    /// alone, or split over two; then a RECEIPT carrying the heart-beat count; then Close.
    async fn burst(mut ws: Served) {
        let _ = ws.next().await;
        let (mut n, mut beats) = (1, 0);
        while n <= 100 {
            let mut out = BytesMut::new();
            encode(&frame(Command::Message, n), &mut out);
            if n % 3 == 0 && n < 100 {
                encode(&frame(Command::Message, n + 1), &mut out);
                heartbeat(&mut out);
                (n, beats) = (n + 1, beats + 1);
            } else if n % 10 == 1 {
                ws.send(text(out.split_to(out.len() / 2))).await.unwrap();
            }
            n += 1;
            ws.send(text(out)).await.unwrap();
        }
        let receipt = Frame::new(Command::Receipt).header("receipt-id", "done");
        ws.send(text(
            receipt
                .header("heart-beats", beats.to_string())
                .to_bytes()
                .into(),
        ))
        .await
        .unwrap();
        let _ = ws.close(None).await;
    }

    #[tokio::test]
    async fn drops_and_duplicates_exactly_as_counted() {
        let url = upstream(burst).await;
        let config = RelayConfig {
            upstream: url,
            drop_every: Some(7),
            duplicate_every: Some(5),
            ..Default::default()
        };
        let relay = Relay::start(config).await.unwrap();
        let (mut ws, chosen) = connect(&relay.url).await.unwrap();
        assert_eq!(
            chosen.as_deref(),
            Some("v12.stomp"),
            "the upstream's subprotocol choice is passed back"
        );
        ws.send(text(frame(Command::Subscribe, 0).to_bytes().into()))
            .await
            .unwrap();

        let (mut decoder, mut buf) = (Decoder::default(), BytesMut::new());
        let (mut ids, mut beats, mut receipt) = (Vec::new(), 0, None);
        while receipt.is_none() {
            buf.extend_from_slice(next_text(&mut ws).await.as_bytes());
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                match item {
                    Item::HeartBeat => beats += 1,
                    Item::Frame(f) if f.command == Command::Message => {
                        ids.push(f.get("message-id").unwrap().to_string())
                    }
                    Item::Frame(f) => receipt = Some(f),
                }
            }
        }

        // The rule, worked out independently: drop multiples of 7, else double multiples of 5.
        let kept = (1..=100u64).filter(|n| n % 7 != 0);
        let expected: Vec<String> = kept
            .flat_map(|n| vec![n.to_string(); if n % 5 == 0 { 2 } else { 1 }])
            .collect();
        let dropped = (1..=100).filter(|n| n % 7 == 0).count() as u64;
        let duplicated = (1..=100).filter(|n| n % 5 == 0 && n % 7 != 0).count() as u64;
        assert_eq!(
            (dropped, duplicated),
            (14, 18),
            "35 and 70 are multiples of both: dropping wins"
        );
        assert_eq!(expected.len(), 100 - 14 + 18);
        assert_eq!(ids, expected);
        let receipt = receipt.unwrap();
        assert_eq!(
            receipt.get("receipt-id"),
            Some("done"),
            "non-MESSAGE frames pass through"
        );
        assert_eq!(
            receipt.get("heart-beats"),
            Some(beats.to_string().as_str()),
            "heart-beats pass through"
        );
        let c = &relay.counters;
        let counted =
            [&c.messages_seen, &c.dropped, &c.duplicated, &c.connections].map(|n| n.load(Relaxed));
        assert_eq!(counted, [100, dropped, duplicated, 1]);

        // The upstream's Close reaches the client, and stopping does not hang.
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Close(_))) | None | Some(Err(_))) => {}
            other => panic!("expected the upstream's close, got {other:?}"),
        }
        tokio::time::timeout(PATIENCE, relay.stop())
            .await
            .expect("relay stops promptly");
    }

    #[tokio::test]
    async fn caps_message_frames_per_second() {
        // 100 MESSAGE frames at 200/s: the last leaves no sooner than 99 slots (495 ms)
        // after the first, however fast the upstream sends them.
        let rate = 200.0;
        let relay = Relay::start(RelayConfig {
            upstream: upstream(burst).await,
            message_rate: Some(rate),
            ..Default::default()
        })
        .await
        .unwrap();
        let (mut ws, _) = connect(&relay.url).await.unwrap();
        ws.send(text(frame(Command::Subscribe, 0).to_bytes().into()))
            .await
            .unwrap();
        let (mut decoder, mut buf) = (Decoder::default(), BytesMut::new());
        let (mut first, mut messages, mut receipt_at) = (None, 0u64, None);
        while receipt_at.is_none() {
            buf.extend_from_slice(next_text(&mut ws).await.as_bytes());
            while let Some(item) = decoder.decode(&mut buf).unwrap() {
                match item {
                    Item::Frame(f) if f.command == Command::Message => {
                        first.get_or_insert_with(Instant::now);
                        messages += 1;
                    }
                    Item::Frame(_) => receipt_at = Some(Instant::now()),
                    Item::HeartBeat => {}
                }
            }
        }
        assert_eq!(messages, 100, "nothing is dropped by the cap");
        let spread = receipt_at.unwrap() - first.expect("messages arrived");
        let floor = Duration::from_secs_f64(98.0 / rate);
        assert!(
            spread >= floor && spread < Duration::from_millis(1500),
            "100 frames at {rate}/s took {spread:?}, at least {floor:?} expected"
        );
        relay.stop().await;
    }

    async fn echo(mut ws: Served) {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close()
                || ((message.is_text() || message.is_binary()) && ws.send(message).await.is_err())
            {
                break;
            }
        }
    }

    #[tokio::test]
    async fn delays_each_direction_without_serialising() {
        let (delay, ms) = (Duration::from_millis(50), Duration::from_millis);
        let relay = Relay::start(RelayConfig {
            upstream: upstream(echo).await,
            delay,
            ..Default::default()
        });
        let relay = relay.await.unwrap();
        let (mut ws, _) = connect(&relay.url).await.unwrap();
        let send = |id| text(frame(Command::Send, id).to_bytes().into());
        let id_of = |text: Utf8Bytes| match Decoder::default()
            .decode(&mut BytesMut::from(text.as_bytes()))
        {
            Ok(Some(Item::Frame(f))) => f.get("message-id").unwrap().parse::<u64>().unwrap(),
            other => panic!("expected one SEND frame back, got {other:?}"),
        };

        let start = Instant::now();
        ws.send(send(0)).await.unwrap();
        assert_eq!(id_of(next_text(&mut ws).await), 0);
        let round_trip = start.elapsed();
        // Lower bounds are the relay's promise; upper bounds only need to tell "delayed
        // once each way" from "delayed in series", with room for a busy machine.
        assert!(
            round_trip >= 2 * delay && round_trip < 2 * delay + ms(500),
            "round trip {round_trip:?}"
        );

        let start = Instant::now();
        let mut due = Vec::new();
        for id in 1..=20 {
            due.push(Instant::now() + 2 * delay);
            ws.send(send(id)).await.unwrap();
        }
        for (id, due) in (1..=20).zip(due) {
            assert_eq!(id_of(next_text(&mut ws).await), id, "order is kept");
            let now = Instant::now();
            assert!(now >= due, "message {id} came back before its delay");
        }
        // In series the 20 round trips would take 20 × 100 ms = 2 s.
        let total = start.elapsed();
        assert!(
            total < 2 * delay + ms(500),
            "20 messages took {total:?}: the delays added up"
        );
        relay.stop().await;
    }

    #[tokio::test]
    async fn unreachable_upstream_is_refused_with_502() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let config = RelayConfig {
            upstream: format!("ws://{closed}/ws-stomp"),
            ..Default::default()
        };
        let relay = Relay::start(config).await.unwrap();
        match connect(&relay.url).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::BAD_GATEWAY),
            other => panic!(
                "expected a 502 refusal, got {:?}",
                other.map(|(_, chosen)| chosen)
            ),
        }
        assert_eq!(relay.counters.connections.load(Relaxed), 0);
        relay.stop().await;
    }
}
