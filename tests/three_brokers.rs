//! Acceptance tests on a real three-broker Kafka cluster (RF 3, min.insync.replicas 2).

mod common;

use common::{trial, two_servers_flow};
use stompede::server::Persist;

fn main() {
    common::run(3, 0, |env| {
        vec![
            trial(env, "flow_two_servers_persist_producer", |env| {
                two_servers_flow(env, Persist::Producer)
            }),
            trial(env, "flow_two_servers_persist_consumer", |env| {
                two_servers_flow(env, Persist::Consumer)
            }),
        ]
    })
}
