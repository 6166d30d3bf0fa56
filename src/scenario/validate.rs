//! From the file as written (`raw.rs`) to the resolved [`Scenario`]: defaults, required
//! keys, and keys that only make sense together.
//!
//! Two passes. `build` here fills defaults and rejects missing or misplaced keys (a
//! `think_time` on an open-model run, `urls` on the local stack), recording the span of
//! every key it reads. `check.rs` then checks ranges and cross-key limits on the resolved
//! scenario; it runs again after command-line overrides, so a value from either source
//! gets the same message. [`Ctx`] carries the file, its text and the recorded spans, and
//! builds every error so they all look alike.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::duration::parse_duration;
use super::error::{Pos, ScenarioError};
use super::model::*;
use super::raw::{self, DurationText, KindName, ModelName, RawScenario, S};

/// Reference-server destinations, the defaults for both target kinds.
pub const DEFAULT_SEND: &str = "/app/chat/{room}";
pub const DEFAULT_SUBSCRIBE: &str = "/topic/room/{room}";
pub const DEFAULT_DB_TABLE: &str = "chat_messages";

/// Where errors point and what they say about their origin.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    text: Option<&'a str>,
    spans: HashMap<String, Range<usize>>,
    /// Appended to every message, e.g. which values came from the command line.
    note: Option<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path, text: Option<&'a str>) -> Self {
        Ctx {
            file,
            text,
            spans: HashMap::new(),
            note: None,
        }
    }

    pub fn with_note(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }

    /// Records where `key` sits and hands back its value.
    pub fn take<T>(&mut self, key: &str, value: S<T>) -> Option<T> {
        value.map(|v| {
            self.spans.insert(key.to_string(), v.span());
            v.into_inner()
        })
    }

    /// Records where a present value sits and unwraps it.
    pub fn spanned<T>(&mut self, key: &str, value: Spanned<T>) -> T {
        self.spans.insert(key.to_string(), value.span());
        value.into_inner()
    }

    /// Like [`Ctx::take`] but for a value whose presence is itself an error unless
    /// `allowed`; `why` says when the key applies.
    pub fn forbid<T>(
        &mut self,
        key: &str,
        value: S<T>,
        allowed: bool,
        why: &str,
    ) -> Result<Option<T>, ScenarioError> {
        match self.take(key, value) {
            Some(_) if !allowed => Err(self.err(key, None, why)),
            other => Ok(other),
        }
    }

    pub fn duration(
        &mut self,
        key: &str,
        value: S<DurationText>,
    ) -> Result<Option<Duration>, ScenarioError> {
        match self.take(key, value) {
            None => Ok(None),
            Some(DurationText(text)) => parse_duration(&text)
                .map(Some)
                .map_err(|m| self.err(key, Some(format!("{text:?}")), m)),
        }
    }

    pub fn missing(&self, key: &str, example: &str) -> ScenarioError {
        self.err(key, None, format!("missing; add it, e.g. {example}"))
    }

    /// An error about `key`, located at the key or else at the nearest enclosing table
    /// whose span was recorded.
    pub fn err(
        &self,
        key: &str,
        value: Option<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        let mut message = message.into();
        if let Some(note) = &self.note {
            message.push_str(&format!("; {note}"));
        }
        ScenarioError::Invalid {
            file: self.file.to_path_buf(),
            at: self.pos_of(key),
            key: Some(key.to_string()),
            value,
            message,
        }
    }

    fn pos_of(&self, key: &str) -> Option<Pos> {
        let text = self.text?;
        let mut k = key;
        loop {
            if let Some(span) = self.spans.get(k) {
                return Some(Pos::from_offset(text, span.start));
            }
            k = &k[..k.rfind(['.', '['])?];
        }
    }
}

