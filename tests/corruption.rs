//! Damage and crashes: a node file that is bit-flipped, truncated, spliced or cut off in the
//! middle of a save or a compaction either opens at a complete state it really had (never a
//! mix) or fails with a clear damage error, never a panic; a failed open never changes the file;
//! compaction never changes the logical content at any crash point.

use crate::roundtrip::Content;
use crate::util::{pass, repo, secret, TempNode};
use polykey::crypto::aead::TAG_BYTES;
use polykey::format::header::{LOG_OFFSET, SLOT_BYTES};
use polykey::format::log::FRAME_HEADER_BYTES;
use polykey::storage::{MemStorage, Storage};
use polykey::{Access, Error, Name, Node, Passphrase};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A node's content plus each repository's head, so equal snapshots also mean equal history.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    content: Content,
    heads: BTreeMap<Name, Option<String>>,
}

impl Snapshot {
    fn of(node: &Node) -> Snapshot {
        let heads = node.state().repos.iter().map(|(name, r)| (name.clone(), r.head().map(|h| h.to_string()))).collect();
        Snapshot { content: Content::of(node), heads }
    }
}

impl std::fmt::Debug for Snapshot {
    /// A summary: secrets can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let repos: Vec<_> = self.content.repos.iter().map(|(r, s)| (r, s.iter().map(|(n, d)| (n, d.len())).collect::<Vec<_>>())).collect();
        write!(f, "repos {:?} tags {:?} heads {:?}", repos, self.content.tags, self.heads)
    }
}

/// Opens a copy of `bytes` in memory, catching a panic so the caller can name the case.
fn open_copy(bytes: &[u8]) -> std::thread::Result<polykey::Result<Node>> {
    let storage = MemStorage { bytes: bytes.to_vec() };
    catch_unwind(AssertUnwindSafe(|| Node::open_storage(Path::new("copy.node"), Box::new(storage), &pass(), Access::Write)))
}

/// Opens a copy of `bytes` that must open; returns its snapshot and committed length.
fn open_ok(bytes: &[u8], case: &str) -> (Snapshot, u64) {
    match open_copy(bytes) {
        Ok(Ok(node)) => (Snapshot::of(&node), node.file_len()),
        Ok(Err(e)) => panic!("{case}: {e}"),
        Err(_) => panic!("{case}: panicked"),
    }
}

/// A little-endian u64 field of header slot A (the slots are equal in the files parsed here).
fn slot_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Header field offsets (docs/FORMAT.md): where the log starts and where its checkpoint ends.
const LOG_START_AT: usize = 56;
const BASE_END_AT: usize = 64;

/// The (start, end) offsets of the frames of the log from the header's `log_start` to EOF.
fn frames(bytes: &[u8]) -> Vec<(u64, u64)> {
    assert!(bytes[..SLOT_BYTES] == bytes[SLOT_BYTES..2 * SLOT_BYTES], "header slots differ");
    let mut out = Vec::new();
    let mut at = slot_u64(bytes, LOG_START_AT) as usize;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 12..at + 16].try_into().unwrap()) as usize;
        out.push((at as u64, (at + FRAME_HEADER_BYTES + len) as u64));
        at += FRAME_HEADER_BYTES + len;
    }
    assert_eq!(at, bytes.len(), "frames end exactly at EOF");
    out
}

/// A node's file after a series of saves, and (length, snapshot) after each save, the empty
/// node first.
struct History {
    bytes: Vec<u8>,
    saves: Vec<(u64, Snapshot)>,
}

impl History {
    /// The state a file cut to `len` bytes must open at: the last save that fits.
    fn at(&self, len: u64) -> &(u64, Snapshot) {
        self.saves.iter().rev().find(|(end, _)| *end <= len).unwrap()
    }
}

fn record(node: &mut Node, saves: &mut Vec<(u64, Snapshot)>) {
    node.save().unwrap();
    saves.push((node.file_len(), Snapshot::of(node)));
}

