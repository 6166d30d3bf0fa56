//! PostgreSQL chat history: the schema and the batched, idempotent writer.
//!
//! Both persistence strategies end here: rows arrive through a bounded queue, are written
//! in batches keyed by Kafka position (`INSERT ... SELECT FROM UNNEST ... ON CONFLICT DO
//! NOTHING`), and each request's waiter is told once its batch has committed.

mod writer;

pub use writer::{connect, spawn_writers, DbQueue, Row, WriteRequest, Writers};

/// The schema, applied idempotently by the stack and by every server at start-up.
pub const SCHEMA: &str = include_str!("schema.sql");

/// Name of the chat history table.
pub const TABLE: &str = "chat_messages";
