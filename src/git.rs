//! Git objects as the node stores them: loose-object encoding, flat trees, commits.
//!
//! Objects are kept exactly in git's loose format (zlib of `"<kind> <size>\0" || body`), so
//! the node, the export and `git` itself agree byte for byte. Hashing is git2's.
//! Parsing is strict and bounded: objects come from files that may be hostile.

use crate::name::{Name, NameKind};
use flate2::{write::ZlibEncoder, Compression, Decompress, FlushDecompress, Status};
use git2::{ObjectType, Oid};
use std::cell::RefCell;
use std::io::Write;
use zeroize::Zeroizing;

pub mod delta;

/// Largest object (hence secret) accepted, inflated: 64 MiB. Secrets are small; the bound
/// keeps a hostile object from inflating without limit.
pub const MAX_OBJECT_BYTES: usize = 64 << 20;

/// The file mode of every secret in a tree: a regular, non-executable file.
const BLOB_MODE: &[u8] = b"100644";

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The zlib stream or the object header is malformed.
    #[error("object {0} is malformed")]
    Malformed(Oid),
    /// The inflated bytes do not hash to the object's id.
    #[error("object {0} does not match its id")]
    HashMismatch(Oid),
    /// The object is larger than [`MAX_OBJECT_BYTES`].
    #[error("object {0} is larger than the {MAX_OBJECT_BYTES}-byte limit")]
    TooLarge(Oid),
    /// The object is of another kind than expected.
    #[error("object {0} is not a {1}")]
    WrongKind(Oid, &'static str),
    /// A tree or commit body breaks git's grammar, or holds what a flat repository cannot.
    #[error("object {0} is not a valid flat {1}")]
    BadBody(Oid, &'static str),
    /// A referenced object is absent.
    #[error("object {0} is missing")]
    Missing(Oid),
}

fn kind_name(kind: ObjectType) -> &'static str {
    match kind {
        ObjectType::Blob => "blob",
        ObjectType::Tree => "tree",
        ObjectType::Commit => "commit",
        ObjectType::Tag => "tag",
        _ => "unknown",
    }
}

/// Encodes a body as a loose object; returns its id and its zlib bytes.
pub fn encode(kind: ObjectType, body: &[u8]) -> (Oid, Vec<u8>) {
    let oid = Oid::hash_object(kind, body).expect("hashing an in-memory buffer cannot fail");
    let header = format!("{} {}\0", kind_name(kind), body.len());
    if let Some(z) = stored(header.as_bytes(), body) {
        return (oid, z);
    }
    // Objects over 64 KiB (large secrets only) are rare: compressed, with a deflater each.
    let mut z = ZlibEncoder::new(Vec::with_capacity(body.len() / 2 + 64), Compression::fast());
    z.write_all(header.as_bytes()).and_then(|()| z.write_all(body)).expect("writing to a Vec cannot fail");
    (oid, z.finish().expect("writing to a Vec cannot fail"))
}

/// zlib header of a stream of stored (uncompressed) blocks: deflate, 32 KiB window, fastest
/// level; (0x78 * 256 + 0x01) is a multiple of 31, as zlib requires.
const STORED_ZLIB: [u8; 2] = [0x78, 0x01];

/// `header || body` as a zlib stream of one stored block, if it fits one (64 KiB): most
/// objects (secrets, flat trees, commits) are small, and the tar framing pads each to 512
/// bytes anyway, while setting up a deflater or an inflater (zeroing their tables) dominated
/// the CPU cost of a save. Any zlib reader, git included, reads it.
#[allow(clippy::big_endian_bytes)] // zlib's Adler-32 trailer is big-endian (RFC 1950).
fn stored(header: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(header.len() + body.len()).ok()?;
    let mut out = Vec::with_capacity(usize::from(len) + 11);
    out.extend_from_slice(&STORED_ZLIB);
    out.push(0x01); // BFINAL = 1, BTYPE = 00 (stored)
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    let mut adler = adler2::Adler32::new();
    adler.write_slice(header);
    adler.write_slice(body);
    out.extend_from_slice(&adler.checksum().to_be_bytes());
    Some(out)
}

