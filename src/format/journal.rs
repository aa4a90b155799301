//! The journal: the tar vocabulary of a transaction's plaintext.
//!
//! Each committed transaction is a tar stream (no end-of-archive blocks) of these members;
//! replaying every transaction in order rebuilds the node's state. Parsing is strict:
//! any member outside this vocabulary is damage, so a hostile tar cannot reach the filesystem
//! or the state with `../` paths, symlinks, devices or unknown names.

use crate::name::{Name, NameKind};
use crate::secret::SecretBytes;
use git2::Oid;
use std::io::Read;
use zeroize::{Zeroize, Zeroizing};

/// One change to the node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `repos/<repo>/` (directory): the repository exists.
    Repo(Name),
    /// `repos/<repo>/.git/objects/xx/yyyy…` (file): a loose git object (zlib bytes).
    Object(Name, Oid, Vec<u8>),
    /// `repos/<repo>/.git/deltas/xx/yyyy…` (file): a tree stored as a delta against an
    /// earlier tree of the repository (see [`crate::git::delta`]); needs feature bit 0x1.
    Delta(Name, Oid, Vec<u8>),
    /// `repos/<repo>/.git/saves/xx/yyyy…` (file): one save of a big repository in one member:
    /// the commit `yyyy…` (loose bytes), its tree as a delta, and the head moved to the commit
    /// (what an `Object`, a `Delta` and a `Head` record do); needs feature bit 0x1.
    Save {
        /// The repository.
        repo: Name,
        /// The commit's id.
        commit: Oid,
        /// The commit's loose bytes.
        commit_z: Vec<u8>,
        /// The id of the commit's tree.
        tree: Oid,
        /// The tree, as a delta (see [`crate::git::delta`]).
        delta: Vec<u8>,
    },
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
    /// `.polykey/identity` (file, 65 bytes: version 1, Ed25519 seed, X25519 secret): the
    /// node's identity keys; needs feature bit 0x4.
    Identity(Vec<u8>),
    /// `repos/<repo>/.git/polykey/config` (file, `merge = lines\n` or `merge = never\n`): the
    /// repository's settings; needs feature bit 0x4.
    RepoConfig(Name, Vec<u8>),
    /// `.polykey/removed/<root hex>` (file, `<head hex>\n`): the repository whose first commit
    /// is `root` was removed when its head was `head`; needs feature bit 0x4.
    Removed {
        /// The removed repository's root commit (its identity).
        root: Oid,
        /// Its head when it was removed.
        head: Oid,
    },
    /// `.polykey/partial` (empty file): the node is a sub-node; needs feature bit 0x4.
    Partial,
}

impl Record {
    /// Whether the record needs feature bit 0x4 (nodes working together).
    pub fn needs_nodes_feature(&self) -> bool {
        matches!(self, Record::Identity(_) | Record::RepoConfig(..) | Record::Removed { .. } | Record::Partial)
    }
}

const IDENTITY: &[u8] = b".polykey/identity";
const PARTIAL: &[u8] = b".polykey/partial";
/// Length of an identity record: version, Ed25519 seed, X25519 secret.
pub const IDENTITY_BYTES: usize = 65;

/// Whether `data` is a repository's settings as Polykey writes them.
pub fn valid_config(data: &[u8]) -> bool {
    data == b"merge = lines\n" || data == b"merge = never\n"
}

const REMOVE: &[u8] = b".polykey/remove";
const HEAD_SUFFIX: &[u8] = b".git/refs/heads/main";
/// Largest journal member accepted (a loose object of the largest secret, compressed).
const MAX_MEMBER_BYTES: u64 = crate::git::MAX_OBJECT_BYTES as u64 + (1 << 20);

/// Builds a transaction's tar stream, in a buffer wiped on drop (its object members hold
/// secrets: a stored zlib block is the plaintext itself).
pub struct Writer {
    tar: tar::Builder<Wiped>,
}

/// A byte sink that grows without leaving copies behind and is wiped on drop.
#[derive(Default)]
struct Wiped(SecretBytes);

