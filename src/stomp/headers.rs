//! A frame's headers, in wire order, without an allocation per name or value.
//!
//! A decoded frame's names and values point into the frame's own received bytes (its
//! head, checked as UTF-8 once by the decoder); only a value that carried escapes is
//! unescaped into a side buffer. Headers added by the program (builder style) go to that
//! side buffer too. Decoding a MESSAGE thus costs one allocation for the list of entries,
//! where it used to cost two strings per header.

use std::fmt;

use bytes::Bytes;

/// Where one name or value lies: in the received head, or in the side buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    at: usize,
    len: usize,
    owned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    name: Span,
    value: Span,
}

/// A frame's headers (see the module docs). Compare, iterate and look up as pairs of
/// `&str`; the first header of a name is the one [`Headers::get`] returns.
#[derive(Clone, Default)]
pub struct Headers {
    /// The received head the decoder's spans point into. Invariant: valid UTF-8, and
    /// every span into it starts and ends at an ASCII byte boundary.
    raw: Bytes,
    /// Unescaped values and headers added by the program.
    owned: String,
    entries: Vec<Entry>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Empty headers with room for `entries` headers of `text` bytes in all (names and
    /// values), so that building a frame of known shape allocates twice, not per header.
    pub fn with_capacity(entries: usize, text: usize) -> Headers {
        Headers {
            raw: Bytes::new(),
            owned: String::with_capacity(text),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Headers that will point into `raw`, a frame head the caller checked as UTF-8.
    pub(super) fn over(raw: Bytes, expected: usize) -> Headers {
        debug_assert!(std::str::from_utf8(&raw).is_ok());
        Headers {
            raw,
            owned: String::new(),
            entries: Vec::with_capacity(expected),
        }
    }

    /// Appends a header whose name and value lie in the received head at these byte
    /// ranges; `value` is `None` when the value is given unescaped as `unescaped`.
    pub(super) fn push_received(
        &mut self,
        name: std::ops::Range<usize>,
        value: Result<std::ops::Range<usize>, &str>,
    ) {
        let name = Span {
            at: name.start,
            len: name.len(),
            owned: false,
        };
        let value = match value {
            Ok(range) => Span {
                at: range.start,
                len: range.len(),
                owned: false,
            },
            Err(text) => self.own(text),
        };
        self.entries.push(Entry { name, value });
    }

    /// Appends a header. Repeating a name keeps both entries; readers see the first.
    pub fn push(&mut self, name: &str, value: &str) {
        let entry = Entry {
            name: self.own(name),
            value: self.own(value),
        };
        self.entries.push(entry);
    }

    /// Inserts a header at `index` (as `Vec::insert`).
    pub fn insert(&mut self, index: usize, name: &str, value: &str) {
        let entry = Entry {
            name: self.own(name),
            value: self.own(value),
        };
        self.entries.insert(index, entry);
    }

    fn own(&mut self, text: &str) -> Span {
        let at = self.owned.len();
        self.owned.push_str(text);
        Span {
            at,
            len: text.len(),
            owned: true,
        }
    }

    fn text(&self, span: Span) -> &str {
        let range = span.at..span.at + span.len;
        if span.owned {
            &self.owned[range]
        } else {
            let bytes = &self.raw[range];
            debug_assert!(std::str::from_utf8(bytes).is_ok());
            // SAFETY: `raw` is valid UTF-8 (checked by the decoder before `over`), and
            // every received span was cut at ASCII bytes (':', LF, CR) or the ends of
            // the head, which are character boundaries.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        }
    }

    /// The value of the first header called `name` (names are case-sensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.name.len == name.len() && self.text(e.name) == name)
            .map(|e| self.text(e.value))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The headers as `(name, value)` pairs, in wire order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            headers: self,
            entries: self.entries.iter(),
        }
    }
}

/// The headers as `(name, value)` pairs, in wire order ([`Headers::iter`]).
pub struct Iter<'a> {
    headers: &'a Headers,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let headers = self.headers;
        self.entries
            .next()
            .map(|e| (headers.text(e.name), headers.text(e.value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in pairs {
            headers.push(name.as_ref(), value.as_ref());
        }
        headers
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_and_added_headers_read_back_alike_in_order() {
        let head = Bytes::from_static("MESSAGE\nsubscription:0\ntime:12:30\nnote:é\n\n".as_bytes());
        let mut h = Headers::over(head.clone(), 3);
        h.push_received(8..20, Ok(21..22));
        h.push_received(23..27, Ok(28..33));
        h.push_received(34..38, Err("un:escaped"));
        h.push("extra", "added");
        let pairs: Vec<(&str, &str)> = h.iter().collect();
        assert_eq!(
            pairs,
            [
                ("subscription", "0"),
                ("time", "12:30"),
                ("note", "un:escaped"),
                ("extra", "added"),
            ]
        );
        assert_eq!(h.get("time"), Some("12:30"));
        assert_eq!(h.get("tim"), None);
        let built: Headers = pairs.iter().copied().collect();
        assert_eq!(h, built, "equality is by pairs, not by storage");
    }

    #[test]
    fn the_first_of_a_repeated_name_wins_and_insert_places_by_index() {
        let mut h: Headers = [("foo", "World"), ("foo", "Hello")].into_iter().collect();
        assert_eq!(h.get("foo"), Some("World"));
        h.insert(0, "foo", "First");
        assert_eq!(h.get("foo"), Some("First"));
        assert_eq!(h.len(), 3);
        assert_eq!(
            format!("{h:?}"),
            r#"[("foo", "First"), ("foo", "World"), ("foo", "Hello")]"#
        );
    }
}