/// Fills defaults and rejects missing and misplaced keys; ranges are `check.rs`'s job.
pub(crate) fn build(raw: RawScenario, ctx: &mut Ctx) -> Result<Scenario, ScenarioError> {
    let name = match ctx.take("name", raw.name) {
        Some(n) => n,
        None => ctx
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let description = ctx.take("description", raw.description).unwrap_or_default();
    let duration = ctx
        .duration("duration", raw.duration)?
        .ok_or_else(|| ctx.missing("duration", "duration = \"60s\" (the measured phase)"))?;
    let warmup = ctx
        .duration("warmup", raw.warmup)?
        .unwrap_or(Duration::ZERO);
    let grace = ctx
        .duration("grace", raw.grace)?
        .unwrap_or(Duration::from_secs(5));
    let seed = ctx.take("seed", raw.seed).unwrap_or(1);

    let users = ctx
        .take("users", raw.users)
        .ok_or_else(|| ctx.missing("users", "[users] with count = 100"))?;
    let users = build_users(users, ctx)?;

    let groups = ctx.take("rooms", raw.rooms).unwrap_or_default();
    if groups.is_empty() {
        return Err(ctx.err(
            "rooms",
            None,
            "no room groups; add at least one [[rooms]] table with name, count and members, \
             e.g. [[rooms]] name = \"pairs\" count = 10 members = 2",
        ));
    }
    let rooms = groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| build_room_group(i, g, ctx))
        .collect::<Result<Vec<_>, _>>()?;

    let load = ctx.take("load", raw.load).ok_or_else(|| {
        ctx.missing(
            "load",
            "[load] with model = \"open\" and rate = 1.0 (messages per second per room)",
        )
    })?;
    let load = build_load(load, ctx)?;
    let churn = match ctx.take("churn", raw.churn) {
        None => None,
        Some(c) => Some(Churn {
            leaves_per_second: ctx
                .take("churn.leaves_per_second", c.leaves_per_second)
                .ok_or_else(|| ctx.missing("churn.leaves_per_second", "leaves_per_second = 0.5"))?,
            rejoin_after: ctx
                .duration("churn.rejoin_after", c.rejoin_after)?
                .unwrap_or(Duration::from_secs(2)),
        }),
    };
    let slo = match ctx.take("slo", raw.slo) {
        None => Slo::default(),
        Some(s) => Slo {
            p50_ms: ctx.take("slo.p50_ms", s.p50_ms),
            p99_ms: ctx.take("slo.p99_ms", s.p99_ms),
            p999_ms: ctx.take("slo.p999_ms", s.p999_ms),
            max_loss: ctx.take("slo.max_loss", s.max_loss),
            max_duplicates: ctx.take("slo.max_duplicates", s.max_duplicates),
            max_kafka_lag: ctx.take("slo.max_kafka_lag", s.max_kafka_lag),
            min_connected: ctx
                .take("slo.min_connected", s.min_connected)
                .unwrap_or(1.0),
            max_unsent: ctx.take("slo.max_unsent", s.max_unsent).unwrap_or(0),
        },
    };
    let target = build_target(ctx.take("target", raw.target), ctx)?;
    let faults = ctx
        .take("faults", raw.faults)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let f = ctx.spanned(&format!("faults[{i}]"), f);
            super::faults::build_fault(i, f, ctx)
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(Scenario {
        name,
        description,
        duration,
        warmup,
        grace,
        seed,
        users,
        rooms,
        load,
        churn,
        slo,
        target,
        faults,
        source: ctx.file.to_path_buf(),
    })
}

fn build_users(u: raw::RawUsers, ctx: &mut Ctx) -> Result<Users, ScenarioError> {
    Ok(Users {
        count: ctx
            .take("users.count", u.count)
            .ok_or_else(|| ctx.missing("users.count", "count = 100 (virtual users)"))?,
        connect_rate: ctx
            .take("users.connect_rate", u.connect_rate)
            .unwrap_or(100.0),
        heartbeat: ctx
            .duration("users.heartbeat", u.heartbeat)?
            .unwrap_or(Duration::from_secs(10)),
        per_task: ctx.take("users.per_task", u.per_task).unwrap_or(1),
        reconnect: match ctx.take("users.reconnect", u.reconnect) {
            None => None,
            Some(r) => Some(super::faults::build_reconnect(r, ctx)?),
        },
    })
}

fn build_room_group(
    i: usize,
    g: Spanned<raw::RawRoomGroup>,
    ctx: &mut Ctx,
) -> Result<RoomGroup, ScenarioError> {
    let at = format!("rooms[{i}]");
    let g = ctx.spanned(&at, g);
    let key = |k: &str| format!("{at}.{k}");
    let name = ctx.take(&key("name"), g.name).ok_or_else(|| {
        ctx.missing(
            &key("name"),
            "name = \"pairs\" (room ids are <name>-<index>)",
        )
    })?;
    let count = ctx
        .take(&key("count"), g.count)
        .ok_or_else(|| ctx.missing(&key("count"), "count = 10 (rooms in this group)"))?;
    let members = ctx
        .take(&key("members"), g.members)
        .ok_or_else(|| ctx.missing(&key("members"), "members = 2 (members per room)"))?;
    let senders = ctx.take(&key("senders"), g.senders).unwrap_or(members);
    Ok(RoomGroup {
        name,
        count,
        members,
        senders,
    })
}