impl std::io::Write for Wiped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        extend_wiping(&mut self.0, data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// `repos/<repo>/.git/deltas/xx/yyyy…`: where a tree delta is recorded.
pub(crate) fn delta_path(repo: &Name, oid: Oid) -> Vec<u8> {
    let hex = oid.to_string();
    path_of(&[b"repos", repo.as_bytes(), b".git/deltas", &hex.as_bytes()[..2], &hex.as_bytes()[2..]])
}

/// `repos/<repo>/.git/saves/xx/yyyy…`: where a save of a commit and its tree delta is recorded.
pub(crate) fn save_path(repo: &Name, commit: Oid) -> Vec<u8> {
    let hex = commit.to_string();
    path_of(&[b"repos", repo.as_bytes(), b".git/saves", &hex.as_bytes()[..2], &hex.as_bytes()[2..]])
}

/// The data of a save record: tree id, the commit's length (`u32`), the commit, the delta.
fn save_data(commit_z: &[u8], tree: Oid, delta: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(24 + commit_z.len() + delta.len()));
    out.extend_from_slice(tree.as_bytes());
    out.extend_from_slice(&(commit_z.len() as u32).to_le_bytes());
    out.extend_from_slice(commit_z);
    out.extend_from_slice(delta);
    out
}

/// A save record from its path's parts and data; `None` if the data is cut short.
fn save_record(repo: Name, commit: Oid, data: &[u8]) -> Option<Record> {
    let tree = Oid::from_bytes(data.get(..20)?).ok()?;
    let len = u32::from_le_bytes(data.get(20..24)?.try_into().ok()?) as usize;
    let commit_z = data.get(24..24usize.checked_add(len)?)?.to_vec();
    let delta = data[24 + len..].to_vec();
    Some(Record::Save { repo, commit, commit_z, tree, delta })
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
        let mut tar = tar::Builder::new(Wiped::default());
        tar.mode(tar::HeaderMode::Deterministic);
        Writer { tar }
    }

    /// Is nothing recorded yet?
    pub fn is_empty(&self) -> bool {
        self.tar.get_ref().0.is_empty()
    }

    /// Bytes recorded and not taken yet.
    pub fn len(&self) -> usize {
        self.tar.get_ref().0.len()
    }

    /// Appends the bytes of an earlier transaction (to re-queue a failed save).
    pub fn append_raw(&mut self, bytes: &[u8]) {
        extend_wiping(&mut self.tar.get_mut().0, bytes);
    }

    /// Takes the bytes recorded so far (a transaction written out as it is built); later
    /// records continue the same stream.
    pub fn take(&mut self) -> SecretBytes {
        std::mem::take(&mut self.tar.get_mut().0)
    }

    /// Records one change.
    pub fn push(&mut self, record: &Record) {
        let tar = &mut self.tar;
        let written = match record {
            Record::Repo(r) => add_dir(tar, &path_of(&[b"repos", r.as_bytes()]), 0),
            Record::Object(r, oid, z) => add_file(tar, &object_path(r, *oid), 0o400, 0, z),
            Record::Delta(r, oid, d) => add_file(tar, &delta_path(r, *oid), 0o400, 0, d),
            Record::Save { repo, commit, commit_z, tree, delta } => {
                add_file(tar, &save_path(repo, *commit), 0o400, 0, &save_data(commit_z, *tree, delta))
            }
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
            Record::Identity(k) => add_file(tar, IDENTITY, 0o400, 0, k),
            Record::RepoConfig(r, c) => add_file(tar, &path_of(&[b"repos", r.as_bytes(), b".git/polykey/config"]), 0o600, 0, c),
            Record::Removed { root, head } => {
                add_file(tar, &path_of(&[b".polykey/removed", root.to_string().as_bytes()]), 0o600, 0, format!("{head}\n").as_bytes())
            }
            Record::Partial => add_file(tar, PARTIAL, 0o600, 0, b""),
        };
        written.expect("names are validated and writes go to memory");
    }

    /// The transaction's bytes: tar members with no end-of-archive blocks, so that the
    /// concatenation of all transactions is itself one tar stream.
    pub fn into_bytes(mut self) -> SecretBytes {
        // Take the bytes before the builder's drop appends its end-of-archive blocks.
        self.take()
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

/// What [`member`] made of the bytes at the start of a buffer.
enum Step {
    /// One record, and the bytes its member took (headers, data and padding).
    Done(Record, usize),
    /// The member is not complete: the buffer must hold at least this many bytes.
    More(usize),
    /// Not what [`Writer`] writes: [`parse`] must decide.
    Bail,
}

/// Bytes of a tar block.
const BLOCK: usize = 512;
/// Longest GNU long name (or link name) the fast path reads: a path of two or three names.
const MAX_LONG_NAME: usize = 1024;

/// An octal field as the tar crate writes it: every byte an octal digit but the last, a NUL.
fn octal(field: &[u8]) -> Option<u64> {
    let (last, digits) = field.split_last()?;
    if *last != 0 || digits.is_empty() || !digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n << 3 | u64::from(d - b'0')))
}

