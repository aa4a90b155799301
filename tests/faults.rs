//! Failed writes of the node file (CONTRACT.md, "The mounted tree", last bullet): a full disk,
//! a read-only or vanished filesystem under a mounted node. Nothing already on disk is lost,
//! the node stays openable at its last good state, the failing `fsync`/`close` gets EIO, the
//! failure is logged (never a secret), `polykey unmount` refuses while the data cannot be
//! written, and the daemon writes the data once the disk is back.
//!
//! The node lives on a filesystem the test controls: a small tmpfs (filled with a filler file)
//! or a loop-mounted image (ext2/ext4/vfat). These tests need root (mount, losetup) and FUSE;
//! without them they print `SKIP: ...` and pass. Every mount they make is undone on drop, the
//! FUSE mount before the filesystem under the node.

use crate::mounted::{is_mounted, processes_with, wait_for, Mounted};
use crate::util::{pass, repo, run, run_with_stdin, secret, stderr};
use polykey::{Access, Node};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Seed contents: distinctive, so the log can be searched for them.
const SEED_KEY: &str = "FAULTS-SEED-KEY-q7Zc41";
const SEED_OTHER: &str = "FAULTS-SEED-OTHER-Wm93xD";

/// `marker`, a newline and 16 KiB of random letters: large and incompressible enough that
/// saving it needs fresh blocks on any filesystem (no slack in the node's last page hides it).
fn big(marker: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut noise = vec![0u8; 16 * 1024];
    getrandom::getrandom(&mut noise).unwrap();
    let mut out = format!("{marker}\n").into_bytes();
    out.extend(noise.iter().map(|b| ALPHABET[(b & 63) as usize]));
    out
}

fn run_ok(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Runs a system command that must succeed (mount, losetup, mkfs).
fn sys(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Copies `content` over `rel` in the mount with `cp`, which writes without fsync and
/// reports a failing `close(2)`: the close must fail with EIO.
fn assert_close_fails_with_eio(m: &Mounted, rel: &str, content: &[u8]) {
    let src = tempfile::NamedTempFile::new().unwrap();
    fs::write(src.path(), content).unwrap();
    let o = Command::new("cp").arg(src.path()).arg(m.p(rel)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "cp succeeded although the node cannot be written");
    assert!(err.contains("failed to close") && err.contains("Input/output error"), "close(2) should fail with EIO: {err}");
}

fn is_eio(r: &std::io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EIO))
}

/// Process ids of the mount daemons started for `node` (found by their command line).
fn daemons_of(node: &Path) -> Vec<u32> {
    let canon = fs::canonicalize(node).unwrap_or_else(|_| node.to_owned());
    let mut pids = processes_with(&[b"polykey-mountd", node.as_os_str().as_encoded_bytes()]);
    pids.extend(processes_with(&[b"polykey-mountd", canon.as_os_str().as_encoded_bytes()]));
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn alive(pid: u32) -> bool {
    // A zombie is dead for our purposes (it holds no file).
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit(')').next().is_some_and(|r| !r.trim_start().starts_with('Z')))
}

/// Whether this test run can make mounts of its own.
fn root() -> bool {
    if polykey::runtime::euid() != 0 {
        eprintln!("SKIP: fault tests need root to mount the filesystem under the node");
        return false;
    }
    true
}

/// A filesystem the test controls, holding the node file. Dropping it frees the space, waits
/// for (and as a last resort kills) the daemons still holding the node, then unmounts it and
/// detaches its loop devices.
struct Disk {
    root: tempfile::TempDir,
    mnt: PathBuf,
    fstype: &'static str,
    /// Loop devices attached for this disk (detached on drop).
    loops: Vec<String>,
    /// The backing image of a loop disk.
    image: Option<PathBuf>,
    /// The filesystem holding the image, when the test controls it too.
    backing: Option<Box<Disk>>,
}

