//! Kafka at server start: every first contact with the brokers — the producer's cluster
//! id, the topic's metadata and end offsets, the fan-out group's first commit, the persist
//! group's coordinator — is a [`KafkaStart::step`] that treats "not yet" as "try again".
//!
//! A broker whose port has just opened may still be creating `__consumer_offsets` or
//! loading the group coordinator (`COORDINATOR_LOAD_IN_PROGRESS`, `NOT_COORDINATOR`), have
//! no leader yet for a partition, not yet know the topic while metadata propagates, or
//! refuse connections for a moment. Those answers are retried with a bounded backoff
//! (100 ms doubling to 2 s) until one start deadline shared by every step passes; any
//! other error fails at once. Either way the error names the step, the bootstrap
//! addresses and the last answer.
//!
//! Each attempt is one blocking librdkafka call run on the blocking pool, its timeout cut
//! to what is left of the deadline; between attempts the wait also watches for shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use super::ServerError;

/// How long a server waits for Kafka at start unless told otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// First pause after a retriable error; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Bounds of one blocking call's own timeout.
const MIN_CALL: Duration = Duration::from_millis(200);
const MAX_CALL: Duration = Duration::from_secs(5);

/// Whether `code` means "the cluster is not there yet" rather than "this cannot work".
pub fn is_retriable_code(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        // The group coordinator: `__consumer_offsets` being created, elected or loaded.
        C::CoordinatorLoadInProgress
            | C::CoordinatorNotAvailable
            | C::NotCoordinator
            | C::WaitingForCoordinator
            | C::RebalanceInProgress
            | C::UnstableOffsetCommit
            // Partitions without a leader (yet), or replicas still catching up.
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::ReplicaNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::FencedLeaderEpoch
            | C::UnknownLeaderEpoch
            | C::OffsetNotAvailable
            // Metadata that has not reached this broker yet.
            | C::UnknownTopicOrPartition
            | C::UnknownTopic
            | C::UnknownPartition
            | C::UnknownTopicId
            // The broker itself: not listening yet, or slow to answer.
            | C::BrokerTransportFailure
            | C::AllBrokersDown
            | C::BrokerNotAvailable
            | C::NetworkException
            | C::Resolve
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::TimedOutQueue
            | C::NodeUpdate
            | C::Retry
            | C::ThrottlingQuotaExceeded
            | C::RebootstrapRequired
    )
}

/// [`is_retriable_code`] of the error's code; errors without one are not retriable.
pub fn is_retriable(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(is_retriable_code)
}

/// The start deadline and what every step's error names.
#[derive(Clone)]
pub struct KafkaStart {
    bootstrap: Arc<str>,
    topic: Arc<str>,
    timeout: Duration,
    started: Instant,
    deadline: Instant,
    shutdown: CancellationToken,
    metrics: Option<Arc<Metrics>>,
}

impl KafkaStart {
    /// A start that must be done `timeout` from now; `shutdown` ends the waiting early.
    pub fn new(
        bootstrap: &str,
        topic: &str,
        timeout: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let started = Instant::now();
        KafkaStart {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            timeout,
            started,
            deadline: started + timeout,
            shutdown,
            metrics: None,
        }
    }

