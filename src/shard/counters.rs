//! Reading the other shards' sequence counters, as exactly as one process reads its own.
//!
//! A recipient's expected range starts at the counters read *after* its subscription is in
//! place and ends at the counters read *before* it unsubscribes. In one process that is
//! an atomic load. Across shards it is a round: the worker asks the coordinator
//! (`NeedRound`), and the coordinator, having received the request, asks every shard for
//! its own counters and sends back the merged vector. Every shard's read happens after
//! the coordinator received the request, which was sent after the user asked, so the
//! values were all read after the ask: the same guarantee as the atomic load. Users who ask
//! while a request is out wait for the next one (one request out at a time per worker,
//! so rounds batch under load). Before the schedule is sent to anyone no shard sends, and
//! the coordinator answers at once with "all zero".

use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::shard::wire::ToCoordinator;

type Waiter = oneshot::Sender<Arc<Vec<u64>>>;

#[derive(Default)]
struct State {
    /// Users whose answer is the reply to the request now out.
    in_flight: Vec<Waiter>,
    /// Users who asked while a request was out: the next request is theirs.
    waiting: Vec<Waiter>,
    out: bool,
    /// No more rounds: the run is over here, or the coordinator is gone.
    closed: bool,
}

/// A worker's side of the counter rounds.
pub struct RemoteCounters {
    to_coordinator: mpsc::Sender<ToCoordinator>,
    slots: usize,
    state: Mutex<State>,
}

impl RemoteCounters {
    pub fn new(to_coordinator: mpsc::Sender<ToCoordinator>, slots: usize) -> RemoteCounters {
        RemoteCounters {
            to_coordinator,
            slots,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every slot's counter, read after this call began; `None` when the coordinator is
    /// gone.
    pub async fn fresh(&self) -> Option<Arc<Vec<u64>>> {
        let (tx, rx) = oneshot::channel();
        let ask = {
            let mut s = self.lock();
            if s.closed {
                return None;
            }
            if s.out {
                s.waiting.push(tx);
                false
            } else {
                s.out = true;
                s.in_flight.push(tx);
                true
            }
        };
        if ask
            && self
                .to_coordinator
                .send(ToCoordinator::NeedRound)
                .await
                .is_err()
        {
            self.fail();
        }
        rx.await.ok()
    }

    /// The reply to the request out: answers its users and sends the next request if
    /// others asked meanwhile.
    pub async fn answered(&self, counters: Vec<u64>) {
        let counters = Arc::new(if counters.is_empty() {
            vec![0; self.slots]
        } else {
            counters
        });
        let again = {
            let mut s = self.lock();
            for w in std::mem::take(&mut s.in_flight) {
                let _ = w.send(counters.clone());
            }
            s.in_flight = std::mem::take(&mut s.waiting);
            s.out = !s.in_flight.is_empty();
            s.out
        };
        if again
            && self
                .to_coordinator
                .send(ToCoordinator::NeedRound)
                .await
                .is_err()
        {
            self.fail();
        }
    }

    /// No more rounds (the run is over here, or the coordinator is gone): every user
    /// waiting, and every later ask, is answered with nothing.
    pub fn fail(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.in_flight.clear();
        s.waiting.clear();
        s.out = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn asks_during_a_round_wait_for_the_next_one() {
        let (tx, mut rx) = mpsc::channel(16);
        let rc = Arc::new(RemoteCounters::new(tx, 3));
        let first = tokio::spawn({
            let rc = rc.clone();
            async move { rc.fresh().await }
        });
        assert!(matches!(rx.recv().await, Some(ToCoordinator::NeedRound)));
        // A second ask while the first request is out must not be answered by it.
        let second = tokio::spawn({
            let rc = rc.clone();
            async move { rc.fresh().await }
        });
        while rc.lock().waiting.is_empty() {
            tokio::task::yield_now().await;
        }
        rc.answered(vec![1, 2, 3]).await;
        assert_eq!(*first.await.unwrap().unwrap(), vec![1, 2, 3]);
        // The second ask caused a request of its own.
        assert!(matches!(rx.recv().await, Some(ToCoordinator::NeedRound)));
        assert!(!second.is_finished());
        rc.answered(Vec::new()).await;
        assert_eq!(*second.await.unwrap().unwrap(), vec![0, 0, 0]);
        assert!(rx.try_recv().is_err(), "no request without an ask");
        // Once closed, a user waiting is released and a later ask gets no answer at once.
        let third = tokio::spawn({
            let rc = rc.clone();
            async move { rc.fresh().await }
        });
        assert!(matches!(rx.recv().await, Some(ToCoordinator::NeedRound)));
        rc.fail();
        assert!(third.await.unwrap().is_none());
        assert!(rc.fresh().await.is_none());
        assert!(rx.try_recv().is_err(), "no request once closed");
    }
}
