//! PostgreSQL chat history: the schema and the batched, idempotent writer.
//!
//! Both persistence strategies end here: rows arrive through a bounded queue, are written
//! in multi-row `INSERT ... ON CONFLICT DO NOTHING` batches keyed by Kafka position, and
//! each row's waiter is told once its batch has committed.

/// The schema, applied idempotently by the stack and by every server at start-up.
pub const SCHEMA: &str = include_str!("schema.sql");

/// Name of the chat history table.
pub const TABLE: &str = "chat_messages";
