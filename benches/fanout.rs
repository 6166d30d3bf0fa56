//! The reference server's fan-out path, per Kafka record: find the record's room, build
//! the delivery, queue it to every local subscriber of the room (2,000, the town-hall
//! room) and turn each queued item into the bytes its session's writer sends. Writing
//! to the sockets is left out: that is the kernel's share.
//!
//! - `alike_ids`: subscribers that name their subscription alike (the harness, and most
//!   STOMP libraries' `sub-0`): the room is the record's key, the frame is encoded once
//!   and shared (what the server does);
//! - `per_subscriber`: every subscriber with an id of its own and the room read from
//!   the JSON body, so each frame is built and encoded by its writer: what the server
//!   did for every subscriber before frames were shared.
//!
//! Throughput is in frames (subscribers reached).

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stompede::server::fanout::{room_destination, room_of};
use stompede::server::metrics::Metrics;
use stompede::server::rooms::{Delivery, Outbound, Rooms, SessionHandle};
use stompede::stomp::{encode_for, Version};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SUBSCRIBERS: u64 = 2_000;

fn payload() -> Vec<u8> {
    serde_json::json!({
        "roomId": "town-hall-0",
        "sender": "user-17",
        "message": format!("~r20261130T120000Z-7f3a:17:0:123:10000000:10000050~{}", ".".repeat(200)),
        "type": "TALK",
    })
    .to_string()
    .into_bytes()
}

fn room_of_subscribers(alike: bool) -> (Rooms, Vec<mpsc::Receiver<Outbound>>, Vec<SessionHandle>) {
    let rooms = Rooms::new(Arc::new(Metrics::new("bench")));
    let mut queues = Vec::new();
    let mut handles = Vec::new();
    for i in 0..SUBSCRIBERS {
        let (tx, rx) = mpsc::channel(4);
        let handle = SessionHandle {
            id: i,
            outbound: tx,
            kill: CancellationToken::new(),
            killed_for: Arc::new(std::sync::OnceLock::new()),
        };
        let id = if alike {
            "sub-0".to_string()
        } else {
            format!("sub-{i}")
        };
        rooms.subscribe(
            "town-hall-0",
            Arc::from(id.as_str()),
            Version::V1_2,
            &handle,
        );
        queues.push(rx);
        handles.push(handle);
    }
    (rooms, queues, handles)
}

/// The length of what one session's writer turns a queued item into.
fn len_of(item: Outbound) -> usize {
    match item {
        Outbound::Encoded(frame) => frame.as_bytes().len(),
        Outbound::Message {
            subscription,
            delivery,
        } => {
            let mut out = BytesMut::with_capacity(256 + delivery.body.len());
            encode_for(&delivery.frame(&subscription), Version::V1_2, &mut out).expect("encodable");
            out.len()
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn fanout(c: &mut Criterion) {
    let body = payload();
    let mut group = c.benchmark_group("server_fanout");
    group.throughput(Throughput::Elements(SUBSCRIBERS));
    for (name, alike, key) in [
        ("alike_ids", true, Some(&b"town-hall-0"[..])),
        ("per_subscriber", false, None),
    ] {
        let (rooms, mut queues, handles) = room_of_subscribers(alike);
        let mut offset = 0u64;
        group.bench_function(format!("record_to_2000_frames/{name}"), |b| {
            b.iter(|| {
                offset += 1;
                let room = room_of(key, &body).expect("a chat record");
                let delivery = Delivery {
                    destination: room_destination(&room),
                    message_id: format!("0-{offset}"),
                    body: Bytes::copy_from_slice(&body),
                };
                rooms.deliver(&room, Arc::new(delivery));
                let mut bytes = 0usize;
                for q in &mut queues {
                    let item = q.try_recv().expect("one item per subscriber");
                    bytes += len_of(item);
                }
                black_box(bytes)
            });
        });
        assert!(
            handles.iter().all(|h| !h.kill.is_cancelled()),
            "a subscriber was cut as a slow consumer"
        );
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
