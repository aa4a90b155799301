//! The journal: the tar vocabulary of a transaction's plaintext.
//!
//! Each committed transaction is a tar stream (no end-of-archive blocks) of these members;
//! replaying every transaction in order rebuilds the node's state. Parsing is strict:
//! any member outside this vocabulary is damage, so a hostile tar cannot reach the filesystem
//! or the state with `../` paths, symlinks, devices or unknown names.

use crate::name::{Name, NameKind};
use git2::Oid;
use std::io::Read;

/// One change to the node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `repos/<repo>/` (directory): the repository exists.
    Repo(Name),
    /// `repos/<repo>/.git/objects/xx/yyyy…` (file): a loose git object (zlib bytes).
    Object(Name, Oid, Vec<u8>),
    /// `repos/<repo>/.git/refs/heads/main` (file, `<hex>\n`): the branch head.
    Head(Name, Oid),
    /// `tags/<tag>/` (directory): the tag exists.
    Tag(Name),
    /// `tags/<tag>/<entry>` (hard link to `repos/<repo>/<secret>`): a tag entry.
    Link {
        /// The tag.
        tag: Name,
        /// The entry's name inside the tag.
        entry: Name,
        /// The repository of the linked secret.
        repo: Name,
        /// The linked secret.
        secret: Name,
    },
    /// `.polykey/remove` (file holding `repos/<repo>`): the repository and its links are gone.
    RemoveRepo(Name),
    /// `.polykey/remove` (file holding `tags/<tag>`): the tag is gone.
    RemoveTag(Name),
    /// `.polykey/remove` (file holding `tags/<tag>/<entry>`): the tag entry is gone.
    RemoveLink(Name, Name),
}

const REMOVE: &[u8] = b".polykey/remove";
const HEAD_SUFFIX: &[u8] = b".git/refs/heads/main";
/// Largest journal member accepted (a loose object of the largest secret, compressed).
const MAX_MEMBER_BYTES: u64 = crate::git::MAX_OBJECT_BYTES as u64 + (1 << 20);

/// Builds a transaction's tar stream.
pub struct Writer {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Joins path components with `/`.
pub(crate) fn path_of(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b"/"[..])
}

/// `repos/<repo>/.git/objects/xx/yyyy…`: where git keeps a loose object.
pub(crate) fn object_path(repo: &Name, oid: Oid) -> Vec<u8> {
    let hex = oid.to_string();
    path_of(&[b"repos", repo.as_bytes(), b".git/objects", &hex.as_bytes()[..2], &hex.as_bytes()[2..]])
}

/// A byte path as a `Path` for the tar crate (lossless on Unix).
fn as_path(bytes: &[u8]) -> std::borrow::Cow<'_, std::path::Path> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::borrow::Cow::Borrowed(std::path::Path::new(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        std::borrow::Cow::Owned(std::path::PathBuf::from(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// A tar header with private metadata: owner 0, the given mode, size and mtime.
pub(crate) fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Appends a regular file member at `path`.
pub(crate) fn add_file<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    path: &[u8],
    mode: u32,
    mtime: u64,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64, mtime);
    tar.append_data(&mut h, as_path(path), data)
}

/// Appends a directory member at `path` (given without its trailing slash).
pub(crate) fn add_dir<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &[u8], mtime: u64) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o700, 0, mtime);
    tar.append_data(&mut h, as_path(path), std::io::empty())
}

/// Appends a hard link member `path` → `target`.
pub(crate) fn add_link<W: std::io::Write>(tar: &mut tar::Builder<W>, path: &[u8], target: &[u8], mtime: u64) -> std::io::Result<()> {
    let mut h = header(tar::EntryType::Link, 0o600, 0, mtime);
    tar.append_link(&mut h, as_path(path), as_path(target))
}