/// A small node (about 18 KiB) with four saves: puts, binary bytes, a tag, a rename, a removal.
fn small_history(t: &TempNode) -> History {
    let mut node = t.create();
    let mut saves = vec![(node.file_len(), Snapshot::of(&node))];
    let (a, k1, k2) = (repo("a"), secret("k1"), secret("k2"));
    node.put(&a, &k1, b"hello").unwrap();
    node.tag(&repo("t"), &secret("e"), &a, &k1).unwrap();
    record(&mut node, &mut saves);
    node.put(&a, &k2, &(0..=255).collect::<Vec<u8>>()).unwrap();
    record(&mut node, &mut saves);
    node.rename(&a, &k1, &secret("k3"), false).unwrap();
    record(&mut node, &mut saves);
    node.remove(&a, &k2).unwrap();
    record(&mut node, &mut saves);
    drop(node);
    History { bytes: std::fs::read(&t.path).unwrap(), saves }
}

/// The smallest useful node (about 8 KiB): one save with a secret and a tag, then a one-member
/// save (an untag), so that checking every byte of it stays fast in debug builds.
fn tiny_history(t: &TempNode) -> History {
    let mut node = t.create();
    let mut saves = vec![(node.file_len(), Snapshot::of(&node))];
    let (a, k) = (repo("a"), secret("k"));
    node.put(&a, &k, b"hello").unwrap();
    node.tag(&repo("t"), &secret("e"), &a, &k).unwrap();
    node.tag(&repo("t"), &secret("f"), &a, &k).unwrap();
    record(&mut node, &mut saves);
    node.untag(&repo("t"), &secret("e"), false).unwrap();
    record(&mut node, &mut saves);
    drop(node);
    History { bytes: std::fs::read(&t.path).unwrap(), saves }
}

/// Whether `e` is an error that names damage (header or log).
fn names_damage(e: &Error) -> bool {
    matches!(e, Error::Damaged { .. } | Error::Corrupt { .. }) && e.to_string().contains("damaged")
}

/// Offsets to damage: every byte of header slot A and of every frame header and tag, and a
/// sample (every `stride`-th byte) of slot B and of the frame bodies. Every open costs a KDF
/// and a replay, so all of them would be slow in debug builds; the bodies are uniform AEAD
/// ciphertext, and slot B is checked by the same code as slot A.
fn damage_offsets(bytes: &[u8], stride: usize) -> Vec<usize> {
    let mut out: Vec<usize> = (0..SLOT_BYTES).chain((SLOT_BYTES..2 * SLOT_BYTES).step_by(stride)).collect();
    out.push(2 * SLOT_BYTES - 1);
    for (start, end) in frames(bytes) {
        let (start, end) = (start as usize, end as usize);
        out.extend(start..start + FRAME_HEADER_BYTES);
        out.extend((start + FRAME_HEADER_BYTES..end - TAG_BYTES).step_by(stride));
        out.extend(end - TAG_BYTES..end);
    }
    out
}