fn build_load(l: raw::RawLoad, ctx: &mut Ctx) -> Result<Load, ScenarioError> {
    let model = ctx.take("load.model", l.model).unwrap_or(ModelName::Open);
    let open = model == ModelName::Open;
    let only_open = "applies only to load.model = \"open\"; remove it, or set model = \"open\"";
    let only_closed =
        "applies only to load.model = \"closed\"; remove it, or set model = \"closed\"";
    let rate = ctx.forbid("load.rate", l.rate, open, only_open)?;
    let per = ctx.forbid("load.per", l.per, open, only_open)?;
    let arrival = ctx.forbid("load.arrival", l.arrival, open, only_open)?;
    let think_time = match ctx.take("load.think_time", l.think_time) {
        Some(t) if open => {
            return Err(ctx.err("load.think_time", Some(format!("{:?}", t.0)), only_closed))
        }
        Some(t) => Some(
            parse_duration(&t.0)
                .map_err(|m| ctx.err("load.think_time", Some(format!("{:?}", t.0)), m))?,
        ),
        None => None,
    };
    let model = if open {
        LoadModel::Open {
            rate: rate.ok_or_else(|| {
                ctx.missing(
                    "load.rate",
                    "rate = 1.0 (messages per second, per room or per sender)",
                )
            })?,
            per: per.unwrap_or(RatePer::Room),
            arrival: arrival.unwrap_or(Arrival::Constant),
        }
    } else {
        LoadModel::Closed {
            think_time: think_time.ok_or_else(|| {
                ctx.missing(
                    "load.think_time",
                    "think_time = \"1s\" (pause between sends)",
                )
            })?,
        }
    };
    let message_size = match ctx.take("load.message_size", l.message_size) {
        None => MessageSize { min: 64, max: 256 },
        Some(m) => {
            let fixed = ctx.take("load.message_size.fixed", m.fixed);
            let min = ctx.take("load.message_size.min", m.min);
            let max = ctx.take("load.message_size.max", m.max);
            let shapes = "write { fixed = 128 } or { min = 64, max = 256 }";
            match (fixed, min, max) {
                (Some(f), None, None) => MessageSize { min: f, max: f },
                (None, Some(min), Some(max)) => MessageSize { min, max },
                (Some(_), _, _) => {
                    return Err(ctx.err(
                        "load.message_size",
                        None,
                        format!("fixed cannot be combined with min or max; {shapes}"),
                    ))
                }
                (None, None, Some(_)) => {
                    return Err(ctx.missing("load.message_size.min", "{ min = 64, max = 256 }"))
                }
                (None, Some(_), None) => {
                    return Err(ctx.missing("load.message_size.max", "{ min = 64, max = 256 }"))
                }
                (None, None, None) => {
                    return Err(ctx.err(
                        "load.message_size",
                        Some("{}".into()),
                        format!("empty; {shapes}"),
                    ))
                }
            }
        }
    };
    let receipts = ctx.take("load.receipts", l.receipts).unwrap_or(true);
    Ok(Load {
        model,
        message_size,
        receipts,
    })
}