impl Writer {
    /// An empty transaction.
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        Writer { tar }
    }

    /// Is nothing recorded yet?
    pub fn is_empty(&self) -> bool {
        self.tar.get_ref().is_empty()
    }

    /// Appends the bytes of an earlier transaction (to re-queue a failed save).
    pub fn append_raw(&mut self, bytes: &[u8]) {
        self.tar.get_mut().extend_from_slice(bytes);
    }

    /// Records one change.
    pub fn push(&mut self, record: &Record) {
        let tar = &mut self.tar;
        let written = match record {
            Record::Repo(r) => add_dir(tar, &path_of(&[b"repos", r.as_bytes()]), 0),
            Record::Object(r, oid, z) => add_file(tar, &object_path(r, *oid), 0o400, 0, z),
            Record::Head(r, oid) => {
                let p = path_of(&[b"repos", r.as_bytes(), HEAD_SUFFIX]);
                add_file(tar, &p, 0o600, 0, format!("{oid}\n").as_bytes())
            }
            Record::Tag(t) => add_dir(tar, &path_of(&[b"tags", t.as_bytes()]), 0),
            Record::Link { tag, entry, repo, secret } => add_link(
                tar,
                &path_of(&[b"tags", tag.as_bytes(), entry.as_bytes()]),
                &path_of(&[b"repos", repo.as_bytes(), secret.as_bytes()]),
                0,
            ),
            Record::RemoveRepo(r) => add_file(tar, REMOVE, 0o600, 0, &path_of(&[b"repos", r.as_bytes()])),
            Record::RemoveTag(t) => add_file(tar, REMOVE, 0o600, 0, &path_of(&[b"tags", t.as_bytes()])),
            Record::RemoveLink(t, e) => add_file(tar, REMOVE, 0o600, 0, &path_of(&[b"tags", t.as_bytes(), e.as_bytes()])),
        };
        written.expect("names are validated and writes go to memory");
    }

    /// The transaction's bytes: tar members with no end-of-archive blocks, so that the
    /// concatenation of all transactions is itself one tar stream.
    pub fn into_bytes(mut self) -> Vec<u8> {
        // Take the bytes before the builder's drop appends its end-of-archive blocks.
        std::mem::take(self.tar.get_mut())
    }
}

/// Why a journal could not be parsed; the caller adds where.
#[derive(Debug, thiserror::Error)]
#[error("journal member {member:?}: {what}")]
pub struct JournalError {
    /// The member path, lossily decoded ("" when the tar itself is broken).
    pub member: String,
    /// What is wrong with it.
    pub what: &'static str,
}

fn split_names(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/').collect()
}

fn name(kind: NameKind, bytes: &[u8]) -> Option<Name> {
    Name::new(kind, bytes).ok()
}

/// Parses `repos/<repo>/<secret>` (a tag link's target).
fn parse_target(t: &[u8]) -> Option<(Name, Name)> {
    match split_names(t).as_slice() {
        [b"repos", r, s] => Some((name(NameKind::Repo, r)?, name(NameKind::Secret, s)?)),
        _ => None,
    }
}

/// Parses a transaction's tar stream into records, strictly.
pub fn parse(plaintext: &[u8]) -> Result<Vec<Record>, JournalError> {
    let err = |member: &[u8], what| JournalError { member: String::from_utf8_lossy(member).into_owned(), what };
    // The tar crate stops at the first all-zero block or at the end of input; the writer
    // never writes zero blocks, so stopping before the end means damage. The seekable
    // iterator skips padding by seeking (the plain one zeroes a 32 KiB buffer per member).
    let mut cursor = std::io::Cursor::new(plaintext);
    let mut out = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut cursor);
        let entries = archive.entries_with_seek().map_err(|_| err(b"", "unreadable tar stream"))?;
        for entry in entries {
            let mut entry = entry.map_err(|_| err(b"", "unreadable tar header"))?;
            let path = entry.path_bytes().into_owned();
            let kind = entry.header().entry_type();
            let size = entry.size();
            if size > MAX_MEMBER_BYTES {
                return Err(err(&path, "member is larger than any object"));
            }
            // Only directories may carry a trailing slash.
            let trimmed = if kind == tar::EntryType::Directory { path.strip_suffix(b"/").unwrap_or(&path) } else { &path[..] };
            let parts = split_names(trimmed);
            let record = match (kind, parts.as_slice()) {
                (tar::EntryType::Directory, [b"repos", r]) => name(NameKind::Repo, r).map(Record::Repo),
                (tar::EntryType::Directory, [b"tags", t]) => name(NameKind::Tag, t).map(Record::Tag),
                (tar::EntryType::Link, [b"tags", t, e]) => {
                    let target = entry.link_name_bytes().ok_or_else(|| err(&path, "hard link without a target"))?;
                    let (repo, secret) = parse_target(&target).ok_or_else(|| err(&path, "link target is not repos/<repo>/<secret>"))?;
                    Some(Record::Link {
                        tag: name(NameKind::Tag, t).ok_or_else(|| err(&path, "bad tag name"))?,
                        entry: name(NameKind::TagEntry, e).ok_or_else(|| err(&path, "bad entry name"))?,
                        repo,
                        secret,
                    })
                }
                (tar::EntryType::Regular, _) => {
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data).map_err(|_| err(&path, "truncated member"))?;
                    parse_file(trimmed, &parts, data)
                }
                _ => None,
            };
            out.push(record.ok_or_else(|| err(&path, "not part of the journal vocabulary"))?);
        }
    }
    // Seeking over a member whose data runs past the end leaves the cursor beyond it.
    if cursor.position() > plaintext.len() as u64 {
        return Err(err(b"", "unreadable tar stream"));
    }
    if cursor.position() != plaintext.len() as u64 {
        return Err(err(b"", "an end-of-archive block inside a transaction"));
    }
    Ok(out)
}