impl Disk {
    /// A tmpfs of `size` (e.g. `256k`).
    fn tmpfs(size: &str) -> Option<Disk> {
        if !root() {
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let mnt = root.path().join("disk");
        fs::create_dir(&mnt).unwrap();
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(&mnt).output().unwrap();
        if !o.status.success() {
            eprintln!("SKIP: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
            return None;
        }
        Some(Disk { root, mnt, fstype: "tmpfs", loops: Vec::new(), image: None, backing: None })
    }

    /// A 16 MiB image formatted as `fstype` (`ext2`, `ext4`, `vfat`), loop-mounted.
    fn image(fstype: &'static str, options: &str) -> Option<Disk> {
        if !root() {
            return None;
        }
        Self::image_on(None, fstype, options)
    }

    /// A device whose writes fail while its backing store is full, and work again once it has
    /// room (a flaky USB stick): a sparse ext2 image on a tmpfs of its own, loop-mounted. Fill
    /// the backing tmpfs and every write of a new block of the image fails with an I/O error.
    fn flaky() -> Option<Disk> {
        let backing = Disk::tmpfs("24m")?;
        Self::image_on(Some(backing), "ext2", "defaults")
    }

    fn image_on(backing: Option<Disk>, fstype: &'static str, options: &str) -> Option<Disk> {
        let root = tempfile::tempdir().unwrap();
        let mnt = root.path().join("disk");
        fs::create_dir(&mnt).unwrap();
        let image = backing.as_ref().map_or(root.path(), |b| &b.mnt).join(format!("{fstype}.img"));
        fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
        let mkfs = match fstype {
            "vfat" => Command::new("mkfs.vfat").arg(&image).output(),
            // No discard: mkfs writes its metadata (inode tables too) instead of leaving holes,
            // so on a full backing store only new data blocks fail, as on a failing stick.
            _ => Command::new(format!("mkfs.{fstype}")).args(["-q", "-F", "-E", "nodiscard,lazy_itable_init=0"]).arg(&image).output(),
        };
        match mkfs {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("mkfs.{fstype} failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                eprintln!("SKIP: mkfs.{fstype} is not available: {e}");
                return None;
            }
        }
        let mut disk = Disk { root, mnt, fstype, loops: Vec::new(), image: Some(image), backing: backing.map(Box::new) };
        match disk.attach() {
            Ok(dev) => {
                let o = Command::new("mount").args(["-t", fstype, "-o", options]).arg(&dev).arg(&disk.mnt).output().unwrap();
                if !o.status.success() {
                    eprintln!("SKIP: cannot mount a {fstype} image: {}", String::from_utf8_lossy(&o.stderr).trim());
                    return None;
                }
                Some(disk)
            }
            Err(e) => {
                eprintln!("SKIP: loop devices are unavailable: {e}");
                None
            }
        }
    }

    /// Attaches the image to a new loop device.
    fn attach(&mut self) -> Result<String, String> {
        let o = Command::new("losetup").args(["--find", "--show"]).arg(self.image.as_ref().unwrap()).output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).trim().to_owned());
        }
        let dev = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        self.loops.push(dev.clone());
        Ok(dev)
    }

    /// "Pulls the stick and plugs it back in": detaches the dead (read-only) filesystem from
    /// the mount point (the daemon keeps its open descriptor on it) and mounts the image
    /// again, through a new loop device, at the same place.
    fn replug(&mut self) {
        sys(Command::new("umount").arg("-l").arg(&self.mnt));
        let dev = self.attach().unwrap();
        sys(Command::new("mount").args(["-t", self.fstype]).arg(&dev).arg(&self.mnt));
    }

    /// The node file as it is in a copy of the image taken now (what a pulled stick holds),
    /// read through a read-only loop mount of the copy.
    fn node_in_image_copy(&mut self) -> Vec<u8> {
        let copy = self.root.path().join("snapshot.img");
        fs::copy(self.image.as_ref().unwrap(), &copy).unwrap();
        let dev = sys(Command::new("losetup").args(["--find", "--show", "--read-only"]).arg(&copy));
        self.loops.push(dev.clone());
        let mnt = self.root.path().join("snapshot");
        fs::create_dir_all(&mnt).unwrap();
        sys(Command::new("mount").args(["-t", self.fstype, "-o", "ro"]).arg(&dev).arg(&mnt));
        let bytes = fs::read(mnt.join("test.node"));
        sys(Command::new("umount").arg(&mnt));
        bytes.unwrap()
    }

    /// Where the node file lives.
    fn node_path(&self) -> PathBuf {
        self.mnt.join("test.node")
    }

    fn filler(&self) -> PathBuf {
        self.mnt.join("filler")
    }

    /// Fills the disk: writes a filler file until the filesystem says ENOSPC.
    fn fill(&self) {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(self.filler()).unwrap();
        let chunk = vec![0xA5u8; 64 * 1024];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
        let mut f = fs::OpenOptions::new().append(true).open(self.filler()).unwrap();
        let e = f.write_all(&[0; 4096]).expect_err("the disk should be full");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    }

    /// Frees the space the filler took (on this disk and its backing store).
    fn free(&self) {
        match fs::remove_file(self.filler()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the filler: {e}"),
        }
        if let Some(b) = &self.backing {
            b.free();
        }
    }

    /// The filesystem holding this disk's image.
    fn backing(&self) -> &Disk {
        self.backing.as_ref().expect("a flaky disk")
    }

    /// Ext2/ext4 "errors=remount-ro" in action: a filesystem error makes the kernel turn the
    /// filesystem read-only under its open files (which `mount -o remount,ro` refuses to do
    /// while the daemon holds the node open for writing).
    fn make_read_only(&self) {
        let dev = self.loops.last().unwrap().trim_start_matches("/dev/").to_owned();
        fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "polykey fault test\n").unwrap();
        assert!(fs::write(self.mnt.join("probe"), b"x").is_err_and(|e| e.raw_os_error() == Some(libc::EROFS)), "not read-only");
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.filler());
        let node = self.node_path();
        if !wait_for(15, || daemons_of(&node).is_empty()) {
            for pid in daemons_of(&node) {
                eprintln!("faults: the daemon {pid} still holds {} after its unmount: killing it", node.display());
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
            wait_for(10, || daemons_of(&node).iter().all(|p| !alive(*p)));
        }
        if is_mounted(&self.mnt) {
            let done = wait_for(10, || run_ok(Command::new("umount").arg(&self.mnt)) || !is_mounted(&self.mnt));
            if !done {
                eprintln!("faults: {} stays busy: detaching it lazily", self.mnt.display());
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        for dev in self.loops.iter().rev() {
            let _ = Command::new("losetup").arg("-d").arg(dev).output();
        }
    }
}

/// A mounted node whose file lives on a [`Disk`]. Dropping it frees the disk first, so the
/// daemon can write out and unmount, then the FUSE mount goes, then the disk.
struct Fixture {
    m: Option<Mounted>,
    disk: Disk,
}

impl Fixture {
    /// Seeds a node, moves it onto `disk` and mounts it from there.
    fn on(disk: Option<Disk>) -> Option<Fixture> {
        let disk = disk?;
        let mut m = Mounted::with(|n| {
            n.put(&repo("aws"), &secret("key"), SEED_KEY.as_bytes()).unwrap();
            n.put(&repo("aws"), &secret("secret"), SEED_OTHER.as_bytes()).unwrap();
            n.tag(&repo("prod"), &secret("key"), &repo("aws"), &secret("key")).unwrap();
        })?;
        unmount(&mut m);
        let bytes = fs::read(&m.node.path).unwrap();
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(disk.node_path()).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::remove_file(&m.node.path).unwrap();
        m.node.path = disk.node_path();
        let mut fx = Fixture { m: None, disk };
        m.mount(&[]);
        fx.m = Some(m);
        Some(fx)
    }

    fn m(&self) -> &Mounted {
        self.m.as_ref().unwrap()
    }

    fn m_mut(&mut self) -> &mut Mounted {
        self.m.as_mut().unwrap()
    }

    /// The daemon's log so far.
    fn log(&self) -> String {
        self.m().log()
    }

    /// Waits for the log to mention `what`.
    fn log_mentions(&self, what: &str) -> bool {
        wait_for(10, || self.log().contains(what))
    }

    /// Asserts the log holds none of `markers` (nor the seeds).
    fn assert_log_has_no_secret(&self, markers: &[&str]) {
        let log = self.log();
        for m in markers.iter().chain(&[SEED_KEY, SEED_OTHER]) {
            assert!(!log.contains(m), "the daemon's log contains secret content {m:?}:\n{log}");
        }
    }

    /// `polykey get` through the daemon.
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        let o = run(self.m().cli().args(["get", path]));
        o.status.success().then_some(o.stdout)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Best effort (the filesystem may be read-only): give the daemon room to write out.
        let _ = fs::remove_file(self.disk.filler());
        if let Some(b) = &self.disk.backing {
            let _ = fs::remove_file(b.filler());
        }
        drop(self.m.take());
    }
}

