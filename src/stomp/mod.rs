//! The STOMP 1.2 codec, shared by the chat server and the virtual users.
//!
//! Data flows one way per direction:
//!
//! - **In:** each WebSocket message is appended to a per-connection `BytesMut`, and
//!   [`Decoder::decode`] is called until it returns `Ok(None)`. It yields
//!   [`Item::Frame`]s and [`Item::HeartBeat`]s, checks that a whole frame is buffered
//!   before building anything, and refuses frames over a size limit
//!   ([`DEFAULT_MAX_FRAME_SIZE`] unless told otherwise).
//! - **Out:** [`encode_for`] appends a [`Frame`] to an output buffer for the peer's
//!   version, or refuses it with an [`EncodeError`] when that version cannot carry a
//!   header as it is (so nothing is ever sent that reads back differently); [`encode`]
//!   is the STOMP 1.2 shorthand for frames the program builds itself; [`heartbeat`]
//!   appends a heart-beat EOL.
//!
//! `frame.rs` holds the model (commands, versions, frames, heart-beat helpers),
//! `headers.rs` a frame's headers (pointing into the received bytes where it can),
//! `decode.rs` the streaming decoder and its errors, `encode.rs` the encoder; the
//! round-trip properties that tie the two together live in `proptests.rs`.

mod decode;
mod encode;
mod frame;
mod headers;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, Decoder};
pub use encode::{encode, encode_for, heartbeat, EncodeError};
pub use frame::{heart_beat_period, parse_heart_beat, Command, Frame, Item, Version};
pub use headers::Headers;

/// Default limit on one frame (command, headers and body together): 64 KiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024;
