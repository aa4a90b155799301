//! Fault injection through the storage seam (`polykey::storage::Storage`): every write, sync
//! and truncation of a one-secret save, a multi-frame save, a passphrase change and a
//! compaction is made to fail (ENOSPC, EIO, EROFS), to tear at byte K, to keep failing (a full
//! or read-only disk), or to stop at a power cut. Whatever reached the medium reopens at exactly
//! the old or the new state, never an error and never a mix; the `Node` whose save failed keeps
//! its change, reports the OS error, and writes the change once the fault clears; and the
//! mounted filesystem (`Vfs`) reports the failure to `fsync`, keeps serving reads, and writes
//! the change on a later tick.

use crate::util::{pass, repo, secret, FAST_KDF};
use polykey::storage::Storage;
use polykey::vfs::{FsError, Vfs, ROOT_INO};
use polykey::{Access, Error, Node, Passphrase};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// The errors a failing disk returns: full, broken, read-only.
const ERRNOS: [i32; 3] = [libc::ENOSPC, libc::EIO, libc::EROFS];

/// A mutating storage call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Write,
    Truncate,
    Sync,
}

/// A change to the file that is not yet durable.
#[derive(Clone, Debug)]
enum Mutation {
    Write(u64, Vec<u8>),
    Truncate(u64),
}

/// Applies one change to a file's bytes, as a POSIX file would (writes past EOF extend it).
fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Write(offset, data) => {
            let (at, end) = (*offset as usize, *offset as usize + data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[at..end].copy_from_slice(data);
        }
        Mutation::Truncate(len) => bytes.resize(*len as usize, 0),
    }
}

/// What goes wrong, counted from the moment the fault is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The `n`-th call of kind `op` (0-based) fails with `errno` and has no effect.
    Fail { op: Op, n: usize, errno: i32 },
    /// The `n`-th write applies only its first `k` bytes, then fails with `errno`.
    Tear { n: usize, k: usize, errno: i32 },
    /// Every mutating call from the `n`-th (of any kind) on fails with `errno`: a full,
    /// read-only or failing disk, until the fault is cleared.
    FailFrom { n: usize, errno: i32 },
    /// The power goes off just before the `n`-th mutating call: it and every later call,
    /// reads included, fail with EIO. Only what was synced is sure to be on the medium.
    PowerCut { n: usize },
}

impl Fault {
    /// The OS error the operation must report.
    fn errno(self) -> i32 {
        match self {
            Fault::Fail { errno, .. } | Fault::Tear { errno, .. } | Fault::FailFrom { errno, .. } => errno,
            Fault::PowerCut { .. } => libc::EIO,
        }
    }
}

/// The file as the process sees it (`cache`) and as a power cut would leave it (`durable`,
/// plus some of `unsynced`).
#[derive(Default)]
struct Medium {
    cache: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Mutation>,
    /// Mutating calls since the fault was armed, with their sizes (bytes written).
    calls: Vec<(Op, usize)>,
    fault: Option<Fault>,
    power_off: bool,
}

enum Verdict {
    Go,
    Fail(i32),
    Tear(usize, i32),
}

impl Medium {
    /// Records a call and decides what happens to it.
    fn verdict(&mut self, op: Op, size: usize) -> Verdict {
        let all = self.calls.len();
        let nth = self.calls.iter().filter(|(o, _)| *o == op).count();
        self.calls.push((op, size));
        if self.power_off {
            return Verdict::Fail(libc::EIO);
        }
        match self.fault {
            Some(Fault::Fail { op: o, n, errno }) if o == op && n == nth => Verdict::Fail(errno),
            Some(Fault::Tear { n, k, errno }) if op == Op::Write && n == nth => Verdict::Tear(k, errno),
            Some(Fault::FailFrom { n, errno }) if all >= n => Verdict::Fail(errno),
            Some(Fault::PowerCut { n }) if all >= n => {
                self.power_off = true;
                Verdict::Fail(libc::EIO)
            }
            _ => Verdict::Go,
        }
    }

    fn mutate(&mut self, m: Mutation) {
        apply(&mut self.cache, &m);
        self.unsynced.push(m);
    }
}

