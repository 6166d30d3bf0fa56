//! Network faults of a [`Relay`](super::relay::Relay), switched while its connections are
//! live: [`Relay::control`](super::relay::Relay::control) hands out the relay's
//! [`NetControl`], and [`NetControl::set`] applies a [`NetFault`] to every connection at
//! once, until the next `set`.
//!
//! Where each fault acts (see the relay's module docs for the pipeline):
//!
//! - [`NetFault::Delay`] and [`NetFault::Drop`] are decided by the **readers**, when a
//!   message is read: a message read under `Delay(d)` keeps its `d` whatever is set
//!   afterwards, and one already queued when `Drop` is set still goes out.
//! - [`NetFault::Partition`] is a gate in front of each **writer's** send, so it holds
//!   messages already queued too, and lifting it wakes every held writer at once (a
//!   [`watch`] channel, no polling).
//!
//! With no fault set, the per-message cost is one atomic load in the reader and one in
//! the writer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A network fault applied to every connection of a relay while it is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFault {
    /// Forward as configured (the normal state).
    Pass,
    /// Hold every message read while this is set `Duration` longer (both directions), on
    /// top of `RelayConfig::delay`. Order is still kept per direction: after the delay is
    /// lifted or shortened, later messages wait for the ones held before them.
    Delay(Duration),
    /// Discard every data message (Text/Binary) read while set, both directions; Close
    /// still passes. Server→client messages are still decoded, so the STOMP MESSAGE
    /// frames in them are counted (`RelayCounters::fault_dropped_frames`, not numbered
    /// in `messages_seen`) and a frame split over several WebSocket messages is judged
    /// by the message that completes it: the client never gets half a frame.
    Drop,
    /// Forward nothing in either direction while set: messages wait in order (the
    /// per-direction queues fill, then the readers stop reading, so TCP backpressure holds
    /// the rest), and everything held goes out in order once the fault is lifted. Like a
    /// real partition for TCP: delayed, not lost (unless a peer gives up on heart-beats
    /// and closes, which then also waits). WebSocket Ping/Pong stay per hop: each hop
    /// keeps answering Pings while its reader reads, so only STOMP (heart-beats
    /// included) goes silent.
    Partition,
}

/// Shared switch of one relay's network fault.
#[derive(Debug)]
pub struct NetControl {
    /// Whether anything but `Pass` is set: the one load of the hot path.
    active: AtomicBool,
    /// The fault itself, and the wake-up of writers held by a partition.
    fault: watch::Sender<NetFault>,
}

impl Default for NetControl {
    fn default() -> NetControl {
        NetControl {
            active: AtomicBool::new(false),
            fault: watch::Sender::new(NetFault::Pass),
        }
    }
}

impl NetControl {
    /// Applies `fault` to every connection of the relay from now on (`Pass` lifts it).
    pub fn set(&self, fault: NetFault) {
        // Under the channel's lock, so concurrent sets leave the flag and the value agreeing.
        self.fault.send_modify(|current| {
            *current = fault;
            self.active
                .store(fault != NetFault::Pass, Ordering::Release);
        });
    }

    /// The fault set now.
    pub fn current(&self) -> NetFault {
        *self.fault.borrow()
    }

    /// The fault set now, at the cost of one atomic load while it is `Pass`.
    pub(super) fn now(&self) -> NetFault {
        if self.active.load(Ordering::Acquire) {
            self.current()
        } else {
            NetFault::Pass
        }
    }