/// The payload of a zlib stream that is exactly one stored block (what [`stored`] writes),
/// checksum verified; `None` for anything else, which the inflater then reads.
#[allow(clippy::big_endian_bytes)] // zlib's Adler-32 trailer is big-endian (RFC 1950).
fn stored_payload(z: &[u8]) -> Option<&[u8]> {
    let rest = z.strip_prefix(&STORED_ZLIB)?.strip_prefix(&[0x01])?;
    let len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]);
    let nlen = u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]);
    if nlen != !len || rest.len() != 4 + usize::from(len) + 4 {
        return None;
    }
    let (payload, sum) = rest[4..].split_at(usize::from(len));
    (adler2::adler32_slice(payload).to_be_bytes() == sum).then_some(payload)
}

/// Where an object's body lies inside its loose bytes, when they are one stored block (what
/// [`encode`] writes up to 64 KiB): the body can then be read in place. Call after
/// [`decode`] has verified the object.
pub fn stored_body(z: &[u8]) -> Option<std::ops::Range<usize>> {
    let payload = stored_payload(z)?;
    let nul = payload.iter().take(32).position(|&b| b == 0)?;
    let start = z.len() - 4 - payload.len(); // The Adler-32 trailer follows the payload.
    Some(start + nul + 1..start + payload.len())
}

/// Inflates and verifies a loose object, checking it is of `want` kind.
pub fn decode(oid: Oid, zbytes: &[u8], want: ObjectType) -> Result<Zeroizing<Vec<u8>>, ObjectError> {
    let (kind, body) = decode_any(oid, zbytes)?;
    if kind != want {
        return Err(ObjectError::WrongKind(oid, kind_name(want)));
    }
    Ok(body)
}

/// Inflates and verifies a loose object of any kind: its kind and body.
pub fn decode_any(oid: Oid, zbytes: &[u8]) -> Result<(ObjectType, Zeroizing<Vec<u8>>), ObjectError> {
    let raw = inflate(oid, zbytes, MAX_OBJECT_BYTES + 64)?;
    let nul = raw.iter().take(32).position(|&b| b == 0).ok_or(ObjectError::Malformed(oid))?;
    let header = std::str::from_utf8(&raw[..nul]).map_err(|_| ObjectError::Malformed(oid))?;
    let (kind, size) = header.split_once(' ').ok_or(ObjectError::Malformed(oid))?;
    let size: usize = size.parse().map_err(|_| ObjectError::Malformed(oid))?;
    if size > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge(oid));
    }
    if raw.len() - nul - 1 != size {
        return Err(ObjectError::Malformed(oid));
    }
    let kind = match kind {
        "blob" => ObjectType::Blob,
        "tree" => ObjectType::Tree,
        "commit" => ObjectType::Commit,
        "tag" => ObjectType::Tag,
        _ => return Err(ObjectError::Malformed(oid)),
    };
    let body = zeroize::Zeroizing::new(raw[nul + 1..].to_vec());
    if Oid::hash_object(kind, &body).ok() != Some(oid) {
        return Err(ObjectError::HashMismatch(oid));
    }
    Ok((kind, body))
}

/// Inflates at most `limit` bytes of a zlib stream (what follows is left unread: the callers'
/// checks then see a short or oversized object). Stored blocks (what [`encode`] writes for
/// small objects) are copied out directly; anything else goes through one inflater per thread,
/// reset per object (a fresh one costs a ~40 KiB zeroed allocation; nodes written before
/// 2026-11-29 compress every object). The output grows through [`crate::secret::reserve`], so
/// no plaintext is left behind in freed memory.
fn inflate(oid: Oid, zbytes: &[u8], limit: usize) -> Result<Zeroizing<Vec<u8>>, ObjectError> {
    if let Some(payload) = stored_payload(zbytes) {
        return Ok(Zeroizing::new(payload[..payload.len().min(limit)].to_vec()));
    }
    thread_local! {
        static INFLATER: RefCell<Decompress> = RefCell::new(Decompress::new(true));
    }
    INFLATER.with(|d| {
        let mut d = d.borrow_mut();
        d.reset(true);
        let mut out = Zeroizing::new(Vec::with_capacity(limit.min(zbytes.len().saturating_mul(4).max(64))));
        loop {
            let consumed = usize::try_from(d.total_in()).map_err(|_| ObjectError::Malformed(oid))?;
            let input = zbytes.get(consumed..).ok_or(ObjectError::Malformed(oid))?;
            let before = (d.total_in(), d.total_out());
            // Not `Finish`: to miniz, that means all the output fits in this one call.
            let status = d.decompress_vec(input, &mut out, FlushDecompress::None).map_err(|_| ObjectError::Malformed(oid))?;
            if status == Status::StreamEnd || out.len() >= limit {
                return Ok(out);
            }
            if out.len() == out.capacity() {
                crate::secret::reserve(&mut out, 1, limit);
            } else if (d.total_in(), d.total_out()) == before {
                // No progress with room to spare: the stream is cut short (or its checksum is).
                return Err(ObjectError::Malformed(oid));
            }
        }
    })
}

