//! A future polled only when it asked to be: [`WakeGate`] wraps a long-lived future that
//! sits in a `select!` beside busier branches (a shutdown or kill signal, a heart-beat
//! tick) and skips polling it on wakes meant for the others.
//!
//! `select!` polls every branch on every wake of its task. For a session task woken once
//! per frame queued for its client, that made each frame also pay for polling the
//! cancellation waits, each of which locks its token's mutex and its notifier's waiter
//! list. Behind the gate such a branch costs an atomic swap and a waker registration when
//! it was not the one that woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// What the inner future wakes: a flag, and the task that polls the gate.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// See the module docs. The inner future is polled on the gate's first poll, after it
/// woke its waker, and after it returned `Ready` (so a stream-like future that is ready
/// again at once, such as a poll function over an interval, is not starved).
pub struct WakeGate<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> WakeGate<F> {
    pub fn new(inner: F) -> WakeGate<F> {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        WakeGate {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Polls the inner future if it may have made progress since its last poll.
    pub fn poll_gated(&mut self, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered on every poll, before the flag is read, so a wake between the two
        // is not lost. (A wake sets the flag, then takes the registration: between its
        // two steps it may take one made after the flag was read, so no registration can
        // be assumed to still be there. Registering the same waker again costs no clone.)
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let ready = self
            .inner
            .as_mut()
            .poll(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            self.flag.woken.store(true, Ordering::Release);
        }
        ready
    }
}

impl<F: Future> Future for WakeGate<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // `WakeGate` is `Unpin`: the inner future lives in its own box.
        self.get_mut().poll_gated(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `open` is set, waking the last waker it saw.
    struct Counted {
        polls: Arc<AtomicUsize>,
        open: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    struct Task {
        wakes: AtomicUsize,
    }
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_it_woke_and_its_wake_reaches_the_task() {
        let polls = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gate = WakeGate::new(Counted {
            polls: polls.clone(),
            open: open.clone(),
            waker: inner_waker.clone(),
        });
        let task = Arc::new(Task {
            wakes: AtomicUsize::new(0),
        });
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(gate.poll_gated(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1, "polled on the first poll");
        // Wakes meant for other branches: the inner future is left alone.
        for _ in 0..5 {
            assert!(gate.poll_gated(&mut cx).is_pending());
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "not polled without its own wake"
        );

        // The inner future's waker fires: the task is woken and the next poll reaches it.
        open.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(task.wakes.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(gate.poll_gated(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Once ready it is polled again next time (an interval is ready again and again).
        assert!(gate.poll_gated(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_cancellation_behind_the_gate_ends_a_select_that_other_branches_keep_waking() {
        let token = tokio_util::sync::CancellationToken::new();
        let mut cancelled = WakeGate::new(token.clone().cancelled_owned());
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(8);
        let canceller = token.clone();
        tokio::spawn(async move {
            for i in 0..100 {
                tx.send(i).await.unwrap();
                tokio::task::yield_now().await;
            }
            canceller.cancel();
            // Keeps the channel open so only the cancellation can end the loop.
            std::future::pending::<()>().await;
        });
        let mut received = 0;
        loop {
            tokio::select! {
                // Queued messages first, so the count does not depend on which branch
                // a random pick favours once both are ready.
                biased;
                Some(_) = rx.recv() => received += 1,
                _ = &mut cancelled => break,
            }
        }
        assert_eq!(received, 100);
        assert!(token.is_cancelled());
    }
}
