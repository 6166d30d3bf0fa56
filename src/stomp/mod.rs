//! The STOMP 1.2 codec, shared by the chat server and the virtual users.
//!
//! Data flows one way per direction:
//!
//! - **In:** each WebSocket message is appended to a per-connection `BytesMut`, and
//!   [`Decoder::decode`] is called until it returns `Ok(None)`. It yields
//!   [`Item::Frame`]s and [`Item::HeartBeat`]s, checks that a whole frame is buffered
//!   before building anything, and refuses frames over a size limit
//!   ([`DEFAULT_MAX_FRAME_SIZE`] unless told otherwise).
//! - **Out:** [`encode`] (or [`encode_for`] an older peer) appends a [`Frame`] to an
//!   output buffer; [`heartbeat`] appends a heart-beat EOL.
//!
//! `frame.rs` holds the model (commands, versions, frames, heart-beat helpers),
//! `decode.rs` the streaming decoder and its errors, `encode.rs` the encoder; the
//! round-trip properties that tie the two together live in `proptests.rs`.

mod decode;
mod encode;
mod frame;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, Decoder};
pub use encode::{encode, encode_for, heartbeat};
pub use frame::{heart_beat_period, parse_heart_beat, Command, Frame, Item, Version};

/// Default limit on one frame (command, headers and body together): 64 KiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 64 * 1024;