/// `polykey unmount`, asserting it succeeds and the daemon lets go of the node.
///
/// Works around a race outside this file's subject: the daemon may exit before its control
/// thread has sent the answer, and `polykey unmount` then fails with "the mount daemon closed
/// the connection" although everything was written and unmounted. The tests check the node's
/// content afterwards, so nothing is taken on trust.
fn unmount(m: &mut Mounted) {
    let node = m.node.path.clone();
    let o = run(m.cli().arg("unmount").arg(&m.mnt));
    let err = stderr(&o);
    if !o.status.success() {
        assert!(err.contains("closed the connection"), "unmount failed: {err}");
        eprintln!("faults: tolerating a known race of `polykey unmount`: {}", err.trim_end());
    }
    assert!(wait_for(10, || !is_mounted(&m.mnt)), "still mounted after unmount");
    m.forget_mounted();
    assert!(wait_for(10, || daemons_of(&node).is_empty()), "the daemon did not exit after unmount");
}

/// Opens a copy of the node file (the daemon holds the file's lock) with the test passphrase.
fn open_copy(path: &Path) -> Node {
    open_bytes(&fs::read(path).unwrap())
}

fn open_bytes(bytes: &[u8]) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.node");
    fs::write(&copy, bytes).unwrap();
    Node::open(&copy, &pass(), Access::Read).unwrap_or_else(|e| panic!("the node file on disk no longer opens: {e}"))
}

