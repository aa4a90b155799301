//! Helpers shared by the fuzz targets: a fixed test node (fixed passphrase, cheap KDF), a
//! frame sealer that writes frames exactly as `format::log` does (so a target can build
//! valid, forged or damaged logs), and generators of names and records from fuzz input.

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use polykey::crypto::aead;
use polykey::format::header::{Header, SLOT_BYTES};
use polykey::format::journal::Record;
use polykey::format::log::{FLAG_COMMIT, FLAG_RESET, FRAME_HEADER_BYTES, FRAME_MAGIC};
use polykey::git::{self, Tree};
use polykey::{KdfParams, Key, Name, NameKind, Passphrase};
use std::sync::OnceLock;

/// The passphrase of the test node (the one `tests/vectors/` use too).
pub const PASSWORD: &[u8] = b"correct horse battery staple";
/// A cheap Argon2id cost, so opening a node costs microseconds.
pub const FAST_KDF: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };

/// The test passphrase.
pub fn pass() -> Passphrase {
    Passphrase::new(PASSWORD.to_vec())
}

/// A fresh node's header and data key, and its two header slots as written to the file.
pub struct TestNode {
    pub header: Header,
    pub key: Key,
    pub slots: Vec<u8>,
}

/// The test node, created once per process. Its salt, id and key are random, but nothing a
/// target checks depends on their values, so every input reproduces.
pub fn test_node() -> &'static TestNode {
    static NODE: OnceLock<TestNode> = OnceLock::new();
    NODE.get_or_init(|| {
        let (header, key, _) = Header::create(&pass(), FAST_KDF).expect("the OS has randomness");
        let slot = header.encode();
        TestNode { header, key, slots: [slot, slot].concat() }
    })
}

/// Recomputes the CRC of the header slot at `at`, if the file holds all of it.
pub fn fix_slot_crc(file: &mut [u8], at: usize) {
    if let Some(slot) = file.get_mut(at..at + SLOT_BYTES) {
        let crc = crc32(&slot[..SLOT_BYTES - 4]);
        slot[SLOT_BYTES - 4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// CRC-32 (IEEE), bitwise: fuzz inputs are small.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// One frame as it would be written, with every field chosen by the caller.
pub struct FrameSpec<'a> {
    pub flags: u8,
    pub reserved: [u8; 3],
    pub epoch: u32,
    pub seq: u64,
    pub chunk: &'a [u8],
    /// Replaces the length field (normally the chunk's length plus the tag).
    pub len: Option<u32>,
    /// Seals as if the frame sat at this offset (normally where it is written).
    pub aad_offset: Option<u64>,
    /// Breaks the header's CRC.
    pub bad_crc: bool,
}

impl<'a> FrameSpec<'a> {
    /// A well-formed frame.
    pub fn new(flags: u8, epoch: u32, seq: u64, chunk: &'a [u8]) -> Self {
        FrameSpec { flags, reserved: [0; 3], epoch, seq, chunk, len: None, aad_offset: None, bad_crc: false }
    }
}

/// Seals a frame that starts at `offset` of the file (format::log's layout, docs/FORMAT.md).
pub fn seal_frame(header: &Header, key: &Key, offset: u64, f: &FrameSpec<'_>) -> Vec<u8> {
    let mut hb = [0u8; FRAME_HEADER_BYTES];
    hb[0..4].copy_from_slice(FRAME_MAGIC);
    hb[4] = f.flags;
    hb[5..8].copy_from_slice(&f.reserved);
    hb[8..12].copy_from_slice(&f.epoch.to_le_bytes());
    let len = f.len.unwrap_or((f.chunk.len() + aead::TAG_BYTES) as u32);
    hb[12..16].copy_from_slice(&len.to_le_bytes());
    hb[16..24].copy_from_slice(&f.seq.to_le_bytes());
    // Any nonce will do: never reusing one matters for secrecy, not for parsing.
    let mut nonce = [0u8; aead::NONCE_BYTES];
    nonce[..8].copy_from_slice(&offset.to_le_bytes());
    nonce[8..16].copy_from_slice(&f.seq.to_le_bytes());
    hb[24..48].copy_from_slice(&nonce);
    let crc = crc32(&hb[..48]) ^ u32::from(f.bad_crc);
    hb[48..52].copy_from_slice(&crc.to_le_bytes());
    let aad = [&b"polykey v1 frame"[..], &header.node_id, &hb[..48], &f.aad_offset.unwrap_or(offset).to_le_bytes()].concat();
    let mut body = f.chunk.to_vec();
    aead::seal(key, &nonce, &aad, &mut body);
    [&hb[..], &body].concat()
}

/// Appends one transaction of `chunks` (one frame each) to `file`; returns the next seq.
pub fn append_transaction(file: &mut Vec<u8>, header: &Header, key: &Key, seq: u64, chunks: &[&[u8]], reset: bool) -> u64 {
    let mut seq = seq;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut flags = if i + 1 == chunks.len() { FLAG_COMMIT } else { 0 };
        if reset && i == 0 {
            flags |= FLAG_RESET;
        }
        let frame = seal_frame(header, key, file.len() as u64, &FrameSpec::new(flags, header.epoch, seq, chunk));
        file.extend_from_slice(&frame);
        seq += 1;
    }
    seq
}

/// A short byte string from the input.
pub fn bytes<'a>(u: &mut Unstructured<'a>, max: usize) -> Result<&'a [u8]> {
    let len = u.int_in_range(0..=max)?;
    u.bytes(len.min(u.len()))
}

