//! Test vectors and old-format fixtures: the node format's reading rules, frozen in files.
//!
//! Every file in `tests/vectors/` holds its own expectation (`expect:`, `password:`,
//! `comment:`, an optional `error:` line the error message must contain, `read:` lines, then
//! `secret:` and `tag:` lines for the state it must open to), a blank line, and the raw node
//! bytes. Each must open to exactly that outcome: the listed content, or the right error class
//! (wrong passphrase, damaged header, damaged frame, unsupported). A damaged header must never
//! read as a wrong passphrase, nor a torn save as damage. Git objects are inflated lazily, so a
//! node whose frames and journal are sound but whose objects are not opens, and each `read:`
//! (`get repo/secret`, `list repo`, `log repo`) then fails as damaged (`corrupt on read`).
//! Opening any vector, and reading it, never panics, never writes to the file, and allocates
//! a bounded amount of memory (however large the sizes the file declares).
//! `tests/fixtures/v1/` holds a node written by format version 1, which every later version
//! must keep reading. `scripts/gen-vectors.sh` regenerates the vectors (never the fixture).

use crate::util::{pass, FAST_KDF, PASSWORD};
use git2::ObjectType;
use polykey::format::header::{Header, LOG_OFFSET, SLOT_BYTES};
use polykey::format::journal::{self, Record};
use polykey::format::log::{self, FRAME_HEADER_BYTES};
use polykey::storage::{MemStorage, Storage};
use polykey::{Access, Error, Name, NameKind, Node, Passphrase};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
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
    /// Opens (every byte is part of the state); each `read:` fails with `Error::Corrupt`.
    CorruptOnRead,
}

const EXPECTATIONS: [(Expect, &str); 8] = [
    (Expect::Success, "success"),
    (Expect::WrongPassphrase, "wrong passphrase"),
    (Expect::DamagedHeader, "damaged header"),
    (Expect::DamagedFrame, "damaged frame"),
    (Expect::UnsupportedVersion, "unsupported version"),
    (Expect::UnsupportedFeature, "unsupported feature"),
    (Expect::TornTail, "torn tail"),
    (Expect::CorruptOnRead, "corrupt on read"),
];

/// A read that must fail on a `corrupt on read` vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadKind {
    /// `Node::get` of `repo/secret`.
    Get,
    /// `Node::secrets` of `repo`.
    List,
    /// `Node::log` of `repo` (its whole history).
    Log,
}

const READ_KINDS: [(ReadKind, &str); 3] = [(ReadKind::Get, "get"), (ReadKind::List, "list"), (ReadKind::Log, "log")];

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
        c.tags = Self::of_tags(node);
        Ok(c)
    }

    /// The tag entries alone (they read without inflating any object).
    fn of_tags(node: &Node) -> BTreeMap<Pair, Pair> {
        let mut tags = BTreeMap::new();
        for (t, entries) in &node.state().tags {
            for (e, (r, s)) in entries {
                tags.insert((t.as_bytes().to_vec(), e.as_bytes().to_vec()), (r.as_bytes().to_vec(), s.as_bytes().to_vec()));
            }
        }
        tags
    }
}

/// One vector file.
struct Vector {
    name: String,
    expect: Expect,
    password: Vec<u8>,
    comment: String,
    /// Text the error's message must contain (the open's, or each read's).
    error: Option<String>,
    /// The reads that must fail (`corrupt on read` only): what, and `repo` or `repo/secret`.
    reads: Vec<(ReadKind, String)>,
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
        let (mut expect, mut password, mut comment, mut error) = (None, None, None, None);
        let (mut content, mut reads) = (Content::default(), Vec::new());
        for line in head.lines() {
            let (key, value) = line.split_once(": ").ok_or_else(|| format!("malformed line {line:?}"))?;
            match key {
                "expect" => expect = Some(Expect::parse(value).ok_or_else(|| format!("unknown expectation {value:?}"))?),
                "password" => password = Some(value.as_bytes().to_vec()),
                "comment" => comment = Some(value.to_owned()),
                "error" => error = Some(value.to_owned()),
                "read" => {
                    let (kind, what) = value.split_once(' ').ok_or_else(|| format!("malformed read line {line:?}"))?;
                    let kind = READ_KINDS.iter().find(|(_, l)| *l == kind).ok_or_else(|| format!("unknown read {kind:?}"))?.0;
                    reads.push((kind, what.to_owned()));
                }
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
            error,
            reads,
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
        if let Some(e) = &self.error {
            writeln!(head, "error: {e}").unwrap();
        }
        for (kind, what) in &self.reads {
            writeln!(head, "read: {} {what}", READ_KINDS.iter().find(|(k, _)| k == kind).unwrap().1).unwrap();
        }
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

    /// Opens the bytes for writing and checks the outcome, then that nothing was written;
    /// `Err` says what differs.
    fn check(&self) -> Result<(), String> {
        let watched = Watched::new(&self.bytes);
        let outcome = self.check_on(Box::new(watched.clone()));
        if watched.mutations() != 0 || watched.bytes() != self.bytes {
            return Err(format!("opening it wrote to the file ({} writes, truncations or syncs)", watched.mutations()));
        }
        outcome
    }

    /// Whether `e`'s message contains the expected text, if there is one.
    fn check_message(&self, e: &Error) -> Result<(), String> {
        match &self.error {
            Some(want) if !e.to_string().contains(want.as_str()) => Err(format!("error {:?} does not say {want:?}", e.to_string())),
            _ => Ok(()),
        }
    }

    fn check_on(&self, storage: Box<dyn Storage>) -> Result<(), String> {
        let path = PathBuf::from(format!("vectors/{}", self.name));
        let opened = Node::open_storage(&path, storage, &Passphrase::new(self.password.clone()), Access::Write);
        let len = self.bytes.len() as u64;
        match (self.expect, opened) {
            (Expect::CorruptOnRead, Ok(node)) => {
                if node.file_len() != len {
                    return Err(format!("opened, but ignored bytes {}..{len} as a torn tail", node.file_len()));
                }
                if self.reads.is_empty() {
                    return Err("no read: line".into());
                }
                for (kind, what) in &self.reads {
                    let (r, s) = what.split_once('/').map_or((what.as_str(), None), |(r, s)| (r, Some(s)));
                    let repo = Name::new(NameKind::Repo, r.as_bytes()).map_err(|e| e.to_string())?;
                    let read = match (kind, s) {
                        (ReadKind::Get, Some(s)) => {
                            node.get(&repo, &Name::new(NameKind::Secret, s.as_bytes()).map_err(|e| e.to_string())?).map(drop)
                        }
                        (ReadKind::List, None) => node.secrets(&repo).map(drop),
                        (ReadKind::Log, None) => node.log(&repo, None).map(drop),
                        _ => return Err(format!("malformed read {what:?}")),
                    };
                    match read {
                        Err(e @ Error::Corrupt { .. }) if e.to_string().contains(&path.display().to_string()) => self.check_message(&e)?,
                        Err(e) => return Err(format!("read {what}: failed with {e:?}, expected it to be corrupt")),
                        Ok(()) => return Err(format!("read {what}: succeeded, expected it to be corrupt")),
                    }
                }
                // The rest of the node reads as listed.
                for ((r, s), data) in &self.content.secrets {
                    let (r, s) = (Name::new(NameKind::Repo, r).unwrap(), Name::new(NameKind::Secret, s).unwrap());
                    let got = node.get(&r, &s).map_err(|e| format!("reading {r}/{s}: {e}"))?;
                    if got[..] != data[..] {
                        return Err(format!("{r}/{s} reads {}, expected {}", hex(&got), hex(data)));
                    }
                }
                let tags = Content::of_tags(&node);
                if tags != self.content.tags {
                    return Err(format!("tags {tags:?}, expected {:?}", self.content.tags));
                }
                Ok(())
            }
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
                    self.check_message(&e)
                } else {
                    Err(format!("failed with {e:?} ({message}), expected {}", expect.label()))
                }
            }
        }
    }
}

/// Storage over shared bytes that counts every mutating call, so a check can tell that
/// opening and reading a node never writes to it.
#[derive(Clone)]
struct Watched {
    bytes: Arc<Mutex<Vec<u8>>>,
    mutations: Arc<Mutex<usize>>,
}

impl Watched {
    fn new(bytes: &[u8]) -> Self {
        Watched { bytes: Arc::new(Mutex::new(bytes.to_vec())), mutations: Arc::default() }
    }
    fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
    fn mutations(&self) -> usize {
        *self.mutations.lock().unwrap()
    }
    fn mutated(&self) -> io::Result<()> {
        *self.mutations.lock().unwrap() += 1;
        Err(io::Error::other("a vector must not be written to"))
    }
}

impl Storage for Watched {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.bytes())
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        self.mutated()
    }
    fn truncate(&mut self, _: u64) -> io::Result<()> {
        self.mutated()
    }
    fn sync(&mut self) -> io::Result<()> {
        self.mutated()
    }
}

/// The most memory opening and reading one vector may take: a little more than the largest
/// object a reader inflates (64 MiB, in a buffer that grows by doubling), far less than what
/// the hostile sizes in the vectors declare (up to 4 TiB).
const MAX_ALLOCATED_BYTES: usize = 160 << 20;

/// Counts, per thread, the bytes allocated and not yet freed and their peak, so a test can
/// bound what one call allocates. It serves the whole test binary (a global allocator is one
/// per binary); it only counts and forwards every call to the system allocator.
mod meter {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn count(delta: isize) {
        // `try_with`: allocations can happen while a thread's locals are torn down.
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }

    pub struct Meter;

    // The one way to see allocations; every call goes straight to `System`.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Meter {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe { System.dealloc(ptr, layout) };
            count(-(layout.size() as isize));
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static METER: Meter = Meter;

    /// Runs `f`; returns its result and the most bytes it held allocated at once on this
    /// thread.
    pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let base = LIVE.with(Cell::get);
        PEAK.with(|p| p.set(base));
        let out = f();
        let peak = PEAK.with(Cell::get) - base;
        (out, peak.max(0) as usize)
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

/// Checks every vector (catching panics) and bounds the memory each takes; returns the
/// failures, one line each.
fn check_all(vectors: &[Vector]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut largest = (0, "");
    for v in vectors {
        let (outcome, peak) = meter::peak(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.check())));
        match outcome {
            Ok(Ok(())) if peak > MAX_ALLOCATED_BYTES => failures.push(format!("{}: allocated {peak} bytes at once", v.name)),
            Ok(Ok(())) => {}
            Ok(Err(why)) => failures.push(format!("{} ({}): {why}", v.name, v.comment)),
            Err(_) => failures.push(format!("{} ({}): panicked", v.name, v.comment)),
        }
        largest = largest.max((peak, &v.name));
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    vectors.iter().for_each(|v| *kinds.entry(v.expect.label()).or_default() += 1);
    println!("vectors: {} checked {kinds:?}; most memory at once: {} bytes ({})", vectors.len(), largest.0, largest.1);
    failures
}

#[test]
fn every_vector_opens_to_its_expected_outcome() {
    let vectors = load_vectors();
    assert!(vectors.len() >= 100, "only {} vectors", vectors.len());
    let failures = check_all(&vectors);
    assert!(failures.is_empty(), "{} of {} vectors failed:\n{}", failures.len(), vectors.len(), failures.join("\n"));
}

/// The same through a real file, opened for writing as the CLI opens it: whatever the
/// outcome, the file's bytes stay as they were.
#[test]
fn opening_a_vector_file_never_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    for v in load_vectors() {
        let path = dir.path().join(&v.name);
        std::fs::write(&path, &v.bytes).unwrap();
        let opened = std::panic::catch_unwind(|| {
            let node = Node::open(&path, &Passphrase::new(v.password.clone()), Access::Write)?;
            for r in node.repos() {
                for s in node.secrets(&r)? {
                    node.get(&r, &s)?;
                }
            }
            Ok::<_, Error>(())
        });
        assert!(opened.is_ok(), "{}: panicked", v.name);
        assert!(std::fs::read(&path).unwrap() == v.bytes, "{}: opening it changed the file", v.name);
    }
}

