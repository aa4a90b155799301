//! Test vectors and old-format fixtures: the node format's reading rules, frozen in files.
//!
//! Every file in `tests/vectors/` holds its own expectation (`expect:`, `password:`,
//! `comment:`, then `secret:` and `tag:` lines for the state it must open to), a blank line,
//! and the raw node bytes. Each must open to exactly that outcome: the listed content, or the
//! right error class (wrong passphrase, damaged header, damaged frame, unsupported). A damaged
//! header must never read as a wrong passphrase, nor a torn save as damage.
//! `tests/fixtures/v1/` holds a node written by format version 1, which every later version
//! must keep reading. `scripts/gen-vectors.sh` regenerates the vectors (never the fixture).

use crate::util::{pass, FAST_KDF, PASSWORD};
use polykey::format::header::{Header, LOG_OFFSET, SLOT_BYTES};
use polykey::format::log::{self, FRAME_HEADER_BYTES};
use polykey::storage::{MemStorage, Storage};
use polykey::{Access, Error, Name, NameKind, Node, Passphrase};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What opening a vector must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// Opens; all bytes are part of the state.
    Success,
    /// `Error::WrongPassphrase`.
    WrongPassphrase,
    /// `Error::Damaged` in the header region.
    DamagedHeader,
    /// `Error::Damaged` in the frame log.
    DamagedFrame,
    /// `Error::Unsupported` naming the format version.
    UnsupportedVersion,
    /// `Error::Unsupported` naming something else (a feature flag, a KDF).
    UnsupportedFeature,
    /// Opens at the last complete save; the bytes after it are ignored.
    TornTail,
}

const EXPECTATIONS: [(Expect, &str); 7] = [
    (Expect::Success, "success"),
    (Expect::WrongPassphrase, "wrong passphrase"),
    (Expect::DamagedHeader, "damaged header"),
    (Expect::DamagedFrame, "damaged frame"),
    (Expect::UnsupportedVersion, "unsupported version"),
    (Expect::UnsupportedFeature, "unsupported feature"),
    (Expect::TornTail, "torn tail"),
];

impl Expect {
    fn label(self) -> &'static str {
        EXPECTATIONS.iter().find(|(e, _)| *e == self).unwrap().1
    }

    fn parse(s: &str) -> Option<Expect> {
        EXPECTATIONS.iter().find(|(_, l)| *l == s).map(|(e, _)| *e)
    }
}

/// The content a node opens to: `(repo, secret) -> bytes` and `(tag, entry) -> (repo, secret)`.
#[derive(Default, Clone, PartialEq, Eq)]
struct Content {
    secrets: BTreeMap<Pair, Vec<u8>>,
    tags: BTreeMap<Pair, Pair>,
}

/// Two names as bytes: `(repo, secret)` or `(tag, entry)`.
type Pair = (Vec<u8>, Vec<u8>);

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let secrets = self.secrets.iter().map(|((r, s), d)| format!("{}/{}={}", l(r), l(s), hex(d)));
        let tags = self.tags.iter().map(|((t, e), (r, s))| format!("{}/{} -> {}/{}", l(t), l(e), l(r), l(s)));
        f.debug_list().entries(secrets.chain(tags)).finish()
    }
}

impl Content {
    fn of(node: &Node) -> polykey::Result<Content> {
        let mut c = Content::default();
        for r in node.repos() {
            for s in node.secrets(&r)? {
                let data = node.get(&r, &s)?.to_vec();
                c.secrets.insert((r.as_bytes().to_vec(), s.as_bytes().to_vec()), data);
            }
        }
        for (t, entries) in &node.state().tags {
            for (e, (r, s)) in entries {
                c.tags.insert((t.as_bytes().to_vec(), e.as_bytes().to_vec()), (r.as_bytes().to_vec(), s.as_bytes().to_vec()));
            }
        }
        Ok(c)
    }
}

