//! The chat JSON body (`chat.rs`) as the server parses it from a SEND or a Kafka
//! record: arbitrary bytes never panic the parser, and whatever parses is written back
//! as JSON that parses to the same message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stompede::chat::ChatMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<ChatMessage>(data) else {
        return;
    };
    let json = serde_json::to_vec(&message).expect("a parsed message serializes");
    let back: ChatMessage = serde_json::from_slice(&json).expect("written JSON parses");
    assert_eq!(back, message);
    assert_eq!(
        message.kind.as_str(),
        serde_json::to_value(message.kind)
            .expect("kind")
            .as_str()
            .unwrap_or("")
    );
});