/// The sum of `bytes`, at most 1024 of them (a tar header's): eight at a time, in four
/// 16-bit lanes that cannot overflow at that length. This runs over every header.
fn byte_sum(bytes: &[u8]) -> u32 {
    const LOW: u64 = 0x00ff_00ff_00ff_00ff;
    debug_assert!(bytes.len() <= 1024);
    let mut words = bytes.chunks_exact(8);
    let mut lanes = 0u64;
    for w in &mut words {
        let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        lanes += (x & LOW) + (x >> 8 & LOW);
    }
    let folded = (lanes & 0xffff) + (lanes >> 16 & 0xffff) + (lanes >> 32 & 0xffff) + (lanes >> 48);
    folded as u32 + words.remainder().iter().map(|&b| u32::from(b)).sum::<u32>()
}

/// The bytes of `field` up to its first NUL.
fn until_nul(field: &[u8]) -> &[u8] {
    field.iter().position(|&b| b == 0).map_or(field, |i| &field[..i])
}

/// Drops one trailing NUL (how GNU long names end).
fn strip_nul(name: &[u8]) -> &[u8] {
    name.strip_suffix(b"\0").unwrap_or(name)
}

/// Values of lowercase hex digits; 0xff for every other byte.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Lowercase hex of a git object id (what [`Writer`] writes), in one or two pieces, into an id.
fn oid_from_hex(first: &[u8], rest: &[u8]) -> Option<Oid> {
    if first.len() + rest.len() != 40 {
        return None;
    }
    let mut hex = [0u8; 40];
    hex[..first.len()].copy_from_slice(first);
    hex[first.len()..].copy_from_slice(rest);
    let mut raw = [0u8; 20];
    let mut bad = 0u8;
    for i in 0..20 {
        let (hi, lo) = (HEX[usize::from(hex[2 * i])], HEX[usize::from(hex[2 * i + 1])]);
        bad |= hi | lo;
        raw[i] = hi << 4 | lo;
    }
    if bad & 0xf0 != 0 {
        return None;
    }
    Oid::from_bytes(&raw).ok()
}

