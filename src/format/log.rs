//! The frame log: encrypted, position-bound frames appended after the header.
//!
//! A save appends one transaction (one or more frames, the last flagged COMMIT) and syncs
//! once, so its cost is the size of the change, not of the node. Replay applies committed
//! transactions only. The rules that tell a torn tail (a save cut short: the node opens at its
//! last complete state) from damage (an error) are in docs/FORMAT.md, "Reading the log".

use super::header::{Header, SLOT_BYTES};
use crate::crypto::aead;
use crate::secret::Key;
use crate::storage::Storage;
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

    /// `None` if the magic, checksum or reserved bits are wrong.
    fn decode(b: &[u8]) -> Option<FrameHeader> {
        let crc = u32::from_le_bytes(b[48..52].try_into().ok()?);
        if &b[0..4] != FRAME_MAGIC
            || crc32fast::hash(&b[..48]) != crc
            || b[5..8] != [0; 3]
            || b[4] & !(FLAG_COMMIT | FLAG_RESET | FLAG_CONTINUES) != 0
        {
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

/// A frame's associated data: the node's id, the frame header, and the frame's offset, so a
/// frame cannot be moved to another node, another place, or another epoch.
fn aad(node_id: &[u8; 16], header: &[u8], offset: u64) -> Vec<u8> {
    [AAD_CONTEXT, node_id, &header[..48], &offset.to_le_bytes()].concat()
}

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

/// Bytes `valid_frame_after` reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

/// Whether a frame header of the current epoch with a sequence number of at least `seq`,
/// beginning a transaction, starts anywhere after `from`: then a failure at `from` is damage
/// inside the log, not the end of a save that was cut short. (Later frames of the failing
/// save itself prove nothing: a power cut can land a save's last frame but not its first.)
/// Reads the rest of the file a chunk at a time, chunks overlapping by a frame header less
/// one byte so that every offset is tried.
fn valid_frame_after(read: ReadAt<'_>, eof: u64, header: &Header, from: u64, seq: u64) -> io::Result<bool> {
    let hb = FRAME_HEADER_BYTES as u64;
    let mut start = from + 1;
    let mut buf = vec![0u8; SCAN_CHUNK + FRAME_HEADER_BYTES - 1];
    while start + hb <= eof {
        let n = (eof - start).min(buf.len() as u64) as usize;
        read(start, &mut buf[..n])?;
        let found = buf[..n].windows(FRAME_HEADER_BYTES).any(|w| {
            w.starts_with(FRAME_MAGIC)
                && FrameHeader::decode(w).is_some_and(|fh| fh.epoch == header.epoch && fh.seq >= seq && fh.flags & FLAG_CONTINUES == 0)
        });
        if found {
            return Ok(true);
        }
        start += (n - (FRAME_HEADER_BYTES - 1)) as u64;
    }
    Ok(false)
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
            if txn.plaintext.capacity() < txn.plaintext.len() + plaintext.len() {
                let mut grown = Zeroizing::new(Vec::with_capacity((txn.plaintext.len() + plaintext.len()).next_power_of_two()));
                grown.extend_from_slice(&txn.plaintext);
                txn.plaintext = grown;
            }
            txn.plaintext.extend_from_slice(plaintext);
        }
        fn commit(&mut self, _: &mut dyn FnMut() -> io::Result<Zeroizing<Vec<u8>>>) -> Result<(), ApplyError> {
            let txn = self.0.take().expect("frames came before the commit");
            (self.1)(txn).map_err(ApplyError::Damaged)
        }
    }
    let read = |offset: u64, buf: &mut [u8]| crate::storage::copy_out(file, offset, buf);
    replay_with(&read, file.len() as u64, header, key, &mut Whole(None, apply)).map_err(|e| match e {
        ReplayError::Damaged(d) => d,
        ReplayError::Io(e) => Damage { offset: 0, what: format!("cannot read: {e}") },
    })
}

/// Replays the log of the node in `storage`, one frame in memory at a time, handing each
/// frame's plaintext to `sink` and committing each transaction as its COMMIT frame is read.
pub fn replay_storage(storage: &dyn Storage, header: &Header, key: &Key, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
    let eof = storage.len().map_err(ReplayError::Io)?;
    let read = |offset: u64, buf: &mut [u8]| storage.read_exact_at(offset, buf);
    replay_with(&read, eof, header, key, sink)
}