fn build_target(t: Option<raw::RawTarget>, ctx: &mut Ctx) -> Result<Target, ScenarioError> {
    let Some(t) = t else {
        return Ok(Target {
            kind: TargetKind::Local(LocalStack::default()),
            send: DEFAULT_SEND.into(),
            subscribe: DEFAULT_SUBSCRIBE.into(),
            body: BodyFormat::ChatJson,
            receipts: true,
            connect: ConnectHeaders::default(),
            kafka: None,
            db: None,
        });
    };
    let local = ctx.take("target.kind", t.kind).unwrap_or(KindName::Local) == KindName::Local;
    let only_local =
        "applies only to target.kind = \"local\" (an external target's stack is not ours to shape)";
    let only_external =
        "applies only to target.kind = \"external\"; the local stack supplies its own";
    let brokers = ctx.forbid("target.brokers", t.brokers, local, only_local)?;
    let partitions = ctx.forbid("target.partitions", t.partitions, local, only_local)?;
    let servers = ctx.forbid("target.servers", t.servers, local, only_local)?;
    let persist = ctx.forbid("target.persist", t.persist, local, only_local)?;
    let server_impl = ctx.forbid("target.server_impl", t.server_impl, local, only_local)?;
    let shared_fanout_group = ctx.forbid(
        "target.shared_fanout_group",
        t.shared_fanout_group,
        local,
        only_local,
    )?;
    let spring = server_impl == Some(ServerImpl::Spring);
    if shared_fanout_group == Some(true) && !spring {
        return Err(ctx.err(
            "target.shared_fanout_group",
            None,
            "is a switch of the Spring peer; add server_impl = \"spring\" or remove it".to_string(),
        ));
    }
    if spring && persist == Some(Persist::Consumer) {
        return Err(ctx.err(
            "target.persist",
            Some("consumer".into()),
            "the Spring peer persists on the producer side only (it saves each message once Kafka acknowledged it); use persist = \"producer\" with server_impl = \"spring\"".to_string(),
        ));
    }
    let urls = match ctx.take("target.urls", t.urls) {
        Some(_) if local => {
            return Err(ctx.err(
                "target.urls",
                None,
                format!("{only_external} (set kind = \"external\" to use these URLs)"),
            ))
        }
        Some(urls) => Some(
            urls.into_iter()
                .enumerate()
                .map(|(i, u)| ctx.spanned(&format!("target.urls[{i}]"), u))
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let kafka = match ctx.take("target.kafka", t.kafka) {
        Some(_) if local => return Err(ctx.err("target.kafka", None, only_external)),
        Some(k) => Some(KafkaTarget {
            bootstrap: ctx
                .take("target.kafka.bootstrap", k.bootstrap)
                .ok_or_else(|| {
                    ctx.missing("target.kafka.bootstrap", "bootstrap = \"127.0.0.1:9092\"")
                })?,
            topic: ctx
                .take("target.kafka.topic", k.topic)
                .unwrap_or_else(|| "chat.messages".to_string()),
            group_prefix: ctx.take("target.kafka.group_prefix", k.group_prefix),
        }),
        None => None,
    };
    let db = match ctx.take("target.db", t.db) {
        Some(_) if local => return Err(ctx.err("target.db", None, only_external)),
        Some(d) => Some(DbTarget {
            url: ctx.take("target.db.url", d.url).ok_or_else(|| {
                ctx.missing(
                    "target.db.url",
                    "url = \"postgres://user@127.0.0.1:5432/chat\"",
                )
            })?,
            table: ctx
                .take("target.db.table", d.table)
                .unwrap_or_else(|| DEFAULT_DB_TABLE.into()),
        }),
        None => None,
    };
    let connect = match ctx.take("target.connect", t.connect) {
        None => ConnectHeaders::default(),
        Some(c) => ConnectHeaders {
            login: ctx.take("target.connect.login", c.login),
            passcode: ctx.take("target.connect.passcode", c.passcode),
            host: ctx.take("target.connect.host", c.host),
        },
    };
    let kind = if local {
        let d = LocalStack::default();
        TargetKind::Local(LocalStack {
            brokers: brokers.unwrap_or(d.brokers),
            partitions: partitions.unwrap_or(d.partitions),
            servers: servers.unwrap_or(d.servers),
            persist: persist.unwrap_or(d.persist),
            server_impl: server_impl.unwrap_or(d.server_impl),
            shared_fanout_group: shared_fanout_group.unwrap_or(d.shared_fanout_group),
        })
    } else {
        TargetKind::External {
            urls: urls.ok_or_else(|| {
                ctx.missing("target.urls", "urls = [\"ws://127.0.0.1:15674/ws\"]")
            })?,
        }
    };
    let receipts = ctx.take("target.receipts", t.receipts);
    let body = ctx.take("target.body", t.body);
    if spring && body == Some(BodyFormat::Raw) {
        return Err(ctx.err(
            "target.body",
            Some("raw".into()),
            "the Spring peer reads the chat JSON {\"roomId\",\"sender\",\"message\",\"type\"} only; remove the key".to_string(),
        ));
    }
    if spring && receipts == Some(true) {
        return Err(ctx.err(
            "target.receipts",
            Some("true".into()),
            "the Spring peer's simple STOMP broker sends no RECEIPT frames; remove the key (runs against it need none)".to_string(),
        ));
    }
    Ok(Target {
        kind,
        send: ctx
            .take("target.send", t.send)
            .unwrap_or_else(|| DEFAULT_SEND.into()),
        subscribe: ctx
            .take("target.subscribe", t.subscribe)
            .unwrap_or_else(|| DEFAULT_SUBSCRIBE.into()),
        body: body.unwrap_or(BodyFormat::ChatJson),
        // The Spring peer's missing receipts are the target's to know
        // (`Scenario::receipts_expected`), so a scenario moved to the other
        // implementation on the command line gets that one's default.
        receipts: receipts.unwrap_or(local),
        connect,
        kafka,
        db,
    })
}
