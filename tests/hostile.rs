//! Hostile node files: frame headers forged without the key (they carry only a CRC), an old
//! sealed header spliced onto a newer log, a FIFO or a huge sparse file at the node path. None
//! may open an older state without a word, hang, cost work out of proportion to the data, or
//! let a save destroy bytes the log did not account for.

use crate::util::{pass, repo, run, run_with_stdin, secret, stderr, TempNode};
use polykey::format::header::{LOG_OFFSET, SLOT_BYTES};
use polykey::format::log::FRAME_HEADER_BYTES;
use polykey::storage::{FileStorage, MemStorage, Storage};
use polykey::{Access, Error, Node};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The header's epoch, `log_start` and `base_end` (slot A; docs/FORMAT.md, "Slot layout").
fn pointers(b: &[u8]) -> (u32, u64, u64) {
    (u32_at(b, 48), u64_at(b, 56), u64_at(b, 64))
}

/// Where each frame of the log starts, from `log_start` to the end of the file.
fn frame_starts(b: &[u8]) -> Vec<usize> {
    let mut at = pointers(b).1 as usize;
    let mut out = vec![];
    while at < b.len() {
        out.push(at);
        at += FRAME_HEADER_BYTES + u32_at(b, at + 12) as usize;
    }
    assert_eq!(at, b.len(), "the log ends at the end of the file");
    out
}

/// A well-formed frame header anyone can write: magic, flags, epoch, length, sequence number,
/// nonce, and a CRC-32 over them. No key is needed.
fn forged(flags: u8, epoch: u32, len: u32, seq: u64) -> [u8; FRAME_HEADER_BYTES] {
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[0..4].copy_from_slice(b"PKFR");
    h[4] = flags;
    h[8..12].copy_from_slice(&epoch.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&h[..48]);
    h[48..52].copy_from_slice(&crc.to_le_bytes());
    h
}

fn with(b: &[u8], at: usize, patch: &[u8]) -> Vec<u8> {
    let mut b = b.to_vec();
    b[at..at + patch.len()].copy_from_slice(patch);
    b
}

fn open_mem(b: &[u8]) -> polykey::Result<Node> {
    Node::open_storage(Path::new("hostile.node"), Box::new(MemStorage { bytes: b.to_vec() }), &pass(), Access::Write)
}

/// A node with `saves` saves, one secret each (`s0`, `s1`, ...), closed; its bytes.
fn saved(t: &TempNode, saves: usize) -> Vec<u8> {
    let mut node = t.create();
    for i in 0..saves {
        node.put(&repo("r"), &secret(&format!("s{i}")), format!("value {i}").as_bytes()).unwrap();
        node.save().unwrap();
    }
    drop(node);
    std::fs::read(&t.path).unwrap()
}

fn damaged_at(r: polykey::Result<Node>) -> (u64, String) {
    match r {
        Err(Error::Damaged { offset, what, .. }) => (offset, what),
        Err(e) => panic!("expected damage, got {e}"),
        Ok(node) => panic!("expected damage, opened with {} secrets", node.secrets(&repo("r")).map_or(0, |s| s.len())),
    }
}

