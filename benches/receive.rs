//! The harness's receive path, per delivery: the WebSocket text of one `MESSAGE` (as
//! the reference server sends it: chat JSON carrying a 256-byte stamped text) appended
//! to the client's buffer, decoded to a frame, its stamp found and checked against what
//! the run issued, the arrival marked in the recipient's membership, and the latency
//! recorded (`stompede::load::receive`, what every virtual user runs).
//!
//! One batch is 4,096 messages from 8 senders of one room to one fresh membership, so
//! every arrival is new and in order, as in a healthy run. Throughput is in deliveries.

use std::collections::HashMap;
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stompede::load::integrity::{Membership, Slots};
use stompede::load::receive::{Received, Receiver};
use stompede::load::stamp::{marker, Stamp};
use stompede::load::stats::Recorder;
use stompede::load::Schedule;
use stompede::stomp::{Command, Decoder, Frame, Item};

const SENDERS: u32 = 8;
const BATCH: u64 = 4096;
const RUN: &str = "r20261130T120000Z-7f3a";

/// The wire text of message `i` of the batch.
fn wire(i: u64) -> Vec<u8> {
    let sender = (i % SENDERS as u64) as u32;
    let stamp = Stamp {
        sender,
        room: 0,
        seq: i / SENDERS as u64,
        intended_us: 10_000_000 + i * 100,
        sent_us: 10_000_050 + i * 100,
    };
    let body = serde_json::json!({
        "roomId": "town-hall-0",
        "sender": format!("user-{sender}"),
        "message": stamp.text(RUN, 256),
        "type": "TALK",
    })
    .to_string();
    Frame::new(Command::Message)
        .header("subscription", "sub-0")
        .header("message-id", format!("1-{}", 1_000_000 + i))
        .header("destination", "/topic/room/town-hall-0")
        .header("content-type", "application/json")
        .with_body(body)
        .to_bytes()
        .to_vec()
}

fn receive_path(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = (0..BATCH).map(wire).collect();
    let senders: Vec<u32> = (0..SENDERS).collect();
    let slots = Slots::new(&[senders]);
    for s in 0..SENDERS {
        let slot = slots.slot(0, s).expect("a slot per sender");
        for _ in 0..BATCH / SENDERS as u64 {
            slots.next_seq(slot);
        }
    }
    let recorder = Recorder::new(64);
    let mark = marker(RUN);
    let receiver = Receiver {
        marker: &mark,
        slots: &slots,
        recorder: &recorder,
        schedule: Schedule {
            send_start_us: 0,
            measure_start_us: 1_000_000,
            send_end_us: u64::MAX,
        },
        timed: None,
    };
    let mut group = c.benchmark_group("harness");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("receive_4096_messages", |b| {
        b.iter_batched(
            || {
                let mut m = Membership::default();
                m.join((0..SENDERS).map(|s| (s, 0)).collect());
                let mut rooms = HashMap::new();
                rooms.insert(0u32, m);
                (rooms, Decoder::new(1 << 20), BytesMut::with_capacity(4096))
            },
            |(mut rooms, mut decoder, mut inbuf)| {
                for (i, bytes) in messages.iter().enumerate() {
                    inbuf.extend_from_slice(bytes);
                    let Ok(Some(Item::Frame(frame))) = decoder.decode(&mut inbuf) else {
                        panic!("message {i} did not decode");
                    };
                    let got =
                        receiver.receive(&frame.body, 7, 20_000_000, |room| rooms.get_mut(&room));
                    assert!(matches!(got, Received::Delivered { .. }), "{got:?}");
                }
                black_box(rooms)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
    let mut drained = Recorder::empty_interval();
    recorder.drain(&mut drained);
    assert!(
        drained.delivered > 0 && recorder.corrupt.load(std::sync::atomic::Ordering::Relaxed) == 0
    );
}

criterion_group!(benches, receive_path);
criterion_main!(benches);
