//! A node on a removable or shared medium (CONTRACT.md, "The mounted tree", last bullet, and
//! `polykey status`): a file whose size reads short (FAT after a pull), a device that goes away
//! and comes back, a node file replaced while it is written (a sync client, `mv` of a copy),
//! and what the user is told. The exFAT tests use a real exFAT filesystem (`exfat-fuse` on an
//! image file, as a USB stick ships) and need root and FUSE; without them they print `SKIP`.

use crate::util::{pass, polykey_cmd, repo, run, secret, stderr, TempNode, FAST_KDF};
use polykey::format::header::{Header, LOG_OFFSET, SLOT_BYTES};
use polykey::storage::{copy_out, FileStorage, Placement, Storage};
use polykey::{Access, Node};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn value(node: &Node, r: &str, s: &str) -> Option<Vec<u8>> {
    node.get(&repo(r), &secret(s)).ok().map(|v| v.to_vec())
}

/// A node file as a FAT stick shows it after being pulled mid-write: its size counts bytes
/// that reads never return (`pread` gives 0 before the size).
struct SizeReadsShort {
    bytes: Vec<u8>,
    size: u64,
}

impl Storage for SizeReadsShort {
    fn len(&self) -> io::Result<u64> {
        Ok(self.size)
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.bytes.clone())
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        copy_out(&self.bytes, offset, buf)
    }
    fn write_at(&mut self, _: u64, _: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn truncate(&mut self, _: u64) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_torn_file_whose_size_reads_short_opens_at_its_last_complete_state_like_its_copy() {
    let t = TempNode::new();
    let mut n = t.create();
    n.put(&repo("r"), &secret("a"), b"first").unwrap();
    n.save().unwrap();
    let first_end = n.file_len();
    n.put(&repo("r"), &secret("b"), &[7u8; 3000]).unwrap();
    n.save().unwrap();
    drop(n);
    let full = fs::read(&t.path).unwrap();
    // The last save's frame was cut short: what reads is its first half; the size says all.
    let cut = full[..(first_end as usize + full.len()) / 2].to_vec();
    let size = full.len() as u64;
    let copy = Node::open_storage(&t.path, Box::new(polykey::storage::MemStorage { bytes: cut.clone() }), &pass(), Access::Read)
        .expect("a copy of what reads opens");
    let node = Node::open_storage(&t.path, Box::new(SizeReadsShort { bytes: cut, size }), &pass(), Access::Read)
        .unwrap_or_else(|e| panic!("the file in place must open like its copy: {e}"));
    for n in [&copy, &node] {
        assert_eq!(value(n, "r", "a").as_deref(), Some(&b"first"[..]));
        assert_eq!(value(n, "r", "b"), None, "the torn save is not there");
        assert_eq!(n.discarded_tail().map(|(at, _)| at), Some(first_end), "the cut-short save is reported");
    }
}

/// A node file on a device that died: every write to the file first opened fails with EIO
/// (the dead device), while files opened since (a device put back, or another file put at
/// the path) work.
struct DeadDevice {
    inner: FileStorage,
    dead: (u64, u64),
    dying: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl DeadDevice {
    fn failing(&self) -> io::Result<()> {
        let m = self.inner.file().metadata()?;
        if self.dying.load(std::sync::atomic::Ordering::SeqCst) && (m.dev(), m.ino()) == self.dead {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

impl Storage for DeadDevice {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_all(&self) -> io::Result<Vec<u8>> {
        self.inner.read_all()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.failing()?;
        self.inner.write_at(offset, data)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.failing()?;
        self.inner.truncate(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.failing()?;
        self.inner.sync()
    }
    fn reopen(&mut self, accept: &dyn Fn(&dyn Storage) -> io::Result<()>) -> io::Result<()> {
        self.inner.reopen(accept)
    }
    fn placement(&self) -> Placement {
        self.inner.placement()
    }
    fn start_rescue(&mut self) -> io::Result<PathBuf> {
        self.inner.start_rescue()
    }
}

/// Opens the node at `t` on a [`DeadDevice`]; returns it and the switch that kills the device.
fn open_on_dying_device(t: &TempNode) -> (Node, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let file = fs::OpenOptions::new().read(true).write(true).open(&t.path).unwrap();
    file.try_lock().unwrap();
    let m = file.metadata().unwrap();
    let dying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let storage = DeadDevice { inner: FileStorage::at(file, &t.path), dead: (m.dev(), m.ino()), dying: dying.clone() };
    (Node::open_storage(&t.path, Box::new(storage), &pass(), Access::Write).unwrap(), dying)
}

/// Puts `bytes` at `path` as a new file (rename over it, as a sync client does).
fn replace_with(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("incoming");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// The files beside `path` named as rescue files of it.
fn rescue_files(path: &Path) -> Vec<PathBuf> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut v: Vec<PathBuf> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}.rescued-")))
        .collect();
    v.sort();
    v
}

/// Opens a copy of the node file at `path` (the node writing it holds its lock).
fn open_file(path: &Path) -> Node {
    let bytes = fs::read(path).unwrap();
    Node::open_storage(path, Box::new(polykey::storage::MemStorage { bytes }), &pass(), Access::Read)
        .unwrap_or_else(|e| panic!("{} does not open: {e}", path.display()))
}

#[test]
fn after_a_device_error_a_file_at_the_path_with_a_forged_header_is_not_taken_back() {
    let t = TempNode::new();
    let mut n = t.create();
    n.put(&repo("r"), &secret("a"), b"one").unwrap();
    n.save().unwrap();
    drop(n);
    let (mut node, dying) = open_on_dying_device(&t);
    // The device dies: a save fails and is kept.
    dying.store(true, std::sync::atomic::Ordering::SeqCst);
    node.put(&repo("r"), &secret("b"), b"two").unwrap();
    assert!(node.save().is_err(), "a save to a dead device fails");
    // Another node's file, its header forged to name this node's id and log (public bytes
    // only: the seal cannot be forged without the key), is put at the path, padded so that
    // it looks as long as this node and ends its log the same way.
    let genuine = fs::read(&t.path).unwrap();
    let other = TempNode::new();
    drop(Node::create(&other.path, &pass(), FAST_KDF).unwrap());
    let (theirs, _) = Header::decode(&fs::read(&other.path).unwrap()).unwrap();
    let (ours, _) = Header::decode(&genuine).unwrap();
    let mut forged = theirs[0].clone();
    (forged.node_id, forged.epoch, forged.log_start, forged.base_end) =
        (ours[0].node_id, ours[0].epoch, ours[0].log_start, ours[0].base_end);
    let mut bytes = genuine.clone();
    bytes[..SLOT_BYTES].copy_from_slice(&forged.encode());
    bytes[SLOT_BYTES..LOG_OFFSET as usize].copy_from_slice(&forged.encode());
    replace_with(&t.path, &bytes);
    let saved = node.save();
    assert!(fs::read(&t.path).unwrap() == bytes, "the file at the path must not be written: it is not this node");
    saved.unwrap_or_else(|e| panic!("the save should go to a rescue file: {e}"));
    let rescued = rescue_files(&t.path);
    assert_eq!(rescued.len(), 1, "one rescue file beside the node: {rescued:?}");
    assert_eq!(node.rescued(), Some(rescued[0].as_path()));
    assert_eq!(fs::metadata(&rescued[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let r = open_file(&rescued[0]);
    assert_eq!(value(&r, "r", "a").as_deref(), Some(&b"one"[..]));
    assert_eq!(value(&r, "r", "b").as_deref(), Some(&b"two"[..]));
    assert_eq!(r.node_id(), node.node_id(), "the rescue file is the same node");
    drop(r);
    // Later saves go there too.
    node.put(&repo("r"), &secret("c"), b"three").unwrap();
    node.save().unwrap();
    drop(node);
    assert_eq!(value(&open_file(&rescued[0]), "r", "c").as_deref(), Some(&b"three"[..]));
    assert!(fs::read(&t.path).unwrap() == bytes);
}

#[test]
fn after_a_device_error_the_same_node_put_back_at_the_path_is_written_again() {
    let t = TempNode::new();
    let mut n = t.create();
    n.put(&repo("r"), &secret("a"), b"one").unwrap();
    n.save().unwrap();
    drop(n);
    let (mut node, dying) = open_on_dying_device(&t);
    dying.store(true, std::sync::atomic::Ordering::SeqCst);
    node.put(&repo("r"), &secret("b"), b"two").unwrap();
    assert!(node.save().is_err());
    assert_eq!(node.waiting(), 1);
    // The stick comes back: the same bytes, through a new file.
    replace_with(&t.path, &fs::read(&t.path).unwrap());
    node.save().unwrap_or_else(|e| panic!("the node put back should be written: {e}"));
    assert_eq!(node.waiting(), 0);
    assert!(rescue_files(&t.path).is_empty() && node.rescued().is_none(), "no rescue file for the same node");
    drop(node);
    let back = open_file(&t.path);
    assert_eq!(value(&back, "r", "b").as_deref(), Some(&b"two"[..]));
}

#[test]
fn a_node_replaced_by_an_older_copy_is_never_written_and_nothing_saved_is_lost() {
    let t = TempNode::new();
    let mut node = t.create();
    node.put(&repo("r"), &secret("a"), b"one").unwrap();
    node.save().unwrap();
    drop(node);
    let mut node = t.open().unwrap();
    let old = fs::read(&t.path).unwrap();
    node.put(&repo("r"), &secret("b"), b"two").unwrap();
    node.save().unwrap();
    // A sync client puts its older copy at the path.
    replace_with(&t.path, &old);
    assert!(node.check_placement().is_some(), "the replacement is noticed without a save");
    node.put(&repo("r"), &secret("c"), b"three").unwrap();
    node.save().unwrap();
    assert!(fs::read(&t.path).unwrap() == old, "the file at the path is left alone");
    let rescued = rescue_files(&t.path);
    assert_eq!(rescued.len(), 1);
    let r = open_file(&rescued[0]);
    for (s, v) in [("a", "one"), ("b", "two"), ("c", "three")] {
        assert_eq!(value(&r, "r", s).as_deref(), Some(v.as_bytes()), "r/{s} in the rescue file");
    }
}

/// `polykey status` with nothing mounted says so and succeeds.
#[test]
fn status_with_nothing_mounted_says_so() {
    let run_dir = tempfile::tempdir().unwrap();
    fs::set_permissions(run_dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let o = run(polykey_cmd().env("XDG_RUNTIME_DIR", run_dir.path()).arg("status"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "no node is mounted\n");
    let o = run(polykey_cmd().env("XDG_RUNTIME_DIR", run_dir.path()).args(["status", "--json"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}
