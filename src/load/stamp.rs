//! The harness's own data, carried inside the chat text so it survives any server that
//! relays the text: `~<run>:<sender>:<room>:<seq>:<intended µs>:<sent µs>~` followed by
//! padding up to the scenario's message size.
//!
//! Times are microseconds since the run's start instant. Parsing looks for the marker
//! `~<run>:` anywhere in a body, so the same code reads a chat-JSON body and a raw one.

use std::fmt::Write as _;

/// One message's identity and timing, as stamped by its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub room: u32,
    pub seq: u64,
    /// When the schedule said to send (open model), µs since the run started.
    pub intended_us: u64,
    /// When it was actually written, µs since the run started.
    pub sent_us: u64,
}

/// The prefix every text of run `run_id` starts with; the DB audit searches for it.
pub fn marker(run_id: &str) -> String {
    format!("~{run_id}:")
}

impl Stamp {
    /// The chat text: the stamp, then `.` padding up to `size` bytes.
    pub fn text(&self, run_id: &str, size: usize) -> String {
        let mut text = String::with_capacity(size.max(64));
        let _ = write!(
            text,
            "~{run_id}:{}:{}:{}:{}:{}~",
            self.sender, self.room, self.seq, self.intended_us, self.sent_us
        );
        while text.len() < size {
            text.push('.');
        }
        text
    }

    /// Finds and parses the stamp of run `run_id` in `body` (a chat JSON or the raw text).
    pub fn find(body: &[u8], run_id: &str) -> Option<Stamp> {
        Self::find_marked(body, &marker(run_id))
    }

    /// [`find`](Self::find) with the run's [`marker`] already built (once per run, not
    /// once per delivery).
    pub fn find_marked(body: &[u8], marker: &str) -> Option<Stamp> {
        let start = find_subslice(body, marker.as_bytes())? + marker.len();
        let rest = &body[start..];
        let end = rest.iter().position(|b| *b == b'~')?;
        let fields = std::str::from_utf8(&rest[..end]).ok()?;
        let mut parts = fields.split(':');
        let stamp = Stamp {
            sender: parts.next()?.parse().ok()?,
            room: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            intended_us: parts.next()?.parse().ok()?,
            sent_us: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_chat_json_and_raw() {
        let stamp = Stamp {
            sender: 17,
            room: 4,
            seq: 99,
            intended_us: 1_000_000,
            sent_us: 1_000_250,
        };
        let text = stamp.text("ab12cd34", 128);
        assert_eq!(text.len(), 128);
        assert!(text.starts_with(&marker("ab12cd34")));
        assert_eq!(Stamp::find(text.as_bytes(), "ab12cd34"), Some(stamp));
        let json =
            serde_json::json!({"roomId": "r", "sender": "u1", "message": text, "type": "TALK"})
                .to_string();
        assert_eq!(Stamp::find(json.as_bytes(), "ab12cd34"), Some(stamp));
    }

    #[test]
    fn ignores_other_runs_and_garbage() {
        let stamp = Stamp {
            sender: 1,
            room: 2,
            seq: 3,
            intended_us: 4,
            sent_us: 5,
        };
        let text = stamp.text("run1", 64);
        assert_eq!(Stamp::find(text.as_bytes(), "run2"), None);
        assert_eq!(Stamp::find(b"~run1:1:2:x:4:5~", "run1"), None);
        assert_eq!(Stamp::find(b"~run1:1:2:3:4~", "run1"), None);
        assert_eq!(Stamp::find(b"~run1:1:2:3:4:5", "run1"), None);
    }

    #[test]
    fn worst_case_stamp_fits_the_minimum_size() {
        let stamp = Stamp {
            sender: 999_999,
            room: 999_999,
            seq: 9_999_999,
            intended_us: 99_999_999_999,
            sent_us: 99_999_999_999,
        };
        assert!(stamp.text("ffffffff", 0).len() <= crate::scenario::MIN_MESSAGE_SIZE as usize);
    }
}