/// Parses the member at the start of `buf` the way [`parse`] would, for exactly the members
/// [`Writer`] writes: GNU headers with the checksum and numeric fields as the tar crate
/// writes them, GNU long names and link names, and the journal's own paths. Anything else
/// (or anything wrong) is [`Step::Bail`], and [`parse`] decides: the fast path only ever
/// agrees with it.
fn member(buf: &[u8]) -> Step {
    let mut at = 0usize;
    let mut long_name: Option<&[u8]> = None;
    let mut long_link: Option<&[u8]> = None;
    loop {
        let Some(h) = buf.get(at..at + BLOCK) else { return Step::More(at + BLOCK) };
        if &h[257..265] != b"ustar  \0" {
            return Step::Bail;
        }
        // The tar checksum: the header's bytes summed, its own field counted as spaces.
        let sum = u64::from(byte_sum(&h[..148]) + byte_sum(&h[156..]) + 8 * u32::from(b' '));
        let (Some(cksum), Some(size)) = (octal(&h[148..156]), octal(&h[124..136])) else { return Step::Bail };
        let kind = h[156];
        let bound = if matches!(kind, b'L' | b'K') { MAX_LONG_NAME as u64 } else { MAX_MEMBER_BYTES };
        if cksum != sum || size > bound || !matches!(kind, b'0' | b'1' | b'5' | b'L' | b'K') {
            return Step::Bail;
        }
        let size = size as usize;
        let data = at + BLOCK;
        let next = data + size.div_ceil(BLOCK) * BLOCK;
        if buf.len() < next {
            return Step::More(next);
        }
        let body = &buf[data..data + size];
        match kind {
            b'L' if long_name.is_none() => long_name = Some(strip_nul(body)),
            b'K' if long_link.is_none() => long_link = Some(strip_nul(body)),
            kind @ (b'0' | b'1' | b'5') => {
                let path = long_name.unwrap_or_else(|| until_nul(&h[..100]));
                let record = match kind {
                    b'5' if size == 0 => match split_names(path.strip_suffix(b"/").unwrap_or(path)).as_slice() {
                        [b"repos", r] => name(NameKind::Repo, r).map(Record::Repo),
                        [b"tags", t] => name(NameKind::Tag, t).map(Record::Tag),
                        _ => None,
                    },
                    b'1' if size == 0 => {
                        let target = long_link.or_else(|| (h[157] != 0).then(|| until_nul(&h[157..257])));
                        match (split_names(path).as_slice(), target.and_then(parse_target)) {
                            ([b"tags", t, e], Some((repo, secret))) => {
                                (|| Some(Record::Link { tag: name(NameKind::Tag, t)?, entry: name(NameKind::TagEntry, e)?, repo, secret }))(
                                )
                            }
                            _ => None,
                        }
                    }
                    b'0' => fast_file(path, body),
                    _ => None,
                };
                return record.map_or(Step::Bail, |r| Step::Done(r, next));
            }
            _ => return Step::Bail,
        }
        at = next;
    }
}

/// [`parse_file`] for the fast path: objects and heads in the form [`Writer`] writes them.
fn fast_file(path: &[u8], data: &[u8]) -> Option<Record> {
    if path == REMOVE {
        return parse_file(path, &[], data.to_vec());
    }
    let repo_end = path.strip_prefix(b"repos/")?.iter().position(|&b| b == b'/')?;
    let (r, rest) = path[6..].split_at(repo_end);
    let rest = &rest[1..];
    if rest == HEAD_SUFFIX {
        let hex = data.strip_suffix(b"\n")?;
        return Some(Record::Head(name(NameKind::Repo, r)?, oid_from_hex(hex, &[])?));
    }
    if let Some(obj) = rest.strip_prefix(b".git/saves/") {
        if obj.len() != 41 || obj[2] != b'/' {
            return None;
        }
        return save_record(name(NameKind::Repo, r)?, oid_from_hex(&obj[..2], &obj[3..])?, data);
    }
    if let Some(obj) = rest.strip_prefix(b".git/deltas/") {
        if obj.len() != 41 || obj[2] != b'/' {
            return None;
        }
        return Some(Record::Delta(name(NameKind::Repo, r)?, oid_from_hex(&obj[..2], &obj[3..])?, data.to_vec()));
    }
    let obj = rest.strip_prefix(b".git/objects/")?;
    if obj.len() != 41 || obj[2] != b'/' {
        return None;
    }
    Some(Record::Object(name(NameKind::Repo, r)?, oid_from_hex(&obj[..2], &obj[3..])?, data.to_vec()))
}

/// Parses a transaction's journal as its plaintext arrives, a frame at a time, so that a
/// replay never holds a whole transaction: members that straddle frames are carried over.
/// It reads what [`Writer`] writes; at the first member it does not recognise it gives up,
/// and [`Parser::finish`] says so: the caller then runs [`parse`] on the whole transaction,
/// which decides (its records or its error).
#[derive(Default)]
pub struct Parser {
    /// The start of a member whose end is in a later frame.
    carry: Zeroizing<Vec<u8>>,
    records: Vec<Record>,
    bailed: bool,
}

