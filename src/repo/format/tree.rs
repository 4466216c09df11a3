//! Trees: one directory's entries, sorted by name, stored as a tree blob.
//! Equal directories serialise to equal bytes and so deduplicate: an
//! unchanged directory costs nothing in the next snapshot.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::super::id::Id;
use super::{malformed, FormatError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The name as UTF-8. When the original bytes are not UTF-8 this is a
    /// lossy rendering and `name_raw` holds the exact bytes (base64).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_raw: Option<String>,
    pub kind: NodeKind,
    /// Unix permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub size: u64,
    /// Data blob ids in order; their concatenation is the file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_raw: Option<String>,
    /// Status-change time (`st_ctime`, nanoseconds) and inode number of a
    /// file read from disk. With size and mtime they let the next backup
    /// of the same paths take the file's blobs without reading it: any
    /// write moves ctime, and ctime cannot be set back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// Application attributes (content type, etag, owner of a Storage
    /// object…): kept verbatim, never interpreted by the engine.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
}

/// Encode bytes as a display string plus, if they are not UTF-8, the raw form.
pub fn encode_name(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), Some(B64.encode(bytes))),
    }
}

fn decode_name(text: &str, raw: &Option<String>) -> Result<Vec<u8>, FormatError> {
    match raw {
        Some(r) => B64.decode(r).map_err(|_| malformed("tree", "raw name is not base64")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl Node {
    pub fn new(name_bytes: &[u8], kind: NodeKind) -> Node {
        let (name, name_raw) = encode_name(name_bytes);
        Node {
            name,
            name_raw,
            kind,
            mode: if kind == NodeKind::Dir { 0o755 } else { 0o644 },
            mtime_ns: 0,
            uid: 0,
            gid: 0,
            size: 0,
            content: Vec::new(),
            subtree: None,
            target: None,
            target_raw: None,
            ctime_ns: None,
            inode: None,
            attrs: BTreeMap::new(),
        }
    }

    pub fn name_bytes(&self) -> Vec<u8> {
        decode_name(&self.name, &self.name_raw).unwrap_or_else(|_| self.name.as_bytes().to_vec())
    }

    pub fn target_bytes(&self) -> Option<Vec<u8>> {
        let t = self.target.as_ref()?;
        Some(decode_name(t, &self.target_raw).unwrap_or_else(|_| t.as_bytes().to_vec()))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        // Sized up front: a table stream lists hundreds of thousands of
        // chunk ids (67 bytes each in JSON), and a doubling buffer would
        // hold up to twice that at the end of a backup.
        let ids: usize = self.nodes.iter().map(|n| n.content.len()).sum();
        let mut out = Vec::with_capacity(ids * 67 + self.nodes.len() * 256 + 64);
        serde_json::to_writer(&mut out, self).expect("tree serialises");
        out
    }

    /// Parse and check the invariants restore relies on: every name is a
    /// single safe path component, names are strictly ascending (so unique),
    /// and each node has the fields its kind needs.
    pub fn decode(bytes: &[u8]) -> Result<Tree, FormatError> {
        let tree: Tree = serde_json::from_slice(bytes).map_err(|e| malformed("tree", e.to_string()))?;
        let mut prev: Option<Vec<u8>> = None;
        for n in &tree.nodes {
            let name = decode_name(&n.name, &n.name_raw)?;
            if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
                return Err(malformed("tree", format!("unsafe entry name {:?}", n.name)));
            }
            if let Some(p) = &prev {
                if *p >= name {
                    return Err(malformed("tree", "entries not sorted or not unique"));
                }
            }
            match n.kind {
                NodeKind::Dir if n.subtree.is_none() => return Err(malformed("tree", "directory without subtree")),
                NodeKind::Symlink if n.target.is_none() => return Err(malformed("tree", "symlink without target")),
                _ => {}
            }
            if n.kind != NodeKind::File && !n.content.is_empty() {
                return Err(malformed("tree", "content on a non-file node"));
            }
            if let Some(t) = &n.target {
                decode_name(t, &n.target_raw)?;
            }
            prev = Some(name);
        }
        Ok(tree)
    }

    /// Sort nodes into the canonical order `decode` requires.
    pub fn sort(&mut self) {
        self.nodes.sort_by_key(|n| n.name_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_traversal_and_duplicates() {
        let mut t = Tree::default();
        t.nodes.push(Node::new(b"a", NodeKind::File));
        t.nodes.push(Node::new(b"b", NodeKind::File));
        assert!(Tree::decode(&t.encode()).is_ok());
        for bad in [&b".."[..], b"x/y", b"", b"."] {
            let mut u = t.clone();
            u.nodes[0] = Node::new(bad, NodeKind::File);
            assert!(Tree::decode(&u.encode()).is_err(), "{bad:?}");
        }
        let mut dup = t.clone();
        dup.nodes[1] = Node::new(b"a", NodeKind::File);
        assert!(Tree::decode(&dup.encode()).is_err());
    }

    #[test]
    fn non_utf8_names_survive() {
        let raw = b"caf\xe9";
        let n = Node::new(raw, NodeKind::File);
        let t = Tree { nodes: vec![n] };
        let back = Tree::decode(&t.encode()).unwrap();
        assert_eq!(back.nodes[0].name_bytes(), raw);
    }

    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        (
            proptest::collection::vec(any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0), 1..12),
            0u8..3,
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4),
            proptest::collection::vec(any::<u8>(), 1..16),
            proptest::option::of("[a-z_]{1,8}"),
        )
            .prop_filter("not . or ..", |(name, ..)| name != b"." && name != b"..")
            .prop_map(|(name, kind, mode, mtime_ns, size, content, target, attr)| {
                let kind = [NodeKind::File, NodeKind::Dir, NodeKind::Symlink][kind as usize];
                let mut n = Node::new(&name, kind);
                n.mode = mode & 0o7777;
                n.mtime_ns = mtime_ns;
                n.size = size;
                match kind {
                    NodeKind::File => n.content = content.into_iter().map(Id).collect(),
                    NodeKind::Dir => n.subtree = Some(Id([7; 32])),
                    NodeKind::Symlink => {
                        let (t, raw) = encode_name(&target);
                        n.target = Some(t);
                        n.target_raw = raw;
                    }
                }
                if let Some(a) = attr {
                    n.attrs.insert(a, serde_json::json!({"etag": "x", "n": 1}));
                }
                n
            })
    }

    proptest! {
        /// Any valid tree, once sorted and de-duplicated, survives encoding
        /// exactly, names and targets byte for byte; equal trees encode equal.
        #[test]
        fn tree_round_trip(nodes in proptest::collection::vec(arb_node(), 0..20)) {
            let mut t = Tree { nodes };
            t.sort();
            t.nodes.dedup_by_key(|n| n.name_bytes());
            let bytes = t.encode();
            let back = Tree::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &t);
            prop_assert_eq!(back.encode(), bytes);
            for (a, b) in back.nodes.iter().zip(&t.nodes) {
                prop_assert_eq!(a.name_bytes(), b.name_bytes());
                prop_assert_eq!(a.target_bytes(), b.target_bytes());
            }
        }

        /// Reversing a sorted tree of two or more entries is always refused.
        #[test]
        fn unsorted_tree_refused(nodes in proptest::collection::vec(arb_node(), 2..10)) {
            let mut t = Tree { nodes };
            t.sort();
            t.nodes.dedup_by_key(|n| n.name_bytes());
            prop_assume!(t.nodes.len() >= 2);
            t.nodes.reverse();
            prop_assert!(Tree::decode(&t.encode()).is_err());
        }

        #[test]
        fn tree_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Tree::decode(&bytes);
        }
    }
}