/// The node file as the device holds it, read with O_DIRECT: after a failed writeback the
/// page cache still shows the data that never reached the device. (An O_DIRECT read first
/// writes back dirty pages of its range and fails if that fails: then it is tried again.)
fn read_from_device(path: &Path) -> Vec<u8> {
    let mut last = None;
    for _ in 0..100 {
        match read_direct(path) {
            Ok(bytes) => return bytes,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("cannot read {} with O_DIRECT: {last:?}", path.display())
}

fn read_direct(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    const ALIGN: usize = 4096;
    let f = fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)?;
    let len = f.metadata()?.len() as usize;
    let mut raw = vec![0u8; len.next_multiple_of(ALIGN) + 2 * ALIGN];
    let start = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[start..start + len.next_multiple_of(ALIGN) + ALIGN];
    let mut done = 0;
    while done < len {
        // The daemon's retries may cut the file meanwhile: stop at a short read.
        let n = f.read_at(&mut buf[done..done + ALIGN], done as u64)?;
        done += n;
        if n < ALIGN {
            break;
        }
    }
    Ok(buf[..done.min(len)].to_vec())
}

/// Asserts `actual == expected`, showing only their first line and length if not.
#[track_caller]
fn assert_bytes(actual: &[u8], expected: &[u8], context: impl std::fmt::Display) {
    let show = |b: &[u8]| format!("{:?} ({} bytes)", String::from_utf8_lossy(b.split(|&c| c == b'\n').next().unwrap_or_default()), b.len());
    assert!(actual == expected, "{context}: got {}, expected {}", show(actual), show(expected));
}

fn value(node: &Node, r: &str, s: &str) -> Vec<u8> {
    node.get(&repo(r), &secret(s)).unwrap().to_vec()
}

/// Writes `content` over `rel` in the mount and fsyncs; returns the open file and the result.
fn write_and_fsync(m: &Mounted, rel: &str, content: &[u8]) -> (fs::File, std::io::Result<()>) {
    let mut f = fs::File::create(m.p(rel)).unwrap();
    f.write_all(content).unwrap();
    let r = f.sync_all();
    (f, r)
}

/// `polykey unmount` while the node cannot be written: exit status 1, one clear line naming
/// the cause, and the mount stays (its content still readable).
fn assert_unmount_refused(m: &Mounted, cause: &str, readable: (&str, &[u8])) {
    let o = run(m.cli().arg("unmount").arg(&m.mnt));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "unmount should fail while the node cannot be written; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("polykey: ") && !err.contains("panicked"), "{err}");
    assert!(err.contains(cause), "the message should name the cause ({cause}): {err}");
    assert!(is_mounted(&m.mnt), "the mount must stay while its data cannot be written");
    assert_bytes(&fs::read(m.p(readable.0)).unwrap(), readable.1, format!("{} should stay readable", readable.0));
}

/// Polls until the node file on disk (read as it is now) holds `content` at `r/s`.
fn node_file_gets(path: &Path, r: &str, s: &str, content: &[u8]) -> bool {
    wait_for(10, || {
        let Ok(bytes) = fs::read(path) else { return false };
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("n"), bytes).unwrap();
        Node::open(&dir.path().join("n"), &pass(), Access::Read).is_ok_and(|n| n.get(&repo(r), &secret(s)).is_ok_and(|v| v[..] == *content))
    })
}

#[test]
fn full_disk_fails_fsync_and_close_with_eio_keeps_the_node_and_the_daemon_retries() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let node_path = fx.disk.node_path();
    let (marker, closed_marker) = ("FAULTS-FULL-DISK-9fK2pQ", "FAULTS-CLOSED-ONLY-Rr4e0Z");
    let (content, closed_content) = (big(marker), big(closed_marker));
    fx.disk.fill();

    // Reading what is there keeps working.
    assert_bytes(&fs::read(fx.m().p("repos/aws/key")).unwrap(), SEED_KEY.as_bytes(), "repos/aws/key through the mount");
    assert_bytes(&fs::read(fx.m().p("tags/prod/key")).unwrap(), SEED_KEY.as_bytes(), "tags/prod/key through the mount");

    // A write cannot reach the disk: fsync says EIO; so does close(2) of a file not fsync'd.
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "fsync on a full disk should fail with EIO, got {synced:?}");
    drop(f);
    assert_close_fails_with_eio(fx.m(), "repos/aws/secret", &closed_content);

    // Nothing already on disk is lost: the node file opens at its last good state.
    let on_disk = open_copy(&node_path);
    assert_bytes(&value(&on_disk, "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    assert_bytes(&value(&on_disk, "aws", "secret"), SEED_OTHER.as_bytes(), "aws/secret");
    drop(on_disk);

    // The failure is logged, and the mount refuses to go away with the data unwritten.
    assert!(fx.log_mentions("No space left on device"), "the log should report the failed write:\n{}", fx.log());
    assert_unmount_refused(fx.m(), "No space left on device", ("repos/aws/key", &content));

    // The disk is back: the daemon's retry writes the changes, without being asked.
    fx.disk.free();
    assert!(node_file_gets(&node_path, "aws", "key", &content), "the daemon did not write the change once the disk had room");
    assert!(node_file_gets(&node_path, "aws", "secret", &closed_content), "the daemon did not write the change once the disk had room");
    assert!(fx.get("aws/key").as_deref() == Some(&content[..]), "`polykey get` does not show the change");

    unmount(fx.m_mut());
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &content, "aws/key");
    assert_bytes(&value(&node, "aws", "secret"), &closed_content, "aws/secret");
    let messages: Vec<String> = node.log(&repo("aws"), None).unwrap().into_iter().map(|e| e.message).collect();
    assert!(messages.iter().any(|m| m == "Update key"), "{messages:?}");
    drop(node);
    fx.assert_log_has_no_secret(&[marker, closed_marker]);
}