/// One vector file.
struct Vector {
    name: String,
    expect: Expect,
    password: Vec<u8>,
    comment: String,
    content: Content,
    bytes: Vec<u8>,
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::with_capacity(2 * b.len()), |mut s, x| {
        write!(s, "{x:02x}").unwrap();
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn split_pair(s: &str) -> Option<Pair> {
    let (a, b) = s.split_once('/')?;
    Some((a.as_bytes().to_vec(), b.as_bytes().to_vec()))
}

impl Vector {
    fn parse(name: &str, file: &[u8]) -> Result<Vector, String> {
        let split = file.windows(2).position(|w| w == b"\n\n").ok_or("no blank line after the header lines")?;
        let head = std::str::from_utf8(&file[..split]).map_err(|_| "header lines are not UTF-8")?;
        let (mut expect, mut password, mut comment) = (None, None, None);
        let mut content = Content::default();
        for line in head.lines() {
            let (key, value) = line.split_once(": ").ok_or_else(|| format!("malformed line {line:?}"))?;
            match key {
                "expect" => expect = Some(Expect::parse(value).ok_or_else(|| format!("unknown expectation {value:?}"))?),
                "password" => password = Some(value.as_bytes().to_vec()),
                "comment" => comment = Some(value.to_owned()),
                "secret" => {
                    let (path, data) = value.rsplit_once('=').ok_or_else(|| format!("malformed secret line {line:?}"))?;
                    let key = split_pair(path).ok_or_else(|| format!("malformed secret path {path:?}"))?;
                    content.secrets.insert(key, unhex(data).ok_or_else(|| format!("malformed hex in {line:?}"))?);
                }
                "tag" => {
                    let (entry, target) = value.split_once('=').ok_or_else(|| format!("malformed tag line {line:?}"))?;
                    let e = split_pair(entry).ok_or_else(|| format!("malformed tag entry {entry:?}"))?;
                    content.tags.insert(e, split_pair(target).ok_or_else(|| format!("malformed tag target {target:?}"))?);
                }
                _ => return Err(format!("unknown header line {line:?}")),
            }
        }
        Ok(Vector {
            name: name.to_owned(),
            expect: expect.ok_or("missing expect:")?,
            password: password.ok_or("missing password:")?,
            comment: comment.ok_or("missing comment:")?,
            content,
            bytes: file[split + 2..].to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "expect: {}\npassword: {}\ncomment: {}\n",
            self.expect.label(),
            std::str::from_utf8(&self.password).expect("vector passwords are UTF-8"),
            self.comment
        );
        let utf8 = |b: &[u8]| std::str::from_utf8(b).expect("vector names are UTF-8").to_owned();
        for ((r, s), data) in &self.content.secrets {
            writeln!(head, "secret: {}/{}={}", utf8(r), utf8(s), hex(data)).unwrap();
        }
        for ((t, e), (r, s)) in &self.content.tags {
            writeln!(head, "tag: {}/{}={}/{}", utf8(t), utf8(e), utf8(r), utf8(s)).unwrap();
        }
        head.push('\n');
        [head.into_bytes(), self.bytes.clone()].concat()
    }

    /// Opens the bytes and checks the outcome; `Err` says what differs.
    fn check(&self) -> Result<(), String> {
        let path = PathBuf::from(format!("vectors/{}", self.name));
        let storage = Box::new(MemStorage { bytes: self.bytes.clone() });
        let opened = Node::open_storage(&path, storage, &Passphrase::new(self.password.clone()), Access::Read);
        let len = self.bytes.len() as u64;
        match (self.expect, opened) {
            (Expect::Success | Expect::TornTail, Ok(node)) => {
                let content = Content::of(&node).map_err(|e| format!("opened, but reading it fails: {e}"))?;
                if content != self.content {
                    return Err(format!("opened to {content:?}, expected {:?}", self.content));
                }
                match self.expect {
                    Expect::Success if node.file_len() != len => {
                        Err(format!("opened, but ignored bytes {}..{len} as a torn tail", node.file_len()))
                    }
                    Expect::TornTail if node.file_len() >= len => Err("opened, but found no torn tail".into()),
                    _ => Ok(()),
                }
            }
            (expect, Ok(_)) => Err(format!("opened, expected {}", expect.label())),
            (expect, Err(e)) => {
                let message = e.to_string();
                if !message.contains(&path.display().to_string()) {
                    return Err(format!("error {message:?} does not name the node"));
                }
                let good = match (&e, expect) {
                    (Error::WrongPassphrase { .. }, Expect::WrongPassphrase) => true,
                    (Error::Damaged { offset, .. }, Expect::DamagedHeader) => *offset < LOG_OFFSET,
                    (Error::Damaged { offset, .. }, Expect::DamagedFrame) => (LOG_OFFSET..=len).contains(offset),
                    (Error::Unsupported { what, .. }, Expect::UnsupportedVersion) => what.contains("version"),
                    (Error::Unsupported { what, .. }, Expect::UnsupportedFeature) => !what.contains("version"),
                    _ => false,
                };
                if good {
                    Ok(())
                } else {
                    Err(format!("failed with {e:?} ({message}), expected {}", expect.label()))
                }
            }
        }
    }
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn load_vectors() -> Vec<Vector> {
    let mut out: Vec<Vector> = std::fs::read_dir(vectors_dir())
        .expect("tests/vectors exists (scripts/gen-vectors.sh creates it)")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            Vector::parse(&name, &std::fs::read(&p).unwrap()).unwrap_or_else(|e| panic!("vector {name}: {e}"))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn every_vector_opens_to_its_expected_outcome() {
    let vectors = load_vectors();
    assert!(vectors.len() >= 15, "only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for v in &vectors {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.check()));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{} ({}): {why}", v.name, v.comment)),
            Err(_) => failures.push(format!("{} ({}): panicked", v.name, v.comment)),
        }
    }
    assert!(failures.is_empty(), "{} of {} vectors failed:\n{}", failures.len(), vectors.len(), failures.join("\n"));
}

#[test]
fn vectors_cover_every_expectation() {
    let vectors = load_vectors();
    for (expect, label) in EXPECTATIONS {
        assert!(vectors.iter().any(|v| v.expect == expect), "no vector expects {label}");
    }
}

#[test]
fn vector_files_round_trip_through_the_parser() {
    for v in load_vectors() {
        let file = std::fs::read(vectors_dir().join(&v.name)).unwrap();
        assert_eq!(v.encode(), file, "{}", v.name);
    }
}

// ---------------------------------------------------------------------------------------------
// The generator

/// A storage whose bytes the generator can read back, recording what is durable at each sync.
#[derive(Clone, Default)]
struct Recorder {
    bytes: Arc<Mutex<Vec<u8>>>,
    synced: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn new(bytes: Vec<u8>) -> Self {
        Recorder { bytes: Arc::new(Mutex::new(bytes)), synced: Arc::default() }
    }
    fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
    fn take_synced(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.synced.lock().unwrap())
    }
}

impl Storage for Recorder {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.bytes())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut b = self.bytes.lock().unwrap();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync(&mut self) -> io::Result<()> {
        let now = self.bytes();
        self.synced.lock().unwrap().push(now);
        Ok(())
    }
}

