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
    pub plaintext: zeroize::Zeroizing<Vec<u8>>,
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

/// Whether a frame header of the current epoch with a sequence number of at least `seq`,
/// beginning a transaction, starts anywhere after `from`: then a failure at `from` is damage
/// inside the log, not the end of a save that was cut short. (Later frames of the failing
/// save itself prove nothing: a power cut can land a save's last frame but not its first.)
fn valid_frame_after(file: &[u8], header: &Header, from: u64, seq: u64) -> bool {
    let start = from as usize + 1;
    if start >= file.len() {
        return false;
    }
    file[start..].windows(FRAME_HEADER_BYTES).any(|w| {
        w.starts_with(FRAME_MAGIC)
            && FrameHeader::decode(w).is_some_and(|fh| fh.epoch == header.epoch && fh.seq >= seq && fh.flags & FLAG_CONTINUES == 0)
    })
}

/// Replays the log of `file`, calling `apply` with each committed transaction in order.
/// `apply` may fail (the journal inside is damaged); its error becomes damage at the
/// transaction's offset.
pub fn replay(
    file: &[u8],
    header: &Header,
    key: &Key,
    mut apply: impl FnMut(Transaction) -> Result<(), String>,
) -> Result<Replayed, Damage> {
    let eof = file.len() as u64;
    let damage = |offset: u64, what: &str| Damage { offset, what: what.to_owned() };
    if header.base_end > eof {
        return Err(damage(eof, "file is shorter than its last checkpoint (truncated)"));
    }
    let mut at = header.log_start;
    let mut seq = 0u64;
    let mut committed = at;
    let mut committed_seq = 0u64;
    let mut pending: Option<Transaction> = None;
    let mut has_tail = false;
    let mut discarded = None;
    // A failure in the base region, or followed by a valid frame, is damage; otherwise it is
    // the end of a save that was cut short (zeros or stale bytes after a power cut included).
    let tail_or_damage = |at: u64, seq: u64, what: &str| -> Result<Option<Damage>, Damage> {
        if at < header.base_end || valid_frame_after(file, header, at, seq) {
            return Err(damage(at, what));
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
                return Err(damage(at, "truncated frame header"));
            }
            discarded = Some(damage(at, "save cut short inside a frame header"));
            break;
        }
        let hb = &file[at as usize..at as usize + FRAME_HEADER_BYTES];
        let Some(fh) = FrameHeader::decode(hb) else {
            discarded = tail_or_damage(at, seq, "frame header checksum mismatch")?;
            break;
        };
        if fh.epoch != header.epoch {
            if in_base {
                return Err(damage(at, "frame from another epoch inside a checkpoint"));
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
                return Err(damage(at, "truncated frame inside a checkpoint"));
            }
            discarded = Some(damage(at, "save cut short inside a frame"));
            break;
        }
        // Decrypt straight into the transaction's (zeroizing) buffer: no other plaintext copy.
        let txn =
            pending.get_or_insert_with(|| Transaction { offset: at, reset: fh.flags & FLAG_RESET != 0, plaintext: Default::default() });
        let base = txn.plaintext.len();
        txn.plaintext.extend_from_slice(&file[at as usize + FRAME_HEADER_BYTES..end as usize]);
        match aead::open_in_place(key, &fh.nonce, &aad(&header.node_id, hb, at), &mut txn.plaintext[base..]) {
            Some(n) => txn.plaintext.truncate(base + n),
            None => {
                txn.plaintext.truncate(base);
                discarded = tail_or_damage(at, seq + 1, "authentication failed")?;
                break;
            }
        }
        if at == header.log_start && !(txn.reset || header.log_start == super::header::LOG_OFFSET && header.epoch == 0) {
            return Err(damage(at, "log does not begin with a checkpoint"));
        }
        seq += 1;
        at = end;
        if fh.flags & FLAG_COMMIT != 0 {
            let txn = pending.take().expect("set above");
            let offset = txn.offset;
            apply(txn).map_err(|what| damage(offset, &what))?;
            committed = at;
            committed_seq = seq;
        }
    }
    if committed < header.base_end {
        return Err(damage(committed, "checkpoint is incomplete"));
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
