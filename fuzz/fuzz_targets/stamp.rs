//! The harness's message stamp (`load/stamp.rs`): finding it in arbitrary bytes never
//! panics, a stamp found there reads back the same after being written again, and
//! every stamp written, in a raw text or inside a chat JSON body, reads back unchanged.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stompede::load::stamp::{marker, Stamp};

#[derive(Debug, Arbitrary)]
struct Input {
    /// Run ids are eight hex digits (`load/mod.rs`).
    run: u32,
    sender: u32,
    room: u32,
    seq: u64,
    intended_us: u64,
    sent_us: u64,
    size: u16,
    body: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let run = format!("{:08x}", input.run);
    if let Some(found) = Stamp::find(&input.body, &run) {
        let text = found.text(&run, usize::from(input.size));
        assert_eq!(Stamp::find(text.as_bytes(), &run), Some(found));
    }
    assert_eq!(
        Stamp::find(&input.body, &run),
        Stamp::find_marked(&input.body, &marker(&run))
    );

    let stamp = Stamp {
        sender: input.sender,
        room: input.room,
        seq: input.seq,
        intended_us: input.intended_us,
        sent_us: input.sent_us,
    };
    let size = usize::from(input.size);
    let text = stamp.text(&run, size);
    assert!(text.len() >= size);
    assert_eq!(Stamp::find(text.as_bytes(), &run), Some(stamp));
    let json = serde_json::json!({"roomId": "r", "sender": "u1", "message": text, "type": "TALK"});
    let json = serde_json::to_vec(&json).expect("JSON");
    assert_eq!(Stamp::find(&json, &run), Some(stamp));
});
