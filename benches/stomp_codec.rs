//! Cost of the STOMP codec on the frames a chat load test sends most: a client SEND
//! to a room and the MESSAGE the server fans out for it, each about 256 bytes.
//!
//! Each frame is built once, encoded once to get its wire bytes, then measured both
//! ways: decode (wire bytes in a fresh `BytesMut` to a `Frame`) and encode (`Frame`
//! into a reused `BytesMut`). Throughput is reported in wire bytes.
//!
//! `stomp/trickle` feeds a frame with one long header line to the decoder one byte per
//! call, as a peer sending one byte per WebSocket message would. Its throughput should
//! not fall as the line grows (4 KiB against 60 KiB): each byte is scanned once.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use stompede::stomp::{encode, Command, Decoder, Frame, Item, DEFAULT_MAX_FRAME_SIZE};

fn send_frame() -> Frame {
    Frame::new(Command::Send)
        .header("destination", "/app/chat/room-42")
        .header("content-type", "application/json")
        .header("receipt", "vu-0017-msg-000123")
        .with_body(
            r#"{"room":"room-42","user":"vu-0017","seq":123,"sent_at_us":1718000000123456,"text":"Hello everyone, this is a chat message from a virtual user!!"}"#,
        )
}

fn message_frame() -> Frame {
    Frame::new(Command::Message)
        .header("destination", "/topic/chat/room-42")
        .header("subscription", "sub-0")
        .header("message-id", "room-42-7-000000123456")
        .header("content-type", "application/json")
        .with_body(
            r#"{"room":"room-42","user":"vu-0017","seq":123,"sent_at_us":1718000000123456,"text":"Hello everyone, from the server fan-out."}"#,
        )
}

fn bench_frame(c: &mut Criterion, name: &str, frame: &Frame) {
    let wire = frame.to_bytes();
    let mut group = c.benchmark_group(format!("stomp/{name}"));
    group.throughput(Throughput::Bytes(wire.len() as u64));

    group.bench_function(format!("decode_{}b", wire.len()), |b| {
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_SIZE);
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| match decoder.decode(&mut buf) {
                Ok(Some(Item::Frame(f))) => black_box(f),
                other => panic!("benchmark frame did not decode: {other:?}"),
            },
            BatchSize::SmallInput,
        );
    });

    group.bench_function(format!("encode_{}b", wire.len()), |b| {
        let mut out = BytesMut::with_capacity(1024);
        b.iter(|| {
            out.clear();
            encode(black_box(frame), &mut out);
            black_box(out.len())
        });
    });
    group.finish();
}

fn bench_trickle(c: &mut Criterion) {
    let mut group = c.benchmark_group("stomp/trickle");
    for line in [4 * 1024, 60 * 1024] {
        let wire = Frame::new(Command::Send)
            .header("destination", "/app/chat/room-42")
            .header("x-long", "v".repeat(line))
            .to_bytes();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(format!("byte_at_a_time_{}b", wire.len()), |b| {
            b.iter_batched(
                || (Decoder::new(DEFAULT_MAX_FRAME_SIZE), BytesMut::new()),
                |(mut decoder, mut buf)| {
                    for &byte in wire.iter() {
                        buf.extend_from_slice(&[byte]);
                        if let Some(item) = decoder.decode(&mut buf).expect("valid frame") {
                            return black_box(item);
                        }
                    }
                    panic!("benchmark frame did not decode");
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn codec(c: &mut Criterion) {
    bench_frame(c, "send", &send_frame());
    bench_frame(c, "message", &message_frame());
    bench_trickle(c);
}

criterion_group!(benches, codec);
criterion_main!(benches);