/// The report's case: a forged frame header of another epoch in the middle of the log, or at
/// its first frame, used to end replay without a word (the node opened at the older state,
/// and the next save cut the rest off). It is damage now, wherever it is and whatever epoch it
/// names, and a command that writes leaves the file as it was.
#[test]
fn a_forged_frame_header_is_damage_not_a_silent_rollback() {
    let t = TempNode::new();
    let good = saved(&t, 12);
    let (epoch, _, _) = pointers(&good);
    let starts = frame_starts(&good);
    for (i, &at) in starts.iter().enumerate().take(starts.len() - 1) {
        for forged_epoch in [epoch + 1, epoch + 7, u32::MAX] {
            let bad = with(&good, at, &forged(0, forged_epoch, 0, 0));
            let (offset, what) = damaged_at(open_mem(&bad));
            assert_eq!(offset, at as u64, "save {i}, epoch {forged_epoch}: {what}");
        }
    }
    // Through the CLI: `ls` refuses it, and `put` writes nothing.
    let bad = with(&good, starts[0], &forged(0, epoch + 1, 0, 0));
    std::fs::write(&t.path, &bad).unwrap();
    let o = run(t.cli().args(["ls", "r"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim(), format!("polykey: node {} is damaged at byte {}: frame of epoch {} where the log of epoch {epoch} ends: the header is older than the log", t.path.display(), starts[0], epoch + 1));
    let o = run_with_stdin(t.cli().args(["put", "r/new"]), b"x");
    assert_eq!(o.status.code(), Some(1));
    assert!(crate::util::unchanged(&t.path, &bad), "a refused put changed the file");
}

/// A compacted node (its checkpoint at the front, epoch 2 or more), then saves: a frame header
/// forged with an older epoch at a later save is damage; forged at the very last save, with
/// nothing after it, the node opens at the state before it, with a warning, and refuses every
/// write (which would cut those bytes off) until the user says so.
#[test]
fn bytes_no_crash_leaves_are_kept_and_writes_refused() {
    let t = TempNode::new();
    let mut node = t.create();
    for i in 0..6 {
        node.put(&repo("r"), &secret("junk"), &vec![i; 4000]).unwrap();
        node.save().unwrap();
    }
    node.compact().unwrap();
    for i in 0..3 {
        node.put(&repo("r"), &secret(&format!("s{i}")), b"after").unwrap();
        node.save().unwrap();
    }
    drop(node);
    let good = std::fs::read(&t.path).unwrap();
    let (epoch, log_start, base_end) = pointers(&good);
    assert!(epoch >= 2 && log_start == LOG_OFFSET, "compacted to the front: {:?}", pointers(&good));
    let starts = frame_starts(&good);
    let after: Vec<usize> = starts.into_iter().filter(|&s| s as u64 >= base_end).collect();
    assert_eq!(after.len(), 3);
    // The end marker a version 1 compaction leaves (epoch - 1, len 0, seq 0, zero nonce) at
    // the checkpoint's end: forged here, with saves after it.
    for (at, h) in [(after[0], forged(0, epoch - 1, 0, 0)), (after[1], forged(1, epoch - 1, 100, 0))] {
        let (offset, _) = damaged_at(open_mem(&with(&good, at, &h)));
        assert_eq!(offset, at as u64);
    }
    // At the last save: kept.
    let last = after[2];
    let bad = with(&good, last, &forged(1, epoch - 1, 100, 0));
    std::fs::write(&t.path, &bad).unwrap();
    let mut node = t.open().unwrap();
    assert!(node.kept_tail());
    assert_eq!(node.discarded_tail().map(|d| d.0), Some(last as u64));
    assert!(matches!(node.compact(), Err(Error::Damaged { .. })));
    node.put(&repo("r"), &secret("new"), b"x").unwrap();
    match node.save() {
        Err(e @ Error::Damaged { offset, .. }) if offset == last as u64 => {
            assert!(e.to_string().contains("refusing to write over it"), "{e}")
        }
        other => panic!("a save over kept bytes: {:?}", other.map(|_| ())),
    }
    drop(node);
    assert!(crate::util::unchanged(&t.path, &bad), "a refused save changed the file");

    // The CLI: reading works with a warning (even with -q); a write is refused, file intact.
    let o = run(t.cli().args(["-q", "ls", "r"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("the bytes from byte {last} are not part of its log")), "{}", stderr(&o));
    let o = run_with_stdin(t.cli().args(["put", "r/new"]), b"x");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&format!("is damaged at byte {last}: ")) && stderr(&o).contains("--accept-rollback"), "{}", stderr(&o));
    assert!(crate::util::unchanged(&t.path, &bad), "a refused put changed the file");
    // Accepted: the write goes ahead, and cuts them off.
    let o = run_with_stdin(t.cli().args(["--accept-rollback", "put", "r/new"]), b"x");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(t.cli().args(["ls", "r"]));
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
}

/// An old sealed header (valid: the data key made it) spliced onto the node after a
/// compaction used to make it open at the old state, or empty, and the next save cut the
/// rest off. The log the old header names is gone or followed by a newer epoch: damage.
#[test]
fn an_old_sealed_header_spliced_onto_a_compacted_node_is_damage() {
    // Compaction to the front: the old header (epoch 0, never compacted) names an empty log
    // at 1024, where the new checkpoint now is.
    let t = TempNode::new();
    let mut node = t.create();
    let fresh = std::fs::read(&t.path).unwrap()[..2 * SLOT_BYTES].to_vec();
    for i in 0..6 {
        node.put(&repo("r"), &secret("junk"), &vec![i; 4000]).unwrap();
        node.save().unwrap();
    }
    let before = std::fs::read(&t.path).unwrap()[..2 * SLOT_BYTES].to_vec();
    node.compact().unwrap();
    node.put(&repo("r"), &secret("later"), b"later").unwrap();
    node.save().unwrap();
    drop(node);
    let now = std::fs::read(&t.path).unwrap();
    for old in [&fresh, &before] {
        let spliced = [&old[..], &now[2 * SLOT_BYTES..]].concat();
        damaged_at(open_mem(&spliced));
        std::fs::write(&t.path, &spliced).unwrap();
        let o = run_with_stdin(t.cli().args(["put", "r/x"]), b"x");
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("is damaged at byte"), "{}", stderr(&o));
        assert!(crate::util::unchanged(&t.path, &spliced));
    }

    // Compaction at the tail (the checkpoint does not fit before itself), then saves: the old
    // header names the old log, which is still whole, followed by the newer checkpoint and
    // the saves after it.
    let t = TempNode::new();
    let mut node = t.create();
    node.put(&repo("r"), &secret("a"), &vec![1; 3000]).unwrap();
    node.save().unwrap();
    let before = std::fs::read(&t.path).unwrap()[..2 * SLOT_BYTES].to_vec();
    node.compact().unwrap();
    let compacted = std::fs::read(&t.path).unwrap();
    assert!(pointers(&compacted).1 > LOG_OFFSET, "compacted at the tail");
    node.put(&repo("r"), &secret("b"), b"later").unwrap();
    node.save().unwrap();
    drop(node);
    let now = std::fs::read(&t.path).unwrap();
    let spliced = [&before[..], &now[2 * SLOT_BYTES..]].concat();
    let (_, what) = damaged_at(open_mem(&spliced));
    assert!(what.contains("more follows it"), "{what}");
}

