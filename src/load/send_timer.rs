//! Wakes virtual users at their send times to within tens of microseconds.
//!
//! tokio's timer rounds every deadline up to the next whole millisecond and fires when a
//! worker next looks, so a send planned for `t` went out up to a millisecond or more
//! after it. Corrected latency counts from the planned time, so at light load that
//! lateness of the harness's own was a large part of the latency it reported. Here one
//! thread keeps the planned times in a heap and sleeps until the earliest with the
//! kernel's nanosecond timeout (timer slack 1 µs); a user's [`SendTimer`] registers its
//! next send time once, not on every wake of its task.
//!
//! The thread's wake and the cross-thread wake of the user cost a few microseconds a
//! send, and sends spread evenly are no longer handled several to a millisecond tick:
//! one-to-one at 5,000 msg/s cost the harness a fifth more CPU per delivery. So the
//! precise timer serves runs planning at most [`PRECISE_UP_TO`] messages a second, where
//! a millisecond tick holds about one send anyway and a millisecond is a large part of
//! the latency; faster runs keep tokio's timer, whose lateness their send lag shows.
//!
//! Bounds: a user has at most one live registration, plus those it replaced before they
//! fired (each leaves the heap at its own time, within one send gap). The thread sleeps
//! while nothing is due and lives as long as the process.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::poll_fn;
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};
use std::thread::Thread;
use std::time::Instant;

/// The highest planned send rate (messages/s, the whole run) timed by this module.
pub const PRECISE_UP_TO: f64 = 1_000.0;

/// Whether a run of `plan` times its sends here.
pub fn precise_for(plan: &crate::scenario::Plan) -> bool {
    plan.expected_open_messages(std::time::Duration::from_secs(1)) <= PRECISE_UP_TO
}

struct Entry {
    at: Instant,
    seq: u64,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Deadlines {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// When the thread will next look by itself (`None`: it sleeps until told).
    next_look: Option<Instant>,
}

struct Timer {
    deadlines: Mutex<Deadlines>,
    thread: Thread,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Timer>();
        let handle = std::thread::Builder::new()
            .name("stompede-send-timer".into())
            .spawn(move || {
                // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64, 0u64, 0u64, 0u64);
                }
                let timer = rx.recv().expect("the send timer's state");
                run(timer);
            })
            .expect("start the send-timer thread");
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            deadlines: Mutex::new(Deadlines::default()),
            thread: handle.thread().clone(),
        }));
        let _ = tx.send(timer);
        timer
    })
}

fn run(timer: &'static Timer) {
    let mut due = Vec::new();
    loop {
        let next = {
            let mut d = timer.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            while d.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                if let Some(Reverse(e)) = d.heap.pop() {
                    due.push(e.waker);
                }
            }
            d.next_look = d.heap.peek().map(|Reverse(e)| e.at);
            d.next_look
        };
        for waker in due.drain(..) {
            waker.wake();
        }
        match next {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

fn register(at: Instant, waker: Waker) {
    let timer = timer();
    let tell = {
        let mut d = timer.deadlines.lock().unwrap_or_else(|e| e.into_inner());
        d.seq += 1;
        let seq = d.seq;
        d.heap.push(Reverse(Entry { at, seq, waker }));
        let earlier = d.next_look.is_none_or(|next| at < next);
        if earlier {
            d.next_look = Some(at);
        }
        earlier
    };
    if tell {
        timer.thread.unpark();
    }
}

/// One user's next send time.
#[derive(Default)]
pub struct SendTimer {
    /// Timed by this module's thread rather than tokio's timer.
    precise: bool,
    at: Option<Instant>,
    /// The time registered, and the waker it will wake.
    registered: Option<(Instant, Waker)>,
}

impl SendTimer {
    pub fn new(precise: bool) -> Self {
        SendTimer {
            precise,
            ..SendTimer::default()
        }
    }

    /// Sets the next send time (`None`: nothing to send).
    pub fn set(&mut self, at: Option<Instant>) {
        self.at = at;
    }

    /// Resolves once the send time has come; never while none is set.
    pub async fn wait(&mut self) {
        if !self.precise {
            match self.at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
            return;
        }
        poll_fn(|cx| match self.at {
            None => Poll::Pending,
            Some(at) if Instant::now() >= at => {
                self.registered = None;
                Poll::Ready(())
            }
            Some(at) => {
                // The same task polls this timer for the user's whole session, so one
                // registration per send time is enough (another waker gets its own).
                let current = self
                    .registered
                    .as_ref()
                    .is_some_and(|(t, w)| *t == at && w.will_wake(cx.waker()));
                if !current {
                    register(at, cx.waker().clone());
                    self.registered = Some((at, cx.waker().clone()));
                }
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_the_time_not_before() {
        let mut timer = SendTimer::new(true);
        for gap_us in [300u64, 1_500, 2_700] {
            let at = Instant::now() + Duration::from_micros(gap_us);
            timer.set(Some(at));
            timer.wait().await;
            let now = Instant::now();
            assert!(now >= at, "woke {:?} early", at - now);
        }
    }

    #[tokio::test]
    async fn an_earlier_time_set_later_is_not_held_behind_a_later_one() {
        // One user sleeps until far away; another's near time must still come first.
        let mut far = SendTimer::new(true);
        far.set(Some(Instant::now() + Duration::from_secs(3600)));
        let mut near = SendTimer::new(true);
        let at = Instant::now() + Duration::from_millis(2);
        near.set(Some(at));
        tokio::select! {
            _ = far.wait() => panic!("the far timer fired"),
            _ = near.wait() => {}
        }
        assert!(Instant::now() >= at);
    }

    #[tokio::test]
    async fn no_time_never_fires() {
        for precise in [true, false] {
            let mut timer = SendTimer::new(precise);
            let r = tokio::time::timeout(Duration::from_millis(20), timer.wait()).await;
            assert!(r.is_err());
        }
    }

    #[tokio::test]
    async fn tokio_s_timer_when_not_precise() {
        let mut timer = SendTimer::new(false);
        let at = Instant::now() + Duration::from_millis(3);
        timer.set(Some(at));
        timer.wait().await;
        assert!(Instant::now() >= at);
    }
}