    /// Returns once no `Partition` is set; whether it had to wait.
    pub(super) async fn pass_partition(&self) -> bool {
        if self.now() != NetFault::Partition {
            return false;
        }
        // The receiver sees the value as of now, so a lift in between is not missed.
        let mut fault = self.fault.subscribe();
        // Never closed: `self` owns the sender.
        let _ = fault.wait_for(|f| *f != NetFault::Partition).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use bytes::BytesMut;
    use futures_util::stream::SplitSink;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::time::Instant;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    use super::*;
    use crate::fault::relay::{Relay, RelayConfig, QUEUE};
    use crate::stomp::{encode, heartbeat, Command, Decoder, Frame, Item};

    type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
    /// Messages one end received, each with when.
    type Arrivals = mpsc::UnboundedReceiver<(Instant, Message)>;
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A one-connection upstream on port 0, driven by the test.
    struct Upstream {
        url: String,
        /// Data messages and Closes it received.
        seen: Arrivals,
        /// Messages for it to send.
        push: mpsc::UnboundedSender<Message>,
    }

    /// Starts an upstream that also sends each data message back if `echo`.
    async fn upstream(echo: bool) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws-stomp", listener.local_addr().unwrap());
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (push, mut to_push) = mpsc::unbounded_channel::<Message>();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            loop {
                tokio::select! {
                    received = ws.next() => match received {
                        Some(Ok(message)) if message.is_text() || message.is_binary() => {
                            let _ = seen_tx.send((Instant::now(), message.clone()));
                            if echo && ws.send(message).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(close @ Message::Close(_))) => {
                            let _ = seen_tx.send((Instant::now(), close));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                    Some(message) = to_push.recv() => {
                        if ws.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Upstream { url, seen, push }
    }

    /// A virtual user: its sending half, and what reached it.
    struct Client {
        sink: SplitSink<Ws, Message>,
        got: Arrivals,
    }

    async fn client(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .unwrap();
        let (sink, mut stream) = ws.split();
        let (got_tx, got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if got_tx.send((Instant::now(), message)).is_err() {
                    break;
                }
            }
        });
        Client { sink, got }
    }

    /// The next arrival at one end.
    async fn next(arrivals: &mut Arrivals, end: &str) -> (Instant, Message) {
        match tokio::time::timeout(PATIENCE, arrivals.recv()).await {
            Ok(Some(arrival)) => arrival,
            other => panic!("expected a message at the {end}, got {other:?}"),
        }
    }

    fn text(bytes: BytesMut) -> Message {
        Message::Text(Utf8Bytes::try_from(bytes.freeze()).unwrap())
    }

    fn stomp(command: Command, id: u64) -> Frame {
        Frame::new(command)
            .header("destination", "/topic/room.1")
            .header("message-id", id.to_string())
            .with_body(format!("{{\"n\":{id}}}"))
    }

    /// One WebSocket message carrying one frame.
    fn frame(command: Command, id: u64) -> Message {
        text(stomp(command, id).to_bytes().into())
    }

    /// The command and id of the one frame in `message`.
    fn id_of(message: &Message) -> (Command, u64) {
        let Message::Text(text) = message else {
            panic!("expected a text message, got {message:?}");
        };
        match Decoder::default().decode(&mut BytesMut::from(text.as_bytes())) {
            Ok(Some(Item::Frame(f))) => (f.command, f.get("message-id").unwrap().parse().unwrap()),
            other => panic!("expected one frame, got {other:?}"),
        }
    }

    /// Waits for a condition on the relay's counters.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn partition_holds_everything_until_lifted_then_delivers_it_in_order() {
        let mut up = upstream(false).await;
        let relay = Relay::start(RelayConfig {
            upstream: up.url.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let control = relay.control();
        assert_eq!(control.current(), NetFault::Pass);
        let mut user = client(&relay.url).await;
        // Relayed both ways before the fault.
        user.sink.send(frame(Command::Send, 0)).await.unwrap();
        assert_eq!(
            id_of(&next(&mut up.seen, "upstream").await.1),
            (Command::Send, 0)
        );
        up.push.send(frame(Command::Message, 0)).unwrap();
        assert_eq!(
            id_of(&next(&mut user.got, "client").await.1),
            (Command::Message, 0)
        );

        // More than a queue holds, so the readers stop and TCP holds the rest.
        let n = QUEUE as u64 + 500;
        let partitioned_at = Instant::now();
        control.set(NetFault::Partition);
        assert_eq!(control.current(), NetFault::Partition);
        for id in 1..=n {
            up.push.send(frame(Command::Message, id)).unwrap();
        }
        let mut sink = user.sink;
        let sending = tokio::spawn(async move {
            for id in 1..=n {
                sink.send(frame(Command::Send, id)).await.unwrap();
            }
            sink
        });
        let c = &relay.counters;
        // Once the relay read a server→client message, hold the fault for a while.
        until("the relay reading a held message", || {
            c.messages_seen.load(Relaxed) > 1
        })
        .await;
        let hold = Duration::from_millis(300);
        tokio::time::sleep(hold).await;
        assert!(
            user.got.try_recv().is_err() && up.seen.try_recv().is_err(),
            "nothing crosses a partition"
        );
        let read = c.messages_seen.load(Relaxed);
        assert!(
            read <= 1 + QUEUE as u64 + 2,
            "{read} MESSAGE frames read during the partition: the queue is bounded"
        );

        let lifted_at = Instant::now();
        control.set(NetFault::Pass);
        for id in 1..=n {
            let (at, message) = next(&mut user.got, "client").await;
            assert_eq!(id_of(&message), (Command::Message, id), "order is kept");
            assert!(at >= lifted_at, "MESSAGE {id} crossed the partition");
        }
        for id in 1..=n {
            let (at, message) = next(&mut up.seen, "upstream").await;
            assert_eq!(id_of(&message), (Command::Send, id), "order is kept");
            assert!(at >= lifted_at, "SEND {id} crossed the partition");
        }
        let _sink = sending.await.unwrap();

        // The first held message waited from its release (before the hold) to the lift.
        let held = c.held_max_ms.load(Relaxed);
        assert!(
            held >= hold.as_millis() as u64 && held <= partitioned_at.elapsed().as_millis() as u64,
            "held_max_ms {held}"
        );
        let counted =
            [&c.messages_seen, &c.fault_dropped_messages, &c.dropped].map(|n| n.load(Relaxed));
        assert_eq!(counted, [1 + n, 0, 0], "none lost");
        tokio::time::timeout(PATIENCE, relay.stop())
            .await
            .expect("relay stops promptly");
    }

    #[tokio::test]
    async fn stop_ends_connections_held_by_a_partition() {
        let up = upstream(false).await;
        let relay = Relay::start(RelayConfig {
            upstream: up.url.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut user = client(&relay.url).await;
        relay.control().set(NetFault::Partition);
        up.push.send(frame(Command::Message, 1)).unwrap();
        let c = relay.counters.clone();
        until("the relay reading the message", || {
            c.messages_seen.load(Relaxed) == 1
        })
        .await;
        tokio::time::timeout(PATIENCE, relay.stop())
            .await
            .expect("a writer held by a partition still stops");
        // The connection ends without the held message.
        while let Some((_, message)) = tokio::time::timeout(PATIENCE, user.got.recv())
            .await
            .expect("the connection ends")
        {
            assert!(message.is_close(), "{message:?} crossed the partition");
        }
    }

    #[tokio::test]
    async fn drop_discards_data_while_set_and_counts_it_exactly() {
        let mut up = upstream(false).await;
        let relay = Relay::start(RelayConfig {
            upstream: up.url.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let control = relay.control();
        let mut user = client(&relay.url).await;
        user.sink.send(frame(Command::Send, 1)).await.unwrap();
        assert_eq!(
            id_of(&next(&mut up.seen, "upstream").await.1),
            (Command::Send, 1)
        );
        up.push.send(frame(Command::Message, 1)).unwrap();
        assert_eq!(
            id_of(&next(&mut user.got, "client").await.1),
            (Command::Message, 1)
        );

        control.set(NetFault::Drop);
        // Server→client: 3 WebSocket messages holding 3 MESSAGE frames.
        up.push.send(frame(Command::Message, 2)).unwrap();
        let mut two = BytesMut::new();
        encode(&stomp(Command::Message, 3), &mut two);
        encode(&stomp(Command::Message, 4), &mut two);
        heartbeat(&mut two);
        up.push.send(text(two)).unwrap();
        up.push.send(frame(Command::Receipt, 0)).unwrap();
        // Client→server: 2 messages, whose frames are not decoded (even a MESSAGE).
        user.sink.send(frame(Command::Send, 2)).await.unwrap();
        user.sink.send(frame(Command::Message, 3)).await.unwrap();
        let c = &relay.counters;
        let fault_counts =
            || [&c.fault_dropped_messages, &c.fault_dropped_frames].map(|n| n.load(Relaxed));
        until("5 messages dropped", || fault_counts() == [5, 3]).await;

        control.set(NetFault::Pass);
        up.push.send(frame(Command::Message, 5)).unwrap();
        user.sink.send(frame(Command::Send, 4)).await.unwrap();
        // Order is kept, so what comes next proves the dropped ones never arrive.
        assert_eq!(
            id_of(&next(&mut user.got, "client").await.1),
            (Command::Message, 5)
        );
        assert_eq!(
            id_of(&next(&mut up.seen, "upstream").await.1),
            (Command::Send, 4)
        );
        let counted = [
            &c.messages_seen,
            &c.dropped,
            &c.duplicated,
            &c.fault_dropped_messages,
            &c.fault_dropped_frames,
            &c.held_max_ms,
        ]
        .map(|n| n.load(Relaxed));
        assert_eq!(
            counted,
            [2, 0, 0, 5, 3, 0],
            "frames dropped by the fault are not numbered by the filter"
        );

        // A Close passes a Drop.
        control.set(NetFault::Drop);
        let bye = CloseFrame {
            code: CloseCode::Normal,
            reason: "server leaves".into(),
        };
        up.push.send(Message::Close(Some(bye.clone()))).unwrap();
        match next(&mut user.got, "client").await.1 {
            Message::Close(Some(frame)) => assert_eq!(frame, bye),
            other => panic!("expected the upstream's Close, got {other:?}"),
        }
        assert_eq!(fault_counts(), [5, 3]);
        relay.stop().await;
    }

    #[tokio::test]
    async fn delay_adds_to_each_direction_while_set() {
        let (base, extra) = (Duration::from_millis(20), Duration::from_millis(200));
        let mut up = upstream(true).await;
        let relay = Relay::start(RelayConfig {
            upstream: up.url.clone(),
            delay: base,
            ..Default::default()
        })
        .await
        .unwrap();
        let control = relay.control();
        let mut user = client(&relay.url).await;
        let mut round_trip = async |id| {
            let start = Instant::now();
            user.sink.send(frame(Command::Send, id)).await.unwrap();
            let (at, echoed) = next(&mut user.got, "client").await;
            assert_eq!(id_of(&echoed), (Command::Send, id));
            at - start
        };
        // Normal: the configured delay each way, and well short of the fault's.
        let normal = 2 * base..2 * base + extra;

        let before = round_trip(1).await;
        assert!(normal.contains(&before), "round trip {before:?} before");
        control.set(NetFault::Delay(extra));
        assert_eq!(control.current(), NetFault::Delay(extra));
        let during = round_trip(2).await;
        assert!(
            during >= 2 * (base + extra) && during >= before + extra,
            "round trip {during:?} under Delay({extra:?}), {before:?} before"
        );
        control.set(NetFault::Pass);
        let after = round_trip(3).await;
        assert!(normal.contains(&after), "round trip {after:?} after");
        assert_eq!(
            [
                &up.seen.recv().await.unwrap().1,
                &up.seen.recv().await.unwrap().1
            ]
            .map(id_of),
            [(Command::Send, 1), (Command::Send, 2)]
        );
        relay.stop().await;
    }
}