/// The declared size of a loose object, read from its header without inflating the body.
pub fn peek_size(oid: Oid, zbytes: &[u8]) -> Result<u64, ObjectError> {
    let head = inflate(oid, zbytes, 32)?;
    let nul = head.iter().position(|&b| b == 0).ok_or(ObjectError::Malformed(oid))?;
    let text = std::str::from_utf8(&head[..nul]).map_err(|_| ObjectError::Malformed(oid))?;
    let size: u64 = text.split_once(' ').and_then(|(_, s)| s.parse().ok()).ok_or(ObjectError::Malformed(oid))?;
    if size > MAX_OBJECT_BYTES as u64 {
        return Err(ObjectError::TooLarge(oid));
    }
    Ok(size)
}

/// A flat tree: secret name → blob id. Sorted by name bytes, as git sorts blob entries.
pub type Tree = std::collections::BTreeMap<Name, Oid>;

/// Encodes a flat tree body.
pub fn tree_body(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::with_capacity(tree.len() * 48);
    for (name, oid) in tree {
        out.extend_from_slice(BLOB_MODE);
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(oid.as_bytes());
    }
    out
}

/// Parses a flat tree body: only regular-file blobs with valid secret names, strictly sorted.
pub fn parse_tree(oid: Oid, body: &[u8]) -> Result<Tree, ObjectError> {
    let names = index_tree(oid, body)?;
    Ok(TreeRef::new(body, &names).to_tree())
}

/// A flat tree kept as its body, searched in place: a repository's head tree stays parsed
/// for as long as it is the head, and as a map of names it cost ~630 bytes for four secrets
/// (a B-tree node plus a heap name per entry). See [`TreeRef`] for reading it.
#[derive(Clone, Default)]
pub struct FlatTree {
    body: Zeroizing<Vec<u8>>,
    names: Vec<u32>,
}

impl FlatTree {
    /// Checks a tree body (as [`parse_tree`]) and indexes its entries.
    pub fn parse(oid: Oid, body: Zeroizing<Vec<u8>>) -> Result<Self, ObjectError> {
        let names = index_tree(oid, &body)?;
        Ok(FlatTree { body, names })
    }

    /// The tree, to read.
    pub fn as_ref(&self) -> TreeRef<'_> {
        TreeRef { body: &self.body, names: &self.names }
    }
}

/// Where an entry's name starts: after the mode (both accepted modes are 6 bytes) and a space.
const NAME_OFFSET: usize = BLOB_MODE.len() + 1;

/// Trees of at most this many entries are searched from the start; larger ones keep the
/// offset of each name and are bisected.
const SCAN_ENTRIES: usize = 16;