/// The very first write that cannot be saved, closed without fsync (what `cp`, `echo >` and
/// most tools do), gets EIO from `close(2)`: no earlier failure has to announce it.
#[test]
fn close_of_a_write_that_cannot_be_saved_gets_eio() {
    let Some(fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let node_path = fx.disk.node_path();
    let marker = "FAULTS-FIRST-CLOSE-j8Rw3D";
    let content = big(marker);
    fx.disk.fill();
    assert_close_fails_with_eio(fx.m(), "repos/aws/key", &content);
    assert_bytes(&value(&open_copy(&node_path), "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    fx.disk.free();
    assert!(node_file_gets(&node_path, "aws", "key", &content), "the daemon did not write the change once the disk had room");
    fx.assert_log_has_no_secret(&[marker]);
}

#[test]
fn cli_reads_go_through_the_daemon_while_the_disk_is_full() {
    let Some(fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let marker = "FAULTS-CLI-READ-Hq2v8R";
    let content = big(marker);
    fx.disk.fill();
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "{synced:?}");
    drop(f);
    // A change is waiting for the disk; reading needs no write.
    let o = run(fx.m().cli().args(["get", "aws/secret"]));
    assert!(o.status.success(), "`polykey get` of an untouched secret fails while the disk is full: {}", stderr(&o));
    assert_eq!(o.stdout, SEED_OTHER.as_bytes());
    let o = run(fx.m().cli().args(["ls", "aws"]));
    assert!(o.status.success(), "`polykey ls` fails while the disk is full: {}", stderr(&o));
    assert_eq!(o.stdout, b"key\nsecret\n");
    fx.disk.free();
    assert!(wait_for(10, || fx.get("aws/key").as_deref() == Some(&content[..])), "the change never reached the daemon's node");
    fx.assert_log_has_no_secret(&[marker]);
}

#[test]
fn cli_put_while_the_disk_is_full_fails_clearly_and_loses_nothing() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let node_path = fx.disk.node_path();
    let marker = "FAULTS-CLI-PUT-u3Lw0T";
    let content = big(marker);
    fx.disk.fill();
    let o = run_with_stdin(fx.m().cli().args(["put", "aws/fromcli"]), &content);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "put on a full disk must fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains(marker));
    let on_disk = open_copy(&node_path);
    assert_bytes(&value(&on_disk, "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    drop(on_disk);
    fx.disk.free();
    unmount(fx.m_mut());
    // The node is consistent whatever became of the refused put: all of it or nothing.
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    assert_bytes(&value(&node, "aws", "secret"), SEED_OTHER.as_bytes(), "aws/secret");
    if let Ok(v) = node.get(&repo("aws"), &secret("fromcli")) {
        assert_bytes(&v, &content, "aws/fromcli");
    }
    fx.assert_log_has_no_secret(&[marker]);
}

/// A `polykey put` that failed must not take effect later behind the user's back, or its
/// message must say that it will.
#[test]
fn a_refused_put_does_not_take_effect_later_unannounced() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let content = big("FAULTS-REFUSED-PUT-g4Kx1H");
    fx.disk.fill();
    let o = run_with_stdin(fx.m().cli().args(["put", "aws/fromcli"]), &content);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    fx.disk.free();
    unmount(fx.m_mut());
    let node = fx.m().node.open().unwrap();
    let appeared = node.get(&repo("aws"), &secret("fromcli")).is_ok();
    let announced = err.contains("retr") || err.contains("will be written") || err.contains("kept");
    assert!(!appeared || announced, "the put was reported as failed ({}) but was written later", err.trim_end());
}

#[test]
fn full_disk_at_unmount_refuses_loudly_and_unmounts_once_space_is_freed() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let node_path = fx.disk.node_path();
    let saved = "FAULTS-SAVED-BEFORE-t5Rb2N";
    fs::write(fx.m().p("repos/aws/secret"), saved).unwrap();
    assert!(node_file_gets(&node_path, "aws", "secret", saved.as_bytes()), "a closed write did not reach the node");

    fx.disk.fill();
    // Writes made now wait in memory: a file left open and dirty, and a new file (a secret
    // once its grace period ends). Neither was fsync'd, so neither has failed yet.
    let open_marker = "FAULTS-OPEN-DIRTY-b8Xe6M";
    let new_marker = "FAULTS-NEW-FILE-c2Vn7J";
    let (open_content, new_content) = (big(open_marker), big(new_marker));
    let mut open = fs::OpenOptions::new().write(true).truncate(true).open(fx.m().p("repos/aws/key")).unwrap();
    open.write_all(&open_content).unwrap();
    fs::write(fx.m().p("repos/aws/fresh"), &new_content).unwrap();

    assert_unmount_refused(fx.m(), "No space left on device", ("repos/aws/fresh", &new_content));
    assert_bytes(&fs::read(fx.m().p("repos/aws/fresh")).unwrap(), &new_content, "repos/aws/fresh through the mount");
    assert!(fx.log_mentions("No space left on device"), "{}", fx.log());
    let on_disk = open_copy(&node_path);
    assert_bytes(&value(&on_disk, "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    assert_bytes(&value(&on_disk, "aws", "secret"), saved.as_bytes(), "aws/secret");
    drop(on_disk);
    // A second attempt is refused just the same.
    assert_unmount_refused(fx.m(), "No space left on device", ("repos/aws/fresh", &new_content));

    fx.disk.free();
    drop(open);
    unmount(fx.m_mut());
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &open_content, "aws/key");
    assert_bytes(&value(&node, "aws", "fresh"), &new_content, "aws/fresh");
    assert_bytes(&value(&node, "aws", "secret"), saved.as_bytes(), "aws/secret");
    drop(node);
    fx.assert_log_has_no_secret(&[saved, open_marker, new_marker]);
}

#[test]
fn fusermount_and_sigterm_on_a_full_disk_keep_retrying_until_the_data_is_written() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("256k")) else { return };
    let node_path = fx.disk.node_path();

    // fusermount3 -u: the mount goes, the daemon stays until it has written everything.
    let marker = "FAULTS-FUSERMOUNT-e4Gs1Y";
    let content = big(marker);
    fx.disk.fill();
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "{synced:?}");
    drop(f);
    let pid = fx.m().pid();
    fusermount_u(fx.m());
    fx.m_mut().forget_mounted();
    assert!(wait_for(10, || !is_mounted(&fx.m().mnt)));
    assert!(fx.log_mentions("No space left on device"));
    std::thread::sleep(std::time::Duration::from_millis(600)); // A few retry ticks.
    assert!(alive(pid), "the daemon gave up (exited) with its data unwritten");
    assert_bytes(&value(&open_copy(&node_path), "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    fx.disk.free();
    assert!(wait_for(10, || !alive(pid)), "the daemon did not finish once the disk had room");
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &content, "aws/key");
    drop(node);

    // SIGTERM: the same.
    fx.m_mut().mount(&[]);
    let marker2 = "FAULTS-SIGTERM-k7Pd3W";
    let content2 = big(marker2);
    fx.disk.fill();
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/secret", &content2);
    assert!(is_eio(&synced), "{synced:?}");
    drop(f);
    let pid = fx.m().pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(alive(pid), "the daemon gave up (exited) on SIGTERM with its data unwritten");
    assert_bytes(&value(&open_copy(&node_path), "aws", "secret"), SEED_OTHER.as_bytes(), "aws/secret");
    fx.disk.free();
    assert!(wait_for(10, || !alive(pid)), "the daemon did not finish once the disk had room");
    assert!(wait_for(10, || !is_mounted(&fx.m().mnt)), "SIGTERM left the mount behind");
    fx.m_mut().forget_mounted();
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &content, "aws/key");
    assert_bytes(&value(&node, "aws", "secret"), &content2, "aws/secret");
    drop(node);
    fx.assert_log_has_no_secret(&[marker, marker2]);
}

