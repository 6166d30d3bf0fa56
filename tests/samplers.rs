//! The measurement samplers against a real local stack (one broker, PostgreSQL, no chat
//! servers): Kafka lag of a group with hand-committed offsets, PostgreSQL insert
//! statistics after rows are written, the end-of-run audit, and the sampling loops.
//!
//! One test function brings the stack up once and runs every check in order; the stack
//! comes down afterwards whether the checks passed or panicked.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use stompede::load::samplers::{
    audit, run_db_sampler, run_lag_sampler, Audit, DbSampler, GroupSelector, LagSample, LagSampler,
    Reporter, SamplerError,
};
use stompede::server::FANOUT_GROUP_PREFIX;
use stompede::stack::{self, StackOptions};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "samplers.lag";
const GROUP: &str = "stompede-fanout-test-x";

#[test]
fn samplers_against_a_real_stack() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let state = std::env::temp_dir().join(format!(
        "stompede-samplers-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let options = StackOptions {
        brokers: 1,
        partitions: 3,
        servers: 0,
        state_dir: state.clone(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        detach: false,
        ..StackOptions::default()
    };
    let stack = rt
        .block_on(stack::up(&options))
        .unwrap_or_else(|e| panic!("the test stack did not come up: {e}"));
    let kafka = stack.info().kafka_bootstrap.clone();
    let db = stack.info().postgres.url.clone();
    let checks = std::panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            lag_checks(&kafka).await;
            db_checks(&db).await;
            loop_checks(&kafka, &db).await;
        })
    }));
    let down = rt.block_on(stack.down());
    if let Err(panic) = checks {
        eprintln!("stack logs kept in {}", state.join("logs").display());
        std::panic::resume_unwind(panic);
    }
    let _ = std::fs::remove_dir_all(&state);
    down.expect("stack down");
}

async fn create_topic(kafka: &str, topic: &str, partitions: u32) {
    stack::create_topic(kafka, topic, partitions, 1, &[])
        .await
        .unwrap_or_else(|e| panic!("create {topic}: {e}"));
    stack::wait_kafka_ready(kafka, 1, Some(topic), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("topic {topic} not ready: {e}"));
}

/// Commits `offsets` (partition, offset) of `topic` for `group` without joining it.
async fn commit(kafka: &str, group: &str, topic: &str, offsets: &[(i32, i64)]) {
    let (kafka, group, topic, offsets) = (
        kafka.to_string(),
        group.to_string(),
        topic.to_string(),
        offsets.to_vec(),
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &kafka)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("committing consumer");
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in &offsets {
            tpl.add_partition_offset(&topic, p, Offset::Offset(o))
                .expect("partition offset");
        }
        consumer.assign(&tpl).expect("assign");
        consumer
            .commit(&tpl, CommitMode::Sync)
            .unwrap_or_else(|e| panic!("commit for {group}: {e}"));
    })
    .await
    .expect("commit task");
}

async fn sample(sampler: LagSampler) -> (LagSampler, Result<Vec<LagSample>, SamplerError>) {
    tokio::task::spawn_blocking(move || {
        let mut sampler = sampler;
        let result = sampler.sample(1.5);
        (sampler, result)
    })
    .await
    .expect("sample task")
}

