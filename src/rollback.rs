//! Rollback detection: a node replaced by an older copy of itself (an attacker's, or a stale
//! backup restored by mistake) is noticed when it is opened.
//!
//! Every save moves the log's position (epoch, sequence) forward, and compaction moves the
//! epoch forward, so the position only grows. The highest position seen for a node is
//! remembered in `$XDG_STATE_HOME/polykey/seen/` (default `~/.local/state/polykey/seen/`),
//! keyed by the node's id alone: an old copy is caught wherever it is (put back at the same
//! path, or on a stick mounted under another label). The record names the path it was last
//! seen at, as context only. It is written durably (a temporary file, fsync, rename, fsync of
//! the folder), so a crash cannot lose it or leave it half written.

use crate::error::{Error, Result};
use crate::node::Node;
use std::io::Write;
use std::path::{Path, PathBuf};

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

/// The record's name: a digest of the node's id.
fn record_path(node: &Node) -> Option<PathBuf> {
    Some(state_dir()?.join(&sha1_smol::Sha1::from(node.node_id()).digest().to_string()[..24]))
}

/// Where earlier versions kept the record: a digest of the node's id and canonical path.
fn path_keyed_record(node: &Node) -> Option<PathBuf> {
    let canon = std::fs::canonicalize(node.path()).ok()?;
    let mut key = node.node_id().to_vec();
    key.extend_from_slice(canon.as_os_str().as_encoded_bytes());
    Some(state_dir()?.join(&sha1_smol::Sha1::from(&key).digest().to_string()[..24]))
}

/// The position a record holds (its first line: `EPOCH FRAMES`).
fn read_seen(path: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (e, s) = text.lines().next()?.trim().split_once(' ')?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

/// The newest position seen for `node`: its own record, or one an earlier version kept for
/// its path (moved to the new record the next time one is written).
fn remembered(node: &Node, path: &Path) -> Option<(u32, u64)> {
    let old = path_keyed_record(node).and_then(|p| read_seen(&p));
    read_seen(path).max(old)
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
    let Some(path) = record_path(node) else { return Ok(()) };
    rolled_back(node, remembered(node, &path))
}

/// [`check`], then [`record`], reading the remembered position once (the mount daemon's
/// start-up).
pub fn check_and_record(node: &Node) -> Result<()> {
    let Some(path) = record_path(node) else { return Ok(()) };
    let seen = remembered(node, &path);
    rolled_back(node, seen)?;
    write_if_newer(node, &path, seen);
    Ok(())
}

/// Remembers `node`'s current position as the newest seen (if it is). Failures are ignored:
/// detection is a safety net, and must never stop a user from reaching their secrets.
pub fn record(node: &Node) {
    let Some(path) = record_path(node) else { return };
    let seen = remembered(node, &path);
    write_if_newer(node, &path, seen);
}

fn write_if_newer(node: &Node, path: &Path, seen: Option<(u32, u64)>) {
    let old = path_keyed_record(node).filter(|p| p.exists());
    if seen.is_some_and(|seen| seen >= node.position()) && old.is_none() {
        return;
    }
    let position = seen.map_or(node.position(), |seen| seen.max(node.position()));
    if write_durably(path, position, node.path()).is_ok() {
        if let Some(old) = old {
            let _ = std::fs::remove_file(old); // Migrated: the new record holds its position.
        }
    }
}

/// Writes the record: a temporary file, fsync, rename over the record, fsync of the folder.
fn write_durably(path: &Path, (e, s): (u32, u64), node_path: &Path) -> std::io::Result<()> {
    let dir = path.parent().expect("a file in the state folder");
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)?;
    // One temporary file per process: two processes recording at once do not mix bytes.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        let canon = std::fs::canonicalize(node_path).unwrap_or_else(|_| node_path.to_owned());
        // The path is context for a person reading the record, never part of its key.
        f.write_all(format!("{e} {s}\nlast seen at {}\n", canon.display()).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        crate::storage::sync_dir(dir)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Forgets what was seen (after the user accepted an older copy), then records the present.
pub fn accept(node: &Node) {
    if let Some(path) = record_path(node) {
        let _ = std::fs::remove_file(path);
    }
    if let Some(old) = path_keyed_record(node) {
        let _ = std::fs::remove_file(old);
    }
    record(node);
}
