//! The frame log: encrypted, position-bound frames appended after the header.
//!
//! A save appends one transaction (one or more frames, the last flagged COMMIT) and syncs
//! once, so its cost is the size of the change, not of the node. Replay applies committed
//! transactions only. The rules that tell a torn tail (a save cut short: the node opens at its
//! last complete state) from damage (an error) are in docs/FORMAT.md, "Reading the log".

use super::header::{Header, FEATURE_AUTHENTICATED_END, SLOT_BYTES};
use crate::crypto::aead;
use crate::secret::Key;
use crate::storage::Storage;
use std::collections::VecDeque;
use std::io;
use zeroize::Zeroizing;

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 52;
/// The magic at the start of every frame.
pub const FRAME_MAGIC: &[u8; 4] = b"PKFR";
/// The last frame of a transaction.
pub const FLAG_COMMIT: u8 = 1;
/// The transaction replaces the whole state (a checkpoint).
pub const FLAG_RESET: u8 = 2;
/// The frame continues a transaction begun by an earlier frame. Readers use it only to tell a
/// save cut short from damage (see `valid_frame_after`); older writers may not have set it.
pub const FLAG_CONTINUES: u8 = 4;
/// The frame ends the log: what follows it is the remains of the log before a compaction. Only
/// on nodes with [`FEATURE_AUTHENTICATED_END`](super::header::FEATURE_AUTHENTICATED_END), whose
/// compactions leave this authenticated frame where v1 left a marker anyone could forge.
pub const FLAG_END: u8 = 8;
/// Bytes of the end marker a compaction leaves: an empty frame.
const END_MARKER_BYTES: u64 = (FRAME_HEADER_BYTES + aead::TAG_BYTES) as u64;
/// Largest plaintext the writer puts in one frame.
pub const MAX_FRAME_PLAINTEXT: usize = 4 << 20;
/// Largest ciphertext a reader accepts in one frame (bounds allocation on hostile input).
pub const MAX_FRAME_CIPHERTEXT: u32 = (MAX_FRAME_PLAINTEXT + aead::TAG_BYTES) as u32;

const AAD_CONTEXT: &[u8] = b"polykey v1 frame";

/// Where the log stands: the next frame's epoch and sequence number and its offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Epoch of the current log.
    pub epoch: u32,
    /// Sequence number of the next frame.
    pub next_seq: u64,
    /// Offset just past the last committed transaction.
    pub end: u64,
}

/// One committed transaction as replayed.
pub struct Transaction {
    /// Offset of its first frame.
    pub offset: u64,
    /// Whether it is a checkpoint that replaces the whole state.
    pub reset: bool,
    /// Its plaintext (a tar stream of journal records).
    pub plaintext: Zeroizing<Vec<u8>>,
}

/// Damage found while reading the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Damage {
    /// Offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// The outcome of a replay.
#[derive(Debug)]
pub struct Replayed {
    /// Where the next transaction goes.
    pub position: Position,
    /// Whether bytes follow the last committed transaction (a torn save, or the remains of
    /// an interrupted compaction); the next write cuts them off.
    pub has_tail: bool,
    /// A save that was cut short or damaged at the end of the log, ignored: where it starts
    /// and why. (The remains of an interrupted compaction are not reported.)
    pub discarded: Option<Damage>,
    /// The ignored bytes are not something a crash leaves (a frame header of an older epoch
    /// where no compaction put one): they may hide saves, so no write may cut them off.
    pub keep_tail: bool,
}

struct FrameHeader {
    flags: u8,
    epoch: u32,
    len: u32,
    seq: u64,
    nonce: [u8; aead::NONCE_BYTES],
}