/// Name candidates that hit the edges of the rules.
const NAMES: &[&[u8]] = &[b"key", b".git", b".GIT", b"...", b".x", "☃".as_bytes(), b"\xff\xfe", b"a b", b"-"];

/// A valid name of `kind`: mostly `a` or `b` (so records refer to each other), else from a
/// pool at the rules' edges, arbitrary bytes, or the longest allowed.
pub fn name(u: &mut Unstructured<'_>, kind: NameKind) -> Result<Name> {
    let raw: Vec<u8> = match u.int_in_range(0..=11)? {
        0 => bytes(u, 40)?.to_vec(),
        1 => vec![b'n'; 255],
        2..=4 => u.choose(NAMES)?.to_vec(),
        5..=8 => b"a".to_vec(),
        _ => b"b".to_vec(),
    };
    Ok(Name::new(kind, &raw).unwrap_or_else(|_| Name::new(kind, b"x").expect("valid")))
}

/// Builds git objects and journal records from fuzz input, remembering the ids it made so
/// later records can refer to them.
#[derive(Default)]
pub struct RecordGen {
    pub oids: Vec<git2::Oid>,
    /// Commits made by [`RecordGen::records`], by repository.
    pub heads: Vec<(Name, git2::Oid)>,
}

impl RecordGen {
    fn oid(&self, u: &mut Unstructured<'_>) -> Result<git2::Oid> {
        if !self.oids.is_empty() && u.ratio(7, 8)? {
            return Ok(*u.choose(&self.oids)?);
        }
        Ok(git2::Oid::from_bytes(&u.arbitrary::<[u8; 20]>()?).expect("20 bytes"))
    }

