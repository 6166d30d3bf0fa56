//! One client connection: the WebSocket handshake, the STOMP conversation, heart-beats,
//! and the writer side of the session's bounded outbound queue.
//!
//! A single task owns the socket. It selects over: bytes from the client (fed through the
//! shared streaming decoder, then handled frame by frame), frames queued for the client
//! (room messages from the fan-out, receipts from finished sends), a heart-beat tick, a
//! kill signal (the fan-out found this session's queue full), and server shutdown. Any
//! protocol violation is answered with an ERROR naming the problem, then the connection
//! is closed; nothing of the bad frame reaches Kafka.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::chat::ChatMessage;
use crate::server::rooms::{EncodedFrame, Kill, Outbound, SessionHandle};
use crate::server::Shared;
use crate::stomp::{
    encode_for, heart_beat_period, parse_heart_beat, Command, Decoder, EncodeError, Frame, Item,
    Version,
};
use crate::wake_gate::WakeGate;

/// WebSocket path the server answers on.
pub const WS_PATH: &str = "/ws-stomp";
/// Destination prefix of chat SENDs: `/app/chat/{roomId}`.
pub const SEND_PREFIX: &str = "/app/chat/";
/// Destination prefix of room subscriptions: `/topic/room/{roomId}`.
pub const SUBSCRIBE_PREFIX: &str = "/topic/room/";

/// Most queued frames written to the socket before one flush.
const WRITE_BATCH: usize = 64;

type Ws = WebSocketStream<TcpStream>;

/// A [`Duration`] shared between the session loop and its tick future.
struct PeriodCell(std::sync::atomic::AtomicU64);

impl PeriodCell {
    fn new(d: Duration) -> PeriodCell {
        PeriodCell(std::sync::atomic::AtomicU64::new(d.as_micros() as u64))
    }
    fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Relaxed))
    }
    fn set(&self, d: Duration) {
        self.0.store(d.as_micros() as u64, Relaxed);
    }
}

/// How often a session checks its deadlines before CONNECT (the CONNECT timeout).
const TICK_BEFORE_CONNECT: Duration = Duration::from_millis(250);

/// How often a connected session checks its heart-beats: a quarter of the shorter
/// negotiated period, between 50 ms and 5 s (5 s with no heart-beats at all). An
/// outgoing beat is sent when the next tick would be late for it, so beats go out between
/// one tick early and on time; an incoming silence is noticed at most one tick late.
fn tick_period(out: Option<Duration>, incoming: Option<Duration>) -> Duration {
    let shortest = match (out, incoming) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Duration::from_secs(5),
    };
    (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// The session loop's seldom events, polled together behind one [`WakeGate`].
enum Rare {
    Shutdown,
    Killed,
    Tick,
}

/// How a write that had to wait ended.
enum Waited<T> {
    Done(T),
    /// The session was killed or the server is shutting down.
    Stopped,
    /// The client took no byte within the write-stall limit.
    Stalled,
}

/// The client's next WebSocket message. The WebSocket is polled only when it may have
/// one: right after it yielded a message (another may be buffered behind it), or once
/// the socket turns readable. Polling it on every wake of the session (each frame queued
/// for the client) would have the WebSocket clear its whole read buffer each time only
/// to find the socket empty.
fn inbound(
    ws: &mut Ws,
    maybe_buffered: &mut bool,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Message, tokio_tungstenite::tungstenite::Error>>> {
    if !*maybe_buffered && ws.get_ref().poll_read_ready(cx).is_pending() {
        return Poll::Pending;
    }
    match ws.poll_next_unpin(cx) {
        Poll::Ready(message) => {
            *maybe_buffered = true;
            Poll::Ready(message)
        }
        Poll::Pending => {
            // The WebSocket read until the socket had nothing more: nothing is buffered
            // that makes a whole message.
            *maybe_buffered = false;
            Poll::Pending
        }
    }
}

/// Why the conversation ended; decides the closing ERROR, if any.
enum Close {
    /// The client went away or sent DISCONNECT: nothing more to say.
    Quietly,
    /// A protocol violation or failure: send this ERROR, then close.
    Error(Frame),
}

fn error_frame(message: &str, detail: &str, receipt: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Error).header("message", message);
    if let Some(receipt) = receipt {
        frame = frame.header("receipt-id", receipt);
    }
    frame
        .header("content-type", "text/plain")
        .with_body(Bytes::from(format!("{detail}\n")))
}

fn receipt_frame(receipt: &str) -> Frame {
    Frame::new(Command::Receipt).header("receipt-id", receipt)
}

/// Picks the highest `v1x.stomp` subprotocol the client offered.
fn choose_subprotocol(request: &Request) -> Option<&'static str> {
    request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| Version::from_subprotocol(&p.trim().to_ascii_lowercase()))
        .max()
        .map(|v| v.subprotocol())
}

