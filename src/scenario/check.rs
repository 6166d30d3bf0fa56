//! Range and consistency checks on a resolved [`Scenario`].
//!
//! Runs after loading and again after command-line overrides, so `--users 10` against
//! rooms of 50 members fails with the same message as writing it in the file. Each check
//! names the key, the value and what is allowed; the limits are listed in
//! `scenarios/README.md`.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::Hash;
use std::time::Duration;

use super::duration::format_duration;
use super::error::ScenarioError;
use super::model::*;
use super::validate::Ctx;

/// Largest `users.count`: the plan holds one entry per user.
pub const MAX_USERS: u32 = 10_000_000;
/// Largest total of room memberships (sum of `count * members` over all groups).
pub const MAX_MEMBERSHIPS: u64 = 10_000_000;
pub const MAX_PARTITIONS: u32 = 1_000;
pub const MAX_SERVERS: u32 = 32;

const HOUR: Duration = Duration::from_secs(3600);
/// Longest ramp-up (`users.count / users.connect_rate`): a run must be able to finish.
pub const MAX_RAMP_UP: Duration = HOUR.saturating_mul(24);
/// Longest measured phase (`duration`): a week-long soak.
pub const MAX_DURATION: Duration = HOUR.saturating_mul(24 * 7);
/// Longest `warmup`, `grace`, `load.think_time` and `churn.rejoin_after`.
pub const MAX_PHASE: Duration = HOUR.saturating_mul(24);
/// Longest `users.heartbeat`.
pub const MAX_HEARTBEAT: Duration = HOUR;
/// Highest `users.connect_rate` and `load.rate`, per second. A higher send rate would
/// space one sender's messages less than a microsecond apart, the schedule's resolution.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Lowest `load.rate`, per second: one message in about 11.6 days.
pub const MIN_RATE: f64 = 1e-6;
/// Highest `churn.leaves_per_second`.
pub const MAX_LEAVES_PER_SECOND: f64 = 100_000.0;

fn dur(d: Duration) -> Option<String> {
    Some(format!("\"{}\"", format_duration(d)))
}

fn num<T: std::fmt::Display>(v: T) -> Option<String> {
    Some(v.to_string())
}

/// A number as a person would write it: `0.5`, `250`, or `1e-300` rather than 300
/// zeros.
fn float(v: f64) -> Option<String> {
    let plain = v == 0.0 || !v.is_finite() || (1e-6..1e15).contains(&v.abs());
    Some(if plain {
        v.to_string()
    } else {
        format!("{v:e}")
    })
}

fn text(v: &str) -> Option<String> {
    Some(format!("{v:?}"))
}

/// A positive, finite number, or the error for `key`.
fn positive(ctx: &Ctx, key: &str, v: f64, what: &str) -> Result<(), ScenarioError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(ctx.err(
            key,
            float(v),
            format!("must be a number greater than 0 ({what})"),
        ))
    }
}

/// A positive number no higher than `max`, or the error for `key`; `why` says what the
/// limit protects.
fn positive_at_most(
    ctx: &Ctx,
    key: &str,
    v: f64,
    what: &str,
    max: f64,
    why: &str,
) -> Result<(), ScenarioError> {
    positive(ctx, key, v, what)?;
    if v > max {
        return Err(ctx.err(
            key,
            float(v),
            format!("must be at most {max} ({what}): {why}"),
        ));
    }
    Ok(())
}

/// A duration no longer than `max`, or the error for `key`; `why` says what it is for.
fn at_most(
    ctx: &Ctx,
    key: &str,
    d: Duration,
    max: Duration,
    why: &str,
) -> Result<(), ScenarioError> {
    if d > max {
        return Err(ctx.err(
            key,
            dur(d),
            format!("must be at most \"{}\" ({why})", format_duration(max)),
        ));
    }
    Ok(())
}

/// Seconds as words for a message, however large: `"2h46m40s"`, `"3.2e290 s"`.
fn seconds_text(secs: f64) -> String {
    if (0.0..1e12).contains(&secs) {
        // Below 1e15 ms the cast is exact enough and cannot saturate.
        let ms = (secs * 1000.0).round() as u64;
        format!("\"{}\"", format_duration(Duration::from_millis(ms)))
    } else {
        format!("{secs:.1e} s")
    }
}

/// Which names were already used, in one hash map: checking `n` names costs `O(n)`,
/// where comparing each name with every earlier one cost `O(n²)` (40,000 room groups
/// took seconds).
pub(crate) struct Seen<T>(HashMap<T, usize>);

