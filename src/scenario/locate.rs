//! Finds the key path (`rooms[1].members`) for a byte span in a TOML document.
//!
//! serde errors from the TOML library carry a span but not the key they happened at.
//! This module reads the document a second time into a tree of spanned keys and values
//! and walks it to the deepest key or value whose span covers the error, so an unknown
//! key or a wrong type is reported with its full path like every other error.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::ops::Range;
use toml::Spanned;

/// A TOML value reduced to its structure and spans.
enum Node {
    Table(Vec<(Spanned<String>, Spanned<Node>)>),
    Array(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    entries.push((key, value));
                }
                Ok(Node::Table(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// The key path of the deepest key or value in `text` whose span covers `span`, e.g.
/// `load.rate` or `rooms[1].members`. `None` when the text does not parse or the span
/// lies outside every key and value (a comment, blank space).
pub(crate) fn key_path_at(text: &str, span: Range<usize>) -> Option<String> {
    let root: Node = toml::from_str(text).ok()?;
    find(&root, &span)
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// Depth first, because the span of a table written as a `[header]` (or an
/// array-of-tables element) covers only the header, not the keys below it.
fn find(node: &Node, span: &Range<usize>) -> Option<String> {
    match node {
        Node::Table(entries) => entries.iter().find_map(|(key, value)| {
            let name = key.get_ref();
            if covers(&key.span(), span) {
                Some(name.clone())
            } else if let Some(rest) = find(value.get_ref(), span) {
                let sep = if rest.starts_with('[') { "" } else { "." };
                Some(format!("{name}{sep}{rest}"))
            } else {
                covers(&value.span(), span).then(|| name.clone())
            }
        }),
        Node::Array(items) => {
            items
                .iter()
                .enumerate()
                .find_map(|(i, item)| match find(item.get_ref(), span) {
                    Some(rest) if rest.starts_with('[') => Some(format!("[{i}]{rest}")),
                    Some(rest) => Some(format!("[{i}].{rest}")),
                    None => covers(&item.span(), span).then(|| format!("[{i}]")),
                })
        }
        Node::Leaf => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(text: &str, needle: &str) -> Option<String> {
        let start = text.find(needle).expect("needle in text");
        key_path_at(text, start..start + needle.len())
    }

    #[test]
    fn finds_nested_and_array_paths() {
        let text = "name = \"x\"\n[load]\nrate = 2.0\n[[rooms]]\nname = \"a\"\n[[rooms]]\nname = \"b\"\nmembers = 7\n";
        assert_eq!(path_of(text, "2.0").as_deref(), Some("load.rate"));
        assert_eq!(path_of(text, "7").as_deref(), Some("rooms[1].members"));
        assert_eq!(path_of(text, "\"x\"").as_deref(), Some("name"));
    }

    #[test]
    fn finds_header_tables_and_missing_keys_at_their_header() {
        let text = "[users]\ncount = 1\n[[rooms]]\nname = \"a\"\n";
        assert_eq!(path_of(text, "[users]").as_deref(), Some("users"));
        assert_eq!(path_of(text, "[[rooms]]").as_deref(), Some("rooms[0]"));
        assert_eq!(path_of(text, "count").as_deref(), Some("users.count"));
    }

    #[test]
    fn finds_keys_inside_inline_tables() {
        let text = "[load]\nmessage_size = { min = 64, mux = 9 }\n";
        assert_eq!(
            path_of(text, "mux").as_deref(),
            Some("load.message_size.mux")
        );
    }
}