async fn lag_checks(kafka: &str) {
    create_topic(kafka, TOPIC, 3).await;
    create_topic(kafka, "samplers.other", 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..30 {
        let (key, payload) = (format!("room-{i}"), format!("record {i}"));
        let record = FutureRecord::to(TOPIC)
            .key(&key)
            .payload(&payload)
            .partition(i % 3);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce {i}: {e}"));
    }
    let record = FutureRecord::to("samplers.other").key("k").payload("x");
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    // Partition 0 fully consumed, partition 1 at 4 of 10, partition 2 never committed.
    commit(kafka, GROUP, TOPIC, &[(0, 10), (1, 4)]).await;
    // Must not be reported: another prefix on this topic, and this prefix on another topic.
    commit(kafka, "other-app", TOPIC, &[(0, 1)]).await;
    commit(
        kafka,
        &format!("{FANOUT_GROUP_PREFIX}other-topic"),
        "samplers.other",
        &[(0, 1)],
    )
    .await;

    let mut sampler = LagSampler::new(
        kafka,
        TOPIC,
        GroupSelector::Prefix(FANOUT_GROUP_PREFIX.into()),
    )
    .expect("lag sampler");
    let deadline = Instant::now() + Duration::from_secs(30);
    let samples = loop {
        let started = Instant::now();
        let (back, result) = sample(sampler).await;
        sampler = back;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(7),
            "a lag sample took {elapsed:?}"
        );
        match result {
            Ok(s) if s.iter().any(|s| s.group == GROUP) => break s,
            other if Instant::now() > deadline => panic!("group {GROUP} never listed: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let groups: Vec<&str> = samples.iter().map(|s| s.group.as_str()).collect();
    assert_eq!(
        groups,
        [GROUP],
        "only the prefixed group with offsets on {TOPIC}"
    );
    let s = &samples[0];
    assert_eq!(s.partitions, [(0, 0), (1, 6), (2, 10)]);
    assert_eq!(
        (s.total, s.max, s.uncommitted.as_slice(), s.t_s),
        (16, 10, &[2][..], 1.5)
    );

    // An exact group with nothing committed: every partition counts whole.
    let exact = LagSampler::new(
        kafka,
        TOPIC,
        GroupSelector::Exact(vec!["stompede-fanout-never".into()]),
    );
    let (_, result) = sample(exact.expect("exact sampler")).await;
    let s = result.expect("exact sample");
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].partitions, [(0, 10), (1, 10), (2, 10)]);
    assert_eq!(
        (s[0].total, s[0].max, s[0].uncommitted.as_slice()),
        (30, 10, &[0, 1, 2][..])
    );

    // A missing topic fails fast and says which topic and cluster.
    let missing = LagSampler::new(
        kafka,
        "samplers.missing",
        GroupSelector::Exact(vec![GROUP.into()]),
    );
    let (_, result) = sample(missing.expect("sampler")).await;
    let err = result.expect_err("a missing topic is an error").to_string();
    assert!(
        err.contains("samplers.missing") && err.contains(kafka),
        "{err}"
    );
}

async fn db_checks(db: &str) {
    let bad = DbSampler::new(db, "chat_messages; DROP TABLE x")
        .await
        .err()
        .expect("a bad name is refused");
    assert!(
        bad.to_string().contains("chat_messages; DROP TABLE x"),
        "{bad}"
    );
    let missing = DbSampler::new(db, "no_such_table")
        .await
        .err()
        .expect("a missing table is refused")
        .to_string();
    assert!(
        missing.contains("no_such_table") && missing.contains("127.0.0.1"),
        "{missing}"
    );
    DbSampler::new(db, "public.chat_messages")
        .await
        .expect("schema-qualified name");
    let mut sampler = DbSampler::new(db, "chat_messages")
        .await
        .expect("db sampler");

    // `_` and `%` are literal in the marker: the decoy would match a naive LIKE.
    let marker = "run-7f_%|";
    let texts = [
        format!("{marker}alice|1"),
        format!("{marker}alice|2"),
        format!("{marker}bob|1"),
        format!("{marker}bob|1"),
        format!("{marker}carol|1"),
        "run-7fX%|decoy".to_string(),
        "unrelated".to_string(),
    ];
    let writer = stompede::db::connect(db).await.expect("connect");
    let inserted = Instant::now();
    for (offset, text) in texts.iter().enumerate() {
        writer
            .execute(
                "INSERT INTO chat_messages (room_id, sender, message, type, sent_at, kafka_topic, kafka_partition, kafka_offset) \
                 VALUES ('room-1', 'alice', $1, 'TALK', now(), 'samplers.db', 0, $2)",
                &[text, &(offset as i64)],
            )
            .await
            .expect("insert");
    }
    // PostgreSQL 15 would publish an idle writer's last counts only after ~10 s; a
    // closing connection publishes them at once.
    drop(writer);
    let want = texts.len() as i64;
    let (mut last, mut rose) = (None, None);
    while inserted.elapsed() < Duration::from_secs(10) {
        let s = sampler
            .sample(inserted.elapsed().as_secs_f64())
            .await
            .expect("db sample");
        if rose.is_none() && s.inserted_total > 0 {
            rose = Some(inserted.elapsed());
            assert!(s.rows_per_s > 0.0, "{s:?}");
        }
        let done = s.inserted_total >= want;
        last = Some(s);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = last.expect("at least one sample");
    assert_eq!(last.inserted_total, want, "{last:?}");
    eprintln!(
        "insert statistics: first rise after {rose:?}, all {want} rows after {:?}",
        inserted.elapsed()
    );

    assert_eq!(
        audit(db, "chat_messages", marker).await.expect("audit"),
        Audit {
            rows_for_run: 5,
            distinct_for_run: 4,
            duplicates: 1
        }
    );
    assert_eq!(
        audit(db, "public.chat_messages", "nobody")
            .await
            .expect("audit")
            .rows_for_run,
        0
    );
    assert!(matches!(
        audit(db, "chat_messages", "").await,
        Err(SamplerError::EmptyMarker { .. })
    ));
    let err = audit(db, "chat\"messages", marker)
        .await
        .expect_err("bad table name")
        .to_string();
    assert!(err.contains("chat\\\"messages"), "{err}");
}

async fn loop_checks(kafka: &str, db: &str) {
    let t0 = Instant::now();
    let stop = CancellationToken::new();
    // Samples are kept by the loops themselves as they are taken, however many.
    let quiet = |source| Reporter {
        warnings: None,
        source,
    };
    let lag = LagSampler::new(kafka, TOPIC, GroupSelector::Exact(vec![GROUP.into()]))
        .expect("lag sampler");
    let lag_task = tokio::spawn(run_lag_sampler(
        lag,
        t0,
        Duration::from_millis(100),
        stop.clone(),
        quiet("kafka"),
    ));
    let dbs = DbSampler::new(db, "chat_messages")
        .await
        .expect("db sampler");
    let db_task = tokio::spawn(run_db_sampler(
        dbs,
        t0,
        Duration::from_millis(100),
        stop.clone(),
        quiet("database"),
    ));
    // Sample for a while: the loops stop on `stop`, not on a count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    let lag = tokio::time::timeout(Duration::from_secs(3), lag_task)
        .await
        .expect("lag loop stops")
        .expect("join");
    let db = tokio::time::timeout(Duration::from_secs(3), db_task)
        .await
        .expect("db loop stops")
        .expect("join");
    eprintln!("lag loop: {:?}; db loop: {:?}", lag.stats, db.stats);
    assert!(
        lag.stats.taken >= 3 && lag.stats.failed == 0 && lag.stats.thinned == 0,
        "{:?}",
        lag.stats
    );
    assert_eq!(
        lag.samples.len() as u64,
        lag.stats.taken,
        "every lag sample kept"
    );
    assert_eq!(lag.samples[0][0].total, 16);
    assert!(
        db.stats.taken >= 5 && db.stats.failed == 0 && db.stats.thinned == 0,
        "{:?}",
        db.stats
    );
    let mut times = Vec::new();
    for s in &db.samples {
        assert_eq!(s.inserted_total, 0, "{s:?}");
        times.push(s.t_s);
    }
    assert_eq!(times.len() as u64, db.stats.taken);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
}
