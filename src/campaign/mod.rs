//! Campaigns: several runs of a scenario as one job. Each step calls [`crate::load::run`]
//! and works from the [`crate::report::Summary`] it returns, never from the run's
//! internals; the single-run driver knows nothing of campaigns.
//!
//! - [`gate`]: the CI regression gate: N runs against a baseline of N runs, judged per
//!   metric with [`stats`];
//! - [`capacity`]: the highest load that meets a scenario's SLOs, by constant-load steps
//!   judged in [`step`];
//! - [`sweep`]: one scenario over a matrix of stack shapes, the stack reshaped between
//!   cells;
//! - [`compare`]: existing `summary.json` / `capacity.json` files side by side.

pub mod capacity;
pub mod compare;
pub mod gate;
pub mod stats;
pub mod step;
pub mod sweep;

use crate::report::gate_baseline::Machine;
use crate::scenario::Scenario;

/// Hash of what shapes the load: timings, seed, users, rooms, load model, churn, and the
/// target's destinations, body and receipts. Not the name, description or SLOs, and not
/// where the target is (that is the target's shape, compared on its own).
pub fn scenario_hash(scenario: &Scenario) -> String {
    let mut v = serde_json::to_value(scenario).unwrap_or(serde_json::Value::Null);
    if let Some(map) = v.as_object_mut() {
        for key in ["name", "description", "slo", "source"] {
            map.remove(key);
        }
        if let Some(target) = map.get_mut("target").and_then(|t| t.as_object_mut()) {
            target.retain(|k, _| matches!(k.as_str(), "send" | "subscribe" | "body" | "receipts"));
        }
    }
    let mut text = String::new();
    canonical(&v, &mut text);
    // FNV-1a, 64 bits: an identity check, not a defence against forgery.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// JSON with object keys sorted, so the hash does not depend on serde's map order.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// This machine's size, read the way a run's summary reads it.
pub fn this_machine() -> Machine {
    let e = crate::load::summary::environment();
    Machine {
        cpus: e.cpus,
        memory_bytes: e.memory_bytes,
        hostname: e.hostname,
        os: e.os,
    }
}