impl<T: Hash + Eq> Seen<T> {
    pub fn new() -> Self {
        Seen(HashMap::new())
    }

    /// Records `name` as used at `index`; if it was used before, the earlier index.
    pub fn first_use(&mut self, name: T, index: usize) -> Option<usize> {
        match self.0.entry(name) {
            Entry::Occupied(e) => Some(*e.get()),
            Entry::Vacant(e) => {
                e.insert(index);
                None
            }
        }
    }
}

fn plain_name(v: &str, extra: &[char]) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(&c))
}

pub(crate) fn check(s: &Scenario, ctx: &Ctx) -> Result<(), ScenarioError> {
    if !plain_name(&s.name, &['.']) {
        return Err(ctx.err(
            "name",
            text(&s.name),
            "must be 1 to 64 characters from A-Z, a-z, 0-9, '-', '_' and '.' (it names the report \
             directory; it defaults to the file name, so rename the file or set name)",
        ));
    }
    if s.duration.is_zero() {
        return Err(ctx.err(
            "duration",
            dur(s.duration),
            "must be longer than 0s, e.g. \"60s\"",
        ));
    }
    at_most(
        ctx,
        "duration",
        s.duration,
        MAX_DURATION,
        "the measured phase; a longer soak is several runs",
    )?;
    at_most(
        ctx,
        "warmup",
        s.warmup,
        MAX_PHASE,
        "sending before the measured phase",
    )?;
    at_most(
        ctx,
        "grace",
        s.grace,
        MAX_PHASE,
        "waiting for deliveries after sending stops",
    )?;
    check_users(s, ctx)?;
    check_rooms(s, ctx)?;
    check_load(s, ctx)?;
    if let Some(c) = &s.churn {
        positive_at_most(
            ctx,
            "churn.leaves_per_second",
            c.leaves_per_second,
            "member leaves per second",
            MAX_LEAVES_PER_SECOND,
            "each leave is a LEAVE and an UNSUBSCRIBE, then an ENTER and a SUBSCRIBE",
        )?;
        at_most(
            ctx,
            "churn.rejoin_after",
            c.rejoin_after,
            MAX_PHASE,
            "how long a member stays away",
        )?;
        let memberships = s.memberships() as f64;
        let away = c.leaves_per_second * c.rejoin_after.as_secs_f64();
        if away >= memberships {
            return Err(ctx.err(
                "churn.leaves_per_second",
                float(c.leaves_per_second),
                format!(
                    "with rejoin_after = \"{}\" about {away:.0} members would be away at once, but the \
                     rooms only have {memberships} memberships; lower leaves_per_second or rejoin_after",
                    format_duration(c.rejoin_after)
                ),
            ));
        }
    }
    check_slo(&s.slo, ctx)?;
    check_target(&s.target, ctx)?;
    super::faults::check_faults(s, ctx)
}

fn check_users(s: &Scenario, ctx: &Ctx) -> Result<(), ScenarioError> {
    let u = &s.users;
    if u.count == 0 || u.count > MAX_USERS {
        return Err(ctx.err(
            "users.count",
            num(u.count),
            format!("must be 1 to {MAX_USERS}"),
        ));
    }
    positive_at_most(
        ctx,
        "users.connect_rate",
        u.connect_rate,
        "sessions opened per second",
        MAX_RATE,
        "no machine opens sessions faster",
    )?;
    let ramp_secs = f64::from(u.count) / u.connect_rate;
    if ramp_secs > MAX_RAMP_UP.as_secs_f64() {
        let min = f64::from(u.count) / MAX_RAMP_UP.as_secs_f64();
        return Err(ctx.err(
            "users.connect_rate",
            float(u.connect_rate),
            format!(
                "must be at least {min:.6} sessions per second for users.count = {}: connecting \
                 them all would take {}, and ramp-up may take at most \"{}\" so that the run \
                 can finish; raise connect_rate or lower users.count",
                u.count,
                seconds_text(ramp_secs),
                format_duration(MAX_RAMP_UP)
            ),
        ));
    }
    if (!u.heartbeat.is_zero() && u.heartbeat < Duration::from_millis(100))
        || u.heartbeat > MAX_HEARTBEAT
    {
        return Err(ctx.err(
            "users.heartbeat",
            dur(u.heartbeat),
            format!(
                "must be \"0s\" (no heart-beat) or from \"100ms\" to \"{}\"",
                format_duration(MAX_HEARTBEAT)
            ),
        ));
    }
    if u.per_task == 0 {
        return Err(ctx.err(
            "users.per_task",
            num(u.per_task),
            "must be at least 1 (virtual users per task)",
        ));
    }
    Ok(())
}