/// A [`Storage`] over shared in-memory bytes that fails as it is told to. Clones share the
/// medium, so a test keeps one to arm faults, inspect the bytes and reopen them.
#[derive(Clone)]
struct FaultyStorage(Arc<Mutex<Medium>>);

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl FaultyStorage {
    /// A medium holding `bytes`, all durable.
    fn new(bytes: &[u8]) -> Self {
        FaultyStorage(Arc::new(Mutex::new(Medium { cache: bytes.to_vec(), durable: bytes.to_vec(), ..Medium::default() })))
    }

    fn medium(&self) -> MutexGuard<'_, Medium> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arms `fault` (or clears it, and restores power), counting calls from now on.
    fn arm(&self, fault: Option<Fault>) {
        let mut m = self.medium();
        m.fault = fault;
        m.power_off = false;
        m.calls.clear();
    }

    fn calls(&self) -> Vec<(Op, usize)> {
        self.medium().calls.clone()
    }

    /// The operating system writes back what the process wrote (as it does, in time, when
    /// nothing fails): all of it becomes durable.
    fn write_back(&self) {
        let mut m = self.medium();
        m.durable = m.cache.clone();
        m.unsynced.clear();
    }

    /// The device comes back after losing what was not synced (a power cut survived by the
    /// process, as with a USB stick pulled and put back): the process now sees the durable
    /// bytes, and the fault is cleared.
    fn come_back(&self) {
        let mut m = self.medium();
        m.cache = m.durable.clone();
        m.unsynced.clear();
        m.fault = None;
        m.power_off = false;
    }

    /// What the process sees (and what the disk holds if every write reaches it).
    fn cache(&self) -> Vec<u8> {
        self.medium().cache.clone()
    }

    /// What is durable: the bytes as of the last successful sync.
    fn durable(&self) -> Vec<u8> {
        self.medium().durable.clone()
    }

    /// Every file a crash now could leave: the durable bytes plus the unsynced changes lost,
    /// applied in order up to each one, or with one write half applied: its first half, or
    /// (with `out_of_order`) only its second half, as when sectors reach the disk out of order.
    fn crash_images(&self, out_of_order: bool) -> Vec<(String, Vec<u8>)> {
        let m = self.medium();
        let mut out = vec![("unsynced changes lost".to_owned(), m.durable.clone())];
        let mut img = m.durable.clone();
        for (i, change) in m.unsynced.iter().enumerate() {
            if let Mutation::Write(offset, data) = change {
                let half = data.len() / 2;
                if half > 0 {
                    let mut first = img.clone();
                    apply(&mut first, &Mutation::Write(*offset, data[..half].to_vec()));
                    out.push((format!("unsynced change {i} ({} bytes) half written", data.len()), first));
                }
                if half > 0 && out_of_order {
                    let mut second = img.clone();
                    apply(&mut second, &Mutation::Write(*offset + half as u64, data[half..].to_vec()));
                    out.push((format!("unsynced change {i} ({} bytes) written but its first half", data.len()), second));
                }
            }
            apply(&mut img, change);
            out.push((format!("unsynced changes up to {i} written"), img.clone()));
        }
        assert!(img == m.cache, "replaying the unsynced changes rebuilds what the process sees");
        out
    }
}