/// Serves one TCP connection until it closes or the server shuts down.
// The handshake callback's error type is tungstenite's own (an HTTP response).
#[allow(clippy::result_large_err)]
pub async fn serve(stream: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    let limits = &shared.config.limits;
    // The read buffer is allocated for every session, idle or not: 2 KiB holds a few chat
    // SENDs; a larger SEND (up to the frame limit) grows it and takes a read per 2 KiB.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(limits.max_frame_size * 4 + 1024 * 1024)
        .max_message_size(Some(limits.max_frame_size * 4))
        .max_frame_size(Some(limits.max_frame_size * 4));
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != WS_PATH {
            let mut refusal =
                ErrorResponse::new(Some(format!("no WebSocket endpoint here; use {WS_PATH}\n")));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        if let Some(protocol) = choose_subprotocol(request) {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
        }
        Ok(response)
    };
    // Boxed: the handshake's state would otherwise stay part of every session's task for
    // the session's whole life.
    let handshake = Box::pin(tokio::time::timeout(
        limits.connect_timeout,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config)),
    ));
    let ws = match handshake.await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("WebSocket handshake failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let (outbound, out_rx) = mpsc::channel(limits.session_queue.max(1));
    let handle = SessionHandle {
        id: shared.next_session_id(),
        outbound,
        kill: CancellationToken::new(),
        killed_for: Arc::new(std::sync::OnceLock::new()),
    };
    shared.metrics.sessions_total.fetch_add(1, Relaxed);
    shared.metrics.sessions_open.fetch_add(1, Relaxed);
    let mut session = Session {
        inflight: Arc::new(Semaphore::new(limits.session_inflight.max(1))),
        decoder: Decoder::new(limits.max_frame_size),
        shared: shared.clone(),
        handle,
        version: None,
        subscriptions: HashMap::new(),
        binary: false,
        heartbeat_out: None,
        heartbeat_in: None,
        shutdown: shutdown.clone(),
        out_rx: None,
    };
    session.run(ws, out_rx, shutdown).await;
    session.unsubscribe_all();
    shared.metrics.sessions_open.fetch_sub(1, Relaxed);
}

struct Session {
    shared: Arc<Shared>,
    handle: SessionHandle,
    decoder: Decoder,
    /// Negotiated version; `None` until CONNECT.
    version: Option<Version>,
    /// Subscription id → room id.
    subscriptions: HashMap<String, String>,
    inflight: Arc<Semaphore>,
    /// Whether the client writes binary WebSocket messages (answered in kind).
    binary: bool,
    heartbeat_out: Option<Duration>,
    heartbeat_in: Option<Duration>,
    shutdown: CancellationToken,
    /// Frames queued for the client; taken out of `self` while the main loop runs.
    out_rx: Option<mpsc::Receiver<Outbound>>,
}