impl Parser {
    /// A parser at the start of a transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the next piece of the transaction's plaintext.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        if self.bailed {
            return;
        }
        // First complete a member begun in an earlier piece, taking only what it needs.
        while !self.carry.is_empty() {
            match member(&self.carry) {
                // It took exactly what it asked for: the whole carry.
                Step::Done(record, used) if used == self.carry.len() => {
                    self.records.push(record);
                    self.carry.clear();
                }
                Step::More(need) => {
                    if chunk.is_empty() {
                        return;
                    }
                    let take = (need - self.carry.len()).min(chunk.len());
                    extend_wiping(&mut self.carry, &chunk[..take]);
                    chunk = &chunk[take..];
                }
                Step::Done(..) | Step::Bail => return self.bail(),
            }
        }
        while !chunk.is_empty() {
            match member(chunk) {
                Step::Done(record, used) => {
                    self.records.push(record);
                    chunk = &chunk[used..];
                }
                Step::More(_) => {
                    extend_wiping(&mut self.carry, chunk);
                    return;
                }
                Step::Bail => return self.bail(),
            }
        }
    }

    fn bail(&mut self) {
        self.bailed = true;
        self.carry = Zeroizing::default();
        wipe_records(&mut self.records);
    }

    /// The records parsed so far (none once it has given up); [`Parser::finish`] gives the
    /// rest.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// The transaction's records, or `None` if [`parse`] must read it (a member this parser
    /// does not recognise, or a transaction that ends inside a member).
    pub fn finish(mut self) -> Option<Vec<Record>> {
        if self.bailed || !self.carry.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.records))
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        wipe_records(&mut self.records);
    }
}

/// Wipes the object bytes of records that will not be applied, and drops them.
pub fn wipe_records(records: &mut Vec<Record>) {
    records.iter_mut().for_each(wipe_record);
    records.clear();
}

/// Wipes the object bytes a record holds (the only part that may be secret).
pub fn wipe_record(record: &mut Record) {
    match record {
        Record::Object(_, _, z) | Record::Delta(_, _, z) | Record::Identity(z) => z.zeroize(),
        Record::Save { commit_z, delta, .. } => {
            commit_z.zeroize();
            delta.zeroize();
        }
        _ => {}
    }
}

/// Appends to a wiped-on-drop buffer without leaving a copy behind when it grows.
fn extend_wiping(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    crate::secret::reserve(buf, data.len(), usize::MAX);
    buf.extend_from_slice(data);
}