impl Storage for FaultyStorage {
    fn len(&self) -> io::Result<u64> {
        let m = self.medium();
        if m.power_off {
            return Err(os_error(libc::EIO));
        }
        Ok(m.cache.len() as u64)
    }

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let m = self.medium();
        if m.power_off {
            return Err(os_error(libc::EIO));
        }
        Ok(m.cache.clone())
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let m = self.medium();
        if m.power_off {
            return Err(os_error(libc::EIO));
        }
        polykey::storage::copy_out(&m.cache, offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut m = self.medium();
        match m.verdict(Op::Write, data.len()) {
            Verdict::Go => {
                m.mutate(Mutation::Write(offset, data.to_vec()));
                Ok(())
            }
            Verdict::Tear(k, errno) => {
                m.mutate(Mutation::Write(offset, data[..k.min(data.len())].to_vec()));
                Err(os_error(errno))
            }
            Verdict::Fail(errno) => Err(os_error(errno)),
        }
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut m = self.medium();
        match m.verdict(Op::Truncate, 0) {
            Verdict::Go => {
                m.mutate(Mutation::Truncate(len));
                Ok(())
            }
            Verdict::Fail(errno) | Verdict::Tear(_, errno) => Err(os_error(errno)),
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut m = self.medium();
        match m.verdict(Op::Sync, 0) {
            Verdict::Go => {
                m.durable = m.cache.clone();
                m.unsynced.clear();
                Ok(())
            }
            Verdict::Fail(errno) | Verdict::Tear(_, errno) => Err(os_error(errno)),
        }
    }
}

/// A node's logical state without inflating any secret: each repository's secrets (name to
/// blob id, a hash of the content), whether each blob is there, and the length of its
/// history; and the tags. Commit ids are left out, since they hold the time of the commit.
#[derive(Clone, PartialEq, Eq)]
struct Snapshot {
    repos: BTreeMap<Vec<u8>, RepoSnapshot>,
    tags: BTreeMap<(Vec<u8>, Vec<u8>), TagTarget>,
}

/// A tag entry's target: (repository, secret).
type TagTarget = (Vec<u8>, Vec<u8>);

/// A repository's secrets (name to (blob id, blob present)) and its history's length.
type RepoSnapshot = (BTreeMap<Vec<u8>, (String, bool)>, usize);

impl Snapshot {
    fn of(node: &Node) -> Snapshot {
        let state = node.state();
        let mut repos = BTreeMap::new();
        for (n, r) in &state.repos {
            let tree = r.tree().unwrap_or_else(|e| panic!("tree of {n}: {e}"));
            let secrets = tree.iter().map(|(s, b)| (s.to_vec(), (b.to_string(), r.has(b)))).collect();
            let history = node.log(n, None).unwrap_or_else(|e| panic!("history of {n}: {e}")).len();
            repos.insert(n.as_bytes().to_vec(), (secrets, history));
        }
        let mut tags = BTreeMap::new();
        for (t, entries) in &state.tags {
            for (e, (r, s)) in entries {
                tags.insert((t.as_bytes().to_vec(), e.as_bytes().to_vec()), (r.as_bytes().to_vec(), s.as_bytes().to_vec()));
            }
        }
        Snapshot { repos, tags }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let repos: Vec<_> =
            self.repos.iter().map(|(r, (s, h))| (l(r), s.keys().map(|k| l(k)).collect::<Vec<_>>(), format!("{h} commits"))).collect();
        write!(f, "repos {repos:?}, {} tag entries", self.tags.len())
    }
}

/// Opens node bytes in memory, catching a panic.
fn open_bytes(bytes: &[u8], pass: &Passphrase) -> Result<Node, String> {
    let storage = FaultyStorage::new(bytes);
    match catch_unwind(AssertUnwindSafe(|| Node::open_storage(Path::new("medium.node"), Box::new(storage), pass, Access::Write))) {
        Ok(Ok(node)) => Ok(node),
        Ok(Err(e)) => Err(format!("{e}")),
        Err(_) => Err("open panicked".into()),
    }
}

/// Opens node bytes on a [`FaultyStorage`] for writing; the storage handle comes back too.
fn open_on_disk(bytes: &[u8], pass: &Passphrase) -> (Node, FaultyStorage) {
    let disk = FaultyStorage::new(bytes);
    let node = Node::open_storage(Path::new("faulty.node"), Box::new(disk.clone()), pass, Access::Write).unwrap();
    (node, disk)
}

/// Which state an image opened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Old,
    New,
}

/// What a scenario does to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `put` of [`Scenario::data`] as `a/new`, then `save`.
    Save,
    /// A passphrase change to [`new_pass`].
    Rekey,
    /// A compaction.
    Compact,
}

fn new_pass() -> Passphrase {
    Passphrase::new(b"the new passphrase".to_vec())
}

/// One operation over one small node, with the states before and after it.
struct Scenario {
    name: &'static str,
    kind: Kind,
    before: Vec<u8>,
    data: Vec<u8>,
    old: Snapshot,
    new: Snapshot,
    /// Inflate and compare every secret of each image (cheap only for small nodes), check a
    /// later save after each case (each check decrypts the whole node), and let unsynced
    /// writes reach the disk out of order (see [`a_multi_frame_save_whose_first_frame_is_lost_opens_at_the_old_state`]).
    thorough: bool,
    /// What each crash image (by its bytes) opened at: many cases leave the same bytes.
    seen: std::cell::RefCell<std::collections::HashMap<Vec<u8>, Which>>,
}

/// Counters for the summary line.
#[derive(Default, Debug)]
struct Stats {
    cases: usize,
    fail: usize,
    tear: usize,
    fail_from: usize,
    power_cut: usize,
    /// Crash images checked (distinct byte strings are opened once).
    images: usize,
    /// Of those, how many opened at the old and at the new state.
    old: usize,
    new: usize,
}

impl Scenario {
    fn new(name: &'static str, kind: Kind, before: Vec<u8>, data: Vec<u8>, thorough: bool) -> Scenario {
        let (mut node, _) = open_on_disk(&before, &pass());
        let old = Snapshot::of(&node);
        let mut sc = Scenario { name, kind, before, data, old: old.clone(), new: old, thorough, seen: Default::default() };
        sc.change(&mut node).unwrap();
        sc.new = Snapshot::of(&node);
        assert!(kind != Kind::Save || sc.new != sc.old);
        sc
    }

    /// Makes the change on a node open at the old state (the first attempt).
    fn change(&self, node: &mut Node) -> polykey::Result<()> {
        match self.kind {
            Kind::Save => {
                node.put(&repo("a"), &secret("new"), &self.data)?;
                node.save().map(drop)
            }
            Kind::Rekey => node.change_passphrase(&new_pass(), FAST_KDF),
            Kind::Compact => node.compact(),
        }
    }

