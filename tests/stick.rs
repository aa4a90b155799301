//! A node on a removable or shared medium (CONTRACT.md, "The mounted tree", last bullet, and
//! `polykey status`): a file whose size reads short (FAT after a pull), a device that goes away
//! and comes back, a node file replaced while it is written (a sync client, `mv` of a copy),
//! and what the user is told. The exFAT tests use a real exFAT filesystem (`exfat-fuse` on an
//! image file, as a USB stick ships) and need root and FUSE; without them they print `SKIP`.

use crate::mounted::{is_mounted, processes_with, wait_for, Mounted};
use crate::util::{pass, polykey_cmd, repo, run, secret, stderr, TempNode, FAST_KDF};
use polykey::format::header::{Header, LOG_OFFSET, SLOT_BYTES};
use polykey::storage::{copy_out, FileStorage, Placement, Storage};
use polykey::{Access, Node};
use std::fs;
use std::io;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

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
        let Some(file) = self.inner.file() else { return Ok(()) };
        let m = file.metadata()?;
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
    fn start_rescue(&mut self, dir: Option<&Path>) -> io::Result<PathBuf> {
        self.inner.start_rescue(dir)
    }
    fn release(&mut self) {
        self.inner.release()
    }
}

/// Opens the node at `t` on a [`DeadDevice`]; returns it and the switch that kills the device.
fn open_on_dying_device(t: &TempNode) -> (Node, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let file = fs::OpenOptions::new().read(true).write(true).open(&t.path).unwrap();
    // A child forked by another test meanwhile may hold our last descriptor's lock a moment.
    assert!(wait_for(5, || file.try_lock().is_ok()));
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

/// A USB stick formatted exFAT, as most ship: an image on a loop device, mounted by the real
/// `exfat-fuse` (this kernel has no exfat module). Pulling it is killing that process: every
/// access to its files then fails with ENOTCONN. Putting it back is mounting it again.
struct ExfatStick {
    dir: tempfile::TempDir,
    image: PathBuf,
    mnt: PathBuf,
    /// The loop device of the stick as plugged now (a new one at each plug, as the kernel
    /// makes a new device for a stick put back).
    loopdev: std::cell::RefCell<String>,
    /// Every loop device attached (detached on drop).
    loops: std::cell::RefCell<Vec<String>>,
}

impl ExfatStick {
    fn new() -> Option<ExfatStick> {
        if polykey::runtime::euid() != 0 {
            eprintln!("SKIP: the exFAT stick test needs root (losetup, mount)");
            return None;
        }
        if Command::new("mkfs.exfat").arg("-V").output().is_err() || Command::new("mount.exfat-fuse").arg("-V").output().is_err() {
            eprintln!("SKIP: exfatprogs and exfat-fuse are missing; run scripts/install-deps.sh");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("stick.img");
        fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
        assert!(run(Command::new("mkfs.exfat").arg(&image)).status.success());
        if !run(Command::new("losetup").arg("-f")).status.success() {
            eprintln!("SKIP: loop devices are unavailable");
            return None;
        }
        let mnt = dir.path().join("stick");
        fs::create_dir(&mnt).unwrap();
        let stick = ExfatStick { dir, image, mnt, loopdev: Default::default(), loops: Default::default() };
        stick.plug();
        Some(stick)
    }

    fn node_path(&self) -> PathBuf {
        self.mnt.join("me.node")
    }

    /// Mounts the stick (again, through a new device) at its place.
    fn plug(&self) {
        let o = run(Command::new("losetup").args(["-f", "--show"]).arg(&self.image));
        assert!(o.status.success(), "losetup: {}", stderr(&o));
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        self.loops.borrow_mut().push(dev.clone());
        *self.loopdev.borrow_mut() = dev.clone();
        let o = run(Command::new("mount.exfat-fuse").arg(&dev).arg(&self.mnt));
        assert!(o.status.success(), "mount.exfat-fuse: {}", stderr(&o));
        assert!(wait_for(10, || is_mounted(&self.mnt)));
    }

    fn driver_pids(&self) -> Vec<u32> {
        self.loops.borrow().iter().flat_map(|l| processes_with(&[b"mount.exfat-fuse", l.as_bytes()])).collect()
    }

    /// Pulls the stick: its driver dies, and its files answer ENOTCONN.
    fn yank(&self) {
        for pid in self.driver_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let gone = wait_for(10, || fs::metadata(self.node_path()).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN)));
        assert!(gone, "the stick's files should answer ENOTCONN once its driver is gone");
    }

    /// Puts the stick back: the dead mount goes (as a desktop detaches it), a new one comes.
    fn replug(&self) {
        assert!(run(Command::new("umount").arg("-l").arg(&self.mnt)).status.success());
        self.plug();
    }
}