/// Checks a flat tree body: only regular-file blobs with valid secret names, strictly sorted
/// by bytes (as git sorts blob entries). Returns where each name starts if the tree has more
/// than [`SCAN_ENTRIES`] entries, else nothing (it is scanned).
pub fn index_tree(oid: Oid, body: &[u8]) -> Result<Vec<u32>, ObjectError> {
    let bad = || ObjectError::BadBody(oid, "tree");
    let mut names = Vec::new();
    let mut last: Option<&[u8]> = None;
    let mut at = 0;
    while at < body.len() {
        let entry = &body[at..];
        let mode = entry.get(..BLOB_MODE.len()).ok_or_else(bad)?;
        if (mode != BLOB_MODE && mode != b"100755") || entry.get(BLOB_MODE.len()) != Some(&b' ') {
            return Err(bad());
        }
        let start = at + NAME_OFFSET;
        let nul = body[start..].iter().position(|&b| b == 0).ok_or_else(bad)?;
        let name = &body[start..start + nul];
        Name::new(NameKind::Secret, name).map_err(|_| bad())?;
        body.get(start + nul + 1..start + nul + 21).ok_or_else(bad)?;
        if last.is_some_and(|l| l >= name) {
            return Err(bad());
        }
        last = Some(name);
        names.push(u32::try_from(start).map_err(|_| ObjectError::TooLarge(oid))?);
        at = start + nul + 21;
    }
    if names.len() <= SCAN_ENTRIES {
        return Ok(Vec::new());
    }
    names.shrink_to_fit();
    Ok(names)
}

/// A checked flat tree body (see [`index_tree`]), wherever it lies: read in place from a
/// repository's objects, or from a [`FlatTree`].
#[derive(Clone, Copy)]
pub struct TreeRef<'a> {
    body: &'a [u8],
    /// Where each name starts, or empty for a tree small enough to scan.
    names: &'a [u32],
}

impl<'a> TreeRef<'a> {
    /// A body and the index [`index_tree`] gave for it.
    pub fn new(body: &'a [u8], names: &'a [u32]) -> Self {
        TreeRef { body, names }
    }

    /// Number of entries.
    pub fn len(self) -> usize {
        if self.names.is_empty() {
            self.iter().count()
        } else {
            self.names.len()
        }
    }

    /// The checked body.
    pub fn body(self) -> &'a [u8] {
        self.body
    }

    /// Whether the tree has no entry.
    pub fn is_empty(self) -> bool {
        self.body.is_empty()
    }

    /// The entry whose name starts at `start`, and where the next entry starts.
    fn entry_at(self, start: usize) -> ((&'a [u8], Oid), usize) {
        let nul = start + self.body[start..].iter().position(|&b| b == 0).expect("checked at parse");
        let id = Oid::from_bytes(&self.body[nul + 1..nul + 21]).expect("20 bytes, checked at parse");
        ((&self.body[start..nul], id), nul + 21)
    }

    /// The entries in order: name bytes (a valid secret name) and blob id.
    pub fn iter(self) -> impl Iterator<Item = (&'a [u8], Oid)> {
        let mut at = 0;
        std::iter::from_fn(move || {
            (at < self.body.len()).then(|| {
                let (entry, next) = self.entry_at(at + NAME_OFFSET);
                at = next;
                entry
            })
        })
    }

    /// The blob id of `name`, if present.
    pub fn get(self, name: &Name) -> Option<Oid> {
        let want = name.as_bytes();
        if self.names.is_empty() {
            return self.iter().take_while(|(n, _)| *n <= want).find(|(n, _)| *n == want).map(|(_, id)| id);
        }
        let (mut lo, mut hi) = (0, self.names.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ((n, id), _) = self.entry_at(self.names[mid] as usize);
            match n.cmp(want) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(id),
            }
        }
        None
    }

    /// Whether `name` is present.
    pub fn contains_key(self, name: &Name) -> bool {
        self.get(name).is_some()
    }

    /// The names, in order.
    pub fn names(self) -> impl Iterator<Item = Name> + 'a {
        self.iter().map(|(n, _)| Name::new(NameKind::Secret, n).expect("checked at parse"))
    }

    /// The tree as a map, to change it.
    pub fn to_tree(self) -> Tree {
        self.iter().map(|(n, id)| (Name::new(NameKind::Secret, n).expect("checked at parse"), id)).collect()
    }

    /// Whether `tree` holds exactly these entries.
    pub fn same_as(self, tree: &Tree) -> bool {
        let mut mine = self.iter();
        tree.iter().all(|(n, id)| mine.next() == Some((n.as_bytes(), *id))) && mine.next().is_none()
    }
}

/// The fields of a commit that Polykey reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The root tree.
    pub tree: Oid,
    /// Parent commits, first parent first.
    pub parents: Vec<Oid>,
    /// Committer time, seconds since the Unix epoch.
    pub time: i64,
    /// The message, as bytes.
    pub message: Vec<u8>,
}

