//! The chat message as it travels: the JSON body of a STOMP `SEND`, the Kafka record
//! value, and the body of every `MESSAGE` pushed to subscribers.

use serde::{Deserialize, Serialize};

/// Kind of chat message, as in the reference design.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MessageType {
    Enter,
    Talk,
    Leave,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Enter => "ENTER",
            MessageType::Talk => "TALK",
            MessageType::Leave => "LEAVE",
        }
    }
}

/// `{"roomId", "sender", "message", "type"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChatMessage {
    pub room_id: String,
    pub sender: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: MessageType,
}