/// Where each slot's CRC-32 is stored.
const SLOT_CRC_AT: usize = SLOT_BYTES - 4;
/// Where a frame header's CRC-32 is stored.
const FRAME_CRC_AT: usize = FRAME_HEADER_BYTES - 4;

/// `bytes` with `edit` applied to both header slots, each slot's CRC-32 recomputed.
fn edit_slots(bytes: &[u8], edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for at in [0, SLOT_BYTES] {
        let slot = &mut b[at..at + SLOT_BYTES];
        edit(slot);
        let crc = crc32fast::hash(&slot[..SLOT_CRC_AT]);
        slot[SLOT_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    }
    b
}

/// `bytes` with `edit` applied to the frame header at `at`, its CRC-32 recomputed.
fn edit_frame_header(bytes: &[u8], at: usize, edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let h = &mut b[at..at + FRAME_HEADER_BYTES];
    edit(h);
    let crc = crc32fast::hash(&h[..FRAME_CRC_AT]);
    h[FRAME_CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `bytes` with one bit flipped at each of `at`.
fn flip(bytes: &[u8], at: &[usize]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &i in at {
        b[i] ^= 0x01;
    }
    b
}

/// Deterministic filler bytes (a 64-bit LCG), incompressible enough for zlib.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

fn name(kind: NameKind, b: &[u8]) -> Name {
    Name::new(kind, b).unwrap()
}

/// A node being built, with the content it must hold (kept by the generator, not read back
/// from the code under test) and the file length and content after every save.
struct Build {
    node: Node,
    storage: Recorder,
    model: Content,
    saves: Vec<(usize, Content)>,
}

impl Build {
    /// A new node with the test passphrase, on a [`Recorder`].
    fn new(password: &Passphrase) -> Build {
        let (header, key) = Header::create(password, FAST_KDF).unwrap();
        Self::with_header(&header, &key, password)
    }

    /// A new node from a header made by the caller (it must wrap a key under `password`).
    fn with_header(header: &Header, key: &polykey::Key, password: &Passphrase) -> Build {
        let mut storage = Recorder::default();
        log::write_header(&mut storage, &mut header.clone(), key).unwrap();
        Self::open(storage.bytes(), password)
    }

    /// Opens existing node bytes for writing.
    fn open(bytes: Vec<u8>, password: &Passphrase) -> Build {
        let storage = Recorder::new(bytes);
        let node = Node::open_storage(Path::new("generator.node"), Box::new(storage.clone()), password, Access::Write).unwrap();
        let model = Content::of(&node).unwrap();
        let saves = vec![(storage.bytes().len(), model.clone())];
        Build { node, storage, model, saves }
    }

    fn save(&mut self) {
        self.node.save().unwrap();
        let bytes = self.storage.bytes();
        self.saves.push((bytes.len(), self.model.clone()));
    }

    fn put(&mut self, repo: &str, secret: &[u8], data: &[u8]) {
        self.node.put(&name(NameKind::Repo, repo.as_bytes()), &name(NameKind::Secret, secret), data).unwrap();
        self.model.secrets.insert((repo.as_bytes().to_vec(), secret.to_vec()), data.to_vec());
        self.save();
    }

    fn tag(&mut self, tag: &str, entry: &str, repo: &str, secret: &str) {
        let n = |k, s: &str| name(k, s.as_bytes());
        self.node
            .tag(&n(NameKind::Tag, tag), &n(NameKind::TagEntry, entry), &n(NameKind::Repo, repo), &n(NameKind::Secret, secret))
            .unwrap();
        self.model.tags.insert((tag.into(), entry.into()), (repo.into(), secret.into()));
        self.save();
    }

    fn remove_repo(&mut self, repo: &str) {
        self.node.remove_repo(&name(NameKind::Repo, repo.as_bytes())).unwrap();
        self.model.secrets.retain(|(r, _), _| r != repo.as_bytes());
        self.model.tags.retain(|_, (r, _)| r != repo.as_bytes());
        self.save();
    }

    fn bytes(&self) -> Vec<u8> {
        self.storage.bytes()
    }
}

/// The `base_end` field of the header (the end of the checkpoint the log starts with).
fn base_end(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[64..72].try_into().unwrap()) as usize
}

/// Every vector, built from deterministic content (ids, salts and nonces are random).
fn build_vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    let good = PASSWORD;
    let mut add = |name: &str, expect: Expect, password: &[u8], comment: &str, content: &Content, bytes: Vec<u8>| {
        let content = if matches!(expect, Expect::Success | Expect::TornTail) { content.clone() } else { Content::default() };
        out.push(Vector { name: name.into(), expect, password: password.to_vec(), comment: comment.into(), content, bytes });
    };
    use Expect::*;

    // A node of five saves, one frame each: states[i] is the file after save i (0 = header only).
    let mut b = Build::new(&pass());
    b.put("aws", b"key", &(0..=255).collect::<Vec<u8>>());
    b.put("aws", b"region", b"eu-west-1\n");
    b.put("mail", b"pw", b"hunter2\n\n");
    b.put("mail", b"empty", b"");
    b.tag("prod", "key", "aws", "key");
    let (base, states) = (b.bytes(), b.saves.clone());
    let full = &states[5].1;
    let frame = |i: usize| states[i - 1].0; // offset of frame i (1-based)
    assert_eq!(states[0].0, LOG_OFFSET as usize);
    assert_eq!(states[5].0, base.len());

    add(
        "valid_node",
        Success,
        good,
        "five saves, one frame each: binary, trailing newlines, an empty secret and a tag",
        full,
        base.clone(),
    );
    add("wrong_passphrase", WrongPassphrase, b"not the passphrase", "valid_node opened with another passphrase", full, base.clone());
    add("header_only", Success, good, "a new node: both header slots and no frame", &states[0].1, base[..LOG_OFFSET as usize].to_vec());
    add(
        "truncated_at_frame_boundary",
        Success,
        good,
        "valid_node cut just after its third save: a valid node of that state",
        &states[3].1,
        base[..frame(4)].to_vec(),
    );

    // Header slots.
    add("header_slot_a_damaged", Success, good, "one bit of slot A's salt flipped: slot B still opens", full, flip(&base, &[100]));
    add(
        "header_slot_b_damaged",
        Success,
        good,
        "one bit of slot B's generation flipped: slot A still opens",
        full,
        flip(&base, &[SLOT_BYTES + 40]),
    );
    add(
        "header_both_slots_damaged",
        DamagedHeader,
        good,
        "the same salt bit flipped in both slots",
        full,
        flip(&base, &[100, SLOT_BYTES + 100]),
    );
    add(
        "header_both_checksums_broken",
        DamagedHeader,
        good,
        "a bit of each slot's CRC-32 flipped",
        full,
        flip(&base, &[SLOT_CRC_AT, SLOT_BYTES + SLOT_CRC_AT]),
    );
    add(
        "header_version_2",
        UnsupportedVersion,
        good,
        "format version 2 in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[8..10].copy_from_slice(&2u16.to_le_bytes())),
    );
    add(
        "header_unknown_required_feature",
        UnsupportedFeature,
        good,
        "required feature bit 8 set in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[12..16].copy_from_slice(&0x100u32.to_le_bytes())),
    );
    add(
        "header_unknown_kdf",
        UnsupportedFeature,
        good,
        "KDF identifier 2 (not Argon2id) in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[72] = 2),
    );
    add(
        "header_absurd_argon2_memory",
        DamagedHeader,
        good,
        "Argon2 memory u32::MAX KiB in both slots, CRC-32 recomputed: refused before any allocation",
        full,
        edit_slots(&base, |s| s[76..80].copy_from_slice(&u32::MAX.to_le_bytes())),
    );
    add(
        "header_argon2_zero_passes",
        DamagedHeader,
        good,
        "Argon2 time cost 0 in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[80..84].copy_from_slice(&0u32.to_le_bytes())),
    );
    add(
        "header_reserved_byte_set",
        DamagedHeader,
        good,
        "a reserved header byte (300) set in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[300] = 1),
    );
    add(
        "header_log_start_inside_header",
        DamagedHeader,
        good,
        "log_start 512 (inside the header) in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[56..64].copy_from_slice(&512u64.to_le_bytes())),
    );
    add(
        "header_kdf_tampered_checksum_fixed",
        WrongPassphrase,
        good,
        "Argon2 memory 8 -> 16 KiB with CRC-32 recomputed: in bounds, so only the key wrap (its AAD) can tell, as a wrong passphrase",
        full,
        edit_slots(&base, |s| s[76..80].copy_from_slice(&16u32.to_le_bytes())),
    );
    add("empty_file", DamagedHeader, good, "a file of zero bytes", full, Vec::new());
    add("short_file", DamagedHeader, good, "the first 100 bytes of valid_node", full, base[..100].to_vec());
    add("garbage", DamagedHeader, good, "4096 pseudo-random bytes", full, filler(7, 4096));

    // Frames.
    add(
        "frame_body_flipped",
        DamagedFrame,
        good,
        "one bit flipped in the body of frame 2 of 5",
        full,
        flip(&base, &[frame(2) + FRAME_HEADER_BYTES + 10]),
    );
    add(
        "last_frame_tag_flipped",
        TornTail,
        good,
        "one bit flipped in the authentication tag of the last frame: nothing valid follows, so it reads as a save cut short (reported), and the node opens at the save before",
        &states[4].1,
        flip(&base, &[base.len() - 5]),
    );
    add(
        "frame_header_checksum_broken",
        DamagedFrame,
        good,
        "one bit of frame 3's nonce flipped, its CRC-32 left as it was",
        full,
        flip(&base, &[frame(3) + 30]),
    );
    add(
        "frame_header_unknown_flag",
        DamagedFrame,
        good,
        "frame 3 flagged 0x80, CRC-32 recomputed",
        full,
        edit_frame_header(&base, frame(3), |h| h[4] |= 0x80),
    );
    add(
        "frame_nonce_changed",
        DamagedFrame,
        good,
        "frame 3's nonce changed, CRC-32 recomputed: authentication fails",
        full,
        edit_frame_header(&base, frame(3), |h| h[30] ^= 0xff),
    );
    add(
        "frame_length_absurd",
        DamagedFrame,
        good,
        "frame 2's length u32::MAX, CRC-32 recomputed: refused before any allocation",
        full,
        edit_frame_header(&base, frame(2), |h| h[12..16].copy_from_slice(&u32::MAX.to_le_bytes())),
    );
    let swapped = [&base[..frame(2)], &base[frame(3)..frame(4)], &base[frame(2)..frame(3)], &base[frame(4)..]].concat();
    add("frames_swapped", DamagedFrame, good, "frames 2 and 3 swapped", full, swapped);
    let replayed = [&base[..], &base[frame(5)..]].concat();
    add(
        "frame_replayed_at_end",
        TornTail,
        good,
        "the last frame appended again (a replay): out of sequence at the end, ignored and reported",
        full,
        replayed,
    );

    // Torn saves: the node opens at its last complete save.
    add(
        "torn_tail_last_frame_body",
        TornTail,
        good,
        "valid_node cut 10 bytes before its end",
        &states[4].1,
        base[..base.len() - 10].to_vec(),
    );
    add(
        "torn_tail_last_frame_header",
        TornTail,
        good,
        "valid_node cut 20 bytes into the last frame's header",
        &states[4].1,
        base[..frame(5) + 20].to_vec(),
    );
    add("torn_tail_one_byte", TornTail, good, "one byte of the last frame's header", &states[4].1, base[..frame(5) + 1].to_vec());
    add(
        "torn_tail_mid_log",
        TornTail,
        good,
        "valid_node cut 100 bytes into frame 3: the state after save 2",
        &states[2].1,
        base[..frame(3) + 100].to_vec(),
    );

    // What a power cut can leave after the last save on ext4/XFS (zeros) or FAT (stale data).
    add("torn_tail_zero_filled", TornTail, good, "4 KiB of zeros after the last save", full, [&base[..], &[0u8; 4096][..]].concat());
    let stale: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    add("torn_tail_stale_bytes", TornTail, good, "3000 bytes of stale data after the last save", full, [&base[..], &stale[..]].concat());
    let mut zero_body = base.clone();
    let last = frame(5);
    zero_body[last + FRAME_HEADER_BYTES..].fill(0);
    add("torn_tail_header_then_zeros", TornTail, good, "the last frame's header written, its body still zeros", &states[4].1, zero_body);

    // A frame moved from another node (same content, same sizes) does not authenticate.
    let mut x = Build::new(&pass());
    x.put("r", b"s", b"x");
    let mut y = Build::new(&pass());
    y.put("r", b"s", b"x");
    let (xb, yb) = (x.bytes(), y.bytes());
    assert_eq!(xb.len(), yb.len(), "same content gives frames of the same size");
    x.put("r", b"t", b"x2");
    y.put("r", b"t", b"x2");
    let (xb, yb) = (x.bytes(), y.bytes());
    let spliced = [&xb[..LOG_OFFSET as usize], &yb[LOG_OFFSET as usize..]].concat();
    add(
        "frame_from_another_node",
        DamagedFrame,
        good,
        "the frames of another node with the same content, same offsets: the first fails, valid frames follow",
        &x.model,
        spliced,
    );

    // Unknown optional feature bits are ignored (the key is wrapped with them in the AAD).
    let (mut h, key) = Header::create(&pass(), FAST_KDF).unwrap();
    h.optional_features = 0x8000_0000;
    h.wrap(&pass(), FAST_KDF, &key).unwrap();
    let mut o = Build::with_header(&h, &key, &pass());
    o.put("r", b"s", b"optional");
    add(
        "header_unknown_optional_feature",
        Success,
        good,
        "optional feature bit 31 set by the writer: ignored by readers",
        &o.model,
        o.bytes(),
    );

    // A non-ASCII passphrase.
    let unicode = "pässwörd ✓ 鍵";
    let mut u = Build::new(&Passphrase::new(unicode.as_bytes().to_vec()));
    u.put("r", b"s", b"unicode");
    add("unicode_passphrase", Success, unicode.as_bytes(), "a UTF-8 passphrase", &u.model, u.bytes());

    // A passphrase change torn between the two slot writes: slot A (newer) has the new
    // passphrase, slot B the old one.
    let new = b"a new passphrase";
    let mut p = Build::open(base.clone(), &pass());
    p.storage.take_synced();
    p.node.change_passphrase(&Passphrase::new(new.to_vec()), FAST_KDF).unwrap();
    let synced = p.storage.take_synced();
    assert_eq!(synced.len(), 2, "passwd syncs slot A, then slot B");
    add("passwd_torn_new_passphrase", Success, new, "passwd cut after slot A: the newer slot wins", full, synced[0].clone());
    add(
        "passwd_torn_old_passphrase",
        Success,
        good,
        "passwd cut after slot A, opened with the old passphrase: the older slot still opens",
        full,
        synced[0].clone(),
    );
    add(
        "passwd_torn_newer_slot_damaged",
        Success,
        good,
        "passwd cut after slot A, and slot A damaged: the older slot opens",
        full,
        flip(&synced[0], &[100]),
    );
    add("passwd_done", Success, new, "valid_node after passwd: the log is unchanged", full, synced[1].clone());
    assert_eq!(synced[1][LOG_OFFSET as usize..], base[LOG_OFFSET as usize..]);

    // Compaction, crash-safe at every sync. A removed repository leaves dead space, so the
    // checkpoint is appended, then copied to the front, then the file is cut.
    let mut c = Build::new(&pass());
    c.put("junk", b"a", &filler(1, 2048));
    c.put("junk", b"b", &filler(2, 2048));
    c.put("keep", b"a", b"kept\n");
    c.tag("t", "a", "keep", "a");
    c.tag("t", "j", "junk", "a");
    c.remove_repo("junk");
    let live = c.model.clone();
    c.storage.take_synced();
    c.node.compact().unwrap();
    let steps = c.storage.take_synced();
    let names = [
        (TornTail, "compaction_crash_1_checkpoint_appended", "checkpoint appended under the next epoch; header not yet moved"),
        (Success, "compaction_crash_2_slot_a_at_checkpoint", "slot A points at the appended checkpoint"),
        (Success, "compaction_crash_3_slots_at_checkpoint", "both slots point at the appended checkpoint"),
        (Success, "compaction_crash_4_copied_to_front", "checkpoint copied to the front, followed by an end marker"),
        (TornTail, "compaction_crash_5_slot_a_at_front", "slot A points at the front copy; the rest is a tail"),
        (TornTail, "compaction_crash_6_slots_at_front", "both slots point at the front copy; the rest is a tail"),
        (Success, "compaction_done", "compacted: the file is cut after the front checkpoint"),
    ];
    assert_eq!(steps.len(), names.len(), "compaction syncs once per step");
    for ((expect, name, comment), bytes) in names.into_iter().zip(steps) {
        add(name, expect, good, &format!("compaction stopped after a sync: {comment}"), &live, bytes);
    }
    c.put("keep", b"b", b"after compaction");
    let compacted = c.bytes();
    let end = base_end(&compacted);
    assert!(end > LOG_OFFSET as usize && end < compacted.len());
    add("compacted_then_saved", Success, good, "a compacted node (a checkpoint) with one save after it", &c.model, compacted.clone());
    add(
        "compacted_torn_after_checkpoint",
        TornTail,
        good,
        "compacted_then_saved cut 10 bytes after its checkpoint",
        &live,
        compacted[..end + 10].to_vec(),
    );
    let mid = LOG_OFFSET as usize + (end - LOG_OFFSET as usize) / 2;
    add(
        "compacted_checkpoint_truncated",
        DamagedFrame,
        good,
        "compacted_then_saved cut inside its checkpoint: the checkpoint is incomplete",
        &live,
        compacted[..mid].to_vec(),
    );
    add("compacted_checkpoint_flipped", DamagedFrame, good, "one bit flipped inside the checkpoint", &live, flip(&compacted, &[mid]));
    out
}

/// Regenerates `tests/vectors/` (run by `scripts/gen-vectors.sh`), then checks every vector.
#[test]
#[ignore = "writes tests/vectors; run scripts/gen-vectors.sh"]
fn generate_vectors() {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    let vectors = build_vectors();
    for v in &vectors {
        std::fs::write(dir.join(&v.name), v.encode()).unwrap();
    }
    let failures: Vec<String> = vectors.iter().filter_map(|v| v.check().err().map(|e| format!("{}: {e}", v.name))).collect();
    assert!(failures.is_empty(), "written, but these do not check:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The format version 1 fixture

/// The passphrase of `tests/fixtures/v1/basic.node` (also in its README).
const V1_PASSWORD: &[u8] = b"polykey v1 fixture";

fn v1_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/basic.node")
}

/// Writes `tests/fixtures/v1/basic.node`, once: a fixture is never regenerated, since its
/// point is to be a file an older Polykey wrote.
#[test]
#[ignore = "writes tests/fixtures/v1/basic.node if it is missing"]
fn generate_v1_fixture() {
    let path = v1_fixture();
    assert!(!path.exists(), "{} exists; fixtures are written once and never regenerated", path.display());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pw = Passphrase::new(V1_PASSWORD.to_vec());
    let mut node = Node::create(&path, &pw, FAST_KDF).unwrap();
    let (r, s, t, e) = (
        |b: &str| name(NameKind::Repo, b.as_bytes()),
        |b: &[u8]| name(NameKind::Secret, b),
        |b: &[u8]| name(NameKind::Tag, b),
        |b: &[u8]| name(NameKind::TagEntry, b),
    );
    fn step(node: &mut Node, mut f: impl FnMut(&mut Node) -> polykey::Result<()>) {
        f(node).unwrap();
        node.save().unwrap();
    }
    step(&mut node, |n| n.put(&r("aws"), &s(b"key"), &(0..=255).rev().collect::<Vec<u8>>()).map(drop));
    step(&mut node, |n| n.put(&r("aws"), &s(b"region"), b"eu-west-1\n").map(drop));
    step(&mut node, |n| n.tag(&t(b"prod"), &e(b"key"), &r("aws"), &s(b"key")));
    step(&mut node, |n| n.tag(&t(b"prod"), &e(b"region"), &r("aws"), &s(b"region")));
    step(&mut node, |n| n.put(&r("aws"), &s(b"region"), b"eu-west-2\n").map(drop));
    step(&mut node, |n| n.rename(&r("aws"), &s(b"key"), &s(b"access-key"), false));
    step(&mut node, |n| n.put(&r("personal"), &s(b"email"), b"me@example.org\n").map(drop));
    step(&mut node, |n| n.put(&r("personal"), &s("clé ✓".as_bytes()), b"\0\x01\x02\xff\n\n").map(drop));
    step(&mut node, |n| n.put(&r("personal"), &s(b"scratch"), b"temporary").map(drop));
    step(&mut node, |n| n.remove(&r("personal"), &s(b"scratch")));
    step(&mut node, |n| n.put(&r("personal"), &s(b"empty"), b"").map(drop));
    step(&mut node, |n| n.tag(&t(b"me"), &e(b"mail"), &r("personal"), &s(b"email")));
    step(&mut node, |n| n.tag(&t(b"me"), &e(b"tmp"), &r("personal"), &s(b"email")));
    step(&mut node, |n| n.untag(&t(b"me"), &e(b"tmp"), true));
    step(&mut node, |n| n.put(&r("old"), &s(b"x"), &filler(3, 2048)).map(drop));
    step(&mut node, |n| n.remove_repo(&r("old")));
    node.compact().unwrap();
    step(&mut node, |n| n.put(&r("bytes"), &s(b"\xff\xfe"), &(0..=255).collect::<Vec<u8>>()).map(drop));
    step(&mut node, |n| n.tag(&t(b"t\xff"), &e(b"e\xfe"), &r("bytes"), &s(b"\xff\xfe")));
    drop(node);
    let node = Node::open(&path, &pw, Access::Read).unwrap();
    for repo in node.repos() {
        for entry in node.log(&repo, None).unwrap() {
            println!("{repo}: {} {}", entry.id, entry.message);
        }
    }
}

#[test]
fn v1_fixture_opens_with_every_secret_tag_and_commit() {
    let path = v1_fixture();
    let before = std::fs::read(&path).unwrap();
    let node = Node::open(&path, &Passphrase::new(V1_PASSWORD.to_vec()), Access::Read).unwrap();
    assert!(!node.header_degraded());
    assert_eq!(node.file_len(), before.len() as u64, "no torn tail in the fixture");

    let b = |s: &str| s.as_bytes().to_vec();
    let mut want = Content::default();
    want.secrets.insert((b("aws"), b("access-key")), (0..=255).rev().collect());
    want.secrets.insert((b("aws"), b("region")), b("eu-west-2\n"));
    want.secrets.insert((b("bytes"), b"\xff\xfe".to_vec()), (0..=255).collect());
    want.secrets.insert((b("personal"), b("clé ✓")), b"\0\x01\x02\xff\n\n".to_vec());
    want.secrets.insert((b("personal"), b("email")), b("me@example.org\n"));
    want.secrets.insert((b("personal"), b("empty")), Vec::new());
    want.tags.insert((b("me"), b("mail")), (b("personal"), b("email")));
    want.tags.insert((b("prod"), b("key")), (b("aws"), b("access-key")));
    want.tags.insert((b("prod"), b("region")), (b("aws"), b("region")));
    want.tags.insert((b"t\xff".to_vec(), b"e\xfe".to_vec()), (b("bytes"), b"\xff\xfe".to_vec()));
    assert_eq!(Content::of(&node).unwrap(), want);
    assert_eq!(node.repos().iter().map(|r| r.as_bytes().to_vec()).collect::<Vec<_>>(), [b("aws"), b("bytes"), b("personal")]);

    let history = |repo: &str, secret: Option<&[u8]>| -> Vec<(String, String)> {
        let secret = secret.map(|s| name(NameKind::Secret, s));
        node.log(&name(NameKind::Repo, repo.as_bytes()), secret.as_ref())
            .unwrap()
            .into_iter()
            .map(|e| (e.id.to_string(), e.message))
            .collect()
    };
    let messages = |h: &[(String, String)]| h.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>();
    let aws = history("aws", None);
    assert_eq!(messages(&aws), ["Rename key to access-key", "Update region", "Add region", "Add key"]);
    let personal = history("personal", None);
    assert_eq!(messages(&personal), ["Add empty", "Remove scratch", "Add scratch", "Add clé ✓", "Add email"]);
    assert_eq!(messages(&history("bytes", None)), ["Add \u{fffd}\u{fffd}"]);
    assert_eq!(messages(&history("aws", Some(b"region"))), ["Update region", "Add region"]);
    assert_eq!(messages(&history("personal", Some(b"scratch"))), ["Remove scratch", "Add scratch"]);

    // The commit ids pin every object byte for byte (git's own hashing).
    let ids = |h: &[(String, String)]| h.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&aws), V1_AWS_IDS);
    assert_eq!(ids(&personal), V1_PERSONAL_IDS);
    assert_eq!(ids(&history("bytes", None)), V1_BYTES_IDS);
    assert!(crate::util::unchanged(&path, &before), "reading the fixture wrote to it");
}

/// The history of each repository in the v1 fixture, newest first.
const V1_AWS_IDS: [&str; 4] = [
    "9bf8d811b46b67dc4d64cb788fe3f2300d397c74",
    "f40c696ec739825effcb84014c80f0353bb30afc",
    "34f4a4af935b91c443c1d3cc65161e2d452ea338",
    "d5d53b0a7bb12e4d0d42580cd61dbf05289225f4",
];
const V1_PERSONAL_IDS: [&str; 5] = [
    "814df34c6d3bda9c2a7f0974055e03d9ae51820a",
    "e14cc155912fd5c69b221fe5b7976e1380baa10a",
    "fb79450a114b76699be369a3f63d6bc85426fabf",
    "1a74901d46324ac54c900c21d46ce440e49aa5d3",
    "18fcaacb356e3bd63897a250fba87cfb1611eb8a",
];
const V1_BYTES_IDS: [&str; 1] = ["adf8c7bad11f790fbd06edb64e936500303c0d42"];