fn parse_file(path: &[u8], parts: &[&[u8]], data: Vec<u8>) -> Option<Record> {
    if path == IDENTITY {
        let mut data = data;
        if data.len() == IDENTITY_BYTES && data[0] == 1 {
            return Some(Record::Identity(data));
        }
        data.zeroize();
        return None;
    }
    if path == PARTIAL {
        return data.is_empty().then_some(Record::Partial);
    }
    if let Some(root) = path.strip_prefix(b".polykey/removed/") {
        let head = data.strip_suffix(b"\n")?;
        return Some(Record::Removed { root: oid_from_hex(root, &[])?, head: oid_from_hex(head, &[])? });
    }
    if path == REMOVE {
        return match split_names(&data).as_slice() {
            [b"repos", r] => Some(Record::RemoveRepo(name(NameKind::Repo, r)?)),
            [b"tags", t] => Some(Record::RemoveTag(name(NameKind::Tag, t)?)),
            [b"tags", t, e] => Some(Record::RemoveLink(name(NameKind::Tag, t)?, name(NameKind::TagEntry, e)?)),
            _ => None,
        };
    }
    match parts {
        [b"repos", r, b".git", b"saves", xx, rest] if xx.len() == 2 && rest.len() == 38 => {
            let hex = std::str::from_utf8(&[*xx, *rest].concat()).ok()?.to_owned();
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            save_record(name(NameKind::Repo, r)?, git2::Oid::from_str(&hex).ok()?, &data)
        }
        [b"repos", r, b".git", dir @ (b"objects" | b"deltas"), xx, rest] if xx.len() == 2 && rest.len() == 38 => {
            let hex = std::str::from_utf8(&[*xx, *rest].concat()).ok()?.to_owned();
            if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                return None;
            }
            let (r, oid) = (name(NameKind::Repo, r)?, git2::Oid::from_str(&hex).ok()?);
            Some(if *dir == b"objects" { Record::Object(r, oid, data) } else { Record::Delta(r, oid, data) })
        }
        [b"repos", r, b".git", b"polykey", b"config"] if valid_config(&data) => Some(Record::RepoConfig(name(NameKind::Repo, r)?, data)),
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
        let (records, bytes) = sample();
        assert_eq!(parse(&bytes).unwrap(), records);
    }

    /// Every kind of record, names short and long (GNU long names and link names).
    fn sample() -> (Vec<Record>, Vec<u8>) {
        let long = vec![b'r'; 255];
        let (oid, z) = crate::git::encode(git2::ObjectType::Blob, b"x");
        let records = vec![
            Record::Repo(n(NameKind::Repo, b"r")),
            Record::Repo(n(NameKind::Repo, &long)),
            Record::Object(n(NameKind::Repo, &long), oid, z.clone()),
            Record::Object(n(NameKind::Repo, b"r"), oid, z),
            Record::Delta(n(NameKind::Repo, &long), oid, vec![7; 60]),
            Record::Delta(n(NameKind::Repo, b"r"), oid, oid.as_bytes().to_vec()),
            Record::Save { repo: n(NameKind::Repo, &long), commit: oid, commit_z: vec![1; 300], tree: oid, delta: vec![2; 70] },
            Record::Save { repo: n(NameKind::Repo, b"r"), commit: oid, commit_z: Vec::new(), tree: oid, delta: Vec::new() },
            Record::Head(n(NameKind::Repo, b"r"), oid),
            Record::Tag(n(NameKind::Tag, "☃".as_bytes())),
            Record::Link {
                tag: n(NameKind::Tag, b"t"),
                entry: n(NameKind::TagEntry, &[b'e'; 255]),
                repo: n(NameKind::Repo, &long),
                secret: n(NameKind::Secret, &[b's'; 255]),
            },
            Record::Link {
                tag: n(NameKind::Tag, b"t"),
                entry: n(NameKind::TagEntry, b"e"),
                repo: n(NameKind::Repo, b"r"),
                secret: n(NameKind::Secret, b"s"),
            },
            Record::RemoveRepo(n(NameKind::Repo, b"r")),
            Record::RemoveTag(n(NameKind::Tag, b"t")),
            Record::RemoveLink(n(NameKind::Tag, b"t"), n(NameKind::TagEntry, b"\xff\n")),
        ];
        let mut w = Writer::new();
        records.iter().for_each(|r| w.push(r));
        (records, w.into_bytes().to_vec())
    }

    fn fast(pieces: &[&[u8]]) -> Option<Vec<Record>> {
        let mut p = Parser::new();
        pieces.iter().for_each(|piece| p.feed(piece));
        p.finish()
    }

    #[test]
    fn the_streaming_parser_reads_what_the_writer_writes_split_anywhere() {
        let (records, bytes) = sample();
        assert_eq!(parse(&bytes).unwrap(), records);
        assert_eq!(fast(&[&bytes]).unwrap(), records);
        assert_eq!(fast(&[]).unwrap(), vec![]);
        for cut in 0..=bytes.len() {
            assert_eq!(fast(&[&bytes[..cut], &bytes[cut..]]).unwrap(), records, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(fast(&bytewise).unwrap(), records);
    }

    #[test]
    fn the_streaming_parser_never_disagrees_with_the_tar_reader() {
        // Whenever it answers, the tar reader gives the same records; otherwise it leaves the
        // verdict (records or error) to the tar reader.
        let (_, bytes) = sample();
        let check = |bytes: &[u8]| {
            let cut = bytes.len() / 3;
            if let Some(fast) = fast(&[&bytes[..cut], &bytes[cut..]]) {
                assert_eq!(parse(bytes).ok(), Some(fast), "{bytes:?}");
            }
        };
        for at in 0..bytes.len() {
            for flip in [0x01, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                check(&b);
            }
        }
        for len in (0..bytes.len()).step_by(7) {
            check(&bytes[..len]);
        }
        check(&[bytes.as_slice(), &[0u8; 1024]].concat());
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
            assert!(fast(&[&bytes]).is_none(), "{kind:?} {:?}", String::from_utf8_lossy(path));
        }
    }
}