impl FrameHeader {
    fn encode(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut b = [0u8; FRAME_HEADER_BYTES];
        b[0..4].copy_from_slice(FRAME_MAGIC);
        b[4] = self.flags;
        b[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        b[12..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..48].copy_from_slice(&self.nonce);
        let crc = crc32fast::hash(&b[..48]);
        b[48..52].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` if the magic, checksum or reserved bits are wrong, or a flag is set that the
    /// node's header does not allow (see [`known_flags`]).
    fn decode(b: &[u8], flags: u8) -> Option<FrameHeader> {
        let crc = u32::from_le_bytes(b[48..52].try_into().ok()?);
        if &b[0..4] != FRAME_MAGIC || crc32fast::hash(&b[..48]) != crc || b[5..8] != [0; 3] || b[4] & !flags != 0 {
            return None;
        }
        Some(FrameHeader {
            flags: b[4],
            epoch: u32::from_le_bytes(b[8..12].try_into().ok()?),
            len: u32::from_le_bytes(b[12..16].try_into().ok()?),
            seq: u64::from_le_bytes(b[16..24].try_into().ok()?),
            nonce: b[24..48].try_into().ok()?,
        })
    }
}

/// The frame flags a node with `header` may use.
fn known_flags(header: &Header) -> u8 {
    let end = if header.required_features & FEATURE_AUTHENTICATED_END != 0 { FLAG_END } else { 0 };
    FLAG_COMMIT | FLAG_RESET | FLAG_CONTINUES | end
}

/// A frame's associated data: the node's id, the frame header, and the frame's offset, so a
/// frame cannot be moved to another node, another place, or another epoch.
fn aad(node_id: &[u8; 16], header: &[u8], offset: u64) -> [u8; AAD_BYTES] {
    let mut aad = [0u8; AAD_BYTES];
    let parts: [&[u8]; 4] = [AAD_CONTEXT, node_id, &header[..48], &offset.to_le_bytes()];
    let mut at = 0;
    for part in parts {
        aad[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    aad
}

/// Bytes of a frame's associated data.
const AAD_BYTES: usize = 16 + 16 + 48 + 8;

/// Receives the committed transactions of a replay, frame by frame, as they are decrypted:
/// the whole log is never in memory at once.
pub trait Sink {
    /// The next frame's plaintext of the transaction that begins at `offset` (`first` for its
    /// first frame; `reset` is the transaction's RESET flag). The buffer is wiped afterwards.
    fn frame(&mut self, offset: u64, first: bool, reset: bool, plaintext: &[u8]);
    /// The transaction whose frames were given is committed: apply it, or say what is wrong
    /// with it (damage at its offset). `whole` decrypts its plaintext again, in one piece, for
    /// a sink that needs it so.
    fn commit(&mut self, whole: &mut dyn FnMut() -> io::Result<Zeroizing<Vec<u8>>>) -> Result<(), ApplyError>;
}

/// Why a committed transaction could not be applied.
#[derive(Debug)]
pub enum ApplyError {
    /// Its journal is damaged (or contradicts the state): damage at the transaction.
    Damaged(String),
    /// Reading it again failed.
    Io(io::Error),
}

impl From<String> for ApplyError {
    fn from(what: String) -> Self {
        ApplyError::Damaged(what)
    }
}

/// Why a replay stopped.
#[derive(Debug)]
pub enum ReplayError {
    /// The log is damaged.
    Damaged(Damage),
    /// The file could not be read.
    Io(io::Error),
}

/// Positional reads of the node file: `read(offset, buf)` fills `buf` or fails.
type ReadAt<'a> = &'a dyn Fn(u64, &mut [u8]) -> io::Result<()>;
/// The next run of data at or after an offset, skipping holes (see [`Storage::data_after`]).
type DataAt<'a> = &'a dyn Fn(u64) -> io::Result<Option<(u64, u64)>>;

/// Bytes `valid_frame_after` reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Whether a frame header that begins a transaction of the log starts anywhere after `from`:
/// one of the current epoch with a sequence number of at least `seq`, or the first frame of a
/// checkpoint of the next epoch (a compaction's). Then a failure at `from` is damage inside
/// the log, not the end of a save that was cut short. (Later frames of the failing save
/// itself prove nothing: a power cut can land a save's last frame but not its first.)
///
/// Reads the data of the rest of the file a chunk at a time, chunks overlapping by a frame
/// header less one byte so that every offset is tried, and skips holes: a frame header
/// begins with "PKFR", never with the zeros a hole reads as, so a sparse tail costs what its
/// data costs, not its length.
fn valid_frame_after(read: ReadAt<'_>, data: DataAt<'_>, eof: u64, header: &Header, from: u64, seq: u64) -> io::Result<bool> {
    let hb = FRAME_HEADER_BYTES as u64;
    let flags = known_flags(header);
    let next = header.epoch.wrapping_add(1);
    let begins = |fh: FrameHeader| {
        (fh.epoch == header.epoch && fh.seq >= seq && fh.flags & FLAG_CONTINUES == 0)
            || (fh.epoch == next && fh.seq == 0 && fh.flags & FLAG_RESET != 0)
    };
    let mut start = from + 1;
    let mut buf = vec![0u8; SCAN_CHUNK + FRAME_HEADER_BYTES - 1];
    while start + hb <= eof {
        let Some((run, run_end)) = data(start)? else { return Ok(false) };
        let (mut at, run_end) = (run.max(start), run_end.min(eof));
        // Headers that begin in at..run_end; the last ones read on into what follows.
        while at < run_end && at + hb <= eof {
            let starts = (run_end - at).min(SCAN_CHUNK as u64);
            let n = (starts + hb - 1).min(eof - at) as usize;
            read(at, &mut buf[..n])?;
            if buf[..n].windows(FRAME_HEADER_BYTES).any(|w| w.starts_with(FRAME_MAGIC) && FrameHeader::decode(w, flags).is_some_and(begins))
            {
                return Ok(true);
            }
            at += starts;
        }
        start = run_end.max(start + 1);
    }
    Ok(false)
}

/// What ends the log at a frame of another epoch than the header's.
enum OtherEpoch {
    /// What an interrupted compaction leaves: ignored, not reported, cut off by the next write.
    Leftover,
    /// Ignored and reported, like a save cut short; cut off by the next write.
    CutShort(Damage),
    /// Ignored and reported; no write may cut it off (it may hide saves).
    Kept(Damage),
}

/// Whether `hb` is the marker of a version 1 compaction (docs/FORMAT.md, "Compaction"):
/// a frame header of the epoch before the header's, flags 0, `len` 0, `seq` 0, zero nonce.
fn is_v1_marker(hb: &[u8; FRAME_HEADER_BYTES], fh: &FrameHeader, header: &Header) -> bool {
    header.epoch >= 2 && fh.epoch == header.epoch - 1 && fh.flags == 0 && fh.len == 0 && fh.seq == 0 && hb[24..48] == [0; 24]
}

/// The frame of epoch `fh.epoch` at `at`, where the log of `header` ends (no transaction is
/// pending): the remains of an interrupted compaction, a compaction cut short, or something
/// no crash leaves (damage, or bytes kept). See docs/FORMAT.md, "Reading the log".
#[allow(clippy::too_many_arguments)] // The file, the node, and where and what the frame is.
fn other_epoch(
    read: ReadAt<'_>,
    data: DataAt<'_>,
    eof: u64,
    header: &Header,
    key: &Key,
    at: u64,
    seq: u64,
    hb: &[u8; FRAME_HEADER_BYTES],
    fh: &FrameHeader,
) -> Result<OtherEpoch, ReplayError> {
    let damage = |offset: u64, what: String| ReplayError::Damaged(Damage { offset, what });
    let what = format!("frame of epoch {} where the log of epoch {} ends", fh.epoch, header.epoch);
    let after = |from: u64, seq: u64| valid_frame_after(read, data, eof, header, from, seq).map_err(ReplayError::Io);
    if fh.epoch == header.epoch.wrapping_add(1) && fh.seq == 0 && fh.flags & FLAG_RESET != 0 {
        return next_epoch_checkpoint(read, data, eof, header, key, at);
    }
    let v1 = header.required_features & FEATURE_AUTHENTICATED_END == 0;
    if v1 && at == header.base_end && is_v1_marker(hb, fh, header) {
        if after(at, seq)? {
            return Err(damage(at, "frames of the log after a compaction marker".into()));
        }
        return Ok(OtherEpoch::Leftover);
    }
    if fh.epoch > header.epoch {
        // No crash leaves a newer epoch here but the start of a compaction's checkpoint: the
        // header is older than the log (an old copy of it put back?).
        return Err(damage(at, format!("{what}: the header is older than the log")));
    }
    if after(at, seq)? {
        return Err(damage(at, what));
    }
    Ok(OtherEpoch::Kept(Damage { offset: at, what: format!("{what}, not left by a compaction") }))
}

/// The checkpoint of the next epoch at `at`, where the log ends: a compaction that stopped
/// before it moved the header (step 1). It is the remains of one if its frames authenticate
/// and it runs to the end of the file (or is cut by it after its first frame); a compaction
/// cut short (reported) if its first frame runs past the end of the file, or a frame of it
/// does not authenticate and nothing of the log follows; anything else is damage.
fn next_epoch_checkpoint(
    read: ReadAt<'_>,
    data: DataAt<'_>,
    eof: u64,
    header: &Header,
    key: &Key,
    at: u64,
) -> Result<OtherEpoch, ReplayError> {
    let epoch = header.epoch.wrapping_add(1);
    let flags = known_flags(header);
    let what =
        |s: &str| Damage { offset: at, what: format!("checkpoint of epoch {epoch} where the log of epoch {} ends: {s}", header.epoch) };
    let (mut p, mut seq) = (at, 0u64);
    let mut buf = Zeroizing::new(Vec::new());
    let failed = loop {
        if eof - p < FRAME_HEADER_BYTES as u64 {
            break None; // Cut inside a frame header, or at a frame's end.
        }
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        read(p, &mut hb).map_err(ReplayError::Io)?;
        let Some(fh) = FrameHeader::decode(&hb, flags) else { break Some(p) };
        if fh.epoch != epoch || fh.seq != seq || fh.len > MAX_FRAME_CIPHERTEXT || (fh.len as usize) < aead::TAG_BYTES {
            break Some(p);
        }
        let end = p + FRAME_HEADER_BYTES as u64 + u64::from(fh.len);
        if end > eof {
            break None; // Cut inside a frame.
        }
        let len = fh.len as usize;
        ensure_len(&mut buf, len);
        read(p + FRAME_HEADER_BYTES as u64, &mut buf[..len]).map_err(ReplayError::Io)?;
        if aead::open_in_place(key, &fh.nonce, &aad(&header.node_id, &hb, p), &mut buf[..len]).is_none() {
            break Some(p);
        }
        (p, seq) = (end, seq + 1);
        if fh.flags & FLAG_COMMIT != 0 {
            // A compaction appends its checkpoint after cutting the file where the log ends.
            if p != eof {
                return Err(ReplayError::Damaged(what("more follows it (an old header?)")));
            }
            break None;
        }
    };
    match failed {
        None if p > at => Ok(OtherEpoch::Leftover),
        None => Ok(OtherEpoch::CutShort(what("compaction cut short"))),
        Some(f) if valid_frame_after(read, data, eof, header, f, 0).map_err(ReplayError::Io)? => Err(ReplayError::Damaged(what("damaged"))),
        Some(_) => Ok(OtherEpoch::CutShort(what("compaction cut short"))),
    }
}

/// Makes `buf` at least `len` bytes long without a reallocation that would leave a copy of
/// its plaintext behind: a larger buffer replaces it, and the old one is wiped as it drops.
fn ensure_len(buf: &mut Zeroizing<Vec<u8>>, len: usize) {
    if buf.len() < len {
        // Room for larger frames to come, but never beyond the largest frame: all of it is
        // touched when it is wiped.
        let room = len.next_power_of_two().clamp(4096, MAX_FRAME_CIPHERTEXT as usize);
        *buf = Zeroizing::new(vec![0u8; room.max(len)]);
    }
}

/// Replays the log of `file`, calling `apply` with each committed transaction in order.
/// `apply` may fail (the journal inside is damaged); its error becomes damage at the
/// transaction's offset. (Opening a node streams the log instead: see [`replay_storage`].)
pub fn replay(file: &[u8], header: &Header, key: &Key, apply: impl FnMut(Transaction) -> Result<(), String>) -> Result<Replayed, Damage> {
    struct Whole<F>(Option<Transaction>, F);
    impl<F: FnMut(Transaction) -> Result<(), String>> Sink for Whole<F> {
        fn frame(&mut self, offset: u64, first: bool, reset: bool, plaintext: &[u8]) {
            if first {
                self.0 = Some(Transaction { offset, reset, plaintext: Zeroizing::default() });
            }
            let txn = self.0.as_mut().expect("a first frame came before");
            crate::secret::reserve(&mut txn.plaintext, plaintext.len(), usize::MAX);
            txn.plaintext.extend_from_slice(plaintext);
        }
        fn commit(&mut self, _: &mut dyn FnMut() -> io::Result<Zeroizing<Vec<u8>>>) -> Result<(), ApplyError> {
            let txn = self.0.take().expect("frames came before the commit");
            (self.1)(txn).map_err(ApplyError::Damaged)
        }
    }
    let read = |offset: u64, buf: &mut [u8]| crate::storage::copy_out(file, offset, buf);
    let eof = file.len() as u64;
    let data = |offset: u64| Ok((offset < eof).then_some((offset, eof)));
    let ahead = read_ahead_for(header, eof);
    replay_with(&read, &data, eof, header, key, &mut Whole(None, apply), ahead).map_err(|e| match e {
        ReplayError::Damaged(d) => d,
        ReplayError::Io(e) => Damage { offset: 0, what: format!("cannot read: {e}") },
    })
}

/// Replays the log of the node in `storage`, one frame in memory at a time, handing each
/// frame's plaintext to `sink` and committing each transaction as its COMMIT frame is read.
pub fn replay_storage(storage: &dyn Storage, header: &Header, key: &Key, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
    // What can be read, not the recorded size: a stick pulled mid-write may claim more.
    let eof = storage.readable_len().map_err(ReplayError::Io)?;
    let read = |offset: u64, buf: &mut [u8]| storage.read_exact_at(offset, buf);
    let data = |offset: u64| storage.data_after(offset);
    replay_with(&read, &data, eof, header, key, sink, read_ahead_for(header, eof))
}

/// Logs at least this long are replayed with a second thread decrypting ahead of the replay.
const READ_AHEAD_MIN_LOG: u64 = 256 << 10;
/// Ciphertext bytes read and handed to the decrypting thread ahead of the replay (at least one
/// frame is, whatever its size): a few frames in memory at once.
const READ_AHEAD_BYTES: usize = 2 << 20;
/// At most this many frames ahead, however small.
const READ_AHEAD_MAX_FRAMES: usize = 64;

/// Whether a log is worth a decrypting thread: its read-ahead budget in bytes, or `None` for
/// a short log or a machine with one processor.
fn read_ahead_for(header: &Header, eof: u64) -> Option<usize> {
    let long = eof.saturating_sub(header.log_start) >= READ_AHEAD_MIN_LOG;
    (long && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)).then_some(READ_AHEAD_BYTES)
}

/// A frame's ciphertext to decrypt, in a buffer of at least `len` bytes.
struct Job {
    buf: Zeroizing<Vec<u8>>,
    len: usize,
    nonce: [u8; aead::NONCE_BYTES],
    aad: [u8; AAD_BYTES],
}

impl Job {
    /// Decrypts the frame in place: its buffer, and the length of its plaintext (or `None`).
    fn run(mut self, key: &Key) -> Decrypted {
        let opened = aead::open_in_place(key, &self.nonce, &self.aad, &mut self.buf[..self.len]);
        (self.buf, opened)
    }
}

/// A frame's buffer after decryption, and the length of its plaintext if it authenticated.
type Decrypted = (Zeroizing<Vec<u8>>, Option<usize>);

/// What the replay and the decrypting thread share: frames read ahead, by number.
#[derive(Default)]
struct Shared {
    /// Frames nobody has begun to decrypt, in log order.
    todo: VecDeque<(u64, Job)>,
    /// Frames decrypted and not yet taken by the replay.
    done: Vec<(u64, Decrypted)>,
    /// The replay waits for a frame the thread is decrypting.
    replay_waits: bool,
    /// The thread waits for frames.
    thread_waits: bool,
    /// The replay is over (or the thread is gone): no more work.
    stop: bool,
    /// Buffers for the thread to wipe as it stops (half of the work of wiping them all).
    wipe: Vec<Zeroizing<Vec<u8>>>,
}

/// [`Shared`] behind its lock, and the signal either side waits on.
#[derive(Default)]
struct Pool {
    shared: std::sync::Mutex<Shared>,
    signal: std::sync::Condvar,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'g>(&self, guard: std::sync::MutexGuard<'g, Shared>) -> std::sync::MutexGuard<'g, Shared> {
        self.signal.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The decrypting thread: the oldest frames first, until the replay is over.
    fn decrypt(&self, key: &Key) {
        // Ends the replay's wait for this thread, however the thread ends.
        struct Gone<'p>(&'p Pool);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                self.0.lock().stop = true;
                self.0.signal.notify_all();
            }
        }
        let _gone = Gone(self);
        let mut shared = self.lock();
        loop {
            if shared.stop {
                let wipe = std::mem::take(&mut shared.wipe);
                drop(shared);
                drop(wipe);
                return;
            }
            let Some((n, job)) = shared.todo.pop_front() else {
                shared.thread_waits = true;
                shared = self.wait(shared);
                shared.thread_waits = false;
                continue;
            };
            drop(shared);
            let decrypted = job.run(key);
            shared = self.lock();
            if shared.stop {
                return; // The buffer is wiped as it drops.
            }
            shared.done.push((n, decrypted));
            if shared.replay_waits {
                self.signal.notify_all();
            }
        }
    }
}

/// A frame read ahead: its number, where it is, its header and its length.
struct Ahead {
    n: u64,
    at: u64,
    hb: [u8; FRAME_HEADER_BYTES],
    len: usize,
}

/// Reading ahead, seen from the replay.
struct Reader<'a> {
    pool: &'a Pool,
    /// The frames read ahead, in log order (they are decrypting or decrypted).
    queue: VecDeque<Ahead>,
    /// Ciphertext bytes in `queue`.
    queued: usize,
    budget: usize,
    /// Number of the next frame read ahead.
    count: u64,
    /// Where reading ahead goes on, and the sequence number a frame there must have; `None`
    /// once it met anything but a plain next frame (the replay reads that itself).
    next: Option<(u64, u64)>,
}

/// Where the replay gets its frames: positional reads, plus (for a long log) reading ahead,
/// with a second thread decrypting the next frames while the replay applies this one (and
/// the replay, rather than wait for that thread, decrypting the last frame read ahead).
///
/// The replay sees exactly what reading and decrypting each frame as it comes to it would
/// give: frames are read ahead only while they are the plain continuation of the log (the
/// replay's own checks on a frame header pass), the replay takes them in log order, and a
/// failure to read ahead is not kept (the replay reads that place itself when, and if, it
/// gets there). Every buffer is wiped as it drops, wherever it is when the replay stops.
struct Frames<'a> {
    read: ReadAt<'a>,
    data: DataAt<'a>,
    eof: u64,
    header: &'a Header,
    key: &'a Key,
    ahead: Option<Reader<'a>>,
    /// The buffer of the frame the replay has now.
    current: Zeroizing<Vec<u8>>,
    /// Buffers to reuse.
    spare: Vec<Zeroizing<Vec<u8>>>,
}

/// Buffers kept for reuse.
const SPARE_BUFFERS: usize = 4;

impl Drop for Frames<'_> {
    fn drop(&mut self) {
        let Some(r) = &self.ahead else { return };
        // Stops the thread, which wipes half of the buffers as it goes (the other half, and
        // the frames nobody took, are wiped here meanwhile).
        let mut buffers = std::mem::take(&mut self.spare);
        buffers.push(std::mem::take(&mut self.current));
        let mine = buffers.split_off(buffers.len() / 2);
        let mut shared = r.pool.lock();
        shared.stop = true;
        shared.wipe.extend(buffers);
        let (todo, done) = (std::mem::take(&mut shared.todo), std::mem::take(&mut shared.done));
        drop(shared);
        r.pool.signal.notify_all();
        drop((todo, done, mine));
    }
}

impl<'a> Frames<'a> {
    /// Frames read and decrypted as the replay asks for them.
    fn new(read: ReadAt<'a>, data: DataAt<'a>, eof: u64, header: &'a Header, key: &'a Key) -> Self {
        Frames { read, data, eof, header, key, ahead: None, current: Zeroizing::default(), spare: Vec::new() }
    }

    /// Reads up to `budget` bytes ahead, decrypted by a thread of `scope` too (unless no
    /// thread can be started: then frames come as [`Frames::new`] gives them).
    fn read_ahead_with<'s>(&mut self, scope: &'s std::thread::Scope<'s, '_>, pool: &'a Pool, budget: usize)
    where
        'a: 's,
    {
        let key = self.key;
        if std::thread::Builder::new().name("polykey-decrypt".into()).spawn_scoped(scope, move || pool.decrypt(key)).is_ok() {
            let next = Some((self.header.log_start, 0));
            self.ahead = Some(Reader { pool, queue: VecDeque::new(), queued: 0, budget, count: 0, next });
        }
    }

    /// A buffer of at least `len` bytes.
    fn buffer(&mut self, len: usize) -> Zeroizing<Vec<u8>> {
        let mut buf = self.spare.pop().unwrap_or_default();
        ensure_len(&mut buf, len);
        buf
    }

    /// Keeps `buf` for reuse (or wipes it).
    fn recycle(&mut self, buf: Zeroizing<Vec<u8>>) {
        if !buf.is_empty() && self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
    }

    /// The header of the frame at `at`, where the replay expects sequence number `seq`. The
    /// replay is done with the frame before.
    fn header(&mut self, at: u64, seq: u64) -> io::Result<[u8; FRAME_HEADER_BYTES]> {
        let done = std::mem::take(&mut self.current);
        self.recycle(done);
        if self.ahead.as_ref().is_some_and(|r| r.queue.is_empty() && r.next == Some((at, seq))) {
            self.read_ahead();
        }
        if let Some(ahead) = self.ahead.as_ref().and_then(|r| r.queue.front()).filter(|a| a.at == at) {
            return Ok(ahead.hb);
        }
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        (self.read)(at, &mut hb)?;
        Ok(hb)
    }

    /// The frame at `at` (whose header `hb`, decoded as `fh`, passed the replay's checks):
    /// its buffer, and the length of its plaintext at the start of it, or `None` if it does
    /// not authenticate.
    fn body(&mut self, at: u64, hb: &[u8; FRAME_HEADER_BYTES], fh: &FrameHeader) -> io::Result<(&[u8], Option<usize>)> {
        let len = fh.len as usize;
        if let Some(r) = self.ahead.as_mut().filter(|r| r.queue.front().is_some_and(|a| a.at == at)) {
            let ahead = r.queue.pop_front().expect("a frame is queued");
            debug_assert!(ahead.hb == *hb && ahead.len == len);
            r.queued -= ahead.len;
            // Read the next frames while this one is decrypted.
            self.read_ahead();
            let (buf, opened) = self.take(ahead.n)?;
            self.current = buf;
            return Ok((&self.current[..len], opened));
        }
        let mut buf = self.buffer(len);
        (self.read)(at + FRAME_HEADER_BYTES as u64, &mut buf[..len])?;
        let opened = aead::open_in_place(self.key, &fh.nonce, &aad(&self.header.node_id, hb, at), &mut buf[..len]);
        self.current = buf;
        Ok((&self.current[..len], opened))
    }

    /// Frame `n` read ahead, decrypted: by the thread, or by the replay itself (the last frame
    /// read ahead first) while it would otherwise wait.
    fn take(&mut self, n: u64) -> io::Result<Decrypted> {
        let pool = self.ahead.as_ref().expect("frames were read ahead").pool;
        let mut shared = pool.lock();
        loop {
            if let Some(i) = shared.done.iter().position(|d| d.0 == n) {
                return Ok(shared.done.swap_remove(i).1);
            }
            if let Some((m, job)) = shared.todo.pop_back() {
                drop(shared);
                let decrypted = job.run(self.key);
                shared = pool.lock();
                shared.done.push((m, decrypted));
                continue;
            }
            if shared.stop {
                return Err(io::Error::other("the decrypting thread stopped"));
            }
            // The thread has frame `n`.
            shared.replay_waits = true;
            shared = pool.wait(shared);
            shared.replay_waits = false;
        }
    }

    /// Reads frames ahead for decryption, while they are the plain continuation of the log
    /// and the budget allows (at least one frame).
    fn read_ahead(&mut self) {
        let header = self.header;
        loop {
            let Some(r) = self.ahead.as_mut() else { return };
            let Some((at, seq)) = r.next else { return };
            if !r.queue.is_empty() && (r.queued >= r.budget || r.queue.len() >= READ_AHEAD_MAX_FRAMES) {
                return;
            }
            r.next = None; // Unless this frame turns out to be a plain one.
            if self.eof.saturating_sub(at) < FRAME_HEADER_BYTES as u64 {
                return;
            }
            let mut hb = [0u8; FRAME_HEADER_BYTES];
            if (self.read)(at, &mut hb).is_err() {
                return;
            }
            // The replay's own checks, which a frame must pass to be decrypted.
            let Some(fh) = FrameHeader::decode(&hb, known_flags(header)) else { return };
            let end = at + FRAME_HEADER_BYTES as u64 + u64::from(fh.len);
            if fh.epoch != header.epoch
                || fh.seq != seq
                || fh.len > MAX_FRAME_CIPHERTEXT
                || (fh.len as usize) < aead::TAG_BYTES
                || end > self.eof
            {
                return;
            }
            let len = fh.len as usize;
            let mut buf = self.buffer(len);
            if (self.read)(at + FRAME_HEADER_BYTES as u64, &mut buf[..len]).is_err() {
                self.recycle(buf);
                return;
            }
            let job = Job { buf, len, nonce: fh.nonce, aad: aad(&header.node_id, &hb, at) };
            let r = self.ahead.as_mut().expect("checked above");
            let n = r.count;
            let mut shared = r.pool.lock();
            shared.todo.push_back((n, job));
            let wake = shared.thread_waits;
            drop(shared);
            if wake {
                r.pool.signal.notify_all();
            }
            r.queue.push_back(Ahead { n, at, hb, len });
            r.queued += len;
            r.count += 1;
            r.next = Some((end, seq + 1));
        }
    }
}

/// Decrypts the frames of the transaction in `from..to` again, into one buffer.
fn reread(read: ReadAt<'_>, header: &Header, key: &Key, from: u64, to: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let changed = || io::Error::other("the node file changed while it was read");
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(to - from).map_err(|_| changed())?]);
    let (mut at, mut filled) = (from, 0usize);
    while at < to {
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        read(at, &mut hb)?;
        let fh = FrameHeader::decode(&hb, known_flags(header)).ok_or_else(changed)?;
        let end = at + FRAME_HEADER_BYTES as u64 + u64::from(fh.len);
        if end > to || (fh.len as usize) < aead::TAG_BYTES {
            return Err(changed());
        }
        let body = &mut out[filled..filled + fh.len as usize];
        read(at + FRAME_HEADER_BYTES as u64, body)?;
        let n = aead::open_in_place(key, &fh.nonce, &aad(&header.node_id, &hb, at), body).ok_or_else(changed)?;
        filled += n;
        at = end;
    }
    out.truncate(filled);
    Ok(out)
}

/// The replay itself (docs/FORMAT.md, "Reading the log"), over positional reads of a file
/// of `eof` bytes. With `ahead`, frames are read up to that many bytes ahead of the replay
/// and decrypted on a second thread too (see [`Frames`]: the outcome is the same); without,
/// each frame is read and decrypted as the replay comes to it.
fn replay_with(
    read: ReadAt<'_>,
    data: DataAt<'_>,
    eof: u64,
    header: &Header,
    key: &Key,
    sink: &mut dyn Sink,
    ahead: Option<usize>,
) -> Result<Replayed, ReplayError> {
    match ahead {
        None => replay_frames(&mut Frames::new(read, data, eof, header, key), sink),
        Some(budget) => {
            let pool = Pool::default();
            std::thread::scope(|scope| {
                let mut frames = Frames::new(read, data, eof, header, key);
                frames.read_ahead_with(scope, &pool, budget);
                replay_frames(&mut frames, sink)
            })
        }
    }
}

/// The loop of [`replay_with`], taking its frames from `frames` (which may read and decrypt
/// ahead; nothing it finds there takes effect before this loop gets to it).
fn replay_frames(frames: &mut Frames<'_>, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
    let (read, data, eof, header, key) = (frames.read, frames.data, frames.eof, frames.header, frames.key);
    let damage = |offset: u64, what: &str| Damage { offset, what: what.to_owned() };
    if header.base_end > eof {
        return Err(ReplayError::Damaged(damage(eof, "file is shorter than its last checkpoint (truncated)")));
    }
    let mut at = header.log_start;
    let mut seq = 0u64;
    let mut committed = at;
    let mut committed_seq = 0u64;
    // The pending transaction's offset and RESET flag, if one has begun.
    let mut pending: Option<(u64, bool)> = None;
    let mut has_tail = false;
    let mut discarded = None;
    let mut keep_tail = false;
    // A failure in the base region, or followed by a valid frame, is damage; otherwise it is
    // the end of a save that was cut short (zeros or stale bytes after a power cut included).
    let tail_or_damage = |at: u64, seq: u64, what: &str| -> Result<Option<Damage>, ReplayError> {
        if at < header.base_end || valid_frame_after(read, data, eof, header, at, seq).map_err(ReplayError::Io)? {
            return Err(ReplayError::Damaged(damage(at, what)));
        }
        Ok(Some(damage(at, what)))
    };
    loop {
        let in_base = at < header.base_end;
        if at == eof {
            break;
        }
        let remain = eof - at;
        if remain < FRAME_HEADER_BYTES as u64 {
            if in_base {
                return Err(ReplayError::Damaged(damage(at, "truncated frame header")));
            }
            discarded = Some(damage(at, "save cut short inside a frame header"));
            break;
        }
        let hb = frames.header(at, seq).map_err(ReplayError::Io)?;
        let Some(fh) = FrameHeader::decode(&hb, known_flags(header)) else {
            discarded = tail_or_damage(at, seq, "frame header checksum mismatch")?;
            break;
        };
        if fh.epoch != header.epoch {
            if in_base {
                return Err(ReplayError::Damaged(damage(at, "frame from another epoch inside a checkpoint")));
            }
            if pending.is_some() {
                discarded = tail_or_damage(at, seq, "frame from another epoch inside a save")?;
                break;
            }
            match other_epoch(read, data, eof, header, key, at, seq, &hb, &fh)? {
                OtherEpoch::Leftover => has_tail = true, // What an interrupted compaction leaves.
                OtherEpoch::CutShort(d) => discarded = Some(d),
                OtherEpoch::Kept(d) => (discarded, keep_tail) = (Some(d), true),
            }
            break;
        }
        if fh.seq != seq {
            discarded = tail_or_damage(at, seq, "frame out of sequence")?;
            break;
        }
        if fh.len > MAX_FRAME_CIPHERTEXT || (fh.len as usize) < aead::TAG_BYTES {
            discarded = tail_or_damage(at, seq, "frame length out of range")?;
            break;
        }
        let end = at + FRAME_HEADER_BYTES as u64 + u64::from(fh.len);
        if end > eof {
            if in_base {
                return Err(ReplayError::Damaged(damage(at, "truncated frame inside a checkpoint")));
            }
            discarded = Some(damage(at, "save cut short inside a frame"));
            break;
        }
        // The frame, read into a (zeroizing) buffer and decrypted there: no other copy.
        let (body, opened) = frames.body(at, &hb, &fh).map_err(ReplayError::Io)?;
        let Some(n) = opened else {
            discarded = tail_or_damage(at, seq + 1, "authentication failed")?;
            break;
        };
        if fh.flags & FLAG_END != 0 {
            // The authenticated end a compaction leaves: what follows is the old log's remains.
            if in_base || pending.is_some() || n != 0 || fh.flags != FLAG_END {
                return Err(ReplayError::Damaged(damage(at, "misplaced end marker")));
            }
            if valid_frame_after(read, data, eof, header, at, seq + 1).map_err(ReplayError::Io)? {
                return Err(ReplayError::Damaged(damage(at, "frames of the log after its end marker")));
            }
            has_tail = true;
            break;
        }
        // The RESET flag is taken from a transaction's first frame only.
        let first = pending.is_none();
        let (txn_offset, reset) = *pending.get_or_insert((at, fh.flags & FLAG_RESET != 0));
        if at == header.log_start && !(reset || header.log_start == super::header::LOG_OFFSET && header.epoch == 0) {
            return Err(ReplayError::Damaged(damage(at, "log does not begin with a checkpoint")));
        }
        sink.frame(txn_offset, first, reset, &body[..n]);
        seq += 1;
        at = end;
        if fh.flags & FLAG_COMMIT != 0 {
            pending = None;
            let mut whole = || reread(read, header, key, txn_offset, end);
            match sink.commit(&mut whole) {
                Ok(()) => {}
                Err(ApplyError::Damaged(what)) => return Err(ReplayError::Damaged(damage(txn_offset, &what))),
                Err(ApplyError::Io(e)) => return Err(ReplayError::Io(e)),
            }
            committed = at;
            committed_seq = seq;
        }
    }
    if committed < header.base_end {
        return Err(ReplayError::Damaged(damage(committed, "checkpoint is incomplete")));
    }
    // A multi-frame save cut short leaves uncommitted frames: none of them count.
    if discarded.is_none() && pending.is_some() {
        discarded = Some(damage(committed, "save cut short between its frames"));
    }
    Ok(Replayed {
        position: Position { epoch: header.epoch, next_seq: committed_seq, end: committed },
        has_tail: has_tail || committed < eof,
        discarded,
        keep_tail,
    })
}

/// The flags of a transaction's frame.
fn frame_flags(first: bool, last: bool, reset: bool) -> u8 {
    let mut flags = if last { FLAG_COMMIT } else { 0 };
    if first && reset {
        flags |= FLAG_RESET;
    }
    if !first {
        flags |= FLAG_CONTINUES;
    }
    flags
}

/// Seals one frame holding `plaintext`, to be written at `offset`, and appends it to `out`.
#[allow(clippy::too_many_arguments)] // The frame's fields, each bound into its header or AAD.
fn seal_frame(
    header: &Header,
    key: &Key,
    flags: u8,
    epoch: u32,
    seq: u64,
    offset: u64,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let fh = FrameHeader { flags, epoch, len: (plaintext.len() + aead::TAG_BYTES) as u32, seq, nonce: aead::random_nonce()? };
    let hb = fh.encode();
    // Room for the whole frame first: the plaintext is then encrypted where it lands, and no
    // reallocation leaves a copy of it behind.
    out.reserve(hb.len() + plaintext.len() + aead::TAG_BYTES);
    out.extend_from_slice(&hb);
    let from = out.len();
    out.extend_from_slice(plaintext);
    aead::seal_from(key, &fh.nonce, &aad(&header.node_id, &hb, offset), out, from);
    Ok(())
}

/// Feeds a transaction's plaintext, in pieces, to the function it is given.
pub type Produce<'a> = dyn FnMut(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> + 'a;

/// Seals a transaction's plaintext frame by frame as it is produced and writes each frame at
/// its place: memory holds about two frames whatever the transaction's size. A frame holds
/// `chunk` bytes of plaintext, the last one the rest (the only empty frame is that of an empty
/// transaction), so the frames depend only on the plaintext's length, however it is fed.
struct FrameWriter<'s> {
    storage: &'s mut dyn Storage,
    header: &'s Header,
    key: &'s Key,
    epoch: u32,
    reset: bool,
    chunk: usize,
    /// Where the next frame goes, and the offset no frame may pass.
    at: u64,
    limit: u64,
    /// The next frame's sequence number, and frames written so far.
    seq: u64,
    frames: u64,
    /// Plaintext not sealed yet: at most one frame's after each feed.
    pending: Zeroizing<Vec<u8>>,
    /// The frame being written (ciphertext), reused.
    frame: Vec<u8>,
}

impl FrameWriter<'_> {
    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let take = bytes.len().min(2 * self.chunk - self.pending.len());
            // Grown as needed (a save is a few KiB), never by a copy left unwiped.
            crate::secret::reserve(&mut self.pending, take, 2 * self.chunk);
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            // A frame is sealed once more follows it, so that the last one carries COMMIT.
            while self.pending.len() > self.chunk {
                self.write_frame(false)?;
            }
        }
        Ok(())
    }

    fn write_frame(&mut self, last: bool) -> io::Result<()> {
        let n = if last { self.pending.len() } else { self.chunk };
        let flags = frame_flags(self.frames == 0, last, self.reset);
        self.frame.clear();
        seal_frame(self.header, self.key, flags, self.epoch, self.seq, self.at, &self.pending[..n], &mut self.frame)?;
        let len = self.frame.len() as u64;
        if self.at + len > self.limit {
            return Err(io::Error::other("the transaction outgrew the room it was given"));
        }
        self.storage.write_at(self.at, &self.frame)?;
        let rest = self.pending.len() - n;
        self.pending.copy_within(n.., 0);
        self.pending.truncate(rest);
        self.at += len;
        self.seq += 1;
        self.frames += 1;
        Ok(())
    }
}

/// Writes the transaction `produce` gives as frames from `pos` on (not synced), never past
/// `limit`; returns its length in bytes and frames.
#[allow(clippy::too_many_arguments)] // Where, under which key and epoch, and what.
fn write_transaction(
    storage: &mut dyn Storage,
    header: &Header,
    key: &Key,
    pos: Position,
    limit: u64,
    reset: bool,
    chunk: usize,
    produce: &mut Produce<'_>,
) -> io::Result<(u64, u64)> {
    let (pending, frame) = (Zeroizing::default(), Vec::new());
    let mut w = FrameWriter {
        storage,
        header,
        key,
        epoch: pos.epoch,
        reset,
        chunk,
        at: pos.end,
        limit,
        seq: pos.next_seq,
        frames: 0,
        pending,
        frame,
    };
    produce(&mut |bytes| w.feed(bytes))?;
    w.write_frame(true)?;
    Ok((w.at - pos.end, w.frames))
}

/// Appends one transaction and syncs; on success advances `pos` and returns bytes written.
/// On failure `pos` is unchanged and the file may have a tail that the next append cuts off.
pub fn append(storage: &mut dyn Storage, header: &Header, key: &Key, pos: &mut Position, plaintext: &[u8], reset: bool) -> io::Result<u64> {
    if storage.len()? != pos.end {
        storage.truncate(pos.end)?;
    }
    let (len, frames) = write_transaction(storage, header, key, *pos, u64::MAX, reset, MAX_FRAME_PLAINTEXT, &mut |out| out(plaintext))?;
    storage.sync()?;
    pos.end += len;
    pos.next_seq += frames;
    Ok(len)
}

/// Seals `header` under the data key and writes both slots, A then B, syncing after each,
/// so a crash tears at most one.
pub fn write_header(storage: &mut dyn Storage, header: &mut Header, key: &Key) -> io::Result<()> {
    header.seal(key)?;
    let slot = header.encode();
    storage.write_at(0, &slot)?;
    storage.sync()?;
    storage.write_at(SLOT_BYTES as u64, &slot)?;
    storage.sync()
}

/// Rewrites the log as one checkpoint, the whole live state, which `produce` gives (twice,
/// identically: the checkpoint is written at the end of the file, then moved to the front),
/// in place, crash-safe at every step without relying on rename (see docs/FORMAT.md,
/// "Compaction"). It is encrypted and written a frame at a time, so the checkpoint is never
/// in memory whole. Returns the new file length.
pub fn compact(
    storage: &mut dyn Storage,
    header: &mut Header,
    key: &Key,
    pos: &mut Position,
    produce: &mut Produce<'_>,
) -> io::Result<u64> {
    compact_with(storage, header, key, pos, produce, MAX_FRAME_PLAINTEXT)
}

/// [`compact`] with at most `chunk` bytes of plaintext a frame (tests use small ones).
fn compact_with(
    storage: &mut dyn Storage,
    header: &mut Header,
    key: &Key,
    pos: &mut Position,
    produce: &mut Produce<'_>,
    chunk: usize,
) -> io::Result<u64> {
    let front = super::header::LOG_OFFSET;
    // 1. Append the checkpoint under the next epoch: the current log ends where it begins.
    let mut tail_pos = Position { epoch: header.epoch.wrapping_add(1), next_seq: 0, end: pos.end };
    if storage.len()? != pos.end {
        storage.truncate(pos.end)?;
    }
    let (c_len, c_frames) = write_transaction(storage, header, key, tail_pos, u64::MAX, true, chunk, produce)?;
    storage.sync()?;
    // 2. Point the header at it.
    let mut h = header.clone();
    h.generation += 1;
    h.epoch = tail_pos.epoch;
    h.log_start = tail_pos.end;
    h.base_end = tail_pos.end + c_len;
    write_header(storage, &mut h, key)?;
    *header = h;
    tail_pos.end = header.base_end;
    tail_pos.next_seq = c_frames;
    *pos = tail_pos;
    // 3. If the checkpoint fits in the dead space before it, move it to the front, followed by
    //    a marker that ends the log if we stop before truncating: an empty frame flagged END,
    //    sealed under the data key like any frame, which nobody can forge to end the log
    //    early (on a node of version 1 without the feature, whose passphrase this cannot
    //    re-wrap: the frame header of the old epoch that version 1 reads). The copy has the
    //    same length (frames depend only on the plaintext's length); it is never written past
    //    the live checkpoint all the same.
    let authenticated = header.required_features & FEATURE_AUTHENTICATED_END != 0;
    let front_pos = Position { epoch: header.epoch.wrapping_add(1), next_seq: 0, end: front };
    let room = header.log_start - if authenticated { END_MARKER_BYTES } else { FRAME_HEADER_BYTES as u64 };
    if front + c_len > room {
        return Ok(pos.end);
    }
    let (c2_len, c2_frames) = write_transaction(storage, header, key, front_pos, room, true, chunk, produce)?;
    let mut marker = Vec::new();
    if authenticated {
        seal_frame(header, key, FLAG_END, front_pos.epoch, c2_frames, front + c2_len, &[], &mut marker)?;
    } else {
        marker.extend(FrameHeader { flags: 0, epoch: header.epoch, len: 0, seq: 0, nonce: [0; aead::NONCE_BYTES] }.encode());
    }
    storage.write_at(front + c2_len, &marker)?;
    storage.sync()?;
    // 4. Point the header at the front copy.
    let mut h = header.clone();
    h.generation += 1;
    h.epoch = front_pos.epoch;
    h.log_start = front;
    h.base_end = front + c2_len;
    write_header(storage, &mut h, key)?;
    *header = h;
    // The log now ends after the front copy, even if cutting off the rest fails: the next
    // append cuts it off then.
    *pos = Position { epoch: header.epoch, next_seq: c2_frames, end: header.base_end };
    // 5. Cut off everything after it.
    storage.truncate(header.base_end)?;
    storage.sync()?;
    Ok(pos.end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::kdf::KdfParams;
    use crate::secret::Passphrase;

    /// What a sink was given, in order, and what the replay said at the end.
    #[derive(Default)]
    struct Record {
        events: Vec<String>,
        /// The commit (counted from 0) that fails to apply, and with what.
        fail_commit: Option<(usize, ApplyError)>,
        commits: usize,
        /// Whether commits ask for the whole transaction again.
        rereads: bool,
    }

    impl Sink for Record {
        fn frame(&mut self, offset: u64, first: bool, reset: bool, plaintext: &[u8]) {
            self.events.push(format!("frame {offset} {first} {reset} {plaintext:?}"));
        }
        fn commit(&mut self, whole: &mut dyn FnMut() -> io::Result<Zeroizing<Vec<u8>>>) -> Result<(), ApplyError> {
            let n = self.commits;
            self.commits += 1;
            if self.rereads {
                let again = whole().map_err(ApplyError::Io)?;
                self.events.push(format!("whole {:?}", &again[..]));
            }
            self.events.push(format!("commit {n}"));
            match self.fail_commit.take() {
                Some((at, e)) if at == n => Err(e),
                other => {
                    self.fail_commit = other;
                    Ok(())
                }
            }
        }
    }

    /// A node file: header slots, then transactions (plaintext, RESET, plaintext bytes a
    /// frame); returns the file, its header and key.
    fn node(txns: &[(Vec<u8>, bool, usize)]) -> (Vec<u8>, Header, Key) {
        let (mut header, key, _) =
            Header::create(&Passphrase::new(b"p".to_vec()), KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 }).unwrap();
        let mut storage = crate::storage::MemStorage::default();
        write_header(&mut storage, &mut header, &key).unwrap();
        let mut pos = Position { epoch: header.epoch, next_seq: 0, end: header.log_start };
        for (plaintext, reset, chunk) in txns {
            let (len, frames) =
                write_transaction(&mut storage, &header, &key, pos, u64::MAX, *reset, *chunk, &mut |out| out(plaintext)).unwrap();
            pos.end += len;
            pos.next_seq += frames;
        }
        (storage.bytes, header, key)
    }

    /// The replay of `file` as the sink and the outcome see it, reading ahead with `ahead`;
    /// reads at `fail_from` or beyond fail.
    fn outcome(file: &[u8], header: &Header, key: &Key, ahead: Option<usize>, fail_from: u64, sink: &mut Record) -> String {
        let read = |offset: u64, buf: &mut [u8]| {
            if offset + buf.len() as u64 > fail_from {
                return Err(io::Error::other("injected"));
            }
            crate::storage::copy_out(file, offset, buf)
        };
        let eof = file.len() as u64;
        let data = |offset: u64| Ok((offset < eof).then_some((offset, eof)));
        let r = replay_with(&read, &data, eof, header, key, sink, ahead);
        format!("{:?}\n{}", r, sink.events.join("\n"))
    }

    /// Replays `file` decrypting as it goes, and reading ahead one frame and many: the same.
    fn same_every_way(file: &[u8], header: &Header, key: &Key, fail_from: u64, fail_commit: Option<usize>, rereads: bool) -> String {
        let sink = || Record { fail_commit: fail_commit.map(|n| (n, ApplyError::Damaged("bad".into()))), rereads, ..Record::default() };
        let plain = outcome(file, header, key, None, fail_from, &mut sink());
        for ahead in [Some(1), Some(usize::MAX)] {
            assert_eq!(
                outcome(file, header, key, ahead, fail_from, &mut sink()),
                plain,
                "reading ahead {ahead:?}, reads fail from {fail_from}, commit {fail_commit:?} fails"
            );
        }
        plain
    }

    /// Where each frame of an intact log starts and ends.
    fn frames_of(file: &[u8], header: &Header) -> Vec<(u64, u64)> {
        let mut at = header.log_start;
        let mut frames = vec![];
        while at < file.len() as u64 {
            let fh = FrameHeader::decode(&file[at as usize..at as usize + FRAME_HEADER_BYTES], known_flags(header)).unwrap();
            let end = at + (FRAME_HEADER_BYTES as u64) + u64::from(fh.len);
            frames.push((at, end));
            at = end;
        }
        frames
    }

    fn bytes(n: usize, b: u8) -> Vec<u8> {
        (0..n).map(|i| b.wrapping_add(i as u8)).collect()
    }

    fn txns() -> Vec<(Vec<u8>, bool, usize)> {
        vec![
            (bytes(200, 1), true, 64),
            (bytes(30, 2), false, 1000),
            (Vec::new(), false, 1000),
            (bytes(150, 3), false, 50),
            (bytes(90, 4), true, 40),
            (bytes(10, 5), false, 1000),
            (bytes(120, 6), false, 1000),
        ]
    }

    /// Transactions as replayed: RESET flag and plaintext.
    type Replayed = Vec<(bool, Vec<u8>)>;

    /// Compacts the log of `txns()` into `checkpoint`, fed in pieces of 37 bytes (the second
    /// time, `second` instead); returns the result, the file, its header, and what it replays to.
    fn compacted(checkpoint: &[u8], second: &[u8]) -> (io::Result<u64>, Vec<u8>, Header, Replayed) {
        let (file, mut header, key) = node(&txns());
        let frames = frames_of(&file, &header).len() as u64;
        let mut pos = Position { epoch: header.epoch, next_seq: frames, end: file.len() as u64 };
        let mut storage = crate::storage::MemStorage { bytes: file };
        let mut calls = 0;
        let mut produce = |out: &mut dyn FnMut(&[u8]) -> io::Result<()>| {
            calls += 1;
            let all = if calls == 1 { checkpoint } else { second };
            all.chunks(37).try_for_each(&mut *out)?;
            out(&[])
        };
        let r = compact_with(&mut storage, &mut header, &key, &mut pos, &mut produce, 64);
        let mut got = Vec::new();
        replay(&storage.bytes, &header, &key, |t| {
            got.push((t.reset, t.plaintext.to_vec()));
            Ok(())
        })
        .unwrap();
        (r, storage.bytes, header, got)
    }

    #[test]
    fn compaction_writes_the_checkpoint_frame_by_frame_and_moves_it_to_the_front() {
        let checkpoint = bytes(500, 9);
        let (r, file, header, got) = compacted(&checkpoint, &checkpoint);
        assert_eq!(r.unwrap(), file.len() as u64);
        assert_eq!(got, vec![(true, checkpoint.clone())]);
        assert_eq!(header.log_start, crate::format::header::LOG_OFFSET);
        // Framed exactly as the whole plaintext would be: 64 bytes a frame, the last one short.
        let ends: Vec<u64> = frames_of(&file, &header).into_iter().map(|(at, end)| end - at).collect();
        assert_eq!(ends.len(), 8);
        assert!(ends[..7].iter().all(|&n| n == (FRAME_HEADER_BYTES + 64 + aead::TAG_BYTES) as u64), "{ends:?}");
        // An empty checkpoint is one empty frame.
        let (r, _, _, got) = compacted(&[], &[]);
        r.unwrap();
        assert_eq!(got, vec![(true, Vec::new())]);
    }

    #[test]
    fn a_front_copy_that_would_outgrow_its_room_stops_before_the_live_checkpoint() {
        let checkpoint = bytes(500, 9);
        let (r, file, header, got) = compacted(&checkpoint, &bytes(5000, 7));
        assert!(r.is_err());
        // The header points at the checkpoint at the end, which is intact.
        assert!(header.log_start > crate::format::header::LOG_OFFSET);
        assert_eq!(got, vec![(true, checkpoint)]);
        assert_eq!(file.len() as u64, header.base_end);
    }

    #[test]
    fn reading_ahead_changes_nothing_on_an_intact_log() {
        let (file, header, key) = node(&txns());
        let all = same_every_way(&file, &header, &key, u64::MAX, None, false);
        assert!(all.starts_with("Ok("), "{all}");
        assert_eq!(all.matches("commit").count(), txns().len());
        same_every_way(&file, &header, &key, u64::MAX, None, true);
    }

    #[test]
    fn reading_ahead_changes_nothing_on_a_damaged_or_torn_log() {
        let (file, header, key) = node(&txns());
        let start = header.log_start as usize;
        // Every byte of every frame header; the first, a middle and the last byte of a body.
        let mut places = vec![];
        for (at, end) in frames_of(&file, &header) {
            let body = at + FRAME_HEADER_BYTES as u64;
            places.extend((at..body).chain([body, (body + end) / 2, end - 1]));
        }
        for at in places {
            let mut damaged = file.clone();
            damaged[at as usize] ^= 1;
            same_every_way(&damaged, &header, &key, u64::MAX, None, false);
            same_every_way(&file[..at as usize], &header, &key, u64::MAX, None, false);
        }
        // A log that ends in zeros, and one whose tail is an older copy of its frames.
        let mut zeros = file.clone();
        zeros.extend_from_slice(&[0; 300]);
        same_every_way(&zeros, &header, &key, u64::MAX, None, false);
        let mut stale = file.clone();
        stale.extend_from_slice(&file[start..start + 400]);
        same_every_way(&stale, &header, &key, u64::MAX, None, false);
    }

    #[test]
    fn what_is_read_ahead_takes_effect_in_log_order() {
        let (file, header, key) = node(&txns());
        // Reads fail from each frame's start, inside its header, at its body, inside and at
        // its end.
        let mut places = vec![file.len() as u64];
        for (at, end) in frames_of(&file, &header) {
            places.extend([at, at + 1, at + FRAME_HEADER_BYTES as u64, at + FRAME_HEADER_BYTES as u64 + 1, end - 1]);
        }
        for fail_from in places {
            same_every_way(&file, &header, &key, fail_from, None, false);
            same_every_way(&file, &header, &key, fail_from, None, true);
            for n in 0..txns().len() {
                same_every_way(&file, &header, &key, fail_from, Some(n), false);
            }
        }
        // The commit that fails comes first, whatever follows it: damage, not a read error.
        for n in 0..txns().len() {
            let out = same_every_way(&file, &header, &key, u64::MAX, Some(n), false);
            assert!(out.starts_with("Err(Damaged"), "{out}");
            assert_eq!(out.matches("commit").count(), n + 1);
        }
    }
}