/// Flipping one bit (a different bit at each offset): a header slot flip opens the other slot
/// with identical content; a log flip is damage reported at the start of the flipped frame,
/// except in the last save, where nothing valid follows: that reads as a save cut short, so
/// the node opens at the save before and reports the ignored bytes.
#[test]
fn flipped_bits_are_survived_or_reported_as_damage() {
    let t = TempNode::new();
    let h = tiny_history(&t);
    let (_, want) = h.saves.last().unwrap();
    let frames = frames(&h.bytes);
    let mut panicked = Vec::new();
    for i in damage_offsets(&h.bytes, 7) {
        let mut bytes = h.bytes.clone();
        bytes[i] ^= 1 << (i % 8);
        let result = match open_copy(&bytes) {
            Ok(r) => r,
            Err(_) => {
                panicked.push(i);
                continue;
            }
        };
        if (i as u64) < LOG_OFFSET {
            // The other slot is intact and identical: the node opens, knowing it is degraded.
            let node = result.unwrap_or_else(|e| panic!("flip at {i} in a header slot: {e}"));
            assert!(node.header_degraded(), "flip at {i} went unnoticed");
            assert!(Snapshot::of(&node) == *want, "flip at {i} changed the content");
            assert_eq!(node.file_len(), h.bytes.len() as u64, "flip at {i}");
        } else {
            let frame = frames.iter().find(|(s, end)| (*s..*end).contains(&(i as u64))).unwrap();
            if frame.1 == h.bytes.len() as u64 {
                let node = result.unwrap_or_else(|e| panic!("flip at {i} in the last save: {e}"));
                assert_eq!(node.discarded_tail().map(|d| d.0), Some(frame.0), "flip at {i} not reported");
                assert!(Snapshot::of(&node) == h.saves[h.saves.len() - 2].1, "flip at {i}: not the save before");
                continue;
            }
            let e = result.err().unwrap_or_else(|| panic!("flip at {i} in the log opened"));
            assert!(names_damage(&e), "flip at {i}: {e}");
            if let Error::Damaged { offset, .. } = e {
                assert_eq!(offset, frame.0, "flip at {i} reported at the wrong offset");
            }
        }
    }
    assert!(panicked.is_empty(), "open panicked for flips at offsets {panicked:?}");
}

/// Both header slots damaged is damage, told apart from a wrong passphrase.
#[test]
fn both_slots_damaged_is_damage_not_a_wrong_passphrase() {
    let t = TempNode::new();
    let h = tiny_history(&t);
    let mut bytes = h.bytes.clone();
    bytes[100] ^= 4;
    bytes[SLOT_BYTES + 100] ^= 4;
    let e = open_copy(&bytes).unwrap().err().unwrap();
    assert!(matches!(e, Error::Damaged { offset: 0, .. }), "{e}");
    let wrong = Passphrase::new(b"not it".to_vec());
    let e = Node::open_storage(Path::new("x"), Box::new(MemStorage { bytes: h.bytes.clone() }), &wrong, Access::Read).err().unwrap();
    assert!(matches!(e, Error::WrongPassphrase { .. }), "{e}");
}

/// A failed (or successful) open of a damaged real file leaves the file's bytes as they were,
/// on a sample of flips across the header slots, frame headers and frame bodies.
#[test]
fn open_never_changes_a_damaged_file() {
    let t = TempNode::new();
    let h = small_history(&t);
    let mut sample: Vec<usize> = vec![0, 8, 40, SLOT_BYTES - 1, SLOT_BYTES, SLOT_BYTES + 60, 2 * SLOT_BYTES - 1];
    for (start, end) in frames(&h.bytes) {
        sample.extend([start as usize, start as usize + 13, (start + end) as usize / 2, end as usize - 1]);
    }
    let copy = t.dir.path().join("copy.node");
    let last_save = frames(&h.bytes).last().unwrap().0 as usize;
    for i in sample {
        for access in [Access::Write, Access::Read] {
            let mut bytes = h.bytes.clone();
            bytes[i] ^= 0x80;
            std::fs::write(&copy, &bytes).unwrap();
            let opened = Node::open(&copy, &pass(), access);
            // Header flips are survived (two copies); last-save flips read as a save cut short.
            assert_eq!(opened.is_ok(), (i as u64) < LOG_OFFSET || i >= last_save, "flip at {i}");
            drop(opened);
            assert!(std::fs::read(&copy).unwrap() == bytes, "open ({access:?}) changed the file, flip at {i}");
        }
    }
    std::fs::write(&copy, &h.bytes).unwrap();
    let wrong = Node::open(&copy, &Passphrase::new(b"nope".to_vec()), Access::Write);
    assert!(matches!(wrong, Err(Error::WrongPassphrase { .. })));
    assert!(std::fs::read(&copy).unwrap() == h.bytes, "a wrong passphrase changed the file");
}

