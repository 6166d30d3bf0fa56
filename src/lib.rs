//! stompede: a load-testing and benchmark harness for real-time chat on STOMP over
//! WebSocket with Apache Kafka.
//!
//! The crate holds both halves of the job: the reference chat server ([`server`]) with
//! its local stack of real Kafka and PostgreSQL processes ([`stack`]), and the pieces
//! the virtual users are built from. The STOMP codec ([`stomp`]) is shared by both sides.

pub mod campaign;
pub mod chat;
pub mod cli;
pub mod client;
pub mod db;
pub mod fault;
pub mod limits;
pub mod load;
pub mod report;
pub mod scenario;
pub mod server;
pub mod shard;
pub mod stack;
pub mod stomp;
pub mod wake_gate;