/// Writing a damaged secret's content again repairs it. In `git_blob_hash_mismatch` the blob
/// of `bad/key` is recorded under the right id with another blob's bytes; a save that needs
/// that blob (the same content, in that secret or another) records the good bytes again, which
/// replace the damaged ones (a repeated id takes the later bytes). The fuzzer found saves that
/// kept the damaged copy, leaving a secret just written unreadable.
#[test]
fn writing_a_damaged_secrets_content_again_repairs_it() {
    let v = load_vectors().into_iter().find(|v| v.name == "git_blob_hash_mismatch").expect("the vector");
    let pass = Passphrase::new(v.password.clone());
    let name = |kind, s: &str| Name::new(kind, s.as_bytes()).unwrap();
    let (bad, key, copy) = (name(NameKind::Repo, "bad"), name(NameKind::Secret, "key"), name(NameKind::Secret, "copy"));
    let dir = tempfile::tempdir().unwrap();
    for (i, target) in [&key, &copy].into_iter().enumerate() {
        let path = dir.path().join(format!("{i}.node"));
        std::fs::write(&path, &v.bytes).unwrap();
        let mut node = Node::open(&path, &pass, Access::Write).unwrap();
        assert!(node.get(&bad, &key).is_err(), "the vector's blob is damaged");
        // Into `key` itself the tree does not change (no commit); into `copy` it does.
        assert_eq!(node.put(&bad, target, b"s3cr3t").unwrap(), target == &copy);
        node.save().unwrap();
        drop(node);
        let node = Node::open(&path, &pass, Access::Read).unwrap();
        for s in [&key, target] {
            assert_eq!(&node.get(&bad, s).unwrap_or_else(|e| panic!("{s} after writing {target}: {e}"))[..], b"s3cr3t");
        }
    }
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
        let (header, key, _) = Header::create(password, FAST_KDF).unwrap();
        Self::with_header(&header, &key, password)
    }

    /// A new node as version 1 wrote it: no required features, so its compactions leave the
    /// unauthenticated marker of version 1 (docs/FORMAT.md, "Compaction").
    fn v1(password: &Passphrase) -> Build {
        let (mut header, key, _) = Header::create(password, FAST_KDF).unwrap();
        header.required_features = 0;
        header.wrap(password, FAST_KDF, &key).unwrap();
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

/// The vectors being generated.
#[derive(Default)]
struct Out(Vec<Vector>);

impl Out {
    /// Adds a vector; the content is kept only for outcomes that show it.
    fn add(&mut self, name: &str, expect: Expect, password: &[u8], comment: &str, content: &Content, bytes: Vec<u8>) -> &mut Vector {
        assert!(!self.0.iter().any(|v| v.name == name), "two vectors named {name}");
        let shown = matches!(expect, Expect::Success | Expect::TornTail | Expect::CorruptOnRead);
        let content = if shown { content.clone() } else { Content::default() };
        let (error, reads) = (None, Vec::new());
        self.0.push(Vector {
            name: name.into(),
            expect,
            password: password.to_vec(),
            comment: comment.into(),
            error,
            reads,
            content,
            bytes,
        });
        self.0.last_mut().unwrap()
    }
}

impl Vector {
    /// Sets the text the error message must contain.
    fn says(&mut self, what: &str) -> &mut Self {
        self.error = Some(what.into());
        self
    }

    /// Adds a read that must fail as corrupt.
    fn read(&mut self, kind: ReadKind, what: &str) -> &mut Self {
        self.reads.push((kind, what.into()));
        self
    }
}

/// Every vector, built from deterministic content (ids, salts and nonces are random).
fn build_vectors() -> Vec<Vector> {
    let mut out = Out::default();
    let good = PASSWORD;
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

    out.add(
        "valid_node",
        Success,
        good,
        "five saves, one frame each: binary, trailing newlines, an empty secret and a tag",
        full,
        base.clone(),
    );
    out.add("wrong_passphrase", WrongPassphrase, b"not the passphrase", "valid_node opened with another passphrase", full, base.clone());
    out.add("header_only", Success, good, "a new node: both header slots and no frame", &states[0].1, base[..LOG_OFFSET as usize].to_vec());
    out.add(
        "truncated_at_frame_boundary",
        Success,
        good,
        "valid_node cut just after its third save: a valid node of that state",
        &states[3].1,
        base[..frame(4)].to_vec(),
    );

    // Header slots.
    out.add("header_slot_a_damaged", Success, good, "one bit of slot A's salt flipped: slot B still opens", full, flip(&base, &[100]));
    out.add(
        "header_slot_b_damaged",
        Success,
        good,
        "one bit of slot B's generation flipped: slot A still opens",
        full,
        flip(&base, &[SLOT_BYTES + 40]),
    );
    out.add(
        "header_both_slots_damaged",
        DamagedHeader,
        good,
        "the same salt bit flipped in both slots",
        full,
        flip(&base, &[100, SLOT_BYTES + 100]),
    );
    out.add(
        "header_both_checksums_broken",
        DamagedHeader,
        good,
        "a bit of each slot's CRC-32 flipped",
        full,
        flip(&base, &[SLOT_CRC_AT, SLOT_BYTES + SLOT_CRC_AT]),
    );
    out.add(
        "header_version_2",
        UnsupportedVersion,
        good,
        "format version 2 in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[8..10].copy_from_slice(&2u16.to_le_bytes())),
    );
    out.add(
        "header_unknown_required_feature",
        UnsupportedFeature,
        good,
        "required feature bit 8 set in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[12..16].copy_from_slice(&0x100u32.to_le_bytes())),
    );
    out.add(
        "header_unknown_kdf",
        UnsupportedFeature,
        good,
        "KDF identifier 2 (not Argon2id) in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[72] = 2),
    );
    out.add(
        "header_absurd_argon2_memory",
        DamagedHeader,
        good,
        "Argon2 memory u32::MAX KiB in both slots, CRC-32 recomputed: refused before any allocation",
        full,
        edit_slots(&base, |s| s[76..80].copy_from_slice(&u32::MAX.to_le_bytes())),
    );
    out.add(
        "header_argon2_zero_passes",
        DamagedHeader,
        good,
        "Argon2 time cost 0 in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[80..84].copy_from_slice(&0u32.to_le_bytes())),
    );
    out.add(
        "header_reserved_byte_set",
        DamagedHeader,
        good,
        "a reserved header byte (300) set in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[300] = 1),
    );
    out.add(
        "header_log_start_inside_header",
        DamagedHeader,
        good,
        "log_start 512 (inside the header) in both slots, CRC-32 recomputed",
        full,
        edit_slots(&base, |s| s[56..64].copy_from_slice(&512u64.to_le_bytes())),
    );
    out.add(
        "header_kdf_tampered_checksum_fixed",
        WrongPassphrase,
        good,
        "Argon2 memory 8 -> 16 KiB with CRC-32 recomputed: in bounds, so only the key wrap (its AAD) can tell, as a wrong passphrase",
        full,
        edit_slots(&base, |s| s[76..80].copy_from_slice(&16u32.to_le_bytes())),
    );
    out.add("empty_file", DamagedHeader, good, "a file of zero bytes", full, Vec::new());
    out.add("short_file", DamagedHeader, good, "the first 100 bytes of valid_node", full, base[..100].to_vec());
    out.add("garbage", DamagedHeader, good, "4096 pseudo-random bytes", full, filler(7, 4096));

    // Frames.
    out.add(
        "frame_body_flipped",
        DamagedFrame,
        good,
        "one bit flipped in the body of frame 2 of 5",
        full,
        flip(&base, &[frame(2) + FRAME_HEADER_BYTES + 10]),
    );
    out.add(
        "last_frame_tag_flipped",
        TornTail,
        good,
        "one bit flipped in the authentication tag of the last frame: nothing valid follows, so it reads as a save cut short (reported), and the node opens at the save before",
        &states[4].1,
        flip(&base, &[base.len() - 5]),
    );
    out.add(
        "frame_header_checksum_broken",
        DamagedFrame,
        good,
        "one bit of frame 3's nonce flipped, its CRC-32 left as it was",
        full,
        flip(&base, &[frame(3) + 30]),
    );
    out.add(
        "frame_header_unknown_flag",
        DamagedFrame,
        good,
        "frame 3 flagged 0x80, CRC-32 recomputed",
        full,
        edit_frame_header(&base, frame(3), |h| h[4] |= 0x80),
    );
    out.add(
        "frame_nonce_changed",
        DamagedFrame,
        good,
        "frame 3's nonce changed, CRC-32 recomputed: authentication fails",
        full,
        edit_frame_header(&base, frame(3), |h| h[30] ^= 0xff),
    );
    out.add(
        "frame_length_absurd",
        DamagedFrame,
        good,
        "frame 2's length u32::MAX, CRC-32 recomputed: refused before any allocation",
        full,
        edit_frame_header(&base, frame(2), |h| h[12..16].copy_from_slice(&u32::MAX.to_le_bytes())),
    );
    let swapped = [&base[..frame(2)], &base[frame(3)..frame(4)], &base[frame(2)..frame(3)], &base[frame(4)..]].concat();
    out.add("frames_swapped", DamagedFrame, good, "frames 2 and 3 swapped", full, swapped);
    let replayed = [&base[..], &base[frame(5)..]].concat();
    out.add(
        "frame_replayed_at_end",
        TornTail,
        good,
        "the last frame appended again (a replay): out of sequence at the end, ignored and reported",
        full,
        replayed,
    );

    // Torn saves: the node opens at its last complete save.
    out.add(
        "torn_tail_last_frame_body",
        TornTail,
        good,
        "valid_node cut 10 bytes before its end",
        &states[4].1,
        base[..base.len() - 10].to_vec(),
    );
    out.add(
        "torn_tail_last_frame_header",
        TornTail,
        good,
        "valid_node cut 20 bytes into the last frame's header",
        &states[4].1,
        base[..frame(5) + 20].to_vec(),
    );
    out.add("torn_tail_one_byte", TornTail, good, "one byte of the last frame's header", &states[4].1, base[..frame(5) + 1].to_vec());
    out.add(
        "torn_tail_mid_log",
        TornTail,
        good,
        "valid_node cut 100 bytes into frame 3: the state after save 2",
        &states[2].1,
        base[..frame(3) + 100].to_vec(),
    );

    // What a power cut can leave after the last save on ext4/XFS (zeros) or FAT (stale data).
    out.add("torn_tail_zero_filled", TornTail, good, "4 KiB of zeros after the last save", full, [&base[..], &[0u8; 4096][..]].concat());
    let stale: Vec<u8> = (0..3000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    out.add(
        "torn_tail_stale_bytes",
        TornTail,
        good,
        "3000 bytes of stale data after the last save",
        full,
        [&base[..], &stale[..]].concat(),
    );
    let mut zero_body = base.clone();
    let last = frame(5);
    zero_body[last + FRAME_HEADER_BYTES..].fill(0);
    out.add(
        "torn_tail_header_then_zeros",
        TornTail,
        good,
        "the last frame's header written, its body still zeros",
        &states[4].1,
        zero_body,
    );

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
    out.add(
        "frame_from_another_node",
        DamagedFrame,
        good,
        "the frames of another node with the same content, same offsets: the first fails, valid frames follow",
        &x.model,
        spliced,
    );

    // Unknown optional feature bits are ignored (the key is wrapped with them in the AAD).
    let (mut h, key, _) = Header::create(&pass(), FAST_KDF).unwrap();
    h.optional_features = 0x8000_0000;
    h.wrap(&pass(), FAST_KDF, &key).unwrap();
    let mut o = Build::with_header(&h, &key, &pass());
    o.put("r", b"s", b"optional");
    out.add(
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
    out.add("unicode_passphrase", Success, unicode.as_bytes(), "a UTF-8 passphrase", &u.model, u.bytes());

    // A passphrase change torn between the two slot writes: slot A (newer) has the new
    // passphrase, slot B the old one.
    let new = b"a new passphrase";
    let mut p = Build::open(base.clone(), &pass());
    p.storage.take_synced();
    p.node.change_passphrase(&Passphrase::new(new.to_vec()), FAST_KDF).unwrap();
    let synced = p.storage.take_synced();
    assert_eq!(synced.len(), 2, "passwd syncs slot A, then slot B");
    out.add("passwd_torn_new_passphrase", Success, new, "passwd cut after slot A: the newer slot wins", full, synced[0].clone());
    out.add(
        "passwd_torn_old_passphrase",
        Success,
        good,
        "passwd cut after slot A, opened with the old passphrase: the older slot still opens",
        full,
        synced[0].clone(),
    );
    out.add(
        "passwd_torn_newer_slot_damaged",
        Success,
        good,
        "passwd cut after slot A, and slot A damaged: the older slot opens",
        full,
        flip(&synced[0], &[100]),
    );
    out.add("passwd_done", Success, new, "valid_node after passwd: the log is unchanged", full, synced[1].clone());
    assert_eq!(synced[1][LOG_OFFSET as usize..], base[LOG_OFFSET as usize..]);

    // Compaction, crash-safe at every sync. A removed repository leaves dead space, so the
    // checkpoint is appended, then copied to the front, then the file is cut. (A node of
    // version 1 without features: the marker after the front copy is a bare frame header.)
    let mut c = Build::v1(&pass());
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
        out.add(name, expect, good, &format!("compaction stopped after a sync: {comment}"), &live, bytes);
    }
    c.put("keep", b"b", b"after compaction");
    let compacted = c.bytes();
    let end = base_end(&compacted);
    assert!(end > LOG_OFFSET as usize && end < compacted.len());
    out.add("compacted_then_saved", Success, good, "a compacted node (a checkpoint) with one save after it", &c.model, compacted.clone());
    out.add(
        "compacted_torn_after_checkpoint",
        TornTail,
        good,
        "compacted_then_saved cut 10 bytes after its checkpoint",
        &live,
        compacted[..end + 10].to_vec(),
    );
    let mid = LOG_OFFSET as usize + (end - LOG_OFFSET as usize) / 2;
    out.add(
        "compacted_checkpoint_truncated",
        DamagedFrame,
        good,
        "compacted_then_saved cut inside its checkpoint: the checkpoint is incomplete",
        &live,
        compacted[..mid].to_vec(),
    );
    out.add("compacted_checkpoint_flipped", DamagedFrame, good, "one bit flipped inside the checkpoint", &live, flip(&compacted, &[mid]));
    end_marker_vectors(&mut out);
    header_and_frame_vectors(&mut out, &base, &states);
    journal_vectors(&mut out);
    git_vectors(&mut out);
    delta_vectors(&mut out);
    out.0
}

// ---------------------------------------------------------------------------------------------
// Hostile and damaged input, region by region

/// More damage to valid_node: a bit flip or a field change in every region of the header and
/// of a frame, truncations, and garbage.
fn header_and_frame_vectors(out: &mut Out, base: &[u8], states: &[(usize, Content)]) {
    use Expect::*;
    let good = PASSWORD;
    let full = &states[5].1;
    let empty = &states[0].1;
    let frame = |i: usize| states[i - 1].0; // offset of frame i (1-based)
    let le32 = |v: u32| v.to_le_bytes();
    let slot_field = |at: usize, v: &[u8]| {
        let v = v.to_vec();
        edit_slots(base, move |s| s[at..at + v.len()].copy_from_slice(&v))
    };
    let seal = "header seal does not verify";

    // Every field of the header, in both slots (CRC-32 recomputed unless said otherwise).
    out.add(
        "header_magic_flipped",
        DamagedHeader,
        good,
        "a bit of the magic number flipped in both slots",
        full,
        flip(base, &[0, SLOT_BYTES]),
    )
    .says("not a Polykey node (bad magic number)");
    out.add("header_slot_a_magic_flipped", Success, good, "a bit of slot A's magic flipped: slot B opens", full, flip(base, &[3]));
    out.add(
        "header_slot_a_checksum_broken",
        Success,
        good,
        "a bit of slot A's CRC-32 flipped: slot B opens",
        full,
        flip(base, &[SLOT_CRC_AT]),
    );
    out.add("header_version_0", UnsupportedVersion, good, "format version 0 in both slots", full, slot_field(8, &0u16.to_le_bytes()))
        .says("has format version 0; this polykey reads version 1");
    out.add(
        "header_version_65535",
        UnsupportedVersion,
        good,
        "format version 65535 in both slots",
        full,
        slot_field(8, &u16::MAX.to_le_bytes()),
    )
    .says("has format version 65535");
    let mut newer_b = slot_field(8, &2u16.to_le_bytes());
    newer_b[..SLOT_BYTES].copy_from_slice(&base[..SLOT_BYTES]);
    out.add(
        "header_version_2_in_slot_b_only",
        UnsupportedVersion,
        good,
        "slot A is a valid version 1 slot, slot B says version 2: an older copy never hides a newer format",
        full,
        newer_b,
    )
    .says("has format version 2");
    out.add("header_slot_size_1024", DamagedHeader, good, "slot_size 1024 in both slots", full, slot_field(10, &1024u16.to_le_bytes()))
        .says("header has non-zero reserved fields");
    out.add(
        "header_reserved_after_features_set",
        DamagedHeader,
        good,
        "reserved bytes 20..24 set in both slots",
        full,
        slot_field(20, &[1]),
    )
    .says("header has non-zero reserved fields");
    out.add("header_reserved_after_kdf_id_set", DamagedHeader, good, "reserved byte 73 set in both slots", full, slot_field(73, &[0x80]))
        .says("header has non-zero reserved fields");
    for (name, comment, at, value, says) in [
        (
            "header_argon2_time_max",
            "Argon2 time cost u32::MAX (refused before any work)",
            80,
            u32::MAX,
            "Argon2 time cost 4294967295 is outside 1..=16",
        ),
        ("header_argon2_parallelism_zero", "Argon2 parallelism 0", 84, 0, "Argon2 parallelism 0 is outside 1..=16"),
        ("header_argon2_parallelism_17", "Argon2 parallelism 17", 84, 17, "Argon2 parallelism 17 is outside 1..=16"),
        ("header_argon2_memory_zero", "Argon2 memory 0 KiB", 76, 0, "Argon2 memory 0 KiB is outside 8..=1048576 KiB"),
        ("header_argon2_memory_over_1_gib", "Argon2 memory 1 GiB + 1 KiB", 76, 1_048_577, "Argon2 memory 1048577 KiB is outside"),
    ] {
        out.add(name, DamagedHeader, good, &format!("{comment} in both slots"), full, slot_field(at, &le32(value))).says(says);
    }
    let work = edit_slots(base, |s| {
        s[76..80].copy_from_slice(&(1u32 << 20).to_le_bytes());
        s[80..84].copy_from_slice(&5u32.to_le_bytes());
    });
    out.add(
        "header_argon2_work_over_bound",
        DamagedHeader,
        good,
        "Argon2 memory 1 GiB and 5 passes in both slots: each within its bound, together more than 4 GiB x passes (refused before any work)",
        full,
        work,
    )
    .says("Argon2 memory × time cost 1048576 KiB × 5 is above 4194304 KiB");
    let lanes = edit_slots(base, |s| {
        s[76..80].copy_from_slice(&16u32.to_le_bytes());
        s[84..88].copy_from_slice(&4u32.to_le_bytes());
    });
    out.add(
        "header_argon2_memory_under_lanes",
        DamagedHeader,
        good,
        "Argon2 memory 16 KiB for 4 lanes (8 KiB a lane at least)",
        full,
        lanes,
    )
    .says("Argon2 memory 16 KiB is outside 32..=1048576 KiB");
    out.add(
        "header_base_end_before_log_start",
        DamagedHeader,
        good,
        "base_end 1023, before log_start 1024",
        full,
        slot_field(64, &1023u64.to_le_bytes()),
    )
    .says("header's log bounds are impossible");
    // Fields outside the key wrap: the seal under the data key catches them.
    out.add(
        "header_generation_tampered",
        DamagedHeader,
        good,
        "generation 1 -> 2 in both slots",
        full,
        slot_field(40, &2u64.to_le_bytes()),
    )
    .says(seal);
    out.add("header_epoch_tampered", DamagedHeader, good, "epoch 0 -> 1 in both slots", full, slot_field(48, &le32(1))).says(seal);
    let skip = (frame(3) as u64).to_le_bytes();
    let rolled = edit_slots(base, |s| {
        s[56..64].copy_from_slice(&skip);
        s[64..72].copy_from_slice(&skip);
    });
    out.add(
        "header_log_pointers_tampered",
        DamagedHeader,
        good,
        "log_start and base_end moved to frame 3, to hide two saves",
        full,
        rolled,
    )
    .says(seal);
    out.add(
        "header_base_end_huge",
        DamagedHeader,
        good,
        "base_end u64::MAX in both slots: no allocation, no read past the end",
        full,
        slot_field(64, &u64::MAX.to_le_bytes()),
    )
    .says(seal);
    out.add(
        "header_seal_nonce_changed",
        DamagedHeader,
        good,
        "a bit of the seal nonce flipped in both slots",
        full,
        edit_slots(base, |s| s[180] ^= 1),
    )
    .says(seal);
    out.add(
        "header_seal_tag_changed",
        DamagedHeader,
        good,
        "a bit of the seal tag flipped in both slots",
        full,
        edit_slots(base, |s| s[215] ^= 0x80),
    )
    .says(seal);
    // Fields inside the key wrap: indistinguishable from a wrong passphrase (crypto failures
    // stay coarse).
    for (name, comment, at) in [
        ("header_node_id_tampered", "a bit of the node id", 30),
        ("header_salt_tampered", "a bit of the salt", 90),
        ("header_wrap_nonce_tampered", "a bit of the key wrap nonce", 110),
        ("header_wrapped_key_tampered", "a bit of the wrapped key", 140),
        ("header_optional_feature_tampered", "optional feature bit 0 (covered by the key wrap)", 16),
    ] {
        let bytes = edit_slots(base, |s| s[at] ^= 1);
        out.add(
            name,
            WrongPassphrase,
            good,
            &format!("{comment} flipped in both slots, CRC-32 recomputed: reads as a wrong passphrase"),
            full,
            bytes,
        )
        .says("wrong passphrase");
    }

    // Truncations inside the header.
    out.add("truncated_511", DamagedHeader, good, "valid_node cut to 511 bytes", full, base[..511].to_vec())
        .says("file is 511 bytes, shorter than a header");
    for len in [SLOT_BYTES, 800, LOG_OFFSET as usize - 1] {
        out.add(
            &format!("truncated_{len}"),
            DamagedHeader,
            good,
            &format!("valid_node cut to {len} bytes: slot A is whole, but the log it names begins past the end"),
            full,
            base[..len].to_vec(),
        )
        .says(&format!("damaged at byte {len}: file is shorter than its last checkpoint"));
    }
    out.add(
        "torn_tail_first_frame",
        TornTail,
        good,
        "valid_node cut 26 bytes into its first frame: the empty node",
        empty,
        base[..frame(1) + 26].to_vec(),
    );

    // Garbage.
    out.add("garbage_zeros", DamagedHeader, good, "4096 zero bytes", full, vec![0; 4096]).says("bad magic number");
    out.add("garbage_ones", DamagedHeader, good, "4096 0xff bytes", full, vec![0xff; 4096]).says("bad magic number");
    out.add("garbage_text", DamagedHeader, good, "a text file", full, b"this is not a node\n".repeat(64)).says("bad magic number");
    out.add(
        "garbage_after_header",
        TornTail,
        good,
        "a new node's header followed by 4096 pseudo-random bytes: no frame, ignored as a save cut short",
        empty,
        [&base[..LOG_OFFSET as usize], &filler(9, 4096)[..]].concat(),
    );
    out.add(
        "garbage_frame_magic_spam",
        TornTail,
        good,
        "a new node's header followed by \"PKFR\" 1024 times: no frame header has a valid CRC-32",
        empty,
        [&base[..LOG_OFFSET as usize], &b"PKFR".repeat(1024)[..]].concat(),
    );
    let mut inside = base.to_vec();
    inside[frame(3)..frame(4)].copy_from_slice(&filler(10, frame(4) - frame(3)));
    out.add("garbage_instead_of_frame_3", DamagedFrame, good, "frame 3 overwritten with pseudo-random bytes", full, inside)
        .says(&format!("damaged at byte {}: frame header checksum mismatch", frame(3)));

    // Every field of a frame header in the middle of the log (frame 3 of 5).
    let f3 = frame(3);
    let at3 = |what: &str| format!("damaged at byte {f3}: {what}");
    out.add("frame_magic_flipped", DamagedFrame, good, "a bit of frame 3's magic flipped", full, flip(base, &[f3 + 1]))
        .says(&at3("frame header checksum mismatch"));
    out.add("frame_checksum_flipped", DamagedFrame, good, "a bit of frame 3's CRC-32 flipped", full, flip(base, &[f3 + FRAME_CRC_AT + 2]))
        .says(&at3("frame header checksum mismatch"));
    out.add(
        "frame_reserved_byte_set",
        DamagedFrame,
        good,
        "frame 3's reserved byte 5 set, CRC-32 recomputed",
        full,
        edit_frame_header(base, f3, |h| h[5] = 1),
    )
    .says(&at3("frame header checksum mismatch"));
    out.add(
        "frame_commit_flag_cleared",
        DamagedFrame,
        good,
        "frame 3's COMMIT flag cleared, CRC-32 recomputed: the flags are authenticated",
        full,
        edit_frame_header(base, f3, |h| h[4] = 0),
    )
    .says(&at3("authentication failed"));
    out.add(
        "frame_reset_flag_set",
        DamagedFrame,
        good,
        "frame 3 flagged RESET, CRC-32 recomputed",
        full,
        edit_frame_header(base, f3, |h| h[4] |= 2),
    )
    .says(&at3("authentication failed"));
    out.add(
        "frame_epoch_changed",
        DamagedFrame,
        good,
        "frame 3's epoch 0 -> 7, CRC-32 recomputed: a newer epoch than the header's where no compaction left one is damage (before, it ended the log silently: a rollback anyone could forge)",
        &states[2].1,
        edit_frame_header(base, f3, |h| h[8..12].copy_from_slice(&7u32.to_le_bytes())),
    )
    .says(&at3("frame of epoch 7 where the log of epoch 0 ends: the header is older than the log"));
    out.add(
        "frame_sequence_changed",
        DamagedFrame,
        good,
        "frame 3's sequence number 2 -> 9, CRC-32 recomputed",
        full,
        edit_frame_header(base, f3, |h| h[16] = 9),
    )
    .says(&at3("frame out of sequence"));
    for (name, comment, len) in [
        ("frame_length_zero", "frame 3's length 0", 0),
        ("frame_length_below_tag", "frame 3's length 15, less than a tag", 15),
        ("frame_length_over_max", "frame 3's length 4 MiB + 17, one more than the largest frame", log::MAX_FRAME_CIPHERTEXT + 1),
    ] {
        let bytes = edit_frame_header(base, f3, |h| h[12..16].copy_from_slice(&len.to_le_bytes()));
        out.add(name, DamagedFrame, good, &format!("{comment}, CRC-32 recomputed"), full, bytes).says(&at3("frame length out of range"));
    }
    let longer = edit_frame_header(base, f3, |h| {
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap()) + 1;
        h[12..16].copy_from_slice(&len.to_le_bytes());
    });
    out.add("frame_length_plus_one", DamagedFrame, good, "frame 3's length one byte longer, CRC-32 recomputed", full, longer)
        .says(&at3("authentication failed"));
    out.add("frame_tag_flipped", DamagedFrame, good, "a bit of frame 3's authentication tag flipped", full, flip(base, &[frame(4) - 1]))
        .says(&at3("authentication failed"));
    let mut zeroed = base.to_vec();
    zeroed[f3..frame(4)].fill(0);
    out.add("frame_zeroed", DamagedFrame, good, "frame 3 all zeros (a lost block in the middle of the log)", full, zeroed)
        .says(&at3("frame header checksum mismatch"));
    let doubled = [&base[..frame(4)], &base[f3..]].concat();
    out.add("frame_duplicated", DamagedFrame, good, "frame 3 written twice in a row", full, doubled)
        .says(&format!("damaged at byte {}: frame out of sequence", frame(4)));
    let dropped = [&base[..frame(1)], &base[frame(2)..]].concat();
    out.add("frame_first_dropped", DamagedFrame, good, "frame 1 cut out of the file", full, dropped)
        .says(&format!("damaged at byte {LOG_OFFSET}: frame out of sequence"));
    out.add(
        "last_frame_header_flipped",
        TornTail,
        good,
        "a bit of the last frame's header flipped: nothing valid follows, so it reads as a save cut short",
        &states[4].1,
        flip(base, &[frame(5) + 10]),
    );
}

/// `bytes` with one more transaction holding `plaintext`, validly encrypted with the node's
/// key (the generator knows the passphrase): what a writer holding the key, or a bug, could
/// leave. The frames authenticate, so only the journal and the objects inside can refuse it.
fn with_txn(bytes: &[u8], plaintext: &[u8], reset: bool) -> Vec<u8> {
    let (header, key, _) = Header::open(bytes, &pass()).unwrap();
    let mut pos = log::replay(bytes, &header, &key, |_| Ok(())).unwrap().position;
    let mut storage = MemStorage { bytes: bytes.to_vec() };
    log::append(&mut storage, &header, &key, &mut pos, plaintext, reset).unwrap();
    storage.bytes
}

/// The journal members of `records`, as Polykey writes them.
fn records(records: &[Record]) -> Vec<u8> {
    let mut w = journal::Writer::new();
    records.iter().for_each(|r| w.push(r));
    w.into_bytes().to_vec()
}

/// A tar member as a hostile writer makes it: a GNU header of `kind`, the name and link fields
/// written byte for byte (no checks), the declared `size`, then `data` padded to 512 bytes.
fn member(kind: tar::EntryType, name: &[u8], link: &[u8], size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

/// A member whose declared size is its data's.
fn file(kind: tar::EntryType, name: &[u8], data: &[u8]) -> Vec<u8> {
    member(kind, name, b"", data.len() as u64, data)
}

/// A GNU long-name (`L`) or long-link (`K`) member carrying `path` and a NUL.
fn long(kind: tar::EntryType, path: &[u8]) -> Vec<u8> {
    file(kind, b"././@LongLink", &[path, b"\0"].concat())
}

/// One PAX record, `"<len> <key>=<value>\n"`, its length counting itself.
fn pax(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = rest.len() + 1;
    while len.to_string().len() + rest.len() != len {
        len += 1;
    }
    [len.to_string().as_bytes(), &rest[..]].concat()
}

/// A node with `aws/key` and a tag `prod/key` on it: what the hostile transactions go after.
fn target_node() -> (Vec<u8>, Content) {
    let mut b = Build::new(&pass());
    b.put("aws", b"key", b"AKIAIOSFODNN7EXAMPLE");
    b.tag("prod", "key", "aws", "key");
    (b.bytes(), b.model)
}

/// A validly encrypted last transaction whose tar stream is hostile: paths that climb out or
/// are absolute, links, devices, long names and PAX records that smuggle such paths, sizes
/// past the data or past any object, broken headers, names outside the vocabulary, and
/// records that contradict the state. Each is damage at the transaction; a few duplicates are
/// legal and open (later wins).
fn journal_vectors(out: &mut Out) {
    use tar::EntryType::{self as T};
    use Expect::*;
    let (base, model) = target_node();
    let at = base.len();
    let member_says = |path: &[u8], what: &str| format!("damaged at byte {at}: journal member {:?}: {what}", String::from_utf8_lossy(path));
    let vocab = |path: &[u8]| member_says(path, "not part of the journal vocabulary");
    let unreadable = member_says(b"", "unreadable tar header");
    let not_target = |path: &[u8]| member_says(path, "link target is not repos/<repo>/<secret>");
    let too_large = |path: &[u8]| member_says(path, "member is larger than any object");
    let state_says = |what: &str| format!("damaged at byte {at}: {what}");
    let (oid, z) = polykey::git::encode(ObjectType::Blob, b"planted");
    let hex = oid.to_string();
    let object = format!("repos/aws/.git/objects/{}/{}", &hex[..2], &hex[2..]).into_bytes();
    let head_path = b"repos/aws/.git/refs/heads/main";
    let n = |k: NameKind, s: &str| name(k, s.as_bytes());
    let mut hostile = |name: &str, comment: &str, plaintext: Vec<u8>, says: String| {
        let comment = format!("{comment}, in a validly encrypted last save");
        out.add(name, DamagedFrame, PASSWORD, &comment, &model, with_txn(&base, &plaintext, false)).says(&says);
    };

    // Paths that climb out, are absolute, or are not plain.
    for (name, comment, kind, path) in [
        ("journal_dotdot_path", "a file ../../etc/passwd", T::Regular, &b"../../etc/passwd"[..]),
        ("journal_dotdot_inside_repo", "a file repos/aws/../../../etc/passwd", T::Regular, b"repos/aws/../../../etc/passwd"),
        ("journal_dotdot_repo", "a repository named ..", T::Directory, b"repos/.."),
        ("journal_dot_component", "a directory repos/./aws", T::Directory, b"repos/./aws"),
        ("journal_empty_component", "a directory repos//aws", T::Directory, b"repos//aws"),
        ("journal_leading_dot_slash", "a directory ./repos/aws", T::Directory, b"./repos/aws"),
        ("journal_absolute_path", "a file /etc/passwd", T::Regular, b"/etc/passwd"),
        ("journal_absolute_repo", "a directory /repos/aws", T::Directory, b"/repos/aws"),
        ("journal_unknown_top_level", "a directory secrets/aws", T::Directory, b"secrets/aws"),
        ("journal_directory_too_deep", "a directory tags/prod/key", T::Directory, b"tags/prod/key"),
        ("journal_file_in_repo", "a file repos/aws/key (secrets live in git objects)", T::Regular, b"repos/aws/key"),
        ("journal_git_config", "a file repos/aws/.git/config", T::Regular, b"repos/aws/.git/config"),
        ("journal_git_hook", "a file repos/aws/.git/hooks/post-checkout", T::Regular, b"repos/aws/.git/hooks/post-checkout"),
        ("journal_other_branch", "a head for branch evil", T::Regular, b"repos/aws/.git/refs/heads/evil"),
    ] {
        let data: &[u8] = if kind == T::Regular { b"#!/bin/sh\n" } else { b"" };
        hostile(name, comment, file(kind, path, data), vocab(path));
    }

    // Links, devices and other member types.
    for (name, comment, kind, path, link) in [
        (
            "journal_symlink_tag_entry",
            "a symlink tags/prod/key -> ../../etc/passwd",
            T::Symlink,
            &b"tags/prod/key"[..],
            &b"../../etc/passwd"[..],
        ),
        ("journal_symlink_repo", "a symlink repos/evil -> /etc", T::Symlink, b"repos/evil", b"/etc"),
        ("journal_char_device", "a character device tags/prod/tty", T::Char, b"tags/prod/tty", b""),
        ("journal_block_device", "a block device repos/sda", T::Block, b"repos/sda", b""),
        ("journal_fifo", "a FIFO tags/prod/pipe", T::Fifo, b"tags/prod/pipe", b""),
        ("journal_contiguous_file", "a contiguous file (type 7) repos/aws/.git/refs/heads/main", T::Continuous, head_path, b""),
        ("journal_unknown_type", "a member of type Z", T::new(b'Z'), b"repos/aws", b""),
        ("journal_link_outside_tags", "a hard link repos/aws/copy -> repos/aws/key", T::Link, b"repos/aws/copy", b"repos/aws/key"),
    ] {
        hostile(name, comment, member(kind, path, link, 0, b""), vocab(path));
    }
    for (name, comment, link) in [
        ("journal_hardlink_absolute_target", "a tag entry linked to /etc/passwd", &b"/etc/passwd"[..]),
        ("journal_hardlink_dotdot_target", "a tag entry linked to repos/../etc", b"repos/../etc"),
        ("journal_hardlink_git_target", "a tag entry linked to repos/aws/.git", b"repos/aws/.git"),
        ("journal_hardlink_deep_target", "a tag entry linked to repos/aws/.git/config", b"repos/aws/.git/config"),
    ] {
        hostile(name, comment, member(T::Link, b"tags/prod/x", link, 0, b""), not_target(b"tags/prod/x"));
    }
    hostile(
        "journal_hardlink_without_target",
        "a tag entry that is a hard link with an empty target",
        member(T::Link, b"tags/prod/x", b"", 0, b""),
        member_says(b"tags/prod/x", "hard link without a target"),
    );

    // GNU long names and PAX records smuggling paths, names and sizes.
    let nul_name = b"repos/aws\0evil";
    hostile(
        "journal_long_name_with_nul",
        "a GNU long name repos/aws<NUL>evil",
        [long(T::GNULongName, nul_name), file(T::Directory, b"x", b"")].concat(),
        vocab(nul_name),
    );
    let climb = [&b"repos/"[..], &[b'a'; 100], b"/../../../etc/passwd"].concat();
    hostile(
        "journal_long_name_dotdot",
        "a GNU long name climbing out with ../",
        [long(T::GNULongName, &climb), file(T::Regular, b"x", b"owned")].concat(),
        vocab(&climb),
    );
    let too_long = [&b"repos/"[..], &[b'r'; 256]].concat();
    hostile(
        "journal_long_name_256_bytes",
        "a repository name of 256 bytes (the limit is 255)",
        [long(T::GNULongName, &too_long), file(T::Directory, b"x", b"")].concat(),
        vocab(&too_long),
    );
    hostile(
        "journal_long_link_dotdot",
        "a GNU long link ../../../etc/shadow for a tag entry",
        [long(T::GNULongLink, b"../../../etc/shadow"), member(T::Link, b"tags/prod/x", b"repos/aws/key", 0, b"")].concat(),
        not_target(b"tags/prod/x"),
    );
    hostile(
        "journal_long_name_huge_size",
        "a GNU long-name member declaring 1 TiB, with 512 bytes: read no further than the transaction",
        member(T::GNULongName, b"././@LongLink", b"", 1 << 40, b"repos/aws\0"),
        unreadable.clone(),
    );
    hostile(
        "journal_two_long_names",
        "two GNU long names for one member",
        [long(T::GNULongName, b"repos/a"), long(T::GNULongName, b"repos/b"), file(T::Directory, b"x", b"")].concat(),
        unreadable.clone(),
    );
    hostile("journal_long_name_at_end", "a GNU long name with no member after it", long(T::GNULongName, b"repos/aws"), unreadable.clone());
    hostile(
        "journal_pax_path_dotdot",
        "a PAX record path=../../etc/passwd for a head member",
        [
            file(T::XHeader, b"PaxHeaders/main", &pax("path", b"../../etc/passwd")),
            file(T::Regular, head_path, format!("{hex}\n").as_bytes()),
        ]
        .concat(),
        vocab(b"../../etc/passwd"),
    );
    hostile(
        "journal_pax_linkpath_absolute",
        "a PAX record linkpath=/etc/passwd for a tag entry",
        [file(T::XHeader, b"PaxHeaders/x", &pax("linkpath", b"/etc/passwd")), member(T::Link, b"tags/prod/x", b"repos/aws/key", 0, b"")]
            .concat(),
        not_target(b"tags/prod/x"),
    );
    hostile(
        "journal_pax_huge_size",
        "a PAX record size=2^40 for an object member: refused before any allocation",
        [file(T::XHeader, b"PaxHeaders/o", &pax("size", b"1099511627776")), file(T::Regular, &object, &z)].concat(),
        too_large(&object),
    );
    hostile(
        "journal_pax_global_header",
        "a PAX global header",
        file(T::XGlobalHeader, b"pax_global_header", &pax("comment", b"hi")),
        vocab(b"pax_global_header"),
    );

    // Sizes past the data or past any object, and broken headers.
    hostile(
        "journal_declared_size_past_data",
        "an object member declaring 10000 bytes with 512 in the transaction",
        member(T::Regular, &object, b"", 10_000, &z),
        member_says(b"", "unreadable tar stream"),
    );
    hostile(
        "journal_huge_declared_size",
        "an object member declaring 2^40 bytes (base-256 size field)",
        member(T::Regular, &object, b"", 1 << 40, &z),
        too_large(&object),
    );
    hostile(
        "journal_over_object_limit",
        "an object member declaring 65 MiB + 1 (the limit is 64 MiB + 1 MiB)",
        member(T::Regular, &object, b"", (65 << 20) + 1, &z),
        too_large(&object),
    );
    let mut bad_size = file(T::Regular, &object, &z);
    bad_size[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
    let mut h = tar::Header::new_gnu();
    h.as_mut_bytes().copy_from_slice(&bad_size[..512]);
    h.set_cksum();
    bad_size[..512].copy_from_slice(h.as_bytes());
    hostile("journal_size_not_a_number", "a member whose size field is not octal", bad_size, unreadable.clone());
    let mut bad_sum = records(&[Record::Repo(n(NameKind::Repo, "x"))]);
    bad_sum[148] ^= 1;
    hostile("journal_header_checksum_wrong", "a member header with a wrong checksum", bad_sum, unreadable.clone());
    let ends = [records(&[Record::Repo(n(NameKind::Repo, "x"))]), vec![0; 512], records(&[Record::Repo(n(NameKind::Repo, "y"))])].concat();
    hostile(
        "journal_end_block_inside",
        "an all-zero block between two members",
        ends,
        member_says(b"", "an end-of-archive block inside a transaction"),
    );
    hostile(
        "journal_partial_header",
        "the first 100 bytes of a member header",
        records(&[Record::Repo(n(NameKind::Repo, "x"))])[..100].to_vec(),
        unreadable.clone(),
    );
    hostile("journal_random_plaintext", "2048 pseudo-random bytes", filler(11, 2048), unreadable.clone());

    // Names and data outside the vocabulary.
    let upper = format!("repos/aws/.git/objects/{}/{}", hex[..2].to_uppercase(), hex[2..].to_uppercase()).into_bytes();
    hostile("journal_object_uppercase_hex", "an object path in uppercase hex", file(T::Regular, &upper, &z), vocab(&upper));
    let short = format!("repos/aws/.git/objects/{}/{}", &hex[..2], &hex[2..39]).into_bytes();
    hostile("journal_object_short_id", "an object path of 39 hex digits", file(T::Regular, &short, &z), vocab(&short));
    let not_hex = format!("repos/aws/.git/objects/zz/{}", "z".repeat(38)).into_bytes();
    hostile("journal_object_not_hex", "an object path that is not hex", file(T::Regular, &not_hex, &z), vocab(&not_hex));
    hostile(
        "journal_head_not_hex",
        "a head whose data is not a commit id",
        file(T::Regular, head_path, b"ref: ../../../../etc/passwd\n"),
        vocab(head_path),
    );
    hostile(
        "journal_head_without_newline",
        "a head of 40 hex digits without the newline",
        file(T::Regular, head_path, hex.as_bytes()),
        vocab(head_path),
    );
    hostile(
        "journal_remove_dotdot",
        "a removal of repos/../etc",
        file(T::Regular, b".polykey/remove", b"repos/../etc"),
        vocab(b".polykey/remove"),
    );
    hostile("journal_remove_nothing", "a removal with empty data", file(T::Regular, b".polykey/remove", b""), vocab(b".polykey/remove"));

    // Records that contradict the state: links and heads to what does not exist, removals of
    // what does not exist.
    let nope = n(NameKind::Repo, "nope");
    let link = |tag: &str, entry: &str, repo: &str, secret: &str| Record::Link {
        tag: n(NameKind::Tag, tag),
        entry: n(NameKind::TagEntry, entry),
        repo: n(NameKind::Repo, repo),
        secret: n(NameKind::Secret, secret),
    };
    let absent = git2::Oid::hash_object(ObjectType::Commit, b"never written").unwrap();
    for (name, comment, rs, says) in [
        (
            "journal_link_to_missing_repo",
            "a tag entry linked into a repository that does not exist",
            vec![link("prod", "x", "nope", "key")],
            "record for unknown repository \"nope\"".to_owned(),
        ),
        (
            "journal_link_in_unknown_tag",
            "a tag entry in a tag that does not exist",
            vec![link("nope", "x", "aws", "key")],
            "link in unknown tag \"nope\"".to_owned(),
        ),
        (
            "journal_link_to_removed_repo",
            "a repository removed, then a tag entry linked into it",
            vec![Record::RemoveRepo(n(NameKind::Repo, "aws")), link("prod", "x", "aws", "key")],
            "record for unknown repository \"aws\"".to_owned(),
        ),
        (
            "journal_object_in_unknown_repo",
            "an object in a repository that does not exist",
            vec![Record::Object(nope.clone(), oid, z.clone())],
            "record for unknown repository \"nope\"".to_owned(),
        ),
        (
            "journal_head_in_unknown_repo",
            "a head in a repository that does not exist",
            vec![Record::Head(nope.clone(), absent)],
            "record for unknown repository \"nope\"".to_owned(),
        ),
        (
            "journal_head_names_absent_commit",
            "a head naming a commit the repository does not have",
            vec![Record::Head(n(NameKind::Repo, "aws"), absent)],
            format!("head of \"aws\" names absent commit {absent}"),
        ),
        (
            "journal_remove_unknown_repo",
            "the removal of a repository that does not exist",
            vec![Record::RemoveRepo(nope.clone())],
            "record for unknown repository \"nope\"".to_owned(),
        ),
        (
            "journal_remove_unknown_tag",
            "the removal of a tag that does not exist",
            vec![Record::RemoveTag(n(NameKind::Tag, "nope"))],
            "removal of unknown tag \"nope\"".to_owned(),
        ),
        (
            "journal_remove_unknown_entry",
            "the removal of a tag entry that does not exist",
            vec![Record::RemoveLink(n(NameKind::Tag, "prod"), n(NameKind::TagEntry, "nope"))],
            "removal of unknown entry \"nope\" in tag \"prod\"".to_owned(),
        ),
        (
            "journal_remove_entry_of_unknown_tag",
            "the removal of an entry of a tag that does not exist",
            vec![Record::RemoveLink(n(NameKind::Tag, "nope"), n(NameKind::TagEntry, "key"))],
            "removal in unknown tag \"nope\"".to_owned(),
        ),
    ] {
        hostile(name, comment, records(&rs), state_says(&says));
    }

    // Legal, if odd: these open.
    let mut legal = |name: &str, comment: &str, rs: &[Record], content: &Content, reset: bool| {
        out.add(name, Success, PASSWORD, comment, content, with_txn(&base, &records(rs), reset));
    };
    let aws = n(NameKind::Repo, "aws");
    legal(
        "journal_duplicate_repo",
        "the repository aws recorded again: no effect",
        &[Record::Repo(aws.clone()), Record::Repo(aws.clone())],
        &model,
        false,
    );
    legal(
        "journal_duplicate_object",
        "an object recorded twice: the same object",
        &[Record::Object(aws.clone(), oid, z.clone()), Record::Object(aws.clone(), oid, z.clone())],
        &model,
        false,
    );
    legal("journal_empty_transaction", "an empty transaction: no change", &[], &model, false);
    let mut ghost = model.clone();
    ghost.tags.insert((b"prod".to_vec(), b"ghost".to_vec()), (b"aws".to_vec(), b"ghost".to_vec()));
    legal(
        "journal_link_to_absent_secret",
        "a tag entry naming a secret the head does not have (allowed; the export leaves it out)",
        &[link("prod", "ghost", "aws", "ghost")],
        &ghost,
        false,
    );
    let mut alias = model.clone();
    alias.tags.insert((b"prod".to_vec(), b"alias".to_vec()), (b"aws".to_vec(), b"key".to_vec()));
    legal(
        "journal_duplicate_link_later_wins",
        "one tag entry linked twice in a save: the later link wins",
        &[link("prod", "alias", "aws", "ghost"), link("prod", "alias", "aws", "key")],
        &alias,
        false,
    );
    let (b1, b1z) = polykey::git::encode(ObjectType::Blob, b"first");
    let (b2, b2z) = polykey::git::encode(ObjectType::Blob, b"second");
    let flat = |b: git2::Oid| {
        let mut t = polykey::git::Tree::new();
        t.insert(n(NameKind::Secret, "key"), b);
        polykey::git::encode(ObjectType::Tree, &polykey::git::tree_body(&t))
    };
    let ((t1, t1z), (t2, t2z)) = (flat(b1), flat(b2));
    let (c1, c1z) = polykey::git::encode(ObjectType::Commit, &polykey::git::commit_body(t1, &[], 1_700_000_000, b"Update key\n"));
    let (c2, c2z) = polykey::git::encode(ObjectType::Commit, &polykey::git::commit_body(t2, &[c1], 1_700_000_001, b"Update key\n"));
    let mut second = model.clone();
    second.secrets.insert((b"aws".to_vec(), b"key".to_vec()), b"second".to_vec());
    let objects: Vec<Record> = [(b1, b1z), (t1, t1z), (c1, c1z), (b2, b2z), (t2, t2z), (c2, c2z)]
        .into_iter()
        .map(|(o, z)| Record::Object(aws.clone(), o, z))
        .collect();
    let heads = [objects.clone(), vec![Record::Head(aws.clone(), c1), Record::Head(aws.clone(), c2)]].concat();
    legal("journal_duplicate_head_later_wins", "two heads in one save: the later one wins", &heads, &second, false);
    let mut emptied = model.clone();
    emptied.secrets.clear();
    emptied.tags.clear();
    legal(
        "journal_remove_then_recreate_repo",
        "a repository removed and created again in one save: empty, and its tag entries gone",
        &[Record::RemoveRepo(aws.clone()), Record::Repo(aws.clone())],
        &emptied,
        false,
    );
    let fresh = n(NameKind::Repo, "fresh");
    let mut only_fresh = Content::default();
    only_fresh.secrets.insert((b"fresh".to_vec(), b"key".to_vec()), b"first".to_vec());
    let checkpoint: Vec<Record> = [
        vec![Record::Repo(fresh.clone())],
        [
            (b1, polykey::git::encode(ObjectType::Blob, b"first").1),
            (t1, flat(b1).1),
            (c1, polykey::git::encode(ObjectType::Commit, &polykey::git::commit_body(t1, &[], 1_700_000_000, b"Update key\n")).1),
        ]
        .into_iter()
        .map(|(o, z)| Record::Object(fresh.clone(), o, z))
        .collect(),
        vec![Record::Head(fresh.clone(), c1)],
    ]
    .concat();
    legal(
        "journal_checkpoint_later_in_log",
        "a checkpoint (RESET) as the last save: it replaces everything before it",
        &checkpoint,
        &only_fresh,
        true,
    );
}

/// The bytes of a loose object with any header and body, compressed as Polykey does.
fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(raw).unwrap();
    e.finish().unwrap()
}

/// A zlib stream that inflates to `header` followed by `zeros` zero bytes, built without
/// holding them: the deflate blocks for 1 MiB of zeros after zeros are the same every time, so
/// they are compressed once (with a sync flush after each MiB) and repeated.
#[allow(clippy::big_endian_bytes)] // zlib's Adler-32 trailer is big-endian by definition.
fn zlib_bomb(header: &[u8], zeros: usize) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    assert!(zeros.is_multiple_of(MIB) && zeros >= 4 * MIB);
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let mut chunks = Vec::new();
    e.write_all(header).unwrap();
    for _ in 0..3 {
        let before = e.get_ref().len();
        e.write_all(&vec![0; MIB]).unwrap();
        e.flush().unwrap();
        chunks.push(e.get_ref()[before..].to_vec());
    }
    assert_eq!(chunks[1], chunks[2], "the deflate blocks of a MiB of zeros repeat");
    let mut out = e.get_ref().clone();
    for _ in 3..zeros / MIB {
        out.extend_from_slice(&chunks[2]);
    }
    out.extend_from_slice(&[0x03, 0x00]); // A final, empty block with fixed codes.
                                          // Adler-32 of the whole: zeros leave `a` as it was and add `a` to `b` once each.
    let (mut a, mut b) = (1u64, 0u64);
    for &x in header {
        a = (a + u64::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    b = (b + (zeros as u64 % 65521) * a) % 65521;
    out.extend_from_slice(&((b << 16 | a) as u32).to_be_bytes());
    out
}

/// Validly encrypted saves whose journal is sound but whose git objects are not: broken
/// zlib, bytes that do not hash to their id, a bomb, lying headers, hostile trees (names with
/// `/`, `.git`, `..`, NUL; subtrees, symlinks, submodules; unsorted or repeated entries), heads
/// and commits naming what is missing or of the wrong kind. Objects are inflated lazily, so
/// the node opens, the rest of it reads, and reading the bad repository fails as damaged.
fn git_vectors(out: &mut Out) {
    use Expect::*;
    use ObjectType::{Blob, Commit, Tree};
    let (base, model) = target_node();
    let bad = name(NameKind::Repo, b"bad");
    let enc = |kind, body: &[u8]| polykey::git::encode(kind, body);
    let time = 1_700_000_000;
    let commit_of = |tree: git2::Oid, parents: &[git2::Oid]| enc(Commit, &polykey::git::commit_body(tree, parents, time, b"Add key\n"));
    let entry = |mode: &[u8], name: &[u8], id: git2::Oid| [mode, b" ", name, b"\0", id.as_bytes()].concat();
    // The repository `bad`: its objects, then its head.
    let save = |objects: &[(git2::Oid, Vec<u8>)], head: git2::Oid| {
        let mut rs = vec![Record::Repo(bad.clone())];
        rs.extend(objects.iter().map(|(o, z)| Record::Object(bad.clone(), *o, z.clone())));
        rs.push(Record::Head(bad.clone(), head));
        with_txn(&base, &records(&rs), false)
    };
    let mut corrupt = |name: &str, comment: &str, bytes: Vec<u8>, read: (ReadKind, &str), says: String| {
        let what = if read.0 == ReadKind::Get { "reading bad/key" } else { "listing the secrets of bad" };
        let comment = format!("{comment}, in a validly encrypted last save: the node opens, {what} fails");
        out.add(name, CorruptOnRead, PASSWORD, &comment, &model, bytes).read(read.0, read.1).says(&says);
    };
    // A head whose tree holds `key` -> an object with id `oid` and bytes `z`.
    let with_blob = |oid: git2::Oid, z: Vec<u8>| {
        let (t, tz) = enc(Tree, &entry(b"100644", b"key", oid));
        let (c, cz) = commit_of(t, &[]);
        save(&[(oid, z), (t, tz), (c, cz)], c)
    };
    let get = (ReadKind::Get, "bad/key");
    let list = (ReadKind::List, "bad");

    // Blobs.
    let (good_blob, good_z) = enc(Blob, b"s3cr3t");
    corrupt(
        "git_blob_zlib_truncated",
        "the blob's zlib stream cut short",
        with_blob(good_blob, good_z[..good_z.len() - 6].to_vec()),
        get,
        format!("object {good_blob} is malformed"),
    );
    let mut garbled = good_z.clone();
    garbled[0] = 0x00;
    corrupt(
        "git_blob_zlib_header_broken",
        "the blob's zlib header broken",
        with_blob(good_blob, garbled),
        get,
        format!("object {good_blob} is malformed"),
    );
    corrupt(
        "git_blob_not_zlib",
        "the blob's bytes are not zlib at all",
        with_blob(good_blob, filler(12, 64)),
        get,
        format!("object {good_blob} is malformed"),
    );
    corrupt("git_blob_empty", "the blob has no bytes", with_blob(good_blob, Vec::new()), get, format!("object {good_blob} is malformed"));
    let (_, other_z) = enc(Blob, b"another secret");
    corrupt(
        "git_blob_hash_mismatch",
        "the blob's bytes are another blob's",
        with_blob(good_blob, other_z),
        get,
        format!("object {good_blob} does not match its id"),
    );
    let bomb_id = git2::Oid::hash_object(Blob, b"bomb").unwrap();
    let bomb = zlib_bomb(b"blob 134217728\0", 128 << 20);
    corrupt(
        "git_blob_zip_bomb",
        &format!("a {}-byte blob that inflates to 128 MiB: refused after at most 64 MiB", bomb.len()),
        with_blob(bomb_id, bomb),
        get,
        format!("object {bomb_id} is larger than the 67108864-byte limit"),
    );
    let huge_id = git2::Oid::hash_object(Blob, b"huge").unwrap();
    corrupt(
        "git_blob_declares_1_tib",
        "a blob whose header declares 1 TiB",
        with_blob(huge_id, zlib(b"blob 1099511627776\0abc")),
        get,
        format!("object {huge_id} is larger than the 67108864-byte limit"),
    );
    for (name, comment, raw) in [
        ("git_object_header_without_nul", "an object header with no NUL in its first 32 bytes", [&b"blob "[..], &[b'9'; 40]].concat()),
        ("git_object_unknown_kind", "an object of kind spam", b"spam 3\0abc".to_vec()),
        ("git_object_size_mismatch", "an object declaring 99 bytes with 3", b"blob 99\0abc".to_vec()),
        ("git_object_negative_size", "an object declaring -1 bytes", b"blob -1\0".to_vec()),
    ] {
        let id = git2::Oid::hash_object(Blob, &raw).unwrap();
        corrupt(name, comment, with_blob(id, zlib(&raw)), get, format!("object {id} is malformed"));
    }
    let (inner_t, inner_tz) = enc(Tree, &entry(b"100644", b"x", good_blob));
    corrupt(
        "git_blob_is_a_tree",
        "the secret's object is a tree",
        with_blob(inner_t, inner_tz),
        get,
        format!("object {inner_t} is not a blob"),
    );

    // Trees.
    let (blob, blob_z) = (good_blob, good_z.clone());
    let with_tree = |body: Vec<u8>| {
        let (t, tz) = enc(Tree, &body);
        let (c, cz) = commit_of(t, &[]);
        (t, save(&[(blob, blob_z.clone()), (t, tz), (c, cz)], c))
    };
    for (name, comment, body) in [
        ("git_tree_entry_dot_git", "a tree entry named .git", entry(b"100644", b".git", blob)),
        ("git_tree_entry_dot_git_uppercase", "a tree entry named .GIT", entry(b"100644", b".GIT", blob)),
        ("git_tree_entry_dotdot", "a tree entry named ..", entry(b"100644", b"..", blob)),
        ("git_tree_entry_dot", "a tree entry named .", entry(b"100644", b".", blob)),
        ("git_tree_entry_with_slash", "a tree entry named a/b", entry(b"100644", b"a/b", blob)),
        (
            "git_tree_entry_with_nul",
            "a tree entry named key<NUL>../x (the name ends early and the rest misparses)",
            entry(b"100644", b"key\0../x", blob),
        ),
        ("git_tree_entry_empty_name", "a tree entry with an empty name", entry(b"100644", b"", blob)),
        ("git_tree_subtree", "a subtree (mode 40000)", entry(b"40000", b"sub", blob)),
        ("git_tree_symlink", "a symlink (mode 120000)", entry(b"120000", b"link", blob)),
        ("git_tree_submodule", "a submodule (mode 160000)", entry(b"160000", b"module", blob)),
        ("git_tree_mode_leading_zero", "mode 0100644", entry(b"0100644", b"key", blob)),
        ("git_tree_unsorted", "entries b then a", [entry(b"100644", b"b", blob), entry(b"100644", b"a", blob)].concat()),
        ("git_tree_duplicate_entry", "the entry key twice", [entry(b"100644", b"key", blob), entry(b"100644", b"key", blob)].concat()),
        ("git_tree_truncated", "a tree cut inside an entry's id", entry(b"100644", b"key", blob)[..15].to_vec()),
    ] {
        let (t, bytes) = with_tree(body);
        corrupt(name, comment, bytes, list, format!("object {t} is not a valid flat tree"));
    }

    // Heads and commits.
    let (t, tz) = enc(Tree, &entry(b"100644", b"key", blob));
    corrupt(
        "git_head_is_a_blob",
        "the head names a blob",
        save(&[(blob, blob_z.clone())], blob),
        list,
        format!("object {blob} is not a commit"),
    );
    corrupt(
        "git_head_is_a_tree",
        "the head names a tree",
        save(&[(blob, blob_z.clone()), (t, tz.clone())], t),
        list,
        format!("object {t} is not a commit"),
    );
    let (c, cz) = commit_of(t, &[]);
    corrupt(
        "git_commit_tree_missing",
        "the head commit's tree is not in the repository",
        save(&[(c, cz)], c),
        list,
        format!("object {t} is missing"),
    );
    let (c, cz) = commit_of(blob, &[]);
    corrupt(
        "git_commit_tree_is_a_blob",
        "the head commit's tree is a blob",
        save(&[(blob, blob_z.clone()), (c, cz)], c),
        list,
        format!("object {blob} is not a tree"),
    );
    let (c, cz) = enc(
        Commit,
        b"author Polykey <polykey@localhost> 1700000000 +0000\ncommitter Polykey <polykey@localhost> 1700000000 +0000\n\nno tree\n",
    );
    corrupt(
        "git_commit_without_tree",
        "a head commit with no tree line",
        save(&[(c, cz)], c),
        list,
        format!("object {c} is not a valid flat commit"),
    );
    let (c, cz) = enc(Commit, format!("tree {t}\ncommitter Polykey <polykey@localhost>\n\nno time\n").as_bytes());
    corrupt(
        "git_commit_without_time",
        "a head commit whose committer line has no time",
        save(&[(blob, blob_z.clone()), (t, tz.clone()), (c, cz)], c),
        list,
        format!("object {c} is not a valid flat commit"),
    );
    let c_id = git2::Oid::hash_object(Commit, b"commit").unwrap();
    corrupt(
        "git_commit_zlib_broken",
        "the head commit's bytes are not zlib",
        save(&[(c_id, filler(13, 80))], c_id),
        list,
        format!("object {c_id} is malformed"),
    );
    let (p, _) = commit_of(t, &[]);
    let (c, cz) = enc(Commit, &polykey::git::commit_body(t, &[p], time + 1, b"Update key\n"));
    out.add(
        "git_commit_parent_missing",
        CorruptOnRead,
        PASSWORD,
        "the head commit's parent is not in the repository: the secrets read, the history does not",
        &model,
        save(&[(blob, blob_z.clone()), (t, tz.clone()), (c, cz)], c),
    )
    .read(ReadKind::Log, "bad")
    .says(&format!("object {p} is missing"));
    let (c, cz) = enc(Commit, &polykey::git::commit_body(t, &[blob], time + 1, b"Update key\n"));
    out.add(
        "git_commit_parent_is_a_blob",
        CorruptOnRead,
        PASSWORD,
        "the head commit's parent is a blob: the history does not read",
        &model,
        save(&[(blob, blob_z.clone()), (t, tz.clone()), (c, cz)], c),
    )
    .read(ReadKind::Log, "bad")
    .says(&format!("object {blob} is not a commit"));
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

/// Compaction on a node with the authenticated end marker (required feature bit 1), and the
/// forgeries it stops: a frame header anyone can write (it carries only a CRC) or an old
/// sealed header must never end the log early without a word.
fn end_marker_vectors(out: &mut Out) {
    use Expect::*;
    let good = PASSWORD;
    let mut a = Build::new(&pass());
    a.put("junk", b"a", &filler(1, 2048));
    a.put("junk", b"b", &filler(2, 2048));
    a.put("keep", b"a", b"kept\n");
    a.remove_repo("junk");
    let live = a.model.clone();
    let before = a.bytes();
    a.storage.take_synced();
    a.node.compact().unwrap();
    let steps = a.storage.take_synced();
    let names = [
        (TornTail, "end_marker_crash_1_checkpoint_appended", "checkpoint appended under the next epoch; header not yet moved"),
        (Success, "end_marker_crash_2_slot_a_at_checkpoint", "slot A points at the appended checkpoint"),
        (Success, "end_marker_crash_3_slots_at_checkpoint", "both slots point at the appended checkpoint"),
        (Success, "end_marker_crash_4_copied_to_front", "checkpoint copied to the front, followed by an END frame"),
        (TornTail, "end_marker_crash_5_slot_a_at_front", "slot A points at the front copy; the END frame ends the log, the rest is a tail"),
        (
            TornTail,
            "end_marker_crash_6_slots_at_front",
            "both slots point at the front copy; the END frame ends the log, the rest is a tail",
        ),
        (Success, "end_marker_compaction_done", "compacted: the file is cut after the front checkpoint"),
    ];
    assert_eq!(steps.len(), names.len(), "compaction syncs once per step");
    let crashed = steps[5].clone();
    for ((expect, name, comment), bytes) in names.into_iter().zip(steps) {
        out.add(name, expect, good, &format!("required feature 0x2; compaction stopped after a sync: {comment}"), &live, bytes);
    }
    let at = base_end(&crashed);
    let epoch = u32::from_le_bytes(crashed[48..52].try_into().unwrap());
    assert_eq!(crashed[at + 4], log::FLAG_END);
    out.add(
        "end_marker_tag_flipped",
        TornTail,
        good,
        "end_marker_crash_6_slots_at_front with a bit of the END frame's tag flipped: no end, so what follows reads as a save cut short (reported)",
        &live,
        flip(&crashed, &[at + FRAME_HEADER_BYTES + 3]),
    );
    let v1_marker = |h: &mut [u8]| {
        h[4] = 0;
        h[8..12].copy_from_slice(&(epoch - 1).to_le_bytes());
        h[12..24].fill(0);
        h[24..48].fill(0);
    };
    out.add(
        "end_marker_replaced_by_v1_marker",
        TornTail,
        good,
        "end_marker_crash_6_slots_at_front with the version 1 marker (CRC only) in place of the END frame: on this node it is no marker; the bytes from it are ignored but kept (reported; writes refused)",
        &live,
        edit_frame_header(&crashed, at, v1_marker),
    );
    a.put("keep", b"b", b"after compaction\n");
    let one = a.model.clone();
    a.put("keep", b"c", b"and after that\n");
    let saved = a.bytes();
    let end = base_end(&saved);
    out.add(
        "forged_v1_marker_mid_log",
        DamagedFrame,
        good,
        "a compacted node with two saves after its checkpoint; the first save's frame header replaced by the version 1 marker (CRC only): a save follows, so it is damage, not the end of the log",
        &one,
        edit_frame_header(&saved, end, v1_marker),
    )
    .says(&format!("damaged at byte {end}: frame of epoch {}", epoch - 1));
    out.add(
        "old_header_spliced_after_compaction",
        DamagedFrame,
        good,
        "the header from before the compaction (epoch 0, an empty base) spliced onto the compacted node: the log it names starts with a newer epoch's checkpoint",
        &one,
        [&before[..LOG_OFFSET as usize], &saved[LOG_OFFSET as usize..]].concat(),
    )
    .says("the header is older than the log");
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

// ---------------------------------------------------------------------------------------------
// The fixture of required feature 0x2 (the authenticated end)

/// The passphrase of `tests/fixtures/v1-end-marker/interrupted-compaction.node`.
const END_MARKER_PASSWORD: &[u8] = b"polykey end marker fixture";

fn end_marker_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-end-marker/interrupted-compaction.node")
}

/// Writes the fixture once: a node with required feature 0x2 whose compaction to the front
/// stopped before its last step, so its file holds the front checkpoint, the END frame, and
/// the old log's remains after it.
#[test]
#[ignore = "writes tests/fixtures/v1-end-marker/interrupted-compaction.node if it is missing"]
fn generate_end_marker_fixture() {
    let path = end_marker_fixture();
    assert!(!path.exists(), "{} exists; fixtures are written once and never regenerated", path.display());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let pw = Passphrase::new(END_MARKER_PASSWORD.to_vec());
    let mut b = Build::new(&pw);
    b.put("old", b"x", &filler(3, 2048));
    b.put("web", b"token", b"s3cret\n");
    b.put("web", b"token", b"s3cret-2\n");
    b.tag("t", "tok", "web", "token");
    b.remove_repo("old");
    b.storage.take_synced();
    b.node.compact().unwrap();
    let steps = b.storage.take_synced();
    // After both header slots name the front copy, before the file is cut after it.
    std::fs::write(&path, &steps[5]).unwrap();
}

#[test]
fn end_marker_fixture_opens_silently_at_its_content() {
    let path = end_marker_fixture();
    let before = std::fs::read(&path).unwrap();
    assert_eq!(&before[12..16], &0x2u32.to_le_bytes(), "required feature 0x2");
    let node = Node::open(&path, &Passphrase::new(END_MARKER_PASSWORD.to_vec()), Access::Read).unwrap();
    let end = base_end(&before);
    assert_eq!(node.file_len(), end as u64, "the log ends where the checkpoint does");
    assert_eq!(before[end + 4], log::FLAG_END, "an END frame follows it");
    assert!(before.len() > end + 68, "the old log's remains follow the END frame");
    assert_eq!((node.discarded_tail(), node.kept_tail()), (None, false), "a compaction's remains are not reported");
    let mut want = Content::default();
    want.secrets.insert((b"web".to_vec(), b"token".to_vec()), b"s3cret-2\n".to_vec());
    want.tags.insert((b"t".to_vec(), b"tok".to_vec()), (b"web".to_vec(), b"token".to_vec()));
    assert_eq!(Content::of(&node).unwrap(), want);
    let messages: Vec<String> = node.log(&name(NameKind::Repo, b"web"), None).unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(messages, ["Update token", "Add token"]);
    assert!(crate::util::unchanged(&path, &before), "reading the fixture wrote to it");
}

// Tree deltas (required feature bit 0x1)

/// A node whose repository `big` is big enough for its trees to be saved as deltas (so its
/// header has feature bit 0x1), and its content.
fn delta_node() -> (Vec<u8>, Content) {
    let mut b = Build::new(&pass());
    let big = name(NameKind::Repo, b"big");
    let items: Vec<(Name, Vec<u8>)> =
        (0..120).map(|i| (name(NameKind::Secret, format!("secret-{i:03}").as_bytes()), vec![i as u8; 5])).collect();
    let refs: Vec<(Name, &[u8])> = items.iter().map(|(n, v)| (n.clone(), v.as_slice())).collect();
    b.node.put_many(&big, &refs).unwrap();
    for (n, v) in &items {
        b.model.secrets.insert((b"big".to_vec(), n.as_bytes().to_vec()), v.clone());
    }
    b.save();
    b.put("big", b"secret-new", b"added by a delta");
    b.put("big", b"secret-007", b"changed by a delta");
    b.node.remove(&big, &name(NameKind::Secret, b"secret-008")).unwrap();
    b.model.secrets.remove(&(b"big".to_vec(), b"secret-008".to_vec()));
    b.save();
    let bytes = b.bytes();
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()) & 1, 1, "the writer set feature bit 0x1");
    (bytes, b.model)
}

/// Tree deltas: a node that holds them (tree delta and save records) opens to its content, and deltas that do not rebuild
/// (bad bytes, an unknown operation, a missing base, a chain that loops, a result that does
/// not hash to the id) are damage when the tree is read.
fn delta_vectors(out: &mut Out) {
    use ObjectType::{Blob, Commit, Tree};
    let (base, model) = delta_node();
    out.add(
        "tree_delta_node",
        Expect::Success,
        PASSWORD,
        "120 secrets imported in one repository, then an add, an update and a removal saved as tree deltas (header feature bit 0x1)",
        &model,
        base.clone(),
    );
    // The hand-made records go on a small node (a reader does not look at the feature bit:
    // the writer sets it), so that each vector stays small.
    let (base, model) = target_node();
    let bad = name(NameKind::Repo, b"bad");
    let enc = |kind, body: &[u8]| polykey::git::encode(kind, body);
    let (blob, blob_z) = enc(Blob, b"s3cr3t");
    let entry = |n: &[u8], id: git2::Oid| [b"100644 ", n, b"\0", id.as_bytes()].concat();
    let (t0, t0z) = enc(Tree, &entry(b"key", blob));
    // The tree `key`, `more` (both the blob) as a delta against t0.
    let body1 = [entry(b"key", blob), entry(b"more", blob)].concat();
    let t1 = git2::Oid::hash_object(Tree, &body1).unwrap();
    let good = [t0.as_bytes(), &[2, 4], b"more", blob.as_bytes()].concat();
    let save = |tree: git2::Oid, delta: Vec<u8>| {
        let (c, cz) = enc(Commit, &polykey::git::commit_body(tree, &[], 1_700_000_000, b"Add more\n"));
        let rs = vec![
            Record::Repo(bad.clone()),
            Record::Object(bad.clone(), blob, blob_z.clone()),
            Record::Object(bad.clone(), t0, t0z.clone()),
            Record::Delta(bad.clone(), tree, delta),
            Record::Object(bad.clone(), c, cz),
            Record::Head(bad.clone(), c),
        ];
        with_txn(&base, &records(&rs), false)
    };
    let mut with_bad = model.clone();
    with_bad.secrets.insert((b"bad".to_vec(), b"key".to_vec()), b"s3cr3t".to_vec());
    with_bad.secrets.insert((b"bad".to_vec(), b"more".to_vec()), b"s3cr3t".to_vec());
    // The same commit and delta as one save record (what a save of a big repository writes).
    let (c1, c1z) = enc(Commit, &polykey::git::commit_body(t1, &[], 1_700_000_000, b"Add more\n"));
    let as_save = |commit_z: Vec<u8>, delta: Vec<u8>| {
        let rs = vec![
            Record::Repo(bad.clone()),
            Record::Object(bad.clone(), blob, blob_z.clone()),
            Record::Object(bad.clone(), t0, t0z.clone()),
            Record::Save { repo: bad.clone(), commit: c1, commit_z, tree: t1, delta },
        ];
        with_txn(&base, &records(&rs), false)
    };
    out.add(
        "tree_delta_save_valid",
        Expect::Success,
        PASSWORD,
        "a hand-made save record: the commit, its tree as a delta, the head",
        &with_bad,
        as_save(c1z.clone(), good.clone()),
    );
    out.add("tree_delta_valid", Expect::Success, PASSWORD, "a hand-made delta: t0 plus the entry more", &with_bad, save(t1, good.clone()));
    let mut corrupt = |name: &str, comment: &str, bytes: Vec<u8>, says: String| {
        let comment = format!("{comment}, in a validly encrypted last save: the node opens, listing the secrets of bad fails");
        out.add(name, Expect::CorruptOnRead, PASSWORD, &comment, &model, bytes).read(ReadKind::List, "bad").says(&says);
    };
    let mut op = good.clone();
    op[20] = 9;
    corrupt("tree_delta_unknown_op", "a delta operation 9", save(t1, op), format!("object {t1} is not a valid flat tree delta"));
    corrupt(
        "tree_delta_cut_short",
        "a delta cut inside a blob id",
        save(t1, good[..good.len() - 3].to_vec()),
        format!("object {t1} is not a valid flat tree delta"),
    );
    let unsorted = [t0.as_bytes(), &[2, 4], b"more", blob.as_bytes(), &[1, 3], b"key"].concat();
    corrupt(
        "tree_delta_unsorted",
        "delta operations out of name order",
        save(t1, unsorted),
        format!("object {t1} is not a valid flat tree delta"),
    );
    let dotgit = [t0.as_bytes(), &[2, 4], b".git", blob.as_bytes()].concat();
    corrupt(
        "tree_delta_name_dot_git",
        "a delta setting a secret named .git",
        save(t1, dotgit),
        format!("object {t1} is not a valid flat tree delta"),
    );
    let missing = git2::Oid::hash_object(Blob, b"no such tree").unwrap();
    let orphan = [missing.as_bytes(), &good[20..]].concat();
    corrupt(
        "tree_delta_base_missing",
        "a delta against a tree the repository does not hold",
        save(t1, orphan),
        format!("object {missing} is missing"),
    );
    let looped = [t1.as_bytes(), &good[20..]].concat();
    corrupt(
        "tree_delta_base_is_itself",
        "a delta whose base is itself (a chain that loops)",
        save(t1, looped),
        format!("object {t1} is not a valid flat tree delta chain"),
    );
    corrupt(
        "tree_delta_save_bad_delta",
        "a save record whose delta has an unknown operation",
        as_save(c1z.clone(), {
            let mut d = good.clone();
            d[20] = 9;
            d
        }),
        format!("object {t1} is not a valid flat tree delta"),
    );
    corrupt(
        "tree_delta_save_commit_garbled",
        "a save record whose commit bytes are not zlib",
        as_save(filler(14, c1z.len()), good.clone()),
        format!("object {c1} is malformed"),
    );
    let wrong = [t0.as_bytes(), &[2, 4], b"mose", blob.as_bytes()].concat();
    corrupt(
        "tree_delta_hash_mismatch",
        "a delta that rebuilds another tree than its id",
        save(t1, wrong),
        format!("object {t1} does not match its id"),
    );
}

/// Writes only the tree-delta vectors into `tests/vectors/` (the others keep their bytes).
#[test]
#[ignore = "writes tests/vectors/tree_delta_*"]
fn generate_tree_delta_vectors() {
    let mut out = Out::default();
    delta_vectors(&mut out);
    for v in &out.0 {
        v.check().unwrap_or_else(|e| panic!("{}: {e}", v.name));
        std::fs::write(vectors_dir().join(&v.name), v.encode()).unwrap();
    }
}

/// `tests/fixtures/v1/tree-deltas.node`: a node with required feature bit 0x1 (tree deltas),
/// written once, which every later Polykey must keep reading. Same passphrase as `basic.node`.
fn delta_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/tree-deltas.node")
}

/// The secrets of the tree-deltas fixture: 150 imported, then saves one at a time.
fn delta_fixture_content() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut want: BTreeMap<Vec<u8>, Vec<u8>> =
        (0..150).map(|i| (format!("s{i:03}").into_bytes(), format!("value {i}\n").into_bytes())).collect();
    want.insert(b"s150".to_vec(), b"added\n".to_vec());
    want.insert(b"s007".to_vec(), b"updated\n".to_vec());
    want.remove(b"s008".as_slice());
    let moved = want.remove(b"s009".as_slice()).unwrap();
    want.insert(b"renamed".to_vec(), moved);
    want
}