/// Opens `h.bytes` cut to each of `lens`: below `base_end` (the header and the checkpoint,
/// which must be whole) it is damage; from there on it opens at exactly the last save that
/// fits.
fn check_truncations(h: &History, base_end: u64, lens: impl IntoIterator<Item = u64>) {
    for len in lens {
        match open_copy(&h.bytes[..len as usize]) {
            Err(_) => panic!("cut at {len}: panicked"),
            Ok(Err(e)) => assert!(len < base_end && matches!(e, Error::Damaged { .. }), "cut at {len}: {e}"),
            Ok(Ok(node)) => {
                assert!(len >= base_end, "cut at {len}, before {base_end}, opened");
                let (end, want) = h.at(len);
                assert!(Snapshot::of(&node) == *want, "cut at {len} is not the state saved at {end}");
                assert_eq!(node.file_len(), *end, "cut at {len}");
            }
        }
    }
}

/// Lengths around every frame boundary and inside every frame header, plus every `stride`-th.
fn cut_points(bytes: &[u8], stride: usize) -> Vec<u64> {
    let mut out: Vec<u64> = (0..=bytes.len() as u64).step_by(stride).collect();
    out.extend([1, SLOT_BYTES as u64 - 1, SLOT_BYTES as u64, SLOT_BYTES as u64 + 1, LOG_OFFSET - 1, LOG_OFFSET]);
    for (start, end) in frames(bytes) {
        out.extend(start..=start + FRAME_HEADER_BYTES as u64 + 1);
        out.extend([end - 1, end]);
    }
    out
}

/// Cutting the file at every length within the last save opens at the old state (or, at its
/// very end, the new one): never an error, never a mix.
#[test]
fn truncation_within_the_last_save_opens_at_the_old_or_new_state() {
    let t = TempNode::new();
    let h = tiny_history(&t);
    let [.., (before, _), (after, _)] = &h.saves[..] else { unreachable!() };
    check_truncations(&h, LOG_OFFSET, *before..=*after);
}

/// Cutting the file earlier: inside the header it is damage, anywhere in the log it is the last
/// save that fits.
#[test]
fn truncation_in_earlier_saves_opens_at_an_older_state() {
    let t = TempNode::new();
    let h = small_history(&t);
    check_truncations(&h, LOG_OFFSET, cut_points(&h.bytes, 23));
}

/// After compaction the checkpoint must be whole: a cut inside it is damage, a cut after it
/// opens at the last save that fits.
#[test]
fn truncation_of_a_compacted_node_is_damage_inside_the_checkpoint() {
    let t = TempNode::new();
    let mut node = t.create();
    let (a, k) = (repo("a"), secret("k"));
    for i in 0..4u8 {
        node.put(&a, &k, &[i; 100]).unwrap();
        node.save().unwrap();
    }
    node.compact().unwrap();
    let base_end = node.file_len();
    let mut saves = vec![(base_end, Snapshot::of(&node))];
    node.put(&a, &secret("k2"), b"after").unwrap();
    record(&mut node, &mut saves);
    node.remove(&a, &k).unwrap();
    record(&mut node, &mut saves);
    drop(node);
    let h = History { bytes: std::fs::read(&t.path).unwrap(), saves };
    let bounds = (slot_u64(&h.bytes, LOG_START_AT), slot_u64(&h.bytes, BASE_END_AT));
    assert_eq!(bounds, (LOG_OFFSET, base_end), "the checkpoint moved to the front");
    check_truncations(&h, base_end, cut_points(&h.bytes, 23));
}