impl Session {
    async fn run(
        &mut self,
        mut ws: Ws,
        mut out_rx: mpsc::Receiver<Outbound>,
        shutdown: CancellationToken,
    ) {
        let opened = Instant::now();
        let mut last_read = Instant::now();
        let mut last_write = Instant::now();
        let mut inbuf = BytesMut::new();
        // Checks the CONNECT deadline until CONNECT, then the heart-beats as often as
        // they need (see `tick_period`), not on a fixed fast beat for every session.
        // An atomic only because the task must be `Send`; one task reads and writes it.
        let period = PeriodCell::new(TICK_BEFORE_CONNECT);
        let mut tick = tokio::time::interval(TICK_BEFORE_CONNECT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let kill = self.handle.kill.clone();
        // Made once and polled only when they woke: a cancellation wait locks its token
        // on every poll, and this task wakes for every frame queued for the client.
        let mut shutting_down = std::pin::pin!(shutdown.cancelled());
        let mut killed = std::pin::pin!(kill.cancelled());
        let mut rare = WakeGate::new(std::future::poll_fn(|cx| {
            if shutting_down.as_mut().poll(cx).is_ready() {
                Poll::Ready(Rare::Shutdown)
            } else if killed.as_mut().poll(cx).is_ready() {
                Poll::Ready(Rare::Killed)
            } else {
                if tick.period() != period.get() {
                    let every = period.get();
                    tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                tick.poll_tick(cx).map(|_| Rare::Tick)
            }
        }));
        // Whether the WebSocket may hold a whole message already read off the socket;
        // when not, it is polled only once the socket is readable (see `inbound`).
        let mut maybe_buffered = true;
        let mut batch = Vec::new();
        let close = loop {
            tokio::select! {
                why = &mut rare => match why {
                    Rare::Shutdown => {
                        break Close::Error(error_frame("server shutting down", "the server is shutting down; reconnect to another instance", None));
                    }
                    Rare::Killed => {
                        let queued = self.shared.config.limits.session_queue;
                        break Close::Error(error_frame(
                            "slow consumer",
                            &format!("this session fell {queued} frames behind its room traffic and was disconnected; read faster or subscribe to fewer rooms"),
                            None,
                        ));
                    }
                    Rare::Tick => {
                            if self.version.is_none() && opened.elapsed() > self.shared.config.limits.connect_timeout {
                                break Close::Error(error_frame("CONNECT expected", "no CONNECT frame arrived in time after the WebSocket opened", None));
                            }
                            if let Some(every) = self.heartbeat_in {
                                // Tolerate one missed beat plus network delay before giving up.
                                if last_read.elapsed() > every * 2 + Duration::from_millis(500) {
                                    self.shared.metrics.heartbeat_timeouts.fetch_add(1, Relaxed);
                                    break Close::Error(error_frame("heart-beat timeout", &format!("nothing received for {} ms; the negotiated heart-beat is {} ms", last_read.elapsed().as_millis(), every.as_millis()), None));
                                }
                            }
                            if let Some(every) = self.heartbeat_out {
                                // Sent up to one tick early rather than late: a beat is due
                        // at least every `every`.
                        if last_write.elapsed() + period.get() >= every {
                                    let beat = ws.send(Message::Text(Utf8Bytes::from_static("\n")));
                                    match tokio::time::timeout(every, beat).await {
                                        Ok(Ok(())) => last_write = Instant::now(),
                                        _ => break Close::Quietly,
                                    }
                                }
                            }
                    }
                },
                item = out_rx.recv() => {
                    let Some(item) = item else { break Close::Quietly };
                    batch.push(item);
                    while batch.len() < WRITE_BATCH {
                        match out_rx.try_recv() {
                            Ok(more) => batch.push(more),
                            Err(_) => break,
                        }
                    }
                    self.out_rx = Some(out_rx);
                    let written = self.write(&mut ws, &mut batch, &kill).await;
                    if batch.capacity() > 8 {
                        // A burst's worth of slots is not kept by an idle session.
                        batch = Vec::new();
                    }
                    out_rx = self.out_rx.take().expect("put back above");
                    match written {
                        Ok(None) => last_write = Instant::now(),
                        Ok(Some(frame)) => break Close::Error(frame),
                        Err(()) => break Close::Quietly,
                    }
                }
                message = std::future::poll_fn(|cx| inbound(&mut ws, &mut maybe_buffered, cx)) => {
                    last_read = Instant::now();
                    let data = match message {
                        Some(Ok(Message::Text(text))) => { self.binary = false; Bytes::from(text) }
                        Some(Ok(Message::Binary(data))) => { self.binary = true; data }
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_))) | None => break Close::Quietly,
                        Some(Err(e)) => {
                            tracing::debug!("session {}: WebSocket error: {e}", self.handle.id);
                            break Close::Error(error_frame("WebSocket error", &e.to_string(), None));
                        }
                    };
                    inbuf.extend_from_slice(&data);
                    self.out_rx = Some(out_rx);
                    // Boxed: handling a client's frames (CONNECT, SEND with its publish)
                    // takes far more state than waiting does, and most sessions mostly wait.
                    let closing = Box::pin(self.read_frames(&mut inbuf, &mut ws, &kill)).await;
                    out_rx = self.out_rx.take().expect("put back above");
                    if self.version.is_some() {
                        period.set(tick_period(self.heartbeat_out, self.heartbeat_in));
                    }
                    if let Some(close) = closing {
                        break close;
                    }
                }
            }
        };
        if let Close::Error(frame) = close {
            self.shared.metrics.errors_sent.fetch_add(1, Relaxed);
            // Best effort: a client that stopped reading does not get to hold us up (and an
            // ERROR its version cannot carry, e.g. a receipt-id ending in CR, is not sent).
            if let Ok(bytes) = self.encode(&frame) {
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), ws.send(self.ws_message(bytes)))
                        .await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }

    fn encode(&self, frame: &Frame) -> Result<EncodedFrame, EncodeError> {
        let mut out = BytesMut::with_capacity(256 + frame.body.len());
        encode_for(frame, self.version.unwrap_or(Version::V1_2), &mut out)?;
        Ok(EncodedFrame::new(out.freeze()))
    }

    /// Text for a client that writes text (when the frame is UTF-8), else binary.
    fn ws_message(&self, frame: EncodedFrame) -> Message {
        match frame {
            EncodedFrame::Text(text) if !self.binary => Message::Text(text),
            EncodedFrame::Text(text) => Message::Binary(text.into()),
            EncodedFrame::Binary(bytes) => Message::Binary(bytes),
        }
    }

    /// Writes queued frames; `Ok(Some(frame))` asks the caller to close with that ERROR.
    async fn write(
        &mut self,
        ws: &mut Ws,
        batch: &mut Vec<Outbound>,
        kill: &CancellationToken,
    ) -> Result<Option<Frame>, ()> {
        let mut closing = None;
        // Counted once per batch: the counter is shared with every session's task.
        let mut written = 0u64;
        let stall = self.shared.config.limits.write_stall;
        let outcome = 'write: {
            for item in batch.drain(..) {
                let encoded = match item {
                    Outbound::Encoded(frame) => Ok(frame),
                    Outbound::Message {
                        subscription,
                        delivery,
                    } => self.encode(&delivery.frame(&subscription)),
                    Outbound::Frame(frame) => self.encode(&frame),
                    Outbound::Close(frame) => {
                        closing = Some(*frame);
                        break;
                    }
                };
                let message = match encoded {
                    Ok(frame) => self.ws_message(frame),
                    // A header the client's STOMP version cannot carry (it came from the
                    // client).
                    Err(e) => {
                        break 'write Ok(Some(error_frame(
                            "frame cannot be sent",
                            &e.to_string(),
                            None,
                        )))
                    }
                };
                match self.unstalled(ws.feed(message), kill, stall).await {
                    Waited::Done(Ok(())) => written += 1,
                    Waited::Done(Err(_)) => break 'write Err(()),
                    Waited::Stopped => break 'write Ok(None),
                    Waited::Stalled => break 'write Ok(Some(self.stalled())),
                }
            }
            match self.unstalled(ws.flush(), kill, stall).await {
                Waited::Done(flushed) => flushed.map(|_| closing).map_err(|_| ()),
                Waited::Stopped => Ok(None),
                Waited::Stalled => Ok(Some(self.stalled())),
            }
        };
        // Whatever the write did not get to (it stopped early) is dropped with the session.
        batch.clear();
        if written > 0 {
            self.shared.metrics.frames_out.fetch_add(written, Relaxed);
        }
        outcome
    }

    /// Runs one socket write to completion unless the client stops taking bytes for
    /// `stall`, the session is killed or the server shuts down. Most writes finish on
    /// their first poll (the socket has room); only those that do not pay for a timer and
    /// the two cancellation waits.
    async fn unstalled<T>(
        &self,
        write: impl std::future::Future<Output = T>,
        kill: &CancellationToken,
        stall: Duration,
    ) -> Waited<T> {
        tokio::pin!(write);
        let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        if let Poll::Ready(done) = first {
            return Waited::Done(done);
        }
        tokio::select! {
            _ = kill.cancelled() => Waited::Stopped,
            _ = self.shutdown.cancelled() => Waited::Stopped,
            done = tokio::time::timeout(stall, write) => match done {
                Ok(done) => Waited::Done(done),
                Err(_) => Waited::Stalled,
            },
        }
    }

    /// The client has not taken a byte for `write_stall`: it is treated as a slow consumer.
    fn stalled(&self) -> Frame {
        self.shared
            .metrics
            .slow_consumer_disconnects
            .fetch_add(1, Relaxed);
        error_frame(
            "slow consumer",
            &format!(
                "the client read nothing for {:?}; disconnected",
                self.shared.config.limits.write_stall
            ),
            None,
        )
    }

    /// Decodes and handles every whole frame in `inbuf`.
    async fn read_frames(
        &mut self,
        inbuf: &mut BytesMut,
        ws: &mut Ws,
        kill: &CancellationToken,
    ) -> Option<Close> {
        loop {
            match self.decoder.decode(inbuf) {
                Ok(None) => return None,
                Ok(Some(Item::HeartBeat)) => {}
                Ok(Some(Item::Frame(frame))) => {
                    self.shared.metrics.frames_in.fetch_add(1, Relaxed);
                    if let Some(close) = self.handle_frame(frame, ws, kill).await {
                        return Some(close);
                    }
                }
                Err(e) => {
                    return Some(Close::Error(error_frame(
                        "malformed frame",
                        &e.to_string(),
                        None,
                    )))
                }
            }
        }
    }

    async fn handle_frame(
        &mut self,
        frame: Frame,
        ws: &mut Ws,
        kill: &CancellationToken,
    ) -> Option<Close> {
        let receipt = frame.get("receipt").map(str::to_string);
        let fail = |message: &str, detail: String| {
            Some(Close::Error(error_frame(
                message,
                &detail,
                receipt.as_deref(),
            )))
        };
        if self.version.is_none() {
            return match frame.command {
                Command::Connect | Command::Stomp => self.connect(&frame, ws).await,
                other => fail(
                    "CONNECT expected",
                    format!(
                        "the first frame must be CONNECT or STOMP, not {}",
                        other.as_str()
                    ),
                ),
            };
        }
        match frame.command {
            Command::Send => return self.send(frame, receipt, kill).await,
            Command::Subscribe => {
                let Some(id) = frame.get("id") else {
                    return fail(
                        "SUBSCRIBE without id",
                        "every SUBSCRIBE needs an id header".into(),
                    );
                };
                let Some(destination) = frame.get("destination") else {
                    return fail(
                        "SUBSCRIBE without destination",
                        "every SUBSCRIBE needs a destination header".into(),
                    );
                };
                let Some(room) = room_of(destination, SUBSCRIBE_PREFIX) else {
                    return fail("unknown destination", format!("cannot subscribe to {destination:?}; rooms are at {SUBSCRIBE_PREFIX}{{roomId}}"));
                };
                if self.subscriptions.contains_key(id) {
                    return fail(
                        "duplicate subscription id",
                        format!("subscription id {id:?} is already in use on this connection"),
                    );
                }
                if self.subscriptions.len() >= self.shared.config.limits.max_subscriptions {
                    return fail(
                        "too many subscriptions",
                        format!(
                            "at most {} subscriptions per connection",
                            self.shared.config.limits.max_subscriptions
                        ),
                    );
                }
                self.shared.rooms.subscribe(
                    room,
                    Arc::from(id),
                    self.version.unwrap_or(Version::V1_2),
                    &self.handle,
                );
                self.subscriptions.insert(id.to_string(), room.to_string());
            }
            Command::Unsubscribe => {
                let Some(id) = frame.get("id") else {
                    return fail(
                        "UNSUBSCRIBE without id",
                        "every UNSUBSCRIBE needs an id header".into(),
                    );
                };
                let Some(room) = self.subscriptions.remove(id) else {
                    return fail(
                        "unknown subscription",
                        format!("no subscription with id {id:?} on this connection"),
                    );
                };
                self.shared.rooms.unsubscribe(&room, id, self.handle.id);
            }
            Command::Disconnect => {
                // Every earlier SEND must be durable before the receipt says so.
                let all = self.shared.config.limits.session_inflight.max(1) as u32;
                let shutdown = self.shutdown.clone();
                tokio::select! {
                    _ = self.inflight.acquire_many(all) => {}
                    _ = shutdown.cancelled() => return Some(Close::Quietly),
                    _ = kill.cancelled() => return None,
                }
                // Frames queued before (receipts of earlier SENDs) go out first.
                let mut batch = Vec::new();
                if let Some(out_rx) = self.out_rx.as_mut() {
                    while let Ok(item) = out_rx.try_recv() {
                        batch.push(item);
                    }
                }
                if let Some(receipt) = &receipt {
                    batch.push(Outbound::Frame(Box::new(receipt_frame(receipt))));
                }
                let _ = self.write(ws, &mut batch, kill).await;
                return Some(Close::Quietly);
            }
            Command::Ack | Command::Nack => {} // subscriptions are auto-acknowledged
            Command::Connect | Command::Stomp => {
                return fail(
                    "already connected",
                    "CONNECT was already received on this connection".into(),
                )
            }
            Command::Begin | Command::Commit | Command::Abort => {
                return fail(
                    "transactions not supported",
                    format!("{} is not supported by this server", frame.command.as_str()),
                )
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return fail(
                    "server frame from client",
                    format!("{} is sent by servers, not clients", frame.command.as_str()),
                )
            }
        }
        if let Some(receipt) = receipt {
            if self
                .handle
                .outbound
                .try_send(Outbound::Frame(Box::new(receipt_frame(&receipt))))
                .is_err()
            {
                let _ = self.handle.kill(Kill::SlowConsumer);
            }
        }
        None
    }

    async fn connect(&mut self, frame: &Frame, ws: &mut Ws) -> Option<Close> {
        let offered = frame.get("accept-version").unwrap_or("1.0");
        let version = Version::negotiate(offered, Version::V1_2);
        let Some(version) = version else {
            let error = error_frame(
                "unsupported STOMP version",
                &format!("client accepts {offered:?}; this server speaks 1.0, 1.1 and 1.2"),
                None,
            )
            .header("version", "1.0,1.1,1.2");
            return Some(Close::Error(error));
        };
        let (cx, cy) = match frame.get("heart-beat") {
            None => (0, 0),
            Some(value) => match parse_heart_beat(value) {
                Some(pair) => pair,
                None => {
                    return Some(Close::Error(error_frame(
                        "malformed heart-beat",
                        &format!("heart-beat {value:?} is not \"<ms>,<ms>\""),
                        None,
                    )))
                }
            },
        };
        let (sx, sy) = self.shared.config.limits.heartbeat;
        let (sx, sy) = (sx.as_millis() as u64, sy.as_millis() as u64);
        let period = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        self.heartbeat_out = period(heart_beat_period(sx, cy));
        self.heartbeat_in = period(heart_beat_period(cx, sy));
        self.version = Some(version);
        self.decoder.set_version(version);
        let connected = Frame::new(Command::Connected)
            .header("version", version.as_str())
            .header("heart-beat", format!("{sx},{sy}"))
            .header("server", concat!("stompede/", env!("CARGO_PKG_VERSION")))
            .header(
                "session",
                format!("{}-{}", self.shared.config.instance_id, self.handle.id),
            );
        let never = CancellationToken::new();
        match self
            .write(ws, &mut vec![Outbound::Frame(Box::new(connected))], &never)
            .await
        {
            Ok(_) => None,
            Err(()) => Some(Close::Quietly),
        }
    }

    async fn send(
        &mut self,
        frame: Frame,
        receipt: Option<String>,
        kill: &CancellationToken,
    ) -> Option<Close> {
        let fail = |message: &str, detail: String| {
            Some(Close::Error(error_frame(
                message,
                &detail,
                receipt.as_deref(),
            )))
        };
        let Some(destination) = frame.get("destination") else {
            return fail(
                "SEND without destination",
                "every SEND needs a destination header".into(),
            );
        };
        let Some(room) = room_of(destination, SEND_PREFIX) else {
            return fail(
                "unknown destination",
                format!(
                    "cannot SEND to {destination:?}; chat messages go to {SEND_PREFIX}{{roomId}}"
                ),
            );
        };
        let message: ChatMessage = match serde_json::from_slice(&frame.body) {
            Ok(message) => message,
            Err(e) => {
                return fail("invalid chat message", format!("the body must be JSON {{\"roomId\", \"sender\", \"message\", \"type\": ENTER|TALK|LEAVE}}: {e}"))
            }
        };
        if message.room_id != room {
            return fail(
                "room mismatch",
                format!(
                    "body roomId {:?} differs from destination room {room:?}",
                    message.room_id
                ),
            );
        }
        let permit = tokio::select! {
            permit = self.inflight.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return Some(Close::Quietly) },
            _ = kill.cancelled() => return None,
        };
        let durable = match self.shared.publisher.enqueue(message).await {
            Ok(durable) => durable,
            Err(e) => return fail("publish failed", e),
        };
        let outbound = self.handle.outbound.clone();
        let handle = self.handle.clone();
        self.shared.tasks.spawn(async move {
            let outcome = durable.await;
            drop(permit);
            let item = match (outcome, receipt) {
                (Ok(()), Some(receipt)) => Outbound::Frame(Box::new(receipt_frame(&receipt))),
                (Ok(()), None) => return,
                (Err(e), receipt) => Outbound::Close(Box::new(error_frame(
                    "publish failed",
                    &e,
                    receipt.as_deref(),
                ))),
            };
            if outbound.try_send(item).is_err() {
                let _ = handle.kill(Kill::SlowConsumer);
            }
        });
        None
    }

    fn unsubscribe_all(&mut self) {
        for (id, room) in self.subscriptions.drain() {
            self.shared.rooms.unsubscribe(&room, &id, self.handle.id);
        }
    }
}

