//! What a virtual user does with each `MESSAGE` it receives, the harness's hottest path:
//! find the run's stamp in the body, check that the run issued it, mark the arrival in
//! the recipient's membership (exact loss, duplicate and order accounting) and record
//! the latency. Kept apart from the user's task so the bench in `benches/receive.rs`
//! measures exactly what a run does.

use std::sync::atomic::Ordering::Relaxed;

use crate::load::integrity::{Membership, Slots};
use crate::load::stamp::Stamp;
use crate::load::stats::Recorder;
use crate::load::Schedule;

/// What one received body turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// No stamp of this run in it (another run's message, or not ours at all).
    Foreign,
    /// A stamp of this run that the run never issued: counted as corrupt, not trusted.
    Corrupt,
    /// A delivery, with its corrected latency (from the intended send time).
    Delivered { stamp: Stamp, corrected_us: u64 },
}

/// The run-wide parts a delivery touches.
pub struct Receiver<'a> {
    /// The run's stamp marker ([`crate::load::stamp::marker`]).
    pub marker: &'a str,
    pub slots: &'a Slots,
    pub recorder: &'a Recorder,
    pub schedule: Schedule,
    /// Per sender (user index): whether its stamp's times are on this process's clock
    /// (`None`: every sender's are). A sender on another host is counted, not timed.
    pub timed: Option<&'a [bool]>,
}

impl Receiver<'_> {
    /// Takes in one `MESSAGE` body that reached `user` at `now_us`; `membership` is the
    /// user's membership of the stamp's room, looked up by the caller from `room_of`.
    pub fn receive<'m>(
        &self,
        body: &[u8],
        user: u32,
        now_us: u64,
        membership: impl FnOnce(u32) -> Option<&'m mut Membership>,
    ) -> Received {
        let Some(stamp) = Stamp::find_marked(body, self.marker) else {
            return Received::Foreign;
        };
        // Only stamps the run actually issued: a mangled one must not be trusted (or
        // make a sequence set grow without bound).
        let issued = self
            .slots
            .slot(stamp.room, stamp.sender)
            .is_some_and(|slot| self.slots.plausible(slot, stamp.seq));
        if !issued {
            self.recorder.corrupt.fetch_add(1, Relaxed);
            return Received::Corrupt;
        }
        if let Some(m) = membership(stamp.room) {
            m.arrive(stamp.sender, stamp.seq);
        }
        let corrected_us = now_us.saturating_sub(stamp.intended_us);
        if self
            .timed
            .is_some_and(|t| !t.get(stamp.sender as usize).copied().unwrap_or(false))
        {
            self.recorder.delivered_untimed(user);
            return Received::Delivered {
                stamp,
                corrected_us,
            };
        }
        self.recorder.delivered(
            user,
            corrected_us,
            now_us.saturating_sub(stamp.sent_us),
            self.schedule.measured(stamp.intended_us),
        );
        Received::Delivered {
            stamp,
            corrected_us,
        }
    }
}