/// A small deterministic generator (xorshift64*), so big secrets need no dependency.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A save larger than one frame (a bit over 4 MiB of incompressible bytes: two frames) cut
/// anywhere opens at the state before it: the first frame alone, though authentic, is not
/// committed. (Cuts after the first frame decrypt 4 MiB each, slow in debug builds: few.)
#[test]
fn multi_frame_save_cut_short_opens_at_the_state_before() {
    let t = TempNode::new();
    let mut node = t.create();
    let (a, small, big) = (repo("a"), secret("small"), secret("big"));
    node.put(&a, &small, b"before").unwrap();
    node.save().unwrap();
    let (before_len, before) = (node.file_len(), Snapshot::of(&node));
    let data = noise((4 << 20) + (256 << 10), 0x9e37_79b9_7f4a_7c15);
    node.put(&a, &big, &data).unwrap();
    node.save().unwrap();
    let head = node.state().repos[&a].head();
    let blob = node.state().repos[&a].tree().unwrap().get(&big).unwrap();
    drop(node);
    let bytes = std::fs::read(&t.path).unwrap();
    let txn: Vec<_> = frames(&bytes).into_iter().filter(|(s, _)| *s >= before_len).collect();
    assert_eq!(txn.len(), 2, "the save is two frames");
    let ((f1, e1), (f2, e2)) = (txn[0], txn[1]);
    assert_eq!(e1, f2);
    let header = FRAME_HEADER_BYTES as u64;
    for cut in [f1 + 1, f1 + header - 1, f1 + header, f1 + header + 1000, e1 - 1, e1, e2 - 1] {
        let (got, end) = open_ok(&bytes[..cut as usize], &format!("cut at {cut}"));
        assert!(got == before, "cut at {cut}: {got:?}");
        assert_eq!(end, before_len, "cut at {cut}");
    }
    // The whole save opens. (Frames are authenticated, so the head and blob being there means
    // the bytes are; inflating 4 MiB to compare them again is slow in debug builds.)
    let node = open_copy(&bytes).unwrap().unwrap();
    assert_eq!(node.file_len(), e2);
    let r = &node.state().repos[&a];
    assert_eq!(r.head(), head);
    assert!(r.has(blob) && r.tree().unwrap().get(&big) == Some(blob), "the big secret is there");
}

/// One call a node made to its storage.
#[derive(Clone, Debug)]
enum Call {
    Write(u64, Vec<u8>),
    Truncate(u64),
    Sync,
}

