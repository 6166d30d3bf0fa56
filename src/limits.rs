//! Process limits the harness and the servers depend on: open files above all, since
//! every WebSocket session is one descriptor.
//!
//! Both sides raise their soft `RLIMIT_NOFILE` to the hard limit when they start (the
//! kernel default soft limit, often 1,024, is far below what a load run needs); the
//! harness then checks the result against what the scenario will open.

/// The open-file limit of this process after trying to raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit in force now (what `open` and `socket` are held to).
    pub soft: u64,
    /// The hard limit: the most an unprivileged process may raise the soft limit to.
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit and returns both. If the limit
/// cannot be read, returns `None`; if it cannot be raised, returns what is in force.
pub fn raise_nofile() -> Option<NoFile> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    // rlim_t is u64 on 64-bit Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Some(NoFile {
        soft: lim.rlim_cur as u64,
        hard: lim.rlim_max as u64,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let l = super::raise_nofile().expect("getrlimit works on Linux");
        assert_eq!(l.soft, l.hard);
    }
}
