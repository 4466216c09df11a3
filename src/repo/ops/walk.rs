//! Navigating snapshot trees.

use super::super::archiver::display_path;
use super::super::error::{Error, Result};
use super::super::format::tree::{Node, NodeKind, Tree};
use super::super::id::Id;
use super::super::repository::Repository;

/// Split a user-given snapshot path into components ("/a/b/" → [a, b]).
pub fn split_path(path: &str) -> Vec<Vec<u8>> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").map(|c| c.as_bytes().to_vec()).collect()
}

/// The node at `path` (None for the root itself, which has no node).
pub fn find_node(repo: &Repository, root: &Id, path: &[Vec<u8>]) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found = None;
    for (i, comp) in path.iter().enumerate() {
        let tree = repo.read_tree(&tree_id)?;
        let node = tree
            .nodes
            .into_iter()
            .find(|n| &n.name_bytes() == comp)
            .ok_or_else(|| Error::PathNotFound(format!("{} is not in the snapshot", display_path(&path[..=i]))))?;
        if i + 1 < path.len() {
            tree_id = node
                .subtree
                .ok_or_else(|| Error::PathNotFound(format!("{} is not a directory", display_path(&path[..=i]))))?;
        }
        found = Some(node);
    }
    Ok(found)
}

/// Called for each node with its path; returns whether to descend into it.
pub type Visitor<'a> = dyn FnMut(&[Vec<u8>], &Node) -> Result<bool> + 'a;

/// Visit every node under `tree` depth first, with its path.
pub fn visit(repo: &Repository, tree: &Id, prefix: &mut Vec<Vec<u8>>, f: &mut Visitor<'_>) -> Result<()> {
    let t: Tree = repo.read_tree(tree)?;
    for node in &t.nodes {
        prefix.push(node.name_bytes());
        let descend = f(prefix, node)?;
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                visit(repo, sub, prefix, f)?;
            }
        }
        prefix.pop();
    }
    Ok(())
}