/// Writes the tree-deltas fixture, once (fixtures are never regenerated).
#[test]
#[ignore = "writes tests/fixtures/v1/tree-deltas.node if it is missing"]
fn generate_delta_fixture() {
    let path = delta_fixture();
    assert!(!path.exists(), "{} exists; fixtures are written once and never regenerated", path.display());
    let mut node = Node::create(&path, &Passphrase::new(V1_PASSWORD.to_vec()), FAST_KDF).unwrap();
    let (r, s) = (name(NameKind::Repo, b"big"), |n: &str| name(NameKind::Secret, n.as_bytes()));
    let items: Vec<(Name, Vec<u8>)> = (0..150).map(|i| (s(&format!("s{i:03}")), format!("value {i}\n").into_bytes())).collect();
    let refs: Vec<(Name, &[u8])> = items.iter().map(|(n, v)| (n.clone(), v.as_slice())).collect();
    node.put_many(&r, &refs).unwrap();
    node.save().unwrap();
    node.put(&r, &s("s150"), b"added\n").unwrap();
    node.save().unwrap();
    node.put(&r, &s("s007"), b"updated\n").unwrap();
    node.save().unwrap();
    node.remove(&r, &s("s008")).unwrap();
    node.save().unwrap();
    node.rename(&r, &s("s009"), &s("renamed"), false).unwrap();
    node.save().unwrap();
}