/// `/app/chat/room-1` with prefix `/app/chat/` → `room-1` (non-empty, no further `/`).
fn room_of<'a>(destination: &'a str, prefix: &str) -> Option<&'a str> {
    let room = destination.strip_prefix(prefix)?;
    (!room.is_empty() && !room.contains('/')).then_some(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_from_destinations() {
        assert_eq!(room_of("/app/chat/r1", SEND_PREFIX), Some("r1"));
        assert_eq!(room_of("/app/chat/", SEND_PREFIX), None);
        assert_eq!(room_of("/app/chat/a/b", SEND_PREFIX), None);
        assert_eq!(room_of("/topic/room/r1", SEND_PREFIX), None);
        assert_eq!(room_of("/topic/room/r1", SUBSCRIBE_PREFIX), Some("r1"));
    }

    #[test]
    fn heart_beats_are_checked_as_often_as_the_shorter_period_needs() {
        let ms = Duration::from_millis;
        // The harness's 10 s beats both ways: a check every 2.5 s, not every 250 ms.
        assert_eq!(tick_period(Some(ms(10_000)), Some(ms(10_000))), ms(2_500));
        assert_eq!(tick_period(Some(ms(10_000)), Some(ms(1_000))), ms(250));
        assert_eq!(tick_period(None, Some(ms(400))), ms(100));
        // Bounded both ways; no heart-beats at all still looks in now and then.
        assert_eq!(tick_period(Some(ms(100)), None), ms(50));
        assert_eq!(tick_period(Some(ms(60_000)), None), ms(5_000));
        assert_eq!(tick_period(None, None), ms(5_000));
        // A beat is sent when the next tick would be late for it: never later than due.
        let (every, tick) = (ms(10_000), tick_period(Some(ms(10_000)), None));
        let sent_at = |since_write: Duration| since_write + tick >= every;
        assert!(!sent_at(ms(7_000)));
        assert!(sent_at(ms(7_500)), "one tick early");
        assert!(sent_at(every), "on time at the latest");
    }
}