/// Decrypts the frames of the transaction in `from..to` again, into one buffer.
fn reread(read: ReadAt<'_>, header: &Header, key: &Key, from: u64, to: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    let changed = || io::Error::other("the node file changed while it was read");
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(to - from).map_err(|_| changed())?]);
    let (mut at, mut filled) = (from, 0usize);
    while at < to {
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        read(at, &mut hb)?;
        let fh = FrameHeader::decode(&hb).ok_or_else(changed)?;
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
/// of `eof` bytes.
fn replay_with(read: ReadAt<'_>, eof: u64, header: &Header, key: &Key, sink: &mut dyn Sink) -> Result<Replayed, ReplayError> {
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
    // One frame's bytes at a time, decrypted in place; wiped as it drops (or is replaced).
    let mut buf: Zeroizing<Vec<u8>> = Zeroizing::default();
    // A failure in the base region, or followed by a valid frame, is damage; otherwise it is
    // the end of a save that was cut short (zeros or stale bytes after a power cut included).
    let tail_or_damage = |at: u64, seq: u64, what: &str| -> Result<Option<Damage>, ReplayError> {
        if at < header.base_end || valid_frame_after(read, eof, header, at, seq).map_err(ReplayError::Io)? {
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
        let mut hb = [0u8; FRAME_HEADER_BYTES];
        read(at, &mut hb).map_err(ReplayError::Io)?;
        let Some(fh) = FrameHeader::decode(&hb) else {
            discarded = tail_or_damage(at, seq, "frame header checksum mismatch")?;
            break;
        };
        if fh.epoch != header.epoch {
            if in_base {
                return Err(ReplayError::Damaged(damage(at, "frame from another epoch inside a checkpoint")));
            }
            has_tail = true; // Remains of the log before the last compaction.
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
        // Read the frame into the (zeroizing) buffer and decrypt it there: no other copy.
        ensure_len(&mut buf, fh.len as usize);
        let body = &mut buf[..fh.len as usize];
        read(at + FRAME_HEADER_BYTES as u64, body).map_err(ReplayError::Io)?;
        let Some(n) = aead::open_in_place(key, &fh.nonce, &aad(&header.node_id, &hb, at), body) else {
            discarded = tail_or_damage(at, seq + 1, "authentication failed")?;
            break;
        };
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
    })
}

/// Encrypts `plaintext` as the frames of one transaction starting at `pos`.
fn seal_frames(header: &Header, key: &Key, pos: Position, epoch: u32, plaintext: &[u8], reset: bool) -> io::Result<(Vec<u8>, u64)> {
    let chunks: Vec<&[u8]> = if plaintext.is_empty() { vec![&[][..]] } else { plaintext.chunks(MAX_FRAME_PLAINTEXT).collect() };
    let mut out = Vec::with_capacity(plaintext.len() + chunks.len() * (FRAME_HEADER_BYTES + aead::TAG_BYTES));
    let mut seq = pos.next_seq;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut flags = if i + 1 == chunks.len() { FLAG_COMMIT } else { 0 };
        if reset && i == 0 {
            flags |= FLAG_RESET;
        }
        if i > 0 {
            flags |= FLAG_CONTINUES;
        }
        let fh = FrameHeader { flags, epoch, len: (chunk.len() + aead::TAG_BYTES) as u32, seq, nonce: aead::random_nonce()? };
        let hb = fh.encode();
        let offset = pos.end + out.len() as u64;
        let mut body = chunk.to_vec();
        aead::seal(key, &fh.nonce, &aad(&header.node_id, &hb, offset), &mut body);
        out.extend_from_slice(&hb);
        out.extend_from_slice(&body);
        seq += 1;
    }
    Ok((out, seq - pos.next_seq))
}

/// Appends one transaction and syncs; on success advances `pos` and returns bytes written.
/// On failure `pos` is unchanged and the file may have a tail that the next append cuts off.
pub fn append(storage: &mut dyn Storage, header: &Header, key: &Key, pos: &mut Position, plaintext: &[u8], reset: bool) -> io::Result<u64> {
    if storage.len()? != pos.end {
        storage.truncate(pos.end)?;
    }
    let (bytes, frames) = seal_frames(header, key, *pos, pos.epoch, plaintext, reset)?;
    storage.write_at(pos.end, &bytes)?;
    storage.sync()?;
    pos.end += bytes.len() as u64;
    pos.next_seq += frames;
    Ok(bytes.len() as u64)
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

/// Rewrites the log as one checkpoint holding `plaintext` (the whole live state), in place,
/// crash-safe at every step without relying on rename (see docs/FORMAT.md, "Compaction").
/// Returns the new file length.
pub fn compact(storage: &mut dyn Storage, header: &mut Header, key: &Key, pos: &mut Position, plaintext: &[u8]) -> io::Result<u64> {
    let front = super::header::LOG_OFFSET;
    // 1. Append the checkpoint under the next epoch: the current log ends where it begins.
    let mut tail_pos = Position { epoch: header.epoch.wrapping_add(1), next_seq: 0, end: pos.end };
    if storage.len()? != pos.end {
        storage.truncate(pos.end)?;
    }
    let (c, c_frames) = seal_frames(header, key, tail_pos, tail_pos.epoch, plaintext, true)?;
    storage.write_at(tail_pos.end, &c)?;
    storage.sync()?;
    // 2. Point the header at it.
    let mut h = header.clone();
    h.generation += 1;
    h.epoch = tail_pos.epoch;
    h.log_start = tail_pos.end;
    h.base_end = tail_pos.end + c.len() as u64;
    write_header(storage, &mut h, key)?;
    *header = h;
    tail_pos.end = header.base_end;
    tail_pos.next_seq = c_frames;
    *pos = tail_pos;
    // 3. If the checkpoint fits in the dead space before it, move it to the front, followed by
    //    a marker frame header of the old epoch that ends the log if we stop before truncating.
    let front_pos = Position { epoch: header.epoch.wrapping_add(1), next_seq: 0, end: front };
    let (c2, c2_frames) = seal_frames(header, key, front_pos, front_pos.epoch, plaintext, true)?;
    if front + (c2.len() + FRAME_HEADER_BYTES) as u64 > header.log_start {
        return Ok(pos.end);
    }
    let marker = FrameHeader { flags: 0, epoch: header.epoch, len: 0, seq: 0, nonce: [0; aead::NONCE_BYTES] }.encode();
    storage.write_at(front, &[&c2[..], &marker[..]].concat())?;
    storage.sync()?;
    // 4. Point the header at the front copy.
    let mut h = header.clone();
    h.generation += 1;
    h.epoch = front_pos.epoch;
    h.log_start = front;
    h.base_end = front + c2.len() as u64;
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