/// The identity Polykey commits as.
const IDENTITY: &str = "Polykey <polykey@localhost>";

/// Encodes a commit body (git's canonical layout, UTC).
pub fn commit_body(tree: Oid, parents: &[Oid], time: i64, message: &[u8]) -> Vec<u8> {
    let mut out = format!("tree {tree}\n");
    for p in parents {
        out.push_str(&format!("parent {p}\n"));
    }
    out.push_str(&format!("author {IDENTITY} {time} +0000\ncommitter {IDENTITY} {time} +0000\n\n"));
    let mut out = out.into_bytes();
    out.extend_from_slice(message);
    out
}

/// Parses the fields Polykey needs from a commit body.
pub fn parse_commit(oid: Oid, body: &[u8]) -> Result<Commit, ObjectError> {
    let bad = || ObjectError::BadBody(oid, "commit");
    let split = body.windows(2).position(|w| w == b"\n\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&body[..split]).map_err(|_| bad())?;
    let (mut tree, mut parents, mut time) = (None, Vec::new(), None);
    for line in head.lines() {
        if let Some(t) = line.strip_prefix("tree ") {
            tree = Some(Oid::from_str(t).map_err(|_| bad())?);
        } else if let Some(p) = line.strip_prefix("parent ") {
            parents.push(Oid::from_str(p).map_err(|_| bad())?);
        } else if let Some(c) = line.strip_prefix("committer ") {
            let mut fields = c.rsplitn(3, ' ');
            let _tz = fields.next();
            time = fields.next().and_then(|t| t.parse().ok());
        }
    }
    Ok(Commit { tree: tree.ok_or_else(bad)?, parents, time: time.ok_or_else(bad)?, message: body[split + 2..].to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_matches_git_hash() {
        let (oid, z) = encode(ObjectType::Blob, b"hello\n");
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(oid.to_string(), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(&decode(oid, &z, ObjectType::Blob).unwrap()[..], b"hello\n");
        assert_eq!(decode(oid, &z, ObjectType::Tree), Err(ObjectError::WrongKind(oid, "tree")));
        let other = Oid::hash_object(ObjectType::Blob, b"x").unwrap();
        assert_eq!(decode(other, &z, ObjectType::Blob), Err(ObjectError::HashMismatch(other)));
        assert_eq!(decode(oid, &z[..z.len() - 3], ObjectType::Blob), Err(ObjectError::Malformed(oid)));
        assert_eq!(peek_size(oid, &z), Ok(6));
        assert_eq!(peek_size(oid, &z[..2]), Err(ObjectError::Malformed(oid)));
    }

    #[test]
    fn large_objects_inflate_through_a_growing_buffer_and_reused_inflater() {
        // Incompressible enough that the output outgrows the first buffer several times.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let (oid, z) = encode(ObjectType::Blob, &big);
        for _ in 0..2 {
            assert_eq!(decode(oid, &z, ObjectType::Blob).map(|b| b.len()), Ok(big.len()));
            assert_eq!(peek_size(oid, &z), Ok(big.len() as u64));
        }
        assert_eq!(decode(oid, &z[..z.len() / 2], ObjectType::Blob), Err(ObjectError::Malformed(oid)));
        // Small objects are stored blocks: read back by the fast path, by the inflater when
        // the fast path declines (a damaged checksum), and by git's own zlib reader.
        let (soid, sz) = encode(ObjectType::Blob, b"hello\n");
        assert_eq!(&sz[..3], &[0x78, 0x01, 0x01]);
        let mut bad = sz.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(decode(soid, &bad, ObjectType::Blob), Err(ObjectError::Malformed(soid)));
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&sz[..]), &mut plain).unwrap();
        assert_eq!(plain, b"blob 6\0hello\n");
        // A failed object leaves nothing behind in the thread's inflater.
        let (small, zs) = encode(ObjectType::Blob, b"after");
        assert_eq!(&decode(small, &zs, ObjectType::Blob).unwrap()[..], b"after");
    }

    #[test]
    fn tree_and_commit_round_trip() {
        let mut tree = Tree::new();
        let (b, _) = encode(ObjectType::Blob, b"v");
        tree.insert(Name::new(NameKind::Secret, b"b").unwrap(), b);
        tree.insert(Name::new(NameKind::Secret, b"a").unwrap(), b);
        let body = tree_body(&tree);
        let (toid, _) = encode(ObjectType::Tree, &body);
        assert_eq!(parse_tree(toid, &body).unwrap(), tree);
        let flat = FlatTree::parse(toid, Zeroizing::new(body.clone())).unwrap();
        let flat = flat.as_ref();
        assert!(flat.same_as(&tree) && flat.len() == 2);
        assert_eq!(flat.get(&Name::new(NameKind::Secret, b"a").unwrap()), Some(b));
        assert_eq!(flat.get(&Name::new(NameKind::Secret, b"c").unwrap()), None);
        assert_eq!(flat.iter().map(|(n, _)| n.to_vec()).collect::<Vec<_>>(), [b"a".to_vec(), b"b".to_vec()]);
        // Lookups bisect a tree of many entries; missing names fall between them.
        let many: Tree = (0..1000).map(|i| (Name::new(NameKind::Secret, format!("s{i:04}").as_bytes()).unwrap(), b)).collect();
        let flat = FlatTree::parse(toid, Zeroizing::new(tree_body(&many))).unwrap();
        let flat = flat.as_ref();
        assert_eq!(flat.to_tree(), many);
        assert!(flat.same_as(&many) && !flat.same_as(&tree) && flat.len() == 1000);
        for i in 0..1000 {
            assert_eq!(flat.get(&Name::new(NameKind::Secret, format!("s{i:04}").as_bytes()).unwrap()), Some(b));
            assert_eq!(flat.get(&Name::new(NameKind::Secret, format!("s{i:04}x").as_bytes()).unwrap()), None);
        }
        assert!(FlatTree::default().as_ref().is_empty() && FlatTree::default().as_ref().same_as(&Tree::new()));
        // Small trees are scanned, not indexed: the same answers.
        let few: Tree = many.iter().take(SCAN_ENTRIES).map(|(n, id)| (n.clone(), *id)).collect();
        let few_body = tree_body(&few);
        assert!(index_tree(toid, &few_body).unwrap().is_empty());
        let small = TreeRef::new(&few_body, &[]);
        assert!(small.same_as(&few) && small.len() == SCAN_ENTRIES);
        for n in many.keys() {
            assert_eq!(small.get(n), few.get(n).copied());
        }
        // A stored object's body is found in place.
        let (_, z) = encode(ObjectType::Tree, &few_body);
        assert_eq!(&z[stored_body(&z).unwrap()], &few_body[..]);
        let c = commit_body(toid, &[b], 1_700_000_000, b"Add a\n");
        let (coid, _) = encode(ObjectType::Commit, &c);
        let parsed = parse_commit(coid, &c).unwrap();
        assert_eq!(parsed, Commit { tree: toid, parents: vec![b], time: 1_700_000_000, message: b"Add a\n".to_vec() });
    }

    #[test]
    fn hostile_trees_are_refused() {
        let oid = Oid::zero();
        let id = [0u8; 20];
        let entry = |mode: &[u8], name: &[u8]| [mode, b" ", name, b"\0", &id].concat();
        assert!(parse_tree(oid, &entry(b"40000", b"sub")).is_err());
        assert!(parse_tree(oid, &entry(b"100644", b".git")).is_err());
        assert!(parse_tree(oid, &entry(b"100644", b"..")).is_err());
        assert!(parse_tree(oid, &entry(b"120000", b"link")).is_err());
        assert!(parse_tree(oid, &[entry(b"100644", b"b"), entry(b"100644", b"a")].concat()).is_err());
        assert!(parse_tree(oid, &entry(b"100644", b"a")[..10]).is_err());
        assert!(parse_tree(oid, &entry(b"100644", b"a")[..5]).is_err());
        assert!(parse_tree(oid, &[entry(b"100644", b"a"), entry(b"100644", b"a")].concat()).is_err());
        assert!(parse_tree(oid, &[&b"100644x"[..], &entry(b"100644", b"a")[7..]].concat()).is_err());
    }
}