#[test]
fn delta_fixture_opens_with_every_secret_and_commit() {
    let path = delta_fixture();
    let before = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(before[12..16].try_into().unwrap()), 1, "required feature bit 0x1");
    let node = Node::open(&path, &Passphrase::new(V1_PASSWORD.to_vec()), Access::Read).unwrap();
    let r = name(NameKind::Repo, b"big");
    let got: BTreeMap<Vec<u8>, Vec<u8>> =
        node.secrets(&r).unwrap().into_iter().map(|s| (s.as_bytes().to_vec(), node.get(&r, &s).unwrap().to_vec())).collect();
    assert!(got == delta_fixture_content());
    let log = node.log(&r, None).unwrap();
    let messages: Vec<&str> = log.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages, ["Rename s009 to renamed", "Remove s008", "Update s007", "Add s150", "Import 150 secrets"]);
    // The commit ids pin every tree, rebuilt from its delta, byte for byte.
    let ids: Vec<String> = log.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, DELTA_FIXTURE_IDS);
    let repo = &node.state().repos[&r];
    let sizes: Vec<usize> = log.iter().map(|e| repo.read_tree(repo.commit(e.id).unwrap().tree).unwrap().len()).collect();
    assert_eq!(sizes, [150, 150, 151, 151, 150]);
    assert!(crate::util::unchanged(&path, &before), "reading the fixture wrote to it");
}

/// The history of `big` in the tree-deltas fixture, newest first.
const DELTA_FIXTURE_IDS: [&str; 5] = [
    "a785a4980e0367f9a3f7efda108f89ddba2d863a",
    "5eef70d1d25ae66b7bfb914074e1cbdedbae0afa",
    "c88bc8a8e0155ead575b855c6cb31ce6fcedca5f",
    "c64c42cbe2181a26892702c8a389ba116c13a92f",
    "b51682c62a9ee319343deda527038714095b6219",
];
