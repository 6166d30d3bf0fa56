//! The reference chat server (work in progress).
pub mod config;
pub use config::{Config, Persist};
