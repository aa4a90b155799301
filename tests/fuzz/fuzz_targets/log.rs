//! The frame reader: `format::log::replay`, with the test node's header and key.
//!
//! The input is read as a recipe (libFuzzer's bytes through `Unstructured`): the log's
//! pointers (a fresh node's, or a log that starts later in another epoch), then transactions
//! of one to three frames sealed with the data key exactly as the writer seals them, then one
//! of three endings:
//!
//! - **clean**: nothing else, or the file cut at any point, or one bit flipped. A model gives
//!   the exact outcome: every transaction replays; a cut after the checkpoint leaves the
//!   complete transactions before it (a torn tail) and one inside the checkpoint is damage; a
//!   flipped bit in the log loses the transaction it hits and everything after, and is either
//!   damage or a torn tail (only a torn tail if nothing valid follows), never silently read.
//! - **wild**: forged frames (any flags, epoch, sequence number, length, reserved bytes, a
//!   broken CRC, sealed for another offset), raw bytes, flips and cuts, mixed in. Only
//!   invariants are checked: no panic, and a result that stays inside the file.
//! - **raw**: the bytes after the header are the rest of the input, unsealed.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use polykey::format::header::{Header, LOG_OFFSET};
use polykey::format::log::{self, Damage, Replayed, FLAG_COMMIT, FLAG_RESET};
use polykey_fuzz::{append_transaction, bytes, seal_frame, test_node, FrameSpec};

struct Applied {
    offset: u64,
    reset: bool,
    plaintext: Vec<u8>,
}

fn replay(file: &[u8], header: &Header) -> (std::result::Result<Replayed, Damage>, Vec<Applied>) {
    let mut applied = Vec::new();
    let r = log::replay(file, header, &test_node().key, |t| {
        applied.push(Applied { offset: t.offset, reset: t.reset, plaintext: t.plaintext.to_vec() });
        Ok(())
    });
    (r, applied)
}

/// What holds for any replay.
fn check_invariants(file: &[u8], header: &Header, r: &std::result::Result<Replayed, Damage>, applied: &[Applied]) {
    let eof = file.len() as u64;
    match r {
        Ok(ok) => {
            let p = ok.position;
            assert_eq!(p.epoch, header.epoch);
            assert!(header.base_end <= p.end && p.end <= eof, "position {} outside {}..={eof}", p.end, header.base_end);
            assert_eq!(ok.has_tail, p.end < eof, "has_tail must say whether bytes follow the last save");
            if let Some(d) = &ok.discarded {
                assert!(d.offset >= p.end && d.offset <= eof, "discarded save at {} outside {}..={eof}", d.offset, p.end);
            }
            if p.end == header.log_start {
                assert!(applied.is_empty());
            }
        }
        Err(d) => assert!(d.offset <= eof, "damage at {} past the end {eof}", d.offset),
    }
    if let Some(first) = applied.first() {
        assert_eq!(first.offset, header.log_start);
    }
    assert!(applied.windows(2).all(|w| w[0].offset < w[1].offset));
}

/// The log's pointers: a fresh node's, or a log starting after a gap in some epoch.
fn pointers(u: &mut Unstructured<'_>, file: &mut Vec<u8>) -> Result<Header> {
    let mut header = test_node().header.clone();
    if u.ratio(1, 2)? {
        header.epoch = if u.ratio(1, 2)? { 1 } else { u.arbitrary()? };
        let gap = u.int_in_range(0..=200)?;
        let fill = u.arbitrary::<u8>()?;
        file.resize(file.len() + gap, fill);
        header.log_start = file.len() as u64;
    }
    header.base_end = header.log_start;
    Ok(header)
}

/// Whether the first transaction must be a checkpoint (every log but a fresh node's).
fn needs_checkpoint(h: &Header) -> bool {
    !(h.log_start == LOG_OFFSET && h.epoch == 0)
}