    /// Tries the change again on the node whose first attempt failed. A save retries with
    /// the queue the failed save kept: nothing is put again.
    fn retry(&self, node: &mut Node) -> polykey::Result<()> {
        match self.kind {
            Kind::Save => node.save().map(drop),
            Kind::Rekey => node.change_passphrase(&new_pass(), FAST_KDF),
            Kind::Compact => node.compact(),
        }
    }

    /// The passphrases the node may open with, and the state each means.
    fn passphrases(&self) -> Vec<(Which, Passphrase)> {
        match self.kind {
            Kind::Rekey => vec![(Which::Old, pass()), (Which::New, new_pass())],
            _ => vec![(Which::Old, pass())],
        }
    }

    /// Opens `bytes` and says whether they hold the old or the new state; anything else (an
    /// error, a panic, a mix) is an `Err`. With `want`, the content must be exactly that (a
    /// later save on top), and only the passphrase tells old from new. Returns a node opened
    /// from the bytes too.
    fn classify(&self, bytes: &[u8], want: Option<&Snapshot>) -> Result<(Which, Node), String> {
        let mut opened = Vec::new();
        for (which, p) in self.passphrases() {
            match open_bytes(bytes, &p) {
                Ok(node) => opened.push((which, node)),
                Err(e) if self.kind == Kind::Rekey && e.starts_with("wrong passphrase") => {}
                Err(e) => return Err(e),
            }
        }
        let mut verdict = None;
        for (which, node) in opened {
            let got = catch_unwind(AssertUnwindSafe(|| Snapshot::of(&node))).map_err(|_| "reading the state failed".to_owned())?;
            let state = if let Some(want) = want {
                if got != *want {
                    return Err(format!("opened at {got:?}, expected {want:?}"));
                }
                if self.kind == Kind::Rekey {
                    which
                } else {
                    Which::New
                }
            } else if self.kind == Kind::Rekey {
                // A passphrase change leaves the content alone; the passphrase tells the state.
                if got != self.old {
                    return Err(format!("a passphrase change changed the content: {got:?}"));
                }
                which
            } else if self.kind == Kind::Compact {
                // A compaction leaves the content alone; whether the log was replaced tells.
                if got != self.old {
                    return Err(format!("a compaction changed the content: {got:?}"));
                }
                if node.file_len() == self.before.len() as u64 {
                    Which::Old
                } else {
                    Which::New
                }
            } else if got == self.new {
                Which::New
            } else if got == self.old {
                Which::Old
            } else {
                return Err(format!("opened at a state that is neither the old nor the new one: {got:?}"));
            };
            if self.thorough {
                for r in node.repos() {
                    for s in node.secrets(&r).map_err(|e| e.to_string())? {
                        node.get(&r, &s).map_err(|e| format!("reading {r}/{s}: {e}"))?;
                    }
                }
            }
            // Opening with both passphrases (a passphrase change cut after slot A) counts as new.
            let state = if verdict.as_ref().is_some_and(|(w, _)| *w == Which::New) { Which::New } else { state };
            verdict = Some((state, node));
        }
        verdict.ok_or_else(|| "opens with neither the old nor the new passphrase".into())
    }

    /// [`Scenario::classify`] for a crash image, remembering the answer for equal bytes.
    fn classify_image(&self, bytes: &[u8]) -> Result<Which, String> {
        if let Some(w) = self.seen.borrow().get(bytes) {
            return Ok(*w);
        }
        let (w, _) = self.classify(bytes, None)?;
        self.seen.borrow_mut().insert(bytes.to_vec(), w);
        Ok(w)
    }

    /// The calls the operation makes on a healthy disk.
    fn calls(&self) -> Vec<(Op, usize)> {
        let (mut node, disk) = open_on_disk(&self.before, &pass());
        disk.arm(None);
        self.change(&mut node).unwrap();
        disk.calls()
    }
}

/// Whether `e` is an I/O error carrying `errno`.
fn carries(e: &Error, errno: i32) -> bool {
    matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(errno))
}