/// Storage over shared bytes that records every mutating call, so a test can replay any prefix
/// of them (a power cut) onto a copy of the original file.
#[derive(Clone, Default)]
struct Recorder {
    bytes: Arc<Mutex<Vec<u8>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Recorder {
    fn new(bytes: &[u8]) -> Recorder {
        Recorder { bytes: Arc::new(Mutex::new(bytes.to_vec())), calls: Arc::default() }
    }

    fn bytes(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Storage for Recorder {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn read_all(&self) -> std::io::Result<Vec<u8>> {
        Ok(self.bytes())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(Call::Write(offset, data.to_vec()));
        apply(&mut self.bytes.lock().unwrap(), &Call::Write(offset, data.to_vec()));
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(Call::Truncate(len));
        apply(&mut self.bytes.lock().unwrap(), &Call::Truncate(len));
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.calls.lock().unwrap().push(Call::Sync);
        Ok(())
    }
}

/// Applies one call to a file's bytes, as a POSIX file would (writes past EOF extend it).
fn apply(bytes: &mut Vec<u8>, call: &Call) {
    match call {
        Call::Write(offset, data) => {
            let (at, end) = (*offset as usize, *offset as usize + data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[at..end].copy_from_slice(data);
        }
        Call::Truncate(len) => bytes.resize(*len as usize, 0),
        Call::Sync => {}
    }
}

/// Opens a copy of `bytes` through a [`Recorder`], catching a panic so the caller can name the
/// case.
fn open_recorded(bytes: &[u8], case: &str) -> (Node, Recorder) {
    let rec = Recorder::new(bytes);
    let storage = Box::new(rec.clone());
    match catch_unwind(AssertUnwindSafe(|| Node::open_storage(Path::new("rec.node"), storage, &pass(), Access::Write))) {
        Ok(Ok(node)) => (node, rec),
        Ok(Err(e)) => panic!("{case}: {e}"),
        Err(_) => panic!("{case}: open panicked"),
    }
}

/// Compacts a copy of `original` while recording, then cuts the power after every call and in
/// the middle of every write: each resulting file must open at `want`, accept a new save, and
/// compact again, all without changing its content. Returns the recorded calls.
fn compaction_survives_every_crash(original: &[u8], want: &Snapshot) -> Vec<Call> {
    let (mut node, rec) = open_recorded(original, "original");
    node.compact().unwrap();
    assert!(Snapshot::of(&node) == *want, "compaction changed the content in memory");
    let calls = rec.calls();
    assert!(!calls.is_empty());

    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut bytes = original.to_vec();
    for (n, call) in calls.iter().enumerate() {
        cases.push((format!("power cut before call {n} ({})", describe(call)), bytes.clone()));
        if let Call::Write(offset, data) = call {
            for k in [1, FRAME_HEADER_BYTES - 1, FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + 1, SLOT_BYTES / 2, data.len() / 2, data.len() - 1]
            {
                if 0 < k && k < data.len() {
                    let mut torn = bytes.clone();
                    apply(&mut torn, &Call::Write(*offset, data[..k].to_vec()));
                    cases.push((format!("call {n} ({}) torn after {k} bytes", describe(call)), torn));
                }
            }
        }
        apply(&mut bytes, call);
    }
    assert!(bytes == rec.bytes(), "replaying every call rebuilds the compacted file");
    cases.push(("after the last call".into(), bytes));

    for (case, bytes) in &cases {
        let (mut node, rec) = open_recorded(bytes, case);
        let got = Snapshot::of(&node);
        assert!(got == *want, "{case}: {got:?}");
        // What a crash leaves is never kept from the next save, and, unless a write was torn
        // (a compaction cut short reads like a save cut short), never reported.
        assert!(!node.kept_tail(), "{case}: leftovers kept as if no crash could leave them");
        if !case.contains("torn") {
            assert_eq!(node.discarded_tail(), None, "{case}: leftovers reported");
        }
        // The node still works: a save lands (cutting off any remains), and so does compaction.
        node.put(&repo("after"), &secret("crash"), case.as_bytes()).unwrap();
        node.save().unwrap();
        let after = rec.bytes();
        assert_eq!(after.len() as u64, node.file_len(), "{case}: a save left bytes after the log");
        let (got, _) = open_ok(&after, case);
        assert_eq!(got.content.repos[&repo("after")][&secret("crash")], case.as_bytes(), "{case}: the new save is lost");
        let mut without = got.clone();
        without.content.repos.remove(&repo("after"));
        without.heads.remove(&repo("after"));
        assert!(without == *want, "{case}: a save after the crash lost content");
        node.compact().unwrap();
        let (again, _) = open_ok(&rec.bytes(), case);
        assert!(again == got, "{case}: compacting again changed the content");
    }
    calls
}

fn describe(call: &Call) -> String {
    match call {
        Call::Write(offset, data) => format!("write {} bytes at {offset}", data.len()),
        Call::Truncate(len) => format!("truncate to {len}"),
        Call::Sync => "sync".into(),
    }
}

/// A node whose log is mostly superseded saves (many overwrites of a few secrets), with tags.
fn overwritten_node(t: &TempNode) -> (Vec<u8>, Snapshot) {
    overwritten(t.create(), || std::fs::read(&t.path).unwrap())
}

/// [`overwritten_node`] for a node as the first version 1 writers made it (no required
/// features: its compactions leave version 1's marker, not the authenticated END frame).
fn overwritten_v1_node() -> (Vec<u8>, Snapshot) {
    let (mut header, key, _) = polykey::format::header::Header::create(&pass(), crate::util::FAST_KDF).unwrap();
    header.required_features = 0;
    header.wrap(&pass(), crate::util::FAST_KDF, &key).unwrap();
    let rec = Recorder::new(&[]);
    polykey::format::log::write_header(&mut rec.clone(), &mut header, &key).unwrap();
    let node = Node::open_storage(Path::new("v1.node"), Box::new(rec.clone()), &pass(), Access::Write).unwrap();
    overwritten(node, || rec.bytes())
}

fn overwritten(mut node: Node, bytes: impl Fn() -> Vec<u8>) -> (Vec<u8>, Snapshot) {
    let a = repo("a");
    let names = [secret("one"), secret("two"), secret("three")];
    for (i, n) in names.iter().enumerate() {
        node.put(&a, n, b"first").unwrap();
        node.tag(&repo("t"), &secret(&format!("e{i}")), &a, n).unwrap();
    }
    node.save().unwrap();
    for round in 0..9u32 {
        let n = &names[round as usize % names.len()];
        node.put(&a, n, format!("value {round}").as_bytes()).unwrap();
        node.save().unwrap();
    }
    node.untag(&repo("t"), &secret("e1"), false).unwrap();
    node.remove(&a, &names[2]).unwrap();
    node.save().unwrap();
    let want = Snapshot::of(&node);
    drop(node);
    (bytes(), want)
}

/// Compaction that moves the checkpoint to the front and truncates: every crash point opens at
/// the full pre-compaction content.
#[test]
fn compaction_to_the_front_is_crash_safe_at_every_step() {
    let t = TempNode::new();
    let (original, want) = overwritten_node(&t);
    let calls = compaction_survives_every_crash(&original, &want);
    // The path under test: checkpoint at the tail, header, copy to the front, header, truncate.
    assert!(calls.iter().any(|c| matches!(c, Call::Truncate(_))), "{calls:?}");
    let mut end = original.clone();
    calls.iter().for_each(|c| apply(&mut end, c));
    assert!(end.len() < original.len(), "compaction did not shrink the node");
}

/// The same for a node of version 1 without features, whose compaction leaves version 1's
/// marker after the front copy: it still ends the log quietly at every crash point.
#[test]
fn compaction_of_a_version_1_node_is_crash_safe_at_every_step() {
    let (original, want) = overwritten_v1_node();
    assert_eq!(&original[12..16], &[0; 4], "no required features");
    let calls = compaction_survives_every_crash(&original, &want);
    let marker = calls.iter().find_map(|c| match c {
        Call::Write(_, data) if data.len() == FRAME_HEADER_BYTES => Some(data.clone()),
        _ => None,
    });
    let marker = marker.expect("a marker after the front copy");
    assert_eq!((marker[4], &marker[12..16], &marker[24..48]), (0, &[0u8; 4][..], &[0u8; 24][..]), "version 1's marker");
}

/// Compaction right after a compaction: the checkpoint does not fit before itself, so it stays
/// at the tail; every crash point still opens at the same content.
#[test]
fn compaction_at_the_tail_is_crash_safe_at_every_step() {
    let t = TempNode::new();
    let (original, want) = overwritten_node(&t);
    let (mut node, rec) = open_recorded(&original, "original");
    node.compact().unwrap();
    drop(node);
    let compacted = rec.bytes();
    let calls = compaction_survives_every_crash(&compacted, &want);
    assert!(!calls.iter().any(|c| matches!(c, Call::Truncate(_))), "expected the tail-only path: {calls:?}");
}

/// Two nodes built by the same operations have frames of the same sizes at the same places;
/// a frame of one put into the other fails authentication (frames are bound to their node),
/// and swapping two frames of one node is damage too.
#[test]
fn spliced_or_swapped_frames_are_damage() {
    let build = |t: &TempNode| {
        let mut node = t.create();
        for i in 0..4u8 {
            node.put(&repo("a"), &secret("k"), &[i; 64]).unwrap();
            node.save().unwrap();
        }
        drop(node);
        std::fs::read(&t.path).unwrap()
    };
    let (ta, tb) = (TempNode::new(), TempNode::new());
    let (a, b) = (build(&ta), build(&tb));
    let (fa, fb) = (frames(&a), frames(&b));
    let same: Vec<_> = fa.iter().filter(|f| fb.contains(f)).copied().collect();
    assert!(same.len() >= 2, "frames of the same size at the same places: {fa:?} {fb:?}");
    for &(start, end) in &same {
        let mut spliced = b.clone();
        spliced[start as usize..end as usize].copy_from_slice(&a[start as usize..end as usize]);
        match open_copy(&spliced).unwrap() {
            Err(Error::Damaged { offset, what, .. }) => {
                assert_eq!(offset, start);
                assert!(what.contains("authentication"), "{what}");
            }
            // The last frame has nothing valid after it: ignored as a save cut short, reported.
            Ok(node) if end == b.len() as u64 => assert_eq!(node.discarded_tail().map(|d| d.0), Some(start)),
            other => panic!("frame at {start} from another node: {:?}", other.map(|_| ())),
        }
    }
    // Swap two frames of equal length within node B.
    let pair = fb.iter().enumerate().find_map(|(i, x)| fb[i + 1..].iter().find(|y| y.1 - y.0 == x.1 - x.0).map(|y| (*x, *y)));
    let ((s1, e1), (s2, e2)) = pair.expect("two frames of equal length");
    let mut swapped = b.clone();
    swapped[s1 as usize..e1 as usize].copy_from_slice(&b[s2 as usize..e2 as usize]);
    swapped[s2 as usize..e2 as usize].copy_from_slice(&b[s1 as usize..e1 as usize]);
    match open_copy(&swapped).unwrap() {
        Err(Error::Damaged { offset, .. }) => assert_eq!(offset, s1),
        other => panic!("swapped frames: {:?}", other.map(|_| ())),
    }
}

/// A node whose last save was torn opens at the save before; a new save then replaces the torn
/// bytes (the file ends exactly at the new save), and reopening shows the new change only.
#[test]
fn a_save_after_a_torn_tail_cuts_it_off() {
    let (a, keep, torn, new) = (repo("a"), secret("keep"), secret("torn"), secret("new"));
    // Tears shorter and longer than the new save: the longer ones must be cut off, not just
    // overwritten.
    for tear in [FRAME_HEADER_BYTES as u64 / 2, FRAME_HEADER_BYTES as u64 + 100, 3000, 15000] {
        let t = TempNode::new();
        let mut node = t.create();
        node.put(&a, &keep, b"kept").unwrap();
        node.save().unwrap();
        let good_len = node.file_len();
        node.put(&a, &torn, &noise(20000, 7)).unwrap();
        node.save().unwrap();
        drop(node);
        let file = std::fs::OpenOptions::new().write(true).open(&t.path).unwrap();
        file.set_len(good_len + tear).unwrap();
        drop(file);

        let mut node = t.open().unwrap();
        assert_eq!(node.file_len(), good_len, "tear at +{tear}");
        assert!(matches!(node.get(&a, &torn), Err(Error::NotFound { .. })));
        node.put(&a, &new, b"fresh").unwrap();
        node.save().unwrap();
        let end = node.file_len();
        drop(node);
        assert_eq!(std::fs::metadata(&t.path).unwrap().len(), end, "tear at +{tear}: torn bytes remain");

        let node = t.open().unwrap();
        assert_eq!(node.file_len(), end);
        assert_eq!(&node.get(&a, &keep).unwrap()[..], b"kept");
        assert_eq!(&node.get(&a, &new).unwrap()[..], b"fresh");
        assert_eq!(node.secrets(&a).unwrap(), [keep.clone(), new.clone()], "tear at +{tear}");
    }
}