/// What a crash during compaction leaves is still silent (see also corruption.rs, which
/// cuts the power at every step): the remains after the authenticated end marker.
#[test]
fn compaction_leftovers_open_silently_and_the_next_save_cuts_them_off() {
    /// A file whose truncations never happen: a compaction through it stops as a crash
    /// before its last step (cutting off the rest) would.
    struct NoTruncate(FileStorage);
    impl Storage for NoTruncate {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read_all(&self) -> io::Result<Vec<u8>> {
            self.0.read_all()
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.read_exact_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.write_at(offset, data)
        }
        fn truncate(&mut self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn sync(&mut self) -> io::Result<()> {
            self.0.sync()
        }
    }
    let t = TempNode::new();
    let old = saved(&t, 8);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&t.path).unwrap();
    let mut node = Node::open_storage(&t.path, Box::new(NoTruncate(FileStorage::new(file))), &pass(), Access::Write).unwrap();
    node.compact().unwrap();
    let base_end = node.file_len();
    drop(node);
    let crashed = std::fs::read(&t.path).unwrap();
    assert!(crashed.len() > old.len() && base_end < old.len() as u64, "the old log and the checkpoint after it remain");
    let node = open_mem(&crashed).unwrap();
    assert_eq!(node.file_len(), base_end);
    assert_eq!(node.discarded_tail(), None, "a crash's leftovers are not reported");
    assert!(!node.kept_tail());
    // The marker is authenticated: with any bit of it flipped (CRC recomputed or not) it is
    // no marker, and the log no longer ends there without a word.
    let at = base_end as usize;
    assert_eq!(crashed[at + 4], 8, "an END frame follows the checkpoint");
    for byte in [4, 8, 16, 30, 49, 60] {
        let mut b = crashed.clone();
        b[at + byte] ^= 1;
        if byte < 48 {
            let crc = crc32fast::hash(&b[at..at + 48]);
            b[at + 48..at + 52].copy_from_slice(&crc.to_le_bytes());
        }
        match open_mem(&b) {
            Ok(n) => assert!(n.discarded_tail().is_some(), "a changed marker (byte {byte}) ended the log silently"),
            Err(Error::Damaged { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // The next save cuts the leftovers off.
    let mut node = t.open().unwrap();
    node.put(&repo("r"), &secret("after"), b"after").unwrap();
    node.save().unwrap();
    assert_eq!(std::fs::metadata(&t.path).unwrap().len(), node.file_len());
}

/// Storage that counts the bytes read through it.
struct Counting(FileStorage, Arc<AtomicU64>);

impl Storage for Counting {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let all = self.0.read_all()?;
        self.1.fetch_add(all.len() as u64, Ordering::Relaxed);
        Ok(all)
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.1.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.0.read_exact_at(offset, buf)
    }
    fn data_after(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.0.data_after(offset)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_at(offset, data)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync()
    }
}

/// A node whose file was extended to 20 GiB (sparse: a hole, which reads as zeros) used to be
/// read to its end on every open (88 s): the search for a valid frame after the torn tail
/// tried every byte offset. Holes are skipped: opening reads about what the data holds. Some
/// data far out in the hole (stale bytes) is still searched.
#[test]
fn a_sparse_tail_costs_its_data_not_its_length() {
    let t = TempNode::new();
    let good = saved(&t, 3);
    let file = std::fs::OpenOptions::new().write(true).open(&t.path).unwrap();
    file.set_len(20 << 30).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &[0xA5; 100_000], 7 << 30).unwrap();
    drop(file);
    let read = Arc::new(AtomicU64::new(0));
    let open = || {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&t.path).unwrap();
        Node::open_storage(&t.path, Box::new(Counting(FileStorage::new(file), read.clone())), &pass(), Access::Write)
    };
    let node = open().unwrap();
    assert_eq!(node.file_len(), good.len() as u64);
    assert_eq!(node.discarded_tail().map(|d| d.0), Some(good.len() as u64));
    let bytes = read.load(Ordering::Relaxed);
    assert!(bytes < 16 << 20, "opening read {bytes} bytes of a file of {} bytes of data", good.len() + 100_000);
    drop(node);
    // A valid frame header far out in the hole is still found: damage, not a torn tail.
    let (epoch, _, _) = pointers(&good);
    let file = std::fs::OpenOptions::new().write(true).open(&t.path).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, &forged(1, epoch, 100, 5), 13 << 30).unwrap();
    drop(file);
    read.store(0, Ordering::Relaxed);
    assert!(matches!(open(), Err(Error::Damaged { offset, .. }) if offset == good.len() as u64));
    assert!(read.load(Ordering::Relaxed) < 16 << 20);
}