fn parse_file(path: &[u8], parts: &[&[u8]], data: Vec<u8>) -> Option<Record> {
    if path == REMOVE {
        return match split_names(&data).as_slice() {
            [b"repos", r] => Some(Record::RemoveRepo(name(NameKind::Repo, r)?)),
            [b"tags", t] => Some(Record::RemoveTag(name(NameKind::Tag, t)?)),
            [b"tags", t, e] => Some(Record::RemoveLink(name(NameKind::Tag, t)?, name(NameKind::TagEntry, e)?)),
            _ => None,
        };
    }
    match parts {
        [b"repos", r, b".git", b"objects", xx, rest] if xx.len() == 2 && rest.len() == 38 => {
            let hex = std::str::from_utf8(&[*xx, *rest].concat()).ok()?.to_owned();
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            Some(Record::Object(name(NameKind::Repo, r)?, git2::Oid::from_str(&hex).ok()?, data))
        }
        [b"repos", r, b".git", b"refs", b"heads", b"main"] => {
            let hex = std::str::from_utf8(data.strip_suffix(b"\n")?).ok()?;
            if hex.len() != 40 {
                return None;
            }
            Some(Record::Head(name(NameKind::Repo, r)?, git2::Oid::from_str(hex).ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(k: NameKind, s: &[u8]) -> Name {
        Name::new(k, s).unwrap()
    }

    #[test]
    fn every_record_round_trips_including_long_names() {
        let long = vec![b'r'; 255];
        let (oid, z) = crate::git::encode(git2::ObjectType::Blob, b"x");
        let records = vec![
            Record::Repo(n(NameKind::Repo, &long)),
            Record::Object(n(NameKind::Repo, &long), oid, z),
            Record::Head(n(NameKind::Repo, b"r"), oid),
            Record::Tag(n(NameKind::Tag, "☃".as_bytes())),
            Record::Link {
                tag: n(NameKind::Tag, b"t"),
                entry: n(NameKind::TagEntry, &[b'e'; 255]),
                repo: n(NameKind::Repo, &long),
                secret: n(NameKind::Secret, &[b's'; 255]),
            },
            Record::RemoveRepo(n(NameKind::Repo, b"r")),
            Record::RemoveTag(n(NameKind::Tag, b"t")),
            Record::RemoveLink(n(NameKind::Tag, b"t"), n(NameKind::TagEntry, b"\xff\n")),
        ];
        let mut w = Writer::new();
        records.iter().for_each(|r| w.push(r));
        assert_eq!(parse(&w.into_bytes()).unwrap(), records);
    }

    #[test]
    fn hostile_members_are_refused() {
        let cases: Vec<(tar::EntryType, &[u8])> = vec![
            (tar::EntryType::Regular, b"../etc/passwd"),
            (tar::EntryType::Regular, b"/etc/passwd"),
            (tar::EntryType::Symlink, b"repos/r"),
            (tar::EntryType::Char, b"repos/r"),
            (tar::EntryType::Regular, b"repos/r/secret"),
            (tar::EntryType::Directory, b"repos/.."),
            (tar::EntryType::Regular, b"repos/r/.git/config"),
        ];
        for (kind, path) in cases {
            let mut raw = tar::Header::new_gnu();
            raw.set_entry_type(kind);
            raw.set_size(0);
            // set_path refuses `..`, so write the name field directly as a hostile file would.
            raw.as_old_mut().name[..path.len()].copy_from_slice(path);
            raw.set_cksum();
            let bytes = raw.as_bytes().to_vec();
            assert!(parse(&bytes).is_err(), "{kind:?} {:?}", String::from_utf8_lossy(path));
        }
    }
}