impl Drop for ExfatStick {
    fn drop(&mut self) {
        // A test that failed midway may leave a daemon retrying for a stick that is never put
        // back (as designed): as a last resort, it is killed.
        let node = self.node_path();
        for pid in processes_with(&[b"polykey-mountd", node.as_os_str().as_encoded_bytes()]) {
            eprintln!("stick: the daemon {pid} still holds {}: killing it", node.display());
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        for pid in self.driver_pids() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        wait_for(10, || self.driver_pids().is_empty());
        for l in self.loops.borrow().iter() {
            let _ = Command::new("losetup").arg("-d").arg(l).status();
        }
        let _ = &self.dir;
    }
}

/// Seeds `r/a` … `r/d` (a fsync of an existing secret writes it at once; a new file is named
/// only once closed).
fn seed(n: &mut Node) {
    for s in ["a", "b", "c", "d"] {
        n.put(&repo("r"), &secret(s), b"seed").unwrap();
    }
}

/// Mounts a node seeded by [`seed`] whose file is at `node_path`.
fn mount_node_at(node_path: &Path) -> Option<Mounted> {
    let mut m = Mounted::with(seed)?;
    m.unmount();
    fs::write(node_path, fs::read(&m.node.path).unwrap()).unwrap();
    fs::remove_file(&m.node.path).unwrap();
    m.node.path = node_path.to_owned();
    m.mount(&[]);
    Some(m)
}

/// Writes `content` over `rel` in the mount and fsyncs it.
fn write_and_fsync(m: &Mounted, rel: &str, content: &[u8]) -> io::Result<()> {
    let mut f = fs::File::create(m.p(rel))?;
    f.write_all(content)?;
    f.sync_all()
}

fn status(m: &Mounted) -> (Option<i32>, String, serde_json::Value) {
    let o = run(m.cli().arg("status"));
    let j = run(m.cli().args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), v[0].clone())
}

fn daemon_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

#[test]
fn an_exfat_stick_pulled_and_put_back_keeps_every_acknowledged_save() {
    let Some(stick) = ExfatStick::new() else { return };
    let Some(mut m) = mount_node_at(&stick.node_path()) else { return };
    write_and_fsync(&m, "repos/r/b", b"before the pull").unwrap();
    let (code, text, v) = status(&m);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("writing fine") && text.contains("log: "), "{text}");
    let log_file = PathBuf::from(v["log"].as_str().unwrap());
    assert!(log_file.exists() && log_file.starts_with(m.runtime.join("polykey")), "status names the daemon's own log: {v}");

    stick.yank();
    let r = write_and_fsync(&m, "repos/r/a", b"while pulled");
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)), "fsync on a pulled stick fails with EIO");
    // Status shows it failing, with the error and what waits, and fails itself.
    let (code, text, v) = status(&m);
    assert_eq!(code, Some(1), "status exits 1 while a mount cannot write: {text}");
    assert!(text.contains("CANNOT WRITE since") && text.contains("waiting"), "{text}");
    assert_eq!(v["writing"], false, "{v}");
    assert!(v["waiting"].as_u64().unwrap() >= 1, "{v}");
    // A command through the daemon works, with one warning line.
    let o = run(m.cli().args(["get", "r/a"]));
    assert_eq!(o.stdout, b"while pulled");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("polykey: warning: the mount of ") && err.contains("CANNOT WRITE"), "{err}");
    // Unmounting refuses (the data is only in memory), in one line.
    let o = run(m.cli().arg("unmount").arg(&m.mnt));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(is_mounted(&m.mnt));

    // Put back: the daemon takes the node again and writes what waited.
    stick.replug();
    assert!(wait_for(10, || status(&m).0 == Some(0)), "the daemon should carry on once the stick is back:{}", m.diagnosis());
    assert!(m.log().contains("saving works again"), "{}", m.log());
    write_and_fsync(&m, "repos/r/c", b"after the stick came back").unwrap();

    // Unmounted lazily (a desktop's "eject" with files open): the path leads nowhere, so
    // nothing more is written into the file held (a save now fails), until the stick is back.
    assert!(run(Command::new("umount").arg("-l").arg(&stick.mnt)).status.success());
    let r = write_and_fsync(&m, "repos/r/b", b"while detached");
    assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)), "a save must not land in a file nobody can reach");
    assert_eq!(status(&m).0, Some(1));
    // The daemon lets go of the detached file, so the detached filesystem ends and its driver
    // exits (before the stick is put back: never two drivers writing one image).
    assert!(wait_for(10, || stick.driver_pids().is_empty()), "the daemon should let go of the detached file:{}", m.diagnosis());
    stick.plug();
    assert!(wait_for(10, || status(&m).0 == Some(0)), "the daemon should carry on once the stick is back:{}", m.diagnosis());

    // Pulled again, then SIGTERM: the daemon keeps trying (it holds the only copy), and ends
    // by itself once the stick is back and everything is written.
    stick.yank();
    assert!(write_and_fsync(&m, "repos/r/d", b"pulled again").is_err());
    let pid = m.pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(daemon_alive(pid), "SIGTERM must not drop data that cannot be written");
    stick.replug();
    assert!(wait_for(20, || !daemon_alive(pid)), "after SIGTERM the daemon ends once it could write:{}", m.diagnosis());
    assert!(wait_for(10, || !is_mounted(&m.mnt)));
    m.forget_mounted();
    let node = open_file(&stick.node_path());
    for (s, v) in [("a", "while pulled"), ("b", "while detached"), ("c", "after the stick came back"), ("d", "pulled again")] {
        assert_eq!(value(&node, "r", s).as_deref(), Some(v.as_bytes()), "r/{s} on the stick");
    }
    assert!(rescue_files(&stick.node_path()).is_empty());
}