fn check_rooms(s: &Scenario, ctx: &Ctx) -> Result<(), ScenarioError> {
    let users = s.users.count;
    let mut names = Seen::new();
    for (i, g) in s.rooms.iter().enumerate() {
        let key = |k: &str| format!("rooms[{i}].{k}");
        if !plain_name(&g.name, &[]) {
            return Err(ctx.err(
                &key("name"),
                text(&g.name),
                "must be 1 to 64 characters from A-Z, a-z, 0-9, '-' and '_' (room ids are <name>-<index> \
                 and go into destinations)",
            ));
        }
        if let Some(j) = names.first_use(g.name.as_str(), i) {
            return Err(ctx.err(
                &key("name"),
                text(&g.name),
                format!("is already used by rooms[{j}]; room group names must be unique"),
            ));
        }
        if g.count == 0 {
            return Err(ctx.err(
                &key("count"),
                num(g.count),
                "must be at least 1 (rooms in this group)",
            ));
        }
        if g.members == 0 || g.members > users {
            return Err(ctx.err(
                &key("members"),
                num(g.members),
                format!("must be 1 to users.count = {users} (a room's members are distinct users)"),
            ));
        }
        if g.senders == 0 || g.senders > g.members {
            return Err(ctx.err(
                &key("senders"),
                num(g.senders),
                format!(
                    "must be 1 to members = {} (the first `senders` members of each room send)",
                    g.members
                ),
            ));
        }
    }
    let memberships = s.memberships();
    if memberships > MAX_MEMBERSHIPS {
        return Err(ctx.err(
            "rooms",
            None,
            format!("{memberships} memberships in total (count * members over all groups); at most {MAX_MEMBERSHIPS} are allowed"),
        ));
    }
    Ok(())
}

fn check_load(s: &Scenario, ctx: &Ctx) -> Result<(), ScenarioError> {
    if let LoadModel::Open { rate, per, .. } = &s.load.model {
        let what = match per {
            RatePer::Room => "messages per second per room",
            RatePer::Sender => "messages per second per sender",
        };
        positive(ctx, "load.rate", *rate, what)?;
        if !(MIN_RATE..=MAX_RATE).contains(rate) {
            return Err(ctx.err(
                "load.rate",
                float(*rate),
                format!(
                    "must be from {MIN_RATE} to {MAX_RATE} ({what}): the send schedule counts \
                     microseconds, and below {MIN_RATE} a sender would wait over 11 days between messages"
                ),
            ));
        }
    }
    if let LoadModel::Closed { think_time } = &s.load.model {
        at_most(
            ctx,
            "load.think_time",
            *think_time,
            MAX_PHASE,
            "a sender's pause between sends",
        )?;
    }
    let m = s.load.message_size;
    let (min_key, max_key) = if m.min == m.max {
        ("load.message_size.fixed", "load.message_size.fixed")
    } else {
        ("load.message_size.min", "load.message_size.max")
    };
    if m.min < MIN_MESSAGE_SIZE {
        return Err(ctx.err(
            min_key,
            num(m.min),
            format!(
                "must be at least {MIN_MESSAGE_SIZE} bytes: every chat text starts with the harness's \
                 stamp (run id, sender, sequence, send time, about 60 bytes)"
            ),
        ));
    }
    if m.min > m.max {
        return Err(ctx.err(
            min_key,
            num(m.min),
            format!("must not exceed load.message_size.max = {}", m.max),
        ));
    }
    if m.max > MAX_MESSAGE_SIZE {
        return Err(ctx.err(
            max_key,
            num(m.max),
            format!("must be at most {MAX_MESSAGE_SIZE} bytes"),
        ));
    }
    Ok(())
}