fn clean(u: &mut Unstructured<'_>) -> Result<()> {
    let node = test_node();
    let mut file = node.slots.clone();
    let mut header = pointers(u, &mut file)?;
    let mut txns: Vec<(u64, u64, bool, Vec<u8>)> = Vec::new(); // (start, end, reset, plaintext)
    let mut seq = 0;
    for i in 0..u.int_in_range(0..=5)? {
        let chunks = (0..u.int_in_range(1..=3)?).map(|_| bytes(u, 48)).collect::<Result<Vec<_>>>()?;
        let reset = (i == 0 && needs_checkpoint(&header)) || u.ratio(1, 4)?;
        let start = file.len() as u64;
        seq = append_transaction(&mut file, &header, &node.key, seq, &chunks, reset);
        txns.push((start, file.len() as u64, reset, chunks.concat()));
    }
    // The checkpoint: the first k transactions.
    let k = u.int_in_range(0..=txns.len())?;
    header.base_end = if k == 0 { header.log_start } else { txns[k - 1].1 };
    let full = file.len() as u64;
    let ending = u.int_in_range(0..=2)?;
    let (cut, flip) = match ending {
        0 => (full, None),
        1 => (u.int_in_range(0..=full)?, None),
        _ => (full, Some((u.int_in_range(0..=full.saturating_sub(1))?, u.int_in_range(0..=7u8)?))),
    };
    file.truncate(cut as usize);
    if let Some((at, bit)) = flip {
        if let Some(b) = file.get_mut(at as usize) {
            *b ^= 1 << bit;
        }
    }
    let (r, applied) = replay(&file, &header);
    check_invariants(&file, &header, &r, &applied);
    let got: Vec<_> = applied.iter().map(|a| (a.offset, a.reset, a.plaintext.clone())).collect();
    let want = |n: usize| -> Vec<_> { txns[..n].iter().map(|t| (t.0, t.2, t.3.clone())).collect() };
    match flip {
        None => {
            if cut < header.base_end {
                assert!(r.is_err(), "a log cut inside its checkpoint must be damage");
                return Ok(());
            }
            let ok = r.unwrap_or_else(|d| panic!("a cut after the checkpoint is a torn tail, not damage: {d:?}"));
            let n = txns.iter().take_while(|t| t.1 <= cut).count();
            assert_eq!(got, want(n));
            let end = if n == 0 { header.log_start } else { txns[n - 1].1 };
            assert_eq!(ok.position.end, end);
            assert_eq!(ok.discarded.is_some(), end != cut, "a cut inside a save is reported");
        }
        Some((at, _)) if at < header.log_start => {
            let ok = r.unwrap_or_else(|d| panic!("a flip before the log is not the log's damage: {d:?}"));
            assert_eq!(got, want(txns.len()));
            assert!(ok.discarded.is_none());
        }
        Some((at, _)) => {
            // The transaction hit and all after it are lost.
            let hit = txns.iter().position(|t| at < t.1).expect("the flip is inside the log");
            match r {
                Err(_) => {}
                Ok(ok) => {
                    assert!(at >= header.base_end, "a flip inside the checkpoint must be damage");
                    assert_eq!(got, want(hit), "a flipped bit was read as valid");
                    assert!(ok.discarded.is_some(), "a damaged last save is reported");
                    assert!(hit == txns.len() - 1, "damage followed by a valid transaction must be an error");
                }
            }
        }
    }
    Ok(())
}

fn wild(u: &mut Unstructured<'_>) -> Result<()> {
    let node = test_node();
    let mut file = node.slots.clone();
    let mut header = pointers(u, &mut file)?;
    let mut seq = 0u64;
    for _ in 0..u.int_in_range(0..=8)? {
        match u.int_in_range(0..=5)? {
            0 | 1 => {
                let chunks = (0..u.int_in_range(1..=3)?).map(|_| bytes(u, 32)).collect::<Result<Vec<_>>>()?;
                let reset = u.arbitrary()?;
                seq = append_transaction(&mut file, &header, &node.key, seq, &chunks, reset);
            }
            2 => {
                let chunk = bytes(u, 32)?;
                let mut f = FrameSpec::new(u.arbitrary()?, header.epoch, seq, chunk);
                match u.int_in_range(0..=6)? {
                    0 => f.flags = u.arbitrary()?,
                    1 => f.epoch = if u.arbitrary()? { header.epoch.wrapping_add(1) } else { u.arbitrary()? },
                    2 => f.seq = u.arbitrary()?,
                    3 => f.len = Some(u.arbitrary()?),
                    4 => f.reserved = u.arbitrary()?,
                    5 => f.bad_crc = true,
                    _ => f.aad_offset = Some(u.arbitrary()?),
                }
                f.flags &= if u.ratio(3, 4)? { FLAG_COMMIT | FLAG_RESET } else { 0xff };
                let frame = seal_frame(&header, &node.key, file.len() as u64, &f);
                file.extend_from_slice(&frame);
                if u.arbitrary()? {
                    seq = seq.wrapping_add(1);
                }
            }
            3 => file.extend_from_slice(bytes(u, 64)?),
            4 => {
                let at = u.int_in_range(0..=file.len() - 1)?;
                file[at] ^= u.arbitrary::<u8>()?;
            }
            _ => {
                let at = u.int_in_range(header.log_start as usize..=file.len())?;
                file.truncate(at);
            }
        }
    }
    header.base_end = u.int_in_range(header.log_start..=file.len() as u64 + 64)?;
    let (r, applied) = replay(&file, &header);
    check_invariants(&file, &header, &r, &applied);
    Ok(())
}

fn raw(u: &mut Unstructured<'_>) -> Result<()> {
    let mut file = test_node().slots.clone();
    let mut header = pointers(u, &mut file)?;
    header.base_end = u.int_in_range(header.log_start..=header.log_start + 256)?;
    let rest = u.len();
    file.extend_from_slice(u.bytes(rest)?);
    let (r, applied) = replay(&file, &header);
    check_invariants(&file, &header, &r, &applied);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = match u.int_in_range(0..=2u8) {
        Ok(0) => clean(&mut u),
        Ok(1) => wild(&mut u),
        Ok(_) => raw(&mut u),
        Err(_) => Ok(()),
    };
});