/// Runs one fault case. The operation fails with the OS error; every file a crash at that
/// moment could leave opens at the old or the new state. Unless the power went off, the same
/// node object then, with the fault cleared: for a save, retries and lands the kept change;
/// for a passphrase change or a compaction, first saves another change as if nothing had been
/// tried (the node must not have left the file pointing at anything it then overwrites), then
/// retries. Each step is checked by reopening the durable bytes.
fn run_case(sc: &Scenario, fault: Fault, stats: &mut Stats) {
    let case = format!("{}: {fault:?}", sc.name);
    let (mut node, disk) = open_on_disk(&sc.before, &pass());
    disk.arm(Some(fault));
    let e = match catch_unwind(AssertUnwindSafe(|| sc.change(&mut node))) {
        Ok(Ok(())) => panic!("{case}: succeeded despite the fault"),
        Ok(Err(e)) => e,
        Err(_) => panic!("{case}: panicked"),
    };
    assert!(carries(&e, fault.errno()), "{case}: the error does not carry the OS error: {e:?}");
    // In memory the node is at the new state for a save (which keeps its queue), at the old
    // one otherwise.
    match sc.kind {
        Kind::Save => {
            assert!(node.is_dirty(), "{case}: the failed save dropped its queue");
            assert!(Snapshot::of(&node) == sc.new, "{case}: in memory");
        }
        Kind::Rekey | Kind::Compact => assert!(Snapshot::of(&node) == sc.old, "{case}: in memory"),
    }
    for (label, img) in disk.crash_images(sc.thorough) {
        match sc.classify_image(&img) {
            Ok(Which::Old) => stats.old += 1,
            Ok(Which::New) => stats.new += 1,
            Err(why) => panic!("{case}, then a crash with {label}: {why}"),
        }
        stats.images += 1;
    }
    stats.cases += 1;
    match fault {
        Fault::Fail { .. } => stats.fail += 1,
        Fault::Tear { .. } => stats.tear += 1,
        Fault::FailFrom { .. } => stats.fail_from += 1,
        Fault::PowerCut { .. } => stats.power_cut += 1,
    }
    if let Fault::PowerCut { .. } = fault {
        return; // The process went with the power.
    }
    if let Fault::FailFrom { .. } = fault {
        // The disk still fails: a retry fails the same way and loses nothing.
        let e = sc.retry(&mut node).expect_err(&case);
        assert!(carries(&e, fault.errno()), "{case}: retry while the disk fails: {e:?}");
        assert_eq!(node.is_dirty(), sc.kind == Kind::Save, "{case}: a failed retry changed the queue");
    }
    disk.arm(None);
    let durable_at = |node: &Node, step: &str, which: Option<Which>| {
        let img = disk.durable();
        assert!(img == disk.cache(), "{case}, {step}: a successful operation left unsynced bytes");
        match sc.classify(&img, Some(&Snapshot::of(node))) {
            Ok((w, _)) => assert!(which.is_none_or(|x| x == w), "{case}, {step}: opens at the {w:?} state"),
            Err(why) => panic!("{case}, {step}: {why}"),
        }
    };
    if sc.kind == Kind::Save {
        sc.retry(&mut node).unwrap_or_else(|e| panic!("{case}: a retry after the fault cleared: {e}"));
        assert!(!node.is_dirty(), "{case}");
        assert!(Snapshot::of(&node) == sc.new, "{case}: after the retry");
        durable_at(&node, "after the retry", Some(Which::New));
        if !sc.thorough {
            return;
        }
    }
    node.put(&repo("a"), &secret("later"), b"later").unwrap();
    node.save().unwrap_or_else(|e| panic!("{case}: a later save: {e}"));
    // A failed passphrase change is undone by the next write: the old passphrase opens.
    durable_at(&node, "after a later save", if sc.kind == Kind::Rekey { Some(Which::Old) } else { None });
    if sc.kind != Kind::Save {
        sc.retry(&mut node).unwrap_or_else(|e| panic!("{case}: a retry after the fault cleared: {e}"));
        durable_at(&node, "after the retry", Some(Which::New));
    }
}

/// Byte counts at which to tear a write of `len` bytes. A header slot (512 bytes): at each
/// field. A run of frames: inside and around the first frame header (52 bytes), around each
/// 512-byte sector of the first 4 KiB and each 4 KiB page, around the last authentication
/// tag, and every `stride`-th byte.
fn tear_points(len: usize, stride: usize) -> Vec<usize> {
    if len == polykey::format::header::SLOT_BYTES {
        return vec![0, 1, 8, 24, 40, 56, 72, 88, 128, 176, 216, 508, 511];
    }
    let mut k: BTreeSet<usize> = [0, 1, 4, 16, 26, 47, 48, 51, 52, 53, 68, 69, 128].into();
    k.extend((512..len.min(4096)).step_by(512));
    for edge in (4096..len).step_by(4096) {
        k.extend([edge - 1, edge, edge + 1]);
    }
    k.extend([len.saturating_sub(17), len.saturating_sub(16), len.saturating_sub(15), len.saturating_sub(1)]);
    k.extend((0..len).step_by(stride));
    k.into_iter().filter(|&k| k < len).collect()
}

