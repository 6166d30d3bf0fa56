//! Faults on the run's clock, and what they did to the users.
//!
//! A scenario's `[[faults]]` ([`crate::scenario::Fault`]) are injected by [`inject`] at
//! their time after sending starts: against the local stack's processes (kill or restart a
//! broker or a server, pause PostgreSQL), against the traffic of one server's users
//! through a [`relay`] placed in front of it (delay, drop, partition), or as a user's own
//! command (`exec`, the only kind an external target allows besides network faults).
//! Each injection is logged as a [`inject::Injected`] event. After the run, [`recovery`]
//! turns those events, the users' delivery gaps ([`outage`]), their reconnections and the
//! per-second timeline into the recovery figures of `summary.json`.

pub mod inject;
pub mod outage;
pub mod recovery;
pub mod relay;
pub mod relay_net;
