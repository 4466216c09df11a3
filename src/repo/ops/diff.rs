//! `snap diff`: what changed between two snapshots. Equal subtree ids are
//! skipped without reading, so the cost follows the size of the change.

use super::super::archiver::display_path;
use super::super::error::Result;
use super::super::format::tree::{Node, NodeKind};
use super::super::id::Id;
use super::super::repository::Repository;
use super::walk::visit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Added,
    Removed,
    Modified,
    TypeChanged,
    MetadataChanged,
}

impl Change {
    pub fn symbol(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Modified => 'M',
            Change::TypeChanged => 'T',
            Change::MetadataChanged => 'U',
        }
    }
}

pub fn diff(repo: &Repository, a: &Id, b: &Id) -> Result<Vec<(Change, String)>> {
    repo.load_index()?;
    let mut out = Vec::new();
    diff_trees(repo, Some(a), Some(b), &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn all_under(
    repo: &Repository,
    tree: &Id,
    prefix: &mut Vec<Vec<u8>>,
    change: Change,
    out: &mut Vec<(Change, String)>,
) -> Result<()> {
    visit(repo, tree, prefix, &mut |p, _| {
        out.push((change, display_path(p)));
        Ok(true)
    })
}

fn diff_trees(
    repo: &Repository,
    a: Option<&Id>,
    b: Option<&Id>,
    prefix: &mut Vec<Vec<u8>>,
    out: &mut Vec<(Change, String)>,
) -> Result<()> {
    if a == b {
        return Ok(());
    }
    let ta = match a {
        Some(id) => repo.read_tree(id)?.nodes,
        None => Vec::new(),
    };
    let tb = match b {
        Some(id) => repo.read_tree(id)?.nodes,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < ta.len() || j < tb.len() {
        let na = ta.get(i);
        let nb = tb.get(j);
        let order = match (na, nb) {
            (Some(x), Some(y)) => x.name_bytes().cmp(&y.name_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let n = na.expect("present");
                one_side(repo, n, prefix, Change::Removed, out)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = nb.expect("present");
                one_side(repo, n, prefix, Change::Added, out)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (x, y) = (na.expect("present"), nb.expect("present"));
                prefix.push(x.name_bytes());
                if x.kind != y.kind {
                    out.push((Change::TypeChanged, display_path(prefix)));
                } else if x.kind == NodeKind::Dir {
                    if x.mode != y.mode || x.uid != y.uid || x.gid != y.gid {
                        out.push((Change::MetadataChanged, display_path(prefix)));
                    }
                    diff_trees(repo, x.subtree.as_ref(), y.subtree.as_ref(), prefix, out)?;
                } else if x.content != y.content || x.target != y.target || x.size != y.size {
                    out.push((Change::Modified, display_path(prefix)));
                } else if x.mode != y.mode
                    || x.mtime_ns != y.mtime_ns
                    || x.uid != y.uid
                    || x.gid != y.gid
                    || x.attrs != y.attrs
                {
                    out.push((Change::MetadataChanged, display_path(prefix)));
                }
                prefix.pop();
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

fn one_side(
    repo: &Repository,
    n: &Node,
    prefix: &mut Vec<Vec<u8>>,
    change: Change,
    out: &mut Vec<(Change, String)>,
) -> Result<()> {
    prefix.push(n.name_bytes());
    out.push((change, display_path(prefix)));
    if let (NodeKind::Dir, Some(sub)) = (n.kind, &n.subtree) {
        all_under(repo, sub, prefix, change, out)?;
    }
    prefix.pop();
    Ok(())
}