    /// A loose object: a blob, a flat tree, a commit, or an arbitrary body of any kind.
    pub fn object(&mut self, u: &mut Unstructured<'_>) -> Result<(git2::Oid, Vec<u8>)> {
        let (kind, body) = match u.int_in_range(0..=4)? {
            0 => (git2::ObjectType::Blob, bytes(u, 64)?.to_vec()),
            1 => {
                let mut tree = Tree::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    tree.insert(name(u, NameKind::Secret)?, self.oid(u)?);
                }
                (git2::ObjectType::Tree, git::tree_body(&tree))
            }
            2 => {
                let tree = self.oid(u)?;
                let parents = (0..u.int_in_range(0..=2)?).map(|_| self.oid(u)).collect::<Result<Vec<_>>>()?;
                (git2::ObjectType::Commit, git::commit_body(tree, &parents, u.arbitrary()?, bytes(u, 32)?))
            }
            3 => (*u.choose(&[git2::ObjectType::Tree, git2::ObjectType::Commit, git2::ObjectType::Tag])?, bytes(u, 128)?.to_vec()),
            _ => {
                // Bytes stored under an id they do not hash to.
                let oid = self.oid(u)?;
                let (_, z) = git::encode(git2::ObjectType::Blob, bytes(u, 16)?);
                return Ok((oid, z));
            }
        };
        let (oid, z) = git::encode(kind, &body);
        self.oids.push(oid);
        Ok((oid, z))
    }

    /// One journal record, or the records of a whole commit as Polykey writes them (blobs,
    /// a tree of them, a commit on it with the repository's head as parent, the new head).
    pub fn records(&mut self, u: &mut Unstructured<'_>) -> Result<Vec<Record>> {
        if !u.ratio(1, 4)? {
            return Ok(vec![self.record(u)?]);
        }
        let repo = name(u, NameKind::Repo)?;
        let mut out = vec![Record::Repo(repo.clone())];
        let mut tree = Tree::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let (oid, z) = git::encode(git2::ObjectType::Blob, bytes(u, 32)?);
            tree.insert(name(u, NameKind::Secret)?, oid);
            out.push(Record::Object(repo.clone(), oid, z));
        }
        let (tree_oid, tree_z) = git::encode(git2::ObjectType::Tree, &git::tree_body(&tree));
        let parents = match self.heads.iter().rev().find(|(r, _)| *r == repo) {
            Some((_, head)) if u.ratio(3, 4)? => vec![*head],
            _ => vec![],
        };
        let body = git::commit_body(tree_oid, &parents, u.arbitrary()?, bytes(u, 16)?);
        let (commit_oid, commit_z) = git::encode(git2::ObjectType::Commit, &body);
        out.push(Record::Object(repo.clone(), tree_oid, tree_z));
        out.push(Record::Object(repo.clone(), commit_oid, commit_z));
        out.push(Record::Head(repo.clone(), commit_oid));
        self.oids.extend([tree_oid, commit_oid]);
        self.heads.push((repo, commit_oid));
        Ok(out)
    }

    /// One journal record.
    pub fn record(&mut self, u: &mut Unstructured<'_>) -> Result<Record> {
        Ok(match u.int_in_range(0..=10)? {
            10 => {
                // A save: a commit's bytes and a tree delta, arbitrary.
                let repo = name(u, NameKind::Repo)?;
                let (commit, tree) = (self.oid(u)?, self.oid(u)?);
                Record::Save { repo, commit, commit_z: bytes(u, 64)?.to_vec(), tree, delta: bytes(u, 96)?.to_vec() }
            }
            9 => {
                // A tree delta: a known id as its base, then arbitrary operations.
                let repo = name(u, NameKind::Repo)?;
                let (oid, base) = (self.oid(u)?, self.oid(u)?);
                Record::Delta(repo, oid, [base.as_bytes(), bytes(u, 96)?].concat())
            }
            0 => Record::Repo(name(u, NameKind::Repo)?),
            1 | 2 => {
                let repo = name(u, NameKind::Repo)?;
                let (oid, z) = self.object(u)?;
                Record::Object(repo, oid, z)
            }
            3 => Record::Head(name(u, NameKind::Repo)?, self.oid(u)?),
            4 => Record::Tag(name(u, NameKind::Tag)?),
            5 => Record::Link {
                tag: name(u, NameKind::Tag)?,
                entry: name(u, NameKind::TagEntry)?,
                repo: name(u, NameKind::Repo)?,
                secret: name(u, NameKind::Secret)?,
            },
            6 => Record::RemoveRepo(name(u, NameKind::Repo)?),
            7 => Record::RemoveTag(name(u, NameKind::Tag)?),
            _ => Record::RemoveLink(name(u, NameKind::Tag)?, name(u, NameKind::TagEntry)?),
        })
    }
}

/// Node storage in memory that the fuzz target keeps a handle on, to reopen what a node wrote.
#[derive(Clone, Default)]
pub struct SharedStorage(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedStorage {
    pub fn new(bytes: Vec<u8>) -> Self {
        SharedStorage(std::sync::Arc::new(std::sync::Mutex::new(bytes)))
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl polykey::storage::Storage for SharedStorage {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.lock().unwrap().len() as u64)
    }
    fn read_all(&self) -> std::io::Result<Vec<u8>> {
        Ok(self.bytes())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut b = self.0.lock().unwrap();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