#[test]
fn a_node_file_replaced_while_mounted_is_left_alone_and_a_rescue_file_holds_every_save() {
    let Some(mut m) = Mounted::with(seed) else { return };
    write_and_fsync(&m, "repos/r/b", b"two").unwrap();
    let old = fs::read(&m.node.path).unwrap();
    write_and_fsync(&m, "repos/r/c", b"three").unwrap();
    // `mv` of the older copy over the node, as a sync client does.
    replace_with(&m.node.path, &old);
    // Noticed within about a second, without any save.
    assert!(wait_for(5, || !status(&m).2["rescued"].is_null()), "the replacement should be noticed:{}", m.diagnosis());
    let rescue = PathBuf::from(status(&m).2["rescued"].as_str().unwrap());
    assert_eq!(rescue_files(&m.node.path), vec![rescue.clone()]);
    write_and_fsync(&m, "repos/r/d", b"four").unwrap();
    let (code, text, _) = status(&m);
    assert_eq!(code, Some(1), "the mount writes to the rescue file, which needs the user: {text}");
    assert!(text.contains("NOT AT THE NODE'S PATH"), "{text}");
    assert!(text.contains(&rescue.display().to_string()), "status names the rescue file: {text}");
    let err = stderr(&run(m.cli().args(["ls", "r"])));
    assert!(err.starts_with("polykey: warning:") && err.contains(&rescue.display().to_string()) && err.lines().count() == 1, "{err}");
    assert!(m.log().contains("WARNING") && m.log().contains(&rescue.display().to_string()), "{}", m.log());
    m.unmount();
    assert!(fs::read(&m.node.path).unwrap() == old, "the file put at the path was not written");
    assert_eq!(fs::metadata(&rescue).unwrap().permissions().mode() & 0o777, 0o600);
    let r = open_file(&rescue);
    for (s, v) in [("a", "seed"), ("b", "two"), ("c", "three"), ("d", "four")] {
        assert_eq!(value(&r, "r", s).as_deref(), Some(v.as_bytes()), "r/{s} in the rescue file");
    }
}

/// A flood of log lines (here: a buggy script sending malformed messages to the control
/// socket) keeps the daemon's log bounded: its file is moved aside past 4 MiB, so the log takes
/// at most twice that, and the newest lines are kept.
#[test]
fn a_flood_of_log_lines_keeps_the_daemon_log_bounded() {
    use std::io::Read;
    let Some(m) = Mounted::new() else { return };
    let dir = m.runtime.join("polykey");
    let sock = fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "sock")).unwrap();
    let logs_size = || -> u64 {
        fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    // 70 to 90 bytes a line: 160,000 lines are more than 10 MiB, well past the bound.
    for _ in 0..160_000 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        // One message of one byte, an unknown request: the daemon logs it and hangs up.
        s.write_all(&[1, 0, 0, 0, 99]).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
    let size = logs_size();
    assert!(size <= 2 * (4 << 20) + (64 << 10), "the daemon's log files take {size} bytes");
    // The daemon still works and still logs.
    assert!(run(m.cli().args(["ls"])).status.success());
    let last = fs::read_to_string(
        dir.read_dir().unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "log")).unwrap(),
    )
    .unwrap();
    assert!(last.contains("control connection"), "the newest lines are kept");
}

/// The stick stays away and the user insists: a second SIGTERM writes everything the mount
/// holds to a rescue file in Polykey's state folder, says where, and stops. Nothing is dropped.
#[test]
fn a_second_sigterm_while_the_stick_is_away_saves_a_rescue_file_and_stops() {
    let Some(stick) = ExfatStick::new() else { return };
    let Some(mut m) = mount_node_at(&stick.node_path()) else { return };
    write_and_fsync(&m, "repos/r/a", b"on the stick").unwrap();
    stick.yank();
    assert!(write_and_fsync(&m, "repos/r/b", b"only in memory").is_err());
    let pid = m.pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    assert!(wait_for(10, || m.log().contains("a second signal writes everything to a rescue file")), "{}", m.log());
    assert!(daemon_alive(pid), "one SIGTERM keeps retrying");
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    assert!(wait_for(20, || !daemon_alive(pid)), "the second SIGTERM stops the daemon:{}", m.diagnosis());
    assert!(wait_for(10, || !is_mounted(&m.mnt)));
    m.forget_mounted();
    let dir = m.node.dir.path().join("state/polykey/rescued");
    let files: Vec<PathBuf> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "one rescue file in {}", dir.display());
    assert!(m.log().contains("WARNING: signal 15 again") && m.log().contains(&files[0].display().to_string()), "{}", m.log());
    assert_eq!(fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let r = open_file(&files[0]);
    assert_eq!(value(&r, "r", "a").as_deref(), Some(&b"on the stick"[..]));
    assert_eq!(value(&r, "r", "b").as_deref(), Some(&b"only in memory"[..]));
}