fn check_slo(slo: &Slo, ctx: &Ctx) -> Result<(), ScenarioError> {
    let mut previous: Option<(&str, f64)> = None;
    for (key, v) in [
        ("slo.p50_ms", slo.p50_ms),
        ("slo.p99_ms", slo.p99_ms),
        ("slo.p999_ms", slo.p999_ms),
    ] {
        let Some(v) = v else { continue };
        positive(ctx, key, v, "milliseconds")?;
        if let Some((pk, pv)) = previous {
            if v < pv {
                return Err(ctx.err(
                    key,
                    float(v),
                    format!("must be at least {pk} = {pv}: a higher percentile cannot be lower"),
                ));
            }
        }
        previous = Some((key, v));
    }
    if let Some(l) = slo.max_loss {
        if !(0.0..=1.0).contains(&l) {
            return Err(ctx.err(
                "slo.max_loss",
                float(l),
                "must be a fraction from 0 to 1 (0.001 = 0.1% of expected deliveries)",
            ));
        }
    }
    if !(0.0..=1.0).contains(&slo.min_connected) {
        return Err(ctx.err(
            "slo.min_connected",
            float(slo.min_connected),
            "must be a fraction from 0 to 1 (0.99 = at least 99% of users connected and subscribed)",
        ));
    }
    Ok(())
}

fn check_destination(ctx: &Ctx, key: &str, v: &str) -> Result<(), ScenarioError> {
    let rest = v.replacen("{room}", "", 1);
    let ok = v.starts_with('/')
        && v.contains("{room}")
        && !rest.contains(['{', '}'])
        && !v
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':');
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            key,
            text(v),
            "must start with '/', contain {room} exactly once and no other braces, spaces or ':' \
             (e.g. \"/topic/room/{room}\")",
        ))
    }
}

fn check_target(t: &Target, ctx: &Ctx) -> Result<(), ScenarioError> {
    match &t.kind {
        TargetKind::Local(l) => {
            if l.brokers != 1 && l.brokers != 3 {
                return Err(ctx.err("target.brokers", num(l.brokers), "must be 1 (one combined KRaft node) or 3 (a 3-voter quorum, replication factor 3)"));
            }
            if l.partitions == 0 || l.partitions > MAX_PARTITIONS {
                return Err(ctx.err(
                    "target.partitions",
                    num(l.partitions),
                    format!("must be 1 to {MAX_PARTITIONS}"),
                ));
            }
            if l.servers == 0 || l.servers > MAX_SERVERS {
                return Err(ctx.err(
                    "target.servers",
                    num(l.servers),
                    format!("must be 1 to {MAX_SERVERS} server instances"),
                ));
            }
        }
        TargetKind::External { urls } => {
            if urls.is_empty() {
                return Err(ctx.err(
                    "target.urls",
                    Some("[]".into()),
                    "needs at least one URL, e.g. [\"ws://127.0.0.1:15674/ws\"]",
                ));
            }
            for (i, u) in urls.iter().enumerate() {
                let scheme = u.strip_prefix("ws://").or_else(|| u.strip_prefix("wss://"));
                let bad = match scheme {
                    None => true,
                    Some(rest) => rest.is_empty() || rest.contains(char::is_whitespace),
                };
                if bad {
                    return Err(ctx.err(
                        &format!("target.urls[{i}]"),
                        text(u),
                        "must be a WebSocket URL: ws://host:port/path or wss://...",
                    ));
                }
            }
        }
    }
    check_destination(ctx, "target.send", &t.send)?;
    check_destination(ctx, "target.subscribe", &t.subscribe)?;
    for (key, v) in [
        ("target.connect.login", &t.connect.login),
        ("target.connect.passcode", &t.connect.passcode),
        ("target.connect.host", &t.connect.host),
    ] {
        if let Some(v) = v {
            if v.contains(['\r', '\n', '\0']) {
                let shown = if key.ends_with("passcode") {
                    None
                } else {
                    text(v)
                };
                return Err(ctx.err(
                    key,
                    shown,
                    "must not contain line breaks or NUL (it goes into a CONNECT header)",
                ));
            }
        }
    }
    if let Some(k) = &t.kafka {
        if k.bootstrap.trim().is_empty()
            || k.bootstrap.contains(char::is_whitespace)
            || !k.bootstrap.contains(':')
        {
            return Err(ctx.err(
                "target.kafka.bootstrap",
                text(&k.bootstrap),
                "must be host:port[,host:port...] without spaces",
            ));
        }
    }
    if let Some(d) = &t.db {
        if !(d.url.starts_with("postgres://") || d.url.starts_with("postgresql://")) {
            return Err(ctx.err(
                "target.db.url",
                text(&redact_url(&d.url)),
                "must be a PostgreSQL URL: postgres://user:password@host:port/database",
            ));
        }
        let ident = |p: &str| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let parts: Vec<&str> = d.table.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| ident(p)) {
            return Err(ctx.err(
                "target.db.table",
                text(&d.table),
                "must be a plain SQL name like chat_messages or schema.chat_messages",
            ));
        }
    }
    Ok(())
}