#[test]
fn the_disk_fills_up_and_frees_again_repeatedly() {
    let Some(mut fx) = Fixture::on(Disk::tmpfs("512k")) else { return };
    let node_path = fx.disk.node_path();
    let mut expected = SEED_KEY.as_bytes().to_vec();
    let mut markers = Vec::new();
    for round in 0..3 {
        let marker = format!("FAULTS-ROUND-{round}-Zt8q");
        let content = big(&marker);
        fx.disk.fill();
        let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
        assert!(is_eio(&synced), "round {round}: {synced:?}");
        drop(f);
        assert_bytes(&value(&open_copy(&node_path), "aws", "key"), &expected, format!("aws/key in round {round}"));
        fx.disk.free();
        assert!(node_file_gets(&node_path, "aws", "key", &content), "round {round}");
        // Saving works normally again.
        let (f, synced) = write_and_fsync(fx.m(), "repos/aws/secret", marker.as_bytes());
        synced.unwrap();
        drop(f);
        assert_bytes(&value(&open_copy(&node_path), "aws", "secret"), marker.as_bytes(), format!("aws/secret in round {round}"));
        expected = content;
        markers.push(marker);
    }
    unmount(fx.m_mut());
    assert_bytes(&value(&fx.m().node.open().unwrap(), "aws", "key"), &expected, "aws/key");
    let markers: Vec<&str> = markers.iter().map(String::as_str).collect();
    fx.assert_log_has_no_secret(&markers);
}