/// Every fault at every call of the scenario's operation (the OS error rotating among
/// [`ERRNOS`]), and each write torn at each of `tears(write length)`.
fn faults_for(calls: &[(Op, usize)], tears: impl Fn(usize) -> Vec<usize>) -> Vec<Fault> {
    let mut faults = Vec::new();
    for op in [Op::Write, Op::Truncate, Op::Sync] {
        for n in 0..calls.iter().filter(|(o, _)| *o == op).count() {
            faults.push(Fault::Fail { op, n, errno: ERRNOS[(faults.len()) % 3] });
        }
    }
    let writes: Vec<usize> = calls.iter().filter(|(o, _)| *o == Op::Write).map(|(_, len)| *len).collect();
    for (n, len) in writes.iter().enumerate() {
        for k in tears(*len) {
            faults.push(Fault::Tear { n, k, errno: ERRNOS[faults.len() % 3] });
        }
    }
    for n in 0..calls.len() {
        faults.push(Fault::FailFrom { n, errno: ERRNOS[n % 3] });
        faults.push(Fault::PowerCut { n });
    }
    faults
}

/// Runs every fault of [`faults_for`] and prints a summary line.
fn exhaust(sc: &Scenario, tears: impl Fn(usize) -> Vec<usize>) -> Stats {
    let calls = sc.calls();
    assert!(!calls.is_empty());
    let mut stats = Stats::default();
    for fault in faults_for(&calls, tears) {
        run_case(sc, fault, &mut stats);
    }
    let ops: Vec<String> =
        calls.iter().map(|(o, n)| if *o == Op::Write { format!("write {n}") } else { format!("{o:?}").to_lowercase() }).collect();
    println!(
        "faultinjection: {}: {} cases over {} calls [{}]: {} failed calls, {} torn writes, {} failing disks, {} power cuts; {} crash images reopened ({} old, {} new)",
        sc.name,
        stats.cases,
        calls.len(),
        ops.join(", "),
        stats.fail,
        stats.tear,
        stats.fail_from,
        stats.power_cut,
        stats.images,
        stats.old,
        stats.new
    );
    assert!(stats.cases > 0, "{stats:?}");
    stats
}

/// A new node on a [`FaultyStorage`].
fn new_node() -> (Node, FaultyStorage) {
    let disk = FaultyStorage::new(&[]);
    let (mut header, key, _) = polykey::format::header::Header::create(&pass(), FAST_KDF).unwrap();
    polykey::format::log::write_header(&mut disk.clone(), &mut header, &key).unwrap();
    open_on_disk(&disk.cache(), &pass())
}

/// A small node: one repository with two secrets and a tag, after two saves.
fn small_node() -> Vec<u8> {
    let (mut node, disk) = new_node();
    node.put(&repo("a"), &secret("one"), b"first secret").unwrap();
    node.tag(&repo("t"), &secret("e"), &repo("a"), &secret("one")).unwrap();
    node.save().unwrap();
    node.put(&repo("a"), &secret("two"), &(0..=255).collect::<Vec<u8>>()).unwrap();
    node.save().unwrap();
    disk.cache()
}

/// A small node with dead space: a removed repository whose secret was bigger than all that
/// is left, so compaction moves the checkpoint to the front of the file and cuts the rest
/// (every step of the compaction runs).
fn node_with_dead_space() -> Vec<u8> {
    let (mut node, disk) = new_node();
    node.put(&repo("a"), &secret("one"), b"first secret").unwrap();
    node.tag(&repo("t"), &secret("e"), &repo("a"), &secret("one")).unwrap();
    node.save().unwrap();
    node.put(&repo("junk"), &secret("big"), &noise(6 << 10, 5)).unwrap();
    node.tag(&repo("t"), &secret("j"), &repo("junk"), &secret("big")).unwrap();
    node.save().unwrap();
    node.remove_repo(&repo("junk")).unwrap();
    node.save().unwrap();
    disk.cache()
}

/// Incompressible bytes (xorshift64*), so a big secret stays big in its zlib object.
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

/// A save of one small secret: one write, one sync. Every call fails, every tear point.
#[test]
fn every_fault_in_a_one_secret_save_leaves_the_old_or_new_state() {
    let sc = Scenario::new("one-secret save", Kind::Save, small_node(), b"a new secret\n".to_vec(), true);
    let stats = exhaust(&sc, |len| tear_points(len, 257));
    assert!(stats.old > 0 && stats.new > 0, "{stats:?}");
}

