//! Rollback detection: a node replaced by an older copy of itself (an attacker's, or a stale
//! backup restored by mistake) is noticed when it is opened.
//!
//! Every save moves the log's position (epoch, sequence) forward, and compaction moves the
//! epoch forward, so the position only grows. The highest position seen for a node is
//! remembered in `$XDG_STATE_HOME/polykey/seen/` (default `~/.local/state/polykey/seen/`),
//! keyed by the node's id and its canonical path, so a copy at another path is an independent
//! node, while an old copy put back at the same path is caught.

use crate::error::{Error, Result};
use crate::node::Node;
use std::path::PathBuf;

fn state_dir() -> Option<PathBuf> {
    Some(polykey_state_dir()?.join("seen"))
}

/// Polykey's own state folder: `$XDG_STATE_HOME/polykey`, else `~/.local/state/polykey`.
pub fn polykey_state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("polykey"))
}

fn record_path(node: &Node) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(node.path()).ok()?;
    let mut key = node.node_id().to_vec();
    key.extend_from_slice(canon.as_os_str().as_encoded_bytes());
    Some(state_dir()?.join(&sha1_smol::Sha1::from(&key).digest().to_string()[..24]))
}

fn read_seen(path: &std::path::Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (e, s) = text.trim().split_once(' ')?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

fn remembered(node: &Node) -> Option<(u32, u64)> {
    read_seen(&record_path(node)?)
}

fn rolled_back(node: &Node, seen: Option<(u32, u64)>) -> Result<()> {
    match seen {
        Some(seen) if node.position() < seen => Err(Error::Rollback {
            node: node.path().to_owned(),
            seen,
            found: node.position(),
            damaged_at: node.discarded_tail().map(|(offset, _)| offset),
        }),
        _ => Ok(()),
    }
}

/// Fails if `node` is older than the newest state of it seen here before.
pub fn check(node: &Node) -> Result<()> {
    rolled_back(node, remembered(node))
}

/// [`check`], then [`record`], reading the remembered position once (the mount daemon's
/// start-up).
pub fn check_and_record(node: &Node) -> Result<()> {
    let Some(path) = record_path(node) else { return Ok(()) };
    let seen = read_seen(&path);
    rolled_back(node, seen)?;
    write_if_newer(node, &path, seen);
    Ok(())
}

/// Remembers `node`'s current position as the newest seen (if it is). Failures are ignored:
/// detection is a safety net, and must never stop a user from reaching their secrets.
pub fn record(node: &Node) {
    let Some(path) = record_path(node) else { return };
    let seen = read_seen(&path);
    write_if_newer(node, &path, seen);
}

fn write_if_newer(node: &Node, path: &std::path::Path, seen: Option<(u32, u64)>) {
    if seen.is_some_and(|seen| seen >= node.position()) {
        return;
    }
    let _ = (|| -> std::io::Result<()> {
        let dir = path.parent().expect("a file in the state folder");
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir)?;
        let tmp = path.with_extension("tmp");
        let (e, s) = node.position();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&tmp)?, format!("{e} {s}\n").as_bytes())?;
        std::fs::rename(tmp, path)
    })();
}

/// Forgets what was seen (after the user accepted an older copy), then records the present.
pub fn accept(node: &Node) {
    if let Some(path) = record_path(node) {
        let _ = std::fs::remove_file(path);
    }
    record(node);
}