/// A device whose writes fail (a flaky stick): fsync and close get EIO, the node keeps its
/// last good state, and once the device takes writes again the daemon's retry lands.
#[test]
fn failing_device_writes_get_eio_and_the_retry_lands_once_the_device_works() {
    let Some(mut fx) = Fixture::on(Disk::flaky()) else { return };
    let node_path = fx.disk.node_path();
    let (marker, closed_marker) = ("FAULTS-FLAKY-x0Nb7U", "FAULTS-FLAKY-CLOSE-p6Wq2G");
    let (content, closed_content) = (big(marker), big(closed_marker));
    fx.disk.backing().fill();
    assert_bytes(&fs::read(fx.m().p("repos/aws/key")).unwrap(), SEED_KEY.as_bytes(), "repos/aws/key through the mount");
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "fsync on a failing device should fail with EIO, got {synced:?}");
    drop(f);
    assert_close_fails_with_eio(fx.m(), "repos/aws/secret", &closed_content);
    assert!(fx.log_mentions("cannot write node"), "{}", fx.log());
    assert_unmount_refused(fx.m(), "cannot write node", ("repos/aws/key", &content));
    fx.disk.free();
    assert!(node_file_gets(&node_path, "aws", "key", &content), "the daemon did not write the change once the device worked");
    assert!(node_file_gets(&node_path, "aws", "secret", &closed_content));
    unmount(fx.m_mut());
    // Read back from the device itself, not from the page cache: mount the image again.
    sys(Command::new("umount").arg(&fx.disk.mnt));
    let dev = fx.disk.loops[0].clone();
    sys(Command::new("mount").arg(&dev).arg(&fx.disk.mnt));
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &content, "aws/key");
    assert_bytes(&value(&node, "aws", "secret"), &closed_content, "aws/secret");
    drop(node);
    fx.assert_log_has_no_secret(&[marker, closed_marker]);
}

/// While a device's writes fail, what the device holds must stay a node that opens at its
/// last good state: the stick may be pulled (or the power cut) at any moment of the outage.
/// What the device holds is read two ways: the node file with O_DIRECT (the page cache shows
/// the writes that never reached the device), and after a `sync -f` (as the kernel's flusher
/// does within half a minute anyway) a copy of the whole device image, mounted on its own,
/// which is exactly what a pulled stick would show in another computer.
#[test]
fn failing_device_leaves_a_node_that_opens_on_the_device() {
    let Some(mut fx) = Fixture::on(Disk::flaky()) else { return };
    let node_path = fx.disk.node_path();
    let content = big("FAULTS-FLAKY-DEVICE-v2Qm8L");
    fx.disk.backing().fill();
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "{synced:?}");
    drop(f);
    let check = |bytes: &[u8], how: &str| {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("n"), bytes).unwrap();
        match Node::open(&dir.path().join("n"), &pass(), Access::Read) {
            Ok(n) => assert_bytes(&value(&n, "aws", "key"), SEED_KEY.as_bytes(), format!("aws/key on the device ({how})")),
            Err(e) => panic!("the node as the device holds it ({how}, {} bytes) does not open: {e}", bytes.len()),
        }
    };
    for sample in 0..10 {
        check(&read_from_device(&node_path), &format!("O_DIRECT, sample {sample}"));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = Command::new("sync").arg("-f").arg(&node_path).output(); // Fails (the device is failing); writes the inode.
    check(&fx.disk.node_in_image_copy(), "a copy of the device image");
}