/// A FIFO at the node path used to hang every command (opening a FIFO waits for a writer).
#[test]
fn a_fifo_at_the_node_path_is_refused_at_once() {
    let t = TempNode::new();
    let made = std::process::Command::new("mkfifo").arg(&t.path).status().unwrap();
    assert!(made.success());
    for args in [&["ls"][..], &["put", "r/s"], &["get", "r/s"]] {
        let mut child = t
            .cli()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Not a measure of speed: a command that hangs would never end.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() && waited < 300 {
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("polykey {args:?} hangs on a FIFO");
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&o),
            format!("polykey: node {} is not a regular file but a FIFO; refusing to open it\n", t.path.display()),
            "{args:?}"
        );
    }
    // The library refuses it too, for writing and for reading.
    for access in [Access::Read, Access::Write] {
        assert!(matches!(Node::open(&t.path, &pass(), access), Err(Error::NotAFile { kind: "a FIFO", .. })));
    }
}

/// Required feature 0x2 (the authenticated end) is set where the key is wrapped: at creation,
/// and at a passphrase change of a version 1 node, unless its file ends after its log (the
/// remains of a version 1 compaction, which the feature would refuse). A compaction cannot set
/// it (the features are bound into the key wrap) and keeps a version 1 node as it is.
#[test]
fn the_authenticated_end_is_set_where_the_key_is_wrapped() {
    use polykey::format::header::Header;
    let features = |path: &Path| u32_at(&std::fs::read(path).unwrap(), 12);
    let t = TempNode::new();
    drop(t.create());
    assert_eq!(features(&t.path), 0x2, "a new node");
    let v1 = |path: &Path| {
        let (mut header, key, _) = Header::create(&pass(), crate::util::FAST_KDF).unwrap();
        header.required_features = 0;
        header.wrap(&pass(), crate::util::FAST_KDF, &key).unwrap();
        let mut storage = MemStorage::default();
        polykey::format::log::write_header(&mut storage, &mut header, &key).unwrap();
        std::fs::write(path, &storage.bytes).unwrap();
    };
    for tail in [false, true] {
        let t = TempNode::new();
        v1(&t.path);
        let mut node = t.open().unwrap();
        node.put(&repo("r"), &secret("s"), b"v").unwrap();
        node.save().unwrap();
        node.compact().unwrap();
        drop(node);
        assert_eq!(features(&t.path), 0, "a compaction keeps a version 1 node as it is");
        if tail {
            let mut f = std::fs::OpenOptions::new().append(true).open(&t.path).unwrap();
            std::io::Write::write_all(&mut f, &[0; 10]).unwrap();
        }
        let mut node = t.open().unwrap();
        node.change_passphrase(&pass(), crate::util::FAST_KDF).unwrap();
        drop(node);
        assert_eq!(features(&t.path), if tail { 0 } else { 0x2 }, "a passphrase change, tail {tail}");
        assert!(t.open().is_ok());
    }
}