    /// Count every retry in `metrics.kafka_start_retries`.
    pub fn counting(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// An error of a step that cannot work however long one waits (bad configuration).
    pub fn failed(&self, step: &str, source: KafkaError) -> ServerError {
        ServerError::Kafka {
            what: step.to_string(),
            bootstrap: self.bootstrap.to_string(),
            topic: self.topic.to_string(),
            source,
        }
    }

    /// Runs `call(&client, timeout)` on the blocking pool until it succeeds; retriable
    /// errors are retried with backoff until the deadline. Returns the client with the
    /// result so the caller keeps using it.
    pub async fn step<C, T, F>(&self, step: &str, client: C, call: F) -> Result<(C, T), ServerError>
    where
        C: Send + 'static,
        T: Send + 'static,
        F: Fn(&C, Duration) -> Result<T, KafkaError> + Send + Sync + 'static,
    {
        let call = Arc::new(call);
        let mut client = client;
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = self.deadline.saturating_duration_since(Instant::now());
            let timeout = left.clamp(MIN_CALL, MAX_CALL);
            let f = call.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let r = f(&client, timeout);
                (client, r)
            })
            .await;
            let result;
            (client, result) = outcome.map_err(|e| {
                ServerError::Internal(format!("Kafka start step {step:?} did not complete: {e}"))
            })?;
            let error = match result {
                Ok(value) => {
                    if attempts > 1 {
                        let into = self.started.elapsed().as_secs_f64();
                        tracing::info!(
                            "{step}: Kafka answered after {attempts} attempts ({into:.1} s into the start)"
                        );
                    }
                    return Ok((client, value));
                }
                Err(e) if is_retriable(&e) => e,
                Err(e) => return Err(self.failed(step, e)),
            };
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ServerError::KafkaNotReady {
                    step: step.to_string(),
                    bootstrap: self.bootstrap.to_string(),
                    topic: self.topic.to_string(),
                    timeout: self.timeout,
                    attempts,
                    last: error.to_string(),
                });
            }
            if let Some(m) = &self.metrics {
                m.kafka_start_retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let pause = backoff.min(left);
            tracing::info!(
                "{step}: Kafka at {} not ready yet ({error}); retrying in {} ms",
                self.bootstrap,
                pause.as_millis()
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ServerError::StoppedDuringStart),
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_and_metadata_races_are_retriable_configuration_errors_are_not() {
        for code in [
            RDKafkaErrorCode::CoordinatorLoadInProgress,
            RDKafkaErrorCode::NotCoordinator,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(is_retriable_code(code), "{code:?}");
        }
        assert!(is_retriable(&KafkaError::ConsumerCommit(
            RDKafkaErrorCode::CoordinatorLoadInProgress
        )));
        for code in [
            RDKafkaErrorCode::InvalidArgument,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::InvalidTopic,
        ] {
            assert!(!is_retriable_code(code), "{code:?}");
        }
        assert!(!is_retriable(&KafkaError::Canceled));
    }

    #[tokio::test]
    async fn a_retriable_error_is_retried_until_the_deadline_then_named() {
        let start = KafkaStart::new(
            "127.0.0.1:1",
            "t",
            Duration::from_millis(600),
            CancellationToken::new(),
        );
        let t = Instant::now();
        let err = match start
            .step("probe", (), |_, _| -> Result<(), KafkaError> {
                Err(KafkaError::ConsumerCommit(
                    RDKafkaErrorCode::CoordinatorLoadInProgress,
                ))
            })
            .await
        {
            Err(e) => e,
            Ok(_) => panic!("a step that always fails succeeded"),
        };
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(600), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1:1"), "{text}");
        assert!(text.contains("probe"), "{text}");
        assert!(text.contains("CoordinatorLoadInProgress"), "{text}");
        // Pauses of 100, 200, then 300 ms (cut to the deadline): four attempts, three if
        // a busy machine delayed one.
        assert!(
            matches!(
                err,
                ServerError::KafkaNotReady {
                    attempts: 3..=4,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_step_that_succeeds_on_the_third_try_returns_its_value() {
        let start = KafkaStart::new(
            "b:9092",
            "t",
            Duration::from_secs(10),
            CancellationToken::new(),
        );
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = tries.clone();
        let (_, value) = start
            .step("probe", (), move |_, _| {
                if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                    Err(KafkaError::MetadataFetch(
                        RDKafkaErrorCode::LeaderNotAvailable,
                    ))
                } else {
                    Ok(7)
                }
            })
            .await
            .expect("the third try succeeds");
        assert_eq!(value, 7);
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_non_retriable_error_fails_at_once() {
        let start = KafkaStart::new(
            "b:9092",
            "t",
            Duration::from_secs(10),
            CancellationToken::new(),
        );
        let t = Instant::now();
        let err = start
            .step("probe", (), |_, _| -> Result<(), KafkaError> {
                Err(KafkaError::MetadataFetch(
                    RDKafkaErrorCode::TopicAuthorizationFailed,
                ))
            })
            .await
            .map(|_| ())
            .expect_err("not retriable");
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(matches!(err, ServerError::Kafka { .. }), "{err:?}");
    }
}