/// A save of a secret over 4 MiB is two frames in one write; failing it or tearing it
/// anywhere, even after its first frame, leaves the old state. One node keeps the change
/// queued through a chain of faults, as a daemon retrying on a failing disk does, then saves
/// it once the disk recovers. Each attempt encrypts 4 MiB and each reopen decrypts it, about
/// two seconds each in debug builds, so the faults are a sample.
#[test]
fn faults_in_a_multi_frame_save_leave_the_old_or_new_state() {
    let before = small_node();
    let (mut node, disk) = open_on_disk(&before, &pass());
    let old = Snapshot::of(&node);
    node.put(&repo("a"), &secret("big"), &noise((4 << 20) + (64 << 10), 11)).unwrap();
    let new = Snapshot::of(&node);
    let sc = Scenario {
        name: "multi-frame save",
        kind: Kind::Save,
        before,
        data: Vec::new(),
        old,
        new,
        thorough: false,
        seen: Default::default(),
    };
    let frame = polykey::format::log::FRAME_HEADER_BYTES;
    let first_end = frame + polykey::format::log::MAX_FRAME_CIPHERTEXT as usize;
    // Inside the first frame, at its end, and inside the second frame's header; every call
    // failing; a power cut before the sync.
    let faults = [
        Fault::Tear { n: 0, k: frame + 4096, errno: libc::ENOSPC },
        Fault::Tear { n: 0, k: first_end, errno: libc::EIO },
        Fault::Tear { n: 0, k: first_end + frame / 2, errno: libc::EROFS },
        Fault::Fail { op: Op::Write, n: 0, errno: libc::ENOSPC },
        Fault::Fail { op: Op::Sync, n: 0, errno: libc::EIO },
        Fault::PowerCut { n: 1 },
    ];
    let mut stats = Stats::default();
    for fault in faults {
        let case = format!("{}: {fault:?}", sc.name);
        // What the last attempt left reaches the disk (it must read as the old state); then
        // only this attempt's writes are in doubt.
        disk.write_back();
        disk.arm(Some(fault));
        let e = node.save().expect_err(&case);
        assert!(carries(&e, fault.errno()), "{case}: {e:?}");
        assert!(node.is_dirty(), "{case}: the failed save dropped its queue");
        for (label, img) in disk.crash_images(false) {
            match sc.classify_image(&img) {
                Ok(Which::Old) => stats.old += 1,
                Ok(Which::New) => stats.new += 1,
                Err(why) => panic!("{case}, then a crash with {label}: {why}"),
            }
            stats.images += 1;
        }
        if let Fault::PowerCut { .. } = fault {
            disk.come_back();
            stats.power_cut += 1;
        } else {
            stats.fail += 1;
        }
        stats.cases += 1;
    }
    disk.arm(None);
    node.save().unwrap();
    assert!(!node.is_dirty());
    assert!(disk.durable() == disk.cache());
    assert_eq!(sc.classify(&disk.durable(), None).map(|(w, _)| w), Ok(Which::New));
    let last = disk.durable();
    assert_eq!(&open_bytes(&last, &pass()).unwrap().get(&repo("a"), &secret("one")).unwrap()[..], b"first secret");
    println!(
        "faultinjection: {}: {} faults in a row on one node, then a save: {} crash images reopened ({} old, {} new)",
        sc.name, stats.cases, stats.images, stats.old, stats.new
    );
    assert!(stats.old > 0 && stats.new > 0, "{stats:?}");
}

/// A passphrase change writes slot A, syncs, writes slot B, syncs. Cut after slot A, the node
/// opens with either passphrase; a failed change is undone at the next save, so the node then
/// opens with the old one.
#[test]
fn every_fault_in_a_passphrase_change_leaves_the_old_or_new_passphrase() {
    let sc = Scenario::new("passphrase change", Kind::Rekey, small_node(), Vec::new(), true);
    let stats = exhaust(&sc, |len| tear_points(len, 257));
    assert!(stats.old > 0 && stats.new > 0, "{stats:?}");
}

/// A compaction that runs every step: checkpoint appended, header, copy to the front, header,
/// cut. Regressions (both fixed): after a failed header write, the next save cut off the
/// checkpoint that slot A already named, and the node no longer opened; after a failed final
/// truncation, the node appended the next save where the reader no longer looks, so it was lost.
#[test]
fn every_fault_in_a_compaction_leaves_the_content() {
    let sc = Scenario::new("compaction", Kind::Compact, node_with_dead_space(), Vec::new(), true);
    let calls = sc.calls();
    assert!(calls.iter().any(|(o, _)| *o == Op::Truncate), "the compaction moves to the front: {calls:?}");
    exhaust(&sc, |len| tear_points(len, 1499));
}

