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
pub mod latency;
pub mod outage;
pub mod recovery;
pub mod relay;
pub mod relay_net;
pub mod settle;

pub use settle::Settle;

use std::collections::HashMap;
use std::sync::Arc;

use crate::scenario::{server_index, Scenario};
use relay::{NetControl, Relay, RelayConfig};

/// The relays a run puts in front of the servers its network faults are about.
#[derive(Default)]
pub struct Relays {
    running: Vec<Relay>,
    /// Server index → the switch of the relay in front of it.
    pub controls: HashMap<usize, Arc<NetControl>>,
}

impl Relays {
    /// Starts one relay per server a network fault names and points that server's URL in
    /// `urls` at it (users then reach the server through it).
    pub async fn start(scenario: &Scenario, urls: &mut [String]) -> std::io::Result<Relays> {
        let mut relays = Relays::default();
        for f in scenario.faults.iter().filter(|f| f.action.is_network()) {
            let Some(i) = f.action.server().and_then(server_index) else {
                continue;
            };
            if i >= urls.len() || relays.controls.contains_key(&i) {
                continue;
            }
            let relay = Relay::start(RelayConfig {
                upstream: urls[i].clone(),
                ..RelayConfig::default()
            })
            .await?;
            urls[i] = relay.url.clone();
            relays.controls.insert(i, relay.control());
            relays.running.push(relay);
        }
        Ok(relays)
    }

    pub async fn stop(self) {
        for r in self.running {
            r.stop().await;
        }
    }
}