/// The node's filesystem turns read-only mid-session: ext2 with `errors=remount-ro` after a
/// filesystem error. (`mount -o remount,ro` cannot do it: the kernel refuses with EBUSY while
/// the daemon holds the node open for writing.)
#[test]
fn read_only_filesystem_mid_session_gets_eio_keeps_the_node_and_refuses_unmount() {
    let Some(mut fx) = Fixture::on(Disk::image("ext2", "errors=remount-ro")) else { return };
    let node_path = fx.disk.node_path();
    let (marker, closed_marker) = ("FAULTS-READ-ONLY-n1Ca5S", "FAULTS-READ-ONLY-CLOSE-f3Ty8A");
    let (content, closed_content) = (big(marker), big(closed_marker));
    fx.disk.make_read_only();
    assert_bytes(&fs::read(fx.m().p("repos/aws/key")).unwrap(), SEED_KEY.as_bytes(), "repos/aws/key through the mount");
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "fsync on a read-only filesystem should fail with EIO, got {synced:?}");
    drop(f);
    assert_close_fails_with_eio(fx.m(), "repos/aws/secret", &closed_content);
    assert!(fx.log_mentions("Read-only file system"), "{}", fx.log());
    assert_unmount_refused(fx.m(), "Read-only file system", ("repos/aws/key", &content));
    let on_disk = open_copy(&node_path);
    assert_bytes(&value(&on_disk, "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    assert_bytes(&value(&on_disk, "aws", "secret"), SEED_OTHER.as_bytes(), "aws/secret");
    drop(on_disk);
    fx.assert_log_has_no_secret(&[marker, closed_marker]);
    // Such a filesystem stays read-only until it is mounted again; what the daemon does then
    // is `read_only_filesystem_mounted_again_gets_the_pending_changes`.
    end_daemon_that_cannot_write(fx.m_mut());
}

/// "The daemon retries once the disk is back", when the disk comes back as a new mount of
/// the same filesystem at the same path (a stick pulled and plugged in again, or a filesystem
/// that went read-only on an error and was mounted again).
#[test]
fn read_only_filesystem_mounted_again_gets_the_pending_changes() {
    let Some(mut fx) = Fixture::on(Disk::image("ext2", "errors=remount-ro")) else { return };
    let node_path = fx.disk.node_path();
    let marker = "FAULTS-REPLUG-s5Jt9B";
    let content = big(marker);
    fx.disk.make_read_only();
    let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &content);
    assert!(is_eio(&synced), "{synced:?}");
    drop(f);
    fx.disk.replug();
    assert_bytes(&value(&open_copy(&node_path), "aws", "key"), SEED_KEY.as_bytes(), "aws/key");
    let written = node_file_gets(&node_path, "aws", "key", &content);
    if !written {
        let pid = fx.m().pid();
        let o = run(fx.m().cli().arg("unmount").arg(&fx.m().mnt));
        let (code, still) = (o.status.code(), is_mounted(&fx.m().mnt));
        end_daemon_that_cannot_write(fx.m_mut());
        panic!(
            "the daemon {pid} did not write the pending change to the node once its filesystem was back; \
             `polykey unmount` then exited {code:?} ({}), still mounted: {still}; log:\n{}",
            stderr(&o).trim_end(),
            fx.log()
        );
    }
    unmount(fx.m_mut());
    assert_bytes(&value(&fx.m().node.open().unwrap(), "aws", "key"), &content, "aws/key");
}

/// `fusermount3 -u` (not lazy). Retried for a while: another test's child process may hold a
/// copy of a descriptor into the mount for the instant between its fork and its exec.
fn fusermount_u(m: &Mounted) {
    let mut err = String::new();
    let done = wait_for(5, || {
        let o = Command::new("fusermount3").arg("-u").arg(&m.mnt).output().unwrap();
        err = String::from_utf8_lossy(&o.stderr).into_owned();
        o.status.success()
    });
    assert!(done, "fusermount3 -u {} failed: {err}", m.mnt.display());
}

/// Ends a daemon whose node can never be written again (its filesystem is gone): lazy
/// unmount, then kill -9 by its process id, so the test leaves nothing behind.
fn end_daemon_that_cannot_write(m: &mut Mounted) {
    let pid = m.pid();
    let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&m.mnt).status();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    assert!(wait_for(10, || !alive(pid) && !is_mounted(&m.mnt)));
    m.forget_mounted();
}

/// A few saves on a real block filesystem, then the daemon is killed: every fsync'd change
/// is in the node, which opens and mounts again.
fn saves_then_kill_9_on(fstype: &'static str, options: &str) {
    let Some(mut fx) = Fixture::on(Disk::image(fstype, options)) else { return };
    let mut last = Vec::new();
    for i in 0..5 {
        last = big(&format!("FAULTS-{fstype}-SAVE-{i}"));
        let (f, synced) = write_and_fsync(fx.m(), "repos/aws/key", &last);
        synced.unwrap();
        drop(f);
    }
    let o = run_with_stdin(fx.m().cli().args(["put", "aws/fromcli"]), b"via the daemon");
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = fx.m().pid();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    assert!(wait_for(10, || !is_mounted(&fx.m().mnt)), "a dead mount was left behind");
    fx.m_mut().forget_mounted();
    assert!(wait_for(10, || !alive(pid)));
    let node = fx.m().node.open().unwrap();
    assert_bytes(&value(&node, "aws", "key"), &last, "aws/key");
    assert_bytes(&value(&node, "aws", "fromcli"), b"via the daemon", "aws/fromcli");
    assert_bytes(&value(&node, "aws", "secret"), SEED_OTHER.as_bytes(), "aws/secret");
    assert_eq!(node.log(&repo("aws"), None).unwrap().len(), 2 + 5 + 1);
    drop(node);
    fx.m_mut().mount(&[]);
    assert_bytes(&fs::read(fx.m().p("tags/prod/key")).unwrap(), &last, "tags/prod/key through the mount");
    unmount(fx.m_mut());
}

#[test]
fn saves_then_kill_9_on_a_vfat_stick() {
    saves_then_kill_9_on("vfat", "defaults");
}

#[test]
fn saves_then_kill_9_on_ext4() {
    saves_then_kill_9_on("ext4", "defaults");
}