/// The file a multi-frame save leaves when the power goes before its sync and the disk wrote
/// the sectors of its last frame but not those of its first: the save is not committed (its
/// first frame is gone), so the node must open at the state before it, as when the save is
/// cut short in order. The reader sees a bad frame header followed by a valid frame of the
/// same epoch and takes it for damage in the middle of the log.
#[test]
fn a_multi_frame_save_whose_first_frame_is_lost_opens_at_the_old_state() {
    let before = small_node();
    let (mut node, disk) = open_on_disk(&before, &pass());
    let old = Snapshot::of(&node);
    disk.arm(Some(Fault::PowerCut { n: 1 })); // Just before the sync.
    node.put(&repo("a"), &secret("big"), &noise((4 << 20) + (64 << 10), 3)).unwrap();
    let e = node.save().unwrap_err();
    assert!(carries(&e, libc::EIO), "{e:?}");
    let mut img = disk.cache();
    let first_frame = before.len()..before.len() + polykey::format::log::FRAME_HEADER_BYTES + 4096;
    img[first_frame].fill(0);
    let node = open_bytes(&img, &pass()).unwrap_or_else(|e| panic!("{e}"));
    assert!(Snapshot::of(&node) == old);
    assert_eq!(node.file_len(), before.len() as u64);
}

/// The mounted filesystem over a failing disk: `fsync` of a changed secret fails with an I/O
/// error naming the OS error, reads still show the change, the filesystem knows it has unsaved
/// changes (so unmount refuses), every further attempt fails the same way without losing it,
/// and the first tick after the disk recovers writes it.
#[test]
fn the_filesystem_reports_a_failing_disk_and_saves_once_it_recovers() {
    let before = small_node();
    let (node, disk) = open_on_disk(&before, &pass());
    let mut vfs = Vfs::new(node, 1000, 1000);
    let lookup = |vfs: &mut Vfs, parent, name: &str| vfs.lookup(parent, name.as_bytes()).unwrap().ino;
    let repos = lookup(&mut vfs, ROOT_INO, "repos");
    let a = lookup(&mut vfs, repos, "a");
    let one = lookup(&mut vfs, a, "one");
    for (round, errno) in ERRNOS.into_iter().enumerate() {
        let value = format!("changed while the disk fails ({round})");
        let fh = vfs.open(one, true).unwrap();
        vfs.write(one, 0, value.as_bytes()).unwrap();
        let durable = disk.durable();
        disk.arm(Some(Fault::FailFrom { n: 0, errno }));
        let message = io::Error::from_raw_os_error(errno).to_string();
        match vfs.fsync(one, Some(fh)) {
            Err(FsError::Io(why)) => assert!(why.contains(&message), "{why}"),
            other => panic!("fsync on a failing disk: {other:?}"),
        }
        assert_eq!(&vfs.read(one, 0, 4096).unwrap()[..], value.as_bytes(), "reads show the change");
        assert!(vfs.has_unsaved());
        for attempt in [vfs.tick(), vfs.flush(one, fh), vfs.fsync(one, Some(fh)), vfs.tick()] {
            assert!(matches!(attempt, Err(FsError::Io(ref why)) if why.contains(&message)), "{attempt:?}");
            assert!(vfs.has_unsaved());
        }
        assert!(disk.durable() == durable, "a failing disk took a write");
        assert_eq!(&vfs.read(one, 0, 4096).unwrap()[..], value.as_bytes());
        disk.arm(None);
        vfs.tick().unwrap();
        assert!(!vfs.has_unsaved());
        vfs.release(one, fh).unwrap();
        let back = open_bytes(&disk.durable(), &pass()).unwrap();
        assert_eq!(&back.get(&repo("a"), &secret("one")).unwrap()[..], value.as_bytes(), "round {round}");
        assert_eq!(&back.get(&repo("a"), &secret("two")).unwrap()[..], &(0..=255).collect::<Vec<u8>>()[..]);
    }
    // A power cut in the middle of a save made through the filesystem: the file reopens at the
    // state before it, and the filesystem reports the failure.
    let fh = vfs.open(one, true).unwrap();
    vfs.write(one, 0, b"lost with the power").unwrap();
    let durable = disk.durable();
    disk.arm(Some(Fault::PowerCut { n: 1 }));
    assert!(matches!(vfs.fsync(one, Some(fh)), Err(FsError::Io(_))));
    assert!(vfs.has_unsaved());
    for (label, img) in disk.crash_images(true) {
        let back = open_bytes(&img, &pass()).unwrap_or_else(|e| panic!("{label}: {e}"));
        let got = back.get(&repo("a"), &secret("one")).unwrap().to_vec();
        let old = open_bytes(&durable, &pass()).unwrap().get(&repo("a"), &secret("one")).unwrap().to_vec();
        assert!(got == old || got == b"lost with the power", "{label}: {:?}", String::from_utf8_lossy(&got));
    }
}
