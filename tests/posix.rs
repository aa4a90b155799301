//! POSIX conformance of the mounted tree, modelled on pjdfstest's cases for the operations the
//! mount supports (CONTRACT.md, "The mounted tree"; `src/vfs.rs` for what each operation means).
//!
//! Every case is a small check run through real system calls (`libc` where `std` has no
//! wrapper) on one mount, and recorded in a table: case name, pass or fail, and the detail
//! (the system call, what was expected and what came back). The test prints
//! "POSIX conformance: N/M cases pass" and every failure, and fails if any case that is not in
//! [`KNOWN_DIFFERENCES`] (each with its reason) fails.
//!
//! What the tree means decides some answers that a disk filesystem would give differently,
//! and the cases assert this tree's documented answer:
//! - files are 0600 and folders 0700 whatever `chmod` asks (accepted and ignored), owned by the
//!   mounting user; `chown` to anyone else is EPERM;
//! - only `repos/<repo>/` and `tags/<tag>/` hold files; folders exist only at `repos/<repo>` and
//!   `tags/<tag>` (EPERM elsewhere); a hard link may only be made into a tag folder (EPERM
//!   elsewhere); moving a file between two repository folders, or between a repository and a
//!   tag folder, is EXDEV;
//! - symbolic links exist only with editor scratch names (emacs's lock files), device nodes
//!   and FIFOs not at all (EPERM); extended attributes are not supported (the kernel reports
//!   EOPNOTSUPP once the daemon answers ENOSYS).
//!
//! Each case uses its own secrets (seeded through the library before mounting, see [`SEEDS`]),
//! so the cases do not depend on each other's order.

#![allow(unsafe_code)] // System calls std has no wrapper for, and their raw errno.

use crate::mounted::{wait_for, Mounted};
use crate::util::{repo, run, secret};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Cases that fail on purpose or because of a known bug, each with its reason. A case listed
/// here may fail without failing the test; every other case must pass.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// Seeded secrets of repository `p`: (name, content, tags that link it under the same name).
const SEEDS: &[(&str, &[u8], &[&str])] = &[
    ("exist1", b"hello", &["ptag"]),
    ("exist2", b"hello", &[]),
    ("trunc1", b"hello world", &[]),
    ("app1", b"abc", &[]),
    ("ro1", b"read only", &[]),
    ("wo1", b"write only", &[]),
    ("vis1", b"before", &["ptag"]),
    ("hole1", b"abc", &[]),
    ("ul1", b"before", &[]),
    ("ul2", b"before", &["ptag", "ops"]),
    ("ul3", b"old", &[]),
    ("ul4", b"keep", &[]),
    ("ul5", b"tagged", &["ptag"]),
    ("ur1", b"x", &["ptag"]),
    ("ut1", b"untag me", &["ptag"]),
    ("ra", b"A", &[]),
    ("rb", b"B", &["ptag"]),
    ("rc", b"C", &[]),
    ("rd", b"D", &[]),
    ("re", b"E", &["ptag"]),
    ("rf", b"F", &[]),
    ("rg", b"G", &["ptag"]),
    ("rn1", b"N1", &[]),
    ("rn2", b"N2", &[]),
    ("rn3", b"N3", &[]),
    ("rh", b"H", &[]),
    ("ri", b"I", &[]),
    ("rj", b"old", &["ptag"]),
    ("la", b"L", &[]),
    ("lb", b"L", &[]),
    ("lc", b"L", &["ptag"]),
    ("ld", b"L", &[]),
    ("t1", b"0123456789", &[]),
    ("t2", b"ab", &[]),
    ("t3", b"0123", &[]),
    ("t4", b"0123456789", &["ptag"]),
    ("t5", b"0123", &[]),
    ("perm1", b"x", &["ptag"]),
    ("own1", b"x", &[]),
    ("st1", b"12345", &["ptag"]),
    ("st2", b"x", &["ptag"]),
    ("st3", b"x", &[]),
    ("lk1", b"x", &[]),
    ("fa1", b"x", &[]),
    ("xa1", b"x", &[]),
];

fn seed(n: &mut polykey::Node) {
    let p = repo("p");
    n.create_tag(&repo("ops")).unwrap();
    for (name, content, tags) in SEEDS {
        n.put(&p, &secret(name), content).unwrap();
        for t in *tags {
            n.tag(&repo(t), &secret(name), &p, &secret(name)).unwrap();
        }
    }
    n.create_repo(&repo("void")).unwrap();
    n.put(&repo("aws"), &secret("key"), b"AKIA1").unwrap();
    n.put(&repo("aws"), &secret("secret"), b"s3cr3t").unwrap();
    n.tag(&repo("prod"), &secret("key"), &repo("aws"), &secret("key")).unwrap();
    n.put(&repo("rr"), &secret("one"), b"1").unwrap();
    n.tag(&repo("tt"), &secret("one"), &repo("rr"), &secret("one")).unwrap();
    n.put(&repo("sc"), &secret("doc"), b"v1\n").unwrap();
    let big: Vec<(polykey::Name, Vec<u8>)> =
        (0..300).map(|i| (secret(&format!("a-secret-with-a-rather-long-name-number-{i:04}")), format!("{i}").into_bytes())).collect();
    let items: Vec<(polykey::Name, &[u8])> = big.iter().map(|(n, d)| (n.clone(), &d[..])).collect();
    n.put_many(&repo("big"), &items).unwrap();
}

// ---------------------------------------------------------------------------------------------
// System calls returning the raw errno.

type Errno = i32;
type R = Result<(), String>;

fn errname(e: Errno) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EROFS => "EROFS",
        _ => return format!("errno {e}"),
    };
    n.to_owned()
}

fn names(want: &[Errno]) -> String {
    want.iter().map(|e| errname(*e)).collect::<Vec<_>>().join(" or ")
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn sys(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn sys_size(r: libc::ssize_t) -> Result<usize, Errno> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r as usize)
    }
}

/// An open descriptor, closed on drop.
struct Fd(libc::c_int);

impl Fd {
    fn open(p: &Path, flags: libc::c_int) -> Result<Fd, Errno> {
        let c = cpath(p);
        sys(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) }).map(Fd)
    }
    fn write(&self, b: &[u8]) -> Result<usize, Errno> {
        sys_size(unsafe { libc::write(self.0, b.as_ptr().cast(), b.len()) })
    }
    fn pwrite(&self, b: &[u8], off: i64) -> Result<usize, Errno> {
        sys_size(unsafe { libc::pwrite(self.0, b.as_ptr().cast(), b.len(), off) })
    }
    fn pread(&self, len: usize, off: i64) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        let n = sys_size(unsafe { libc::pread(self.0, buf.as_mut_ptr().cast(), len, off) })?;
        buf.truncate(n);
        Ok(buf)
    }
    fn read(&self, len: usize) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; len];
        let n = sys_size(unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), len) })?;
        buf.truncate(n);
        Ok(buf)
    }
    /// The whole content, read from offset 0.
    fn content(&self) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        loop {
            let chunk = self.pread(65536, out.len() as i64)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }
    fn fstat(&self) -> Result<libc::stat, Errno> {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        sys(unsafe { libc::fstat(self.0, &mut st) }).map(|_| st)
    }
    fn ftruncate(&self, len: i64) -> Result<(), Errno> {
        sys(unsafe { libc::ftruncate(self.0, len) }).map(|_| ())
    }
    fn fsync(&self) -> Result<(), Errno> {
        sys(unsafe { libc::fsync(self.0) }).map(|_| ())
    }
    fn seek0(&self) {
        unsafe { libc::lseek(self.0, 0, libc::SEEK_SET) };
    }
    /// Closes now, returning what `close` returned.
    fn close(self) -> Result<(), Errno> {
        let fd = self.0;
        std::mem::forget(self);
        sys(unsafe { libc::close(fd) }).map(|_| ())
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { libc::close(self.0) };
    }
}

fn stat(p: &Path) -> Result<libc::stat, Errno> {
    let c = cpath(p);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys(unsafe { libc::stat(c.as_ptr(), &mut st) }).map(|_| st)
}

fn lstat(p: &Path) -> Result<libc::stat, Errno> {
    let c = cpath(p);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys(unsafe { libc::lstat(c.as_ptr(), &mut st) }).map(|_| st)
}

fn rename(a: &Path, b: &Path) -> Result<(), Errno> {
    sys(unsafe { libc::rename(cpath(a).as_ptr(), cpath(b).as_ptr()) }).map(|_| ())
}

fn renameat2(a: &Path, b: &Path, flags: libc::c_uint) -> Result<(), Errno> {
    sys(unsafe { libc::renameat2(libc::AT_FDCWD, cpath(a).as_ptr(), libc::AT_FDCWD, cpath(b).as_ptr(), flags) }).map(|_| ())
}

fn link(a: &Path, b: &Path) -> Result<(), Errno> {
    sys(unsafe { libc::link(cpath(a).as_ptr(), cpath(b).as_ptr()) }).map(|_| ())
}

fn unlink(p: &Path) -> Result<(), Errno> {
    sys(unsafe { libc::unlink(cpath(p).as_ptr()) }).map(|_| ())
}

fn mkdir(p: &Path, mode: libc::mode_t) -> Result<(), Errno> {
    sys(unsafe { libc::mkdir(cpath(p).as_ptr(), mode) }).map(|_| ())
}

fn rmdir(p: &Path) -> Result<(), Errno> {
    sys(unsafe { libc::rmdir(cpath(p).as_ptr()) }).map(|_| ())
}

fn truncate(p: &Path, len: i64) -> Result<(), Errno> {
    sys(unsafe { libc::truncate(cpath(p).as_ptr(), len) }).map(|_| ())
}

fn chmod(p: &Path, mode: libc::mode_t) -> Result<(), Errno> {
    sys(unsafe { libc::chmod(cpath(p).as_ptr(), mode) }).map(|_| ())
}

fn chown(p: &Path, uid: libc::uid_t, gid: libc::gid_t) -> Result<(), Errno> {
    sys(unsafe { libc::chown(cpath(p).as_ptr(), uid, gid) }).map(|_| ())
}

fn access(p: &Path, mode: libc::c_int) -> Result<(), Errno> {
    sys(unsafe { libc::access(cpath(p).as_ptr(), mode) }).map(|_| ())
}

fn symlink(target: &str, p: &Path) -> Result<(), Errno> {
    let t = CString::new(target).unwrap();
    sys(unsafe { libc::symlink(t.as_ptr(), cpath(p).as_ptr()) }).map(|_| ())
}

fn readlink(p: &Path) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 4096];
    let n = sys_size(unsafe { libc::readlink(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    buf.truncate(n);
    Ok(buf)
}

fn read_file(p: &Path) -> Result<Vec<u8>, Errno> {
    Fd::open(p, libc::O_RDONLY)?.content()
}

fn write_file(p: &Path, data: &[u8]) -> Result<(), Errno> {
    let fd = Fd::open(p, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    let n = fd.write(data)?;
    assert_eq!(n, data.len(), "short write");
    fd.close()
}

/// A folder's entries as `readdir(3)` returns them: (name, d_ino, d_type), dots included.
fn readdir(p: &Path) -> Result<Vec<(Vec<u8>, u64, u8)>, Errno> {
    let c = cpath(p);
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(errno());
    }
    let mut out = Vec::new();
    loop {
        unsafe { *libc::__errno_location() = 0 };
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            let err = errno();
            unsafe { libc::closedir(d) };
            return if err == 0 { Ok(out) } else { Err(err) };
        }
        let e = unsafe { &*e };
        let name = unsafe { std::ffi::CStr::from_ptr(e.d_name.as_ptr()) }.to_bytes().to_vec();
        out.push((name, e.d_ino, e.d_type));
    }
}

fn listing(p: &Path) -> Result<Vec<String>, Errno> {
    let mut v: Vec<String> = readdir(p)?.into_iter().map(|(n, _, _)| String::from_utf8_lossy(&n).into_owned()).collect();
    v.sort();
    Ok(v)
}

/// `what` must fail with one of `want`.
fn fails<T>(what: &str, r: Result<T, Errno>, want: &[Errno]) -> R {
    match r {
        Err(e) if want.contains(&e) => Ok(()),
        Err(e) => Err(format!("{what}: expected {}, got {}", names(want), errname(e))),
        Ok(_) => Err(format!("{what}: expected {}, got success", names(want))),
    }
}

/// `what` must succeed.
fn ok<T>(what: &str, r: Result<T, Errno>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: expected success, got {}", errname(e)))
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn perm(st: &libc::stat) -> u32 {
    st.st_mode & 0o7777
}

fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn mtime(st: &libc::stat) -> (i64, i64) {
    (st.st_mtime, st.st_mtime_nsec)
}

fn ctime(st: &libc::stat) -> (i64, i64) {
    (st.st_ctime, st.st_ctime_nsec)
}

// ---------------------------------------------------------------------------------------------
// The table.

struct Row {
    name: &'static str,
    result: R,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn case(&mut self, name: &'static str, f: impl FnOnce() -> R) {
        assert!(!self.rows.iter().any(|r| r.name == name), "duplicate case name {name}");
        let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(format!("panicked: {}", msg.unwrap_or_default()))
        });
        self.rows.push(Row { name, result });
    }
}

/// Paths of the mount.
struct T<'a> {
    m: &'a Mounted,
}

impl T<'_> {
    fn p(&self, rel: &str) -> PathBuf {
        self.m.p(rel)
    }
    /// `repos/p/<name>`.
    fn r(&self, name: &str) -> PathBuf {
        self.m.p(&format!("repos/p/{name}"))
    }
    /// `tags/ptag/<name>`.
    fn t(&self, name: &str) -> PathBuf {
        self.m.p(&format!("tags/ptag/{name}"))
    }
    fn cli_get(&self, path: &str) -> Option<Vec<u8>> {
        let o = run(self.m.cli().args(["get", path]));
        o.status.success().then_some(o.stdout)
    }
    fn cli(&self, args: &[&str]) -> String {
        let o = run(self.m.cli().args(args));
        assert!(o.status.success(), "polykey {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Waits out the grace period (detached names, closed new files), so what follows sees the
/// tree's settled state rather than what the daemon's next command would settle.
fn after_grace() {
    std::thread::sleep(polykey::vfs::GRACE * 2 + Duration::from_millis(300));
}

// ---------------------------------------------------------------------------------------------
// The cases.

fn open_cases(tb: &mut Table, t: &T) {
    tb.case("open.creat_excl_existing_eexist", || {
        fails(
            "open(repos/p/exist1, O_CREAT|O_EXCL|O_WRONLY)",
            Fd::open(&t.r("exist1"), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY),
            &[libc::EEXIST],
        )?;
        fails(
            "open(tags/ptag/exist1, O_CREAT|O_EXCL|O_WRONLY)",
            Fd::open(&t.t("exist1"), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY),
            &[libc::EEXIST],
        )?;
        ensure!(read_file(&t.r("exist1")) == Ok(b"hello".to_vec()), "content changed");
        Ok(())
    });
    tb.case("open.creat_excl_new", || {
        let fd =
            ok("open(repos/p/new1, O_CREAT|O_EXCL|O_RDWR, 0644)", Fd::open(&t.r("new1"), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR))?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(is_reg(&st) && st.st_size == 0, "fstat: expected an empty regular file, got mode {:o} size {}", st.st_mode, st.st_size);
        ensure!(perm(&st) == 0o600, "fstat: expected mode 0600 (asked 0644), got {:o}", perm(&st));
        ok("write", fd.write(b"fresh"))?;
        ok("close", fd.close())?;
        ensure!(read_file(&t.r("new1")) == Ok(b"fresh".to_vec()), "read back: {:?}", read_file(&t.r("new1")));
        fails(
            "open(repos/p/new1, O_CREAT|O_EXCL) again",
            Fd::open(&t.r("new1"), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY),
            &[libc::EEXIST],
        )
    });
    tb.case("open.creat_existing_keeps_content", || {
        let fd = ok("open(repos/p/exist2, O_CREAT|O_WRONLY)", Fd::open(&t.r("exist2"), libc::O_CREAT | libc::O_WRONLY))?;
        ok("close", fd.close())?;
        let c = read_file(&t.r("exist2"));
        ensure!(c == Ok(b"hello".to_vec()), "content: expected \"hello\", got {c:?}");
        Ok(())
    });
    tb.case("open.trunc", || {
        let fd = ok("open(repos/p/trunc1, O_WRONLY|O_TRUNC)", Fd::open(&t.r("trunc1"), libc::O_WRONLY | libc::O_TRUNC))?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_size == 0, "fstat after O_TRUNC: size {}, expected 0", st.st_size);
        let st = ok("stat", stat(&t.r("trunc1")))?;
        ensure!(st.st_size == 0, "stat after O_TRUNC: size {}, expected 0", st.st_size);
        ok("write", fd.write(b"new"))?;
        ok("close", fd.close())?;
        let c = ok("read", read_file(&t.r("trunc1")))?;
        ensure!(c == b"new", "content {}, expected \"new\"", show(&c));
        Ok(())
    });
    tb.case("open.append", || {
        let fd = ok("open(repos/p/app1, O_WRONLY|O_APPEND)", Fd::open(&t.r("app1"), libc::O_WRONLY | libc::O_APPEND))?;
        ok("write", fd.write(b"def"))?;
        fd.seek0();
        ok("write after lseek(0)", fd.write(b"ghi"))?;
        ok("close", fd.close())?;
        let c = ok("read", read_file(&t.r("app1")))?;
        ensure!(c == b"abcdefghi", "content {}, expected \"abcdefghi\"", show(&c));
        Ok(())
    });
    tb.case("open.rdonly_write_ebadf", || {
        let fd = ok("open(repos/p/ro1, O_RDONLY)", Fd::open(&t.r("ro1"), libc::O_RDONLY))?;
        fails("write on an O_RDONLY descriptor", fd.write(b"x"), &[libc::EBADF])?;
        fails("ftruncate on an O_RDONLY descriptor", fd.ftruncate(0), &[libc::EINVAL, libc::EBADF])?;
        drop(fd);
        ensure!(read_file(&t.r("ro1")) == Ok(b"read only".to_vec()), "content changed");
        Ok(())
    });
    tb.case("open.wronly_read_ebadf", || {
        let fd = ok("open(repos/p/wo1, O_WRONLY)", Fd::open(&t.r("wo1"), libc::O_WRONLY))?;
        fails("read on an O_WRONLY descriptor", fd.read(10), &[libc::EBADF])
    });
    tb.case("open.missing_enoent", || {
        fails("open(repos/p/missing, O_RDONLY)", Fd::open(&t.r("missing"), libc::O_RDONLY), &[libc::ENOENT])?;
        fails("open(repos/nope/x, O_CREAT)", Fd::open(&t.p("repos/nope/x"), libc::O_CREAT | libc::O_WRONLY), &[libc::ENOENT])
    });
    tb.case("open.folder_for_writing_eisdir", || {
        fails("open(repos/p, O_WRONLY)", Fd::open(&t.p("repos/p"), libc::O_WRONLY), &[libc::EISDIR])?;
        fails("open(tags/ptag, O_RDWR)", Fd::open(&t.p("tags/ptag"), libc::O_RDWR), &[libc::EISDIR])
    });
    tb.case("open.file_as_folder_enotdir", || {
        fails("open(repos/p/exist1/x)", Fd::open(&t.p("repos/p/exist1/x"), libc::O_RDONLY), &[libc::ENOTDIR])?;
        fails("open(repos/p/exist1, O_DIRECTORY)", Fd::open(&t.r("exist1"), libc::O_RDONLY | libc::O_DIRECTORY), &[libc::ENOTDIR])
    });
    tb.case("open.creat_outside_repo_and_tag_folders_eperm", || {
        for rel in ["x", "repos/x", "tags/x"] {
            fails(&format!("open({rel}, O_CREAT|O_WRONLY)"), Fd::open(&t.p(rel), libc::O_CREAT | libc::O_WRONLY), &[libc::EPERM])?;
        }
        Ok(())
    });
    tb.case("write.seen_through_other_path_before_close", || {
        let fd = ok("open(repos/p/vis1, O_WRONLY|O_TRUNC)", Fd::open(&t.r("vis1"), libc::O_WRONLY | libc::O_TRUNC))?;
        ok("write", fd.write(b"changed"))?;
        let c = ok("read tags/ptag/vis1", read_file(&t.t("vis1")))?;
        ensure!(c == b"changed", "tags/ptag/vis1 while the writer is open: {}, expected \"changed\"", show(&c));
        ok("close", fd.close())
    });
    tb.case("write.pwrite_past_end_fills_zeros", || {
        let fd = ok("open(repos/p/hole1, O_RDWR)", Fd::open(&t.r("hole1"), libc::O_RDWR))?;
        ok("pwrite(\"Z\", 10)", fd.pwrite(b"Z", 10))?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_size == 11, "size {} after pwrite at 10, expected 11", st.st_size);
        ok("close", fd.close())?;
        let c = ok("read", read_file(&t.r("hole1")))?;
        ensure!(c == b"abc\0\0\0\0\0\0\0Z", "content {}, expected abc + 7 zeros + Z", show(&c));
        Ok(())
    });
    tb.case("read.at_end_returns_0", || {
        let fd = ok("open(repos/p/exist1)", Fd::open(&t.r("exist1"), libc::O_RDONLY))?;
        let c = ok("pread at 5", fd.pread(10, 5))?;
        ensure!(c.is_empty(), "pread at end: {} bytes", c.len());
        let c = ok("pread past end", fd.pread(10, 100))?;
        ensure!(c.is_empty(), "pread past end: {} bytes", c.len());
        Ok(())
    });
}

fn unlink_cases(tb: &mut Table, t: &T) {
    tb.case("unlink_open.read_write_through_fd", || {
        let fd = ok("open(repos/p/ul1, O_RDWR)", Fd::open(&t.r("ul1"), libc::O_RDWR))?;
        ok("unlink(repos/p/ul1)", unlink(&t.r("ul1")))?;
        fails("stat(repos/p/ul1) after unlink", stat(&t.r("ul1")), &[libc::ENOENT])?;
        ensure!(!listing(&t.p("repos/p")).unwrap().contains(&"ul1".to_owned()), "readdir still lists ul1");
        let c = ok("pread through the open fd", fd.pread(100, 0))?;
        ensure!(c == b"before", "pread after unlink: {}, expected \"before\"", show(&c));
        ok("pwrite through the open fd", fd.pwrite(b"AFTER!", 0))?;
        let c = ok("pread", fd.pread(100, 0))?;
        ensure!(c == b"AFTER!", "pread after pwrite: {}, expected \"AFTER!\"", show(&c));
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_nlink == 0, "fstat after unlink: nlink {}, expected 0", st.st_nlink);
        ok("close", fd.close())?;
        fails("stat(repos/p/ul1) after close", stat(&t.r("ul1")), &[libc::ENOENT])
    });
    tb.case("unlink_open.tagged_entries_go_too", || {
        let fd = ok("open(repos/p/ul2, O_RDWR)", Fd::open(&t.r("ul2"), libc::O_RDWR))?;
        ok("unlink(repos/p/ul2)", unlink(&t.r("ul2")))?;
        fails("stat(tags/ptag/ul2) after unlink of repos/p/ul2", stat(&t.t("ul2")), &[libc::ENOENT])?;
        fails("stat(tags/ops/ul2) after unlink of repos/p/ul2", stat(&t.p("tags/ops/ul2")), &[libc::ENOENT])?;
        let c = ok("pread through the open fd", fd.pread(100, 0))?;
        ensure!(c == b"before", "pread: {}", show(&c));
        ok("pwrite", fd.pwrite(b"late", 0))?;
        ok("close", fd.close())
    });
    tb.case("unlink_open.tagged_fstat_nlink_0", || {
        let fd = ok("open(repos/p/ul5, O_RDONLY)", Fd::open(&t.r("ul5"), libc::O_RDONLY))?;
        ok("unlink(repos/p/ul5)", unlink(&t.r("ul5")))?;
        fails("stat(tags/ptag/ul5)", stat(&t.t("ul5")), &[libc::ENOENT])?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_nlink == 0, "fstat after unlink of a secret whose tag entries went with it: nlink {}, expected 0", st.st_nlink);
        Ok(())
    });
    tb.case("unlink_open.recreated_name_is_a_new_file", || {
        let old = ok("open(repos/p/ul3, O_RDWR)", Fd::open(&t.r("ul3"), libc::O_RDWR))?;
        let old_ino = ok("fstat", old.fstat())?.st_ino;
        ok("unlink(repos/p/ul3)", unlink(&t.r("ul3")))?;
        ok("create repos/p/ul3 again", write_file(&t.r("ul3"), b"new"))?;
        let c = ok("pread old fd", old.pread(100, 0))?;
        ensure!(c == b"old", "the old descriptor reads {}, expected \"old\"", show(&c));
        let st = ok("stat(repos/p/ul3)", stat(&t.r("ul3")))?;
        ensure!(st.st_ino != old_ino, "the new file has the old inode {old_ino}");
        ok("pwrite old fd", old.pwrite(b"zzz", 0))?;
        ok("close old fd", old.close())?;
        let c = ok("read repos/p/ul3", read_file(&t.r("ul3")))?;
        ensure!(c == b"new", "writes through the unlinked file's descriptor reached the new file: {}", show(&c));
        Ok(())
    });
    tb.case("unlink_open.survives_the_grace_period", || {
        let fd = ok("open(repos/p/ul4, O_RDWR)", Fd::open(&t.r("ul4"), libc::O_RDWR))?;
        ok("unlink(repos/p/ul4)", unlink(&t.r("ul4")))?;
        after_grace();
        let c = ok("pread after the grace period", fd.pread(100, 0))?;
        ensure!(c == b"keep", "pread: {}, expected \"keep\"", show(&c));
        ok("pwrite", fd.pwrite(b"more!", 0))?;
        let c = ok("pread", fd.pread(100, 0))?;
        ensure!(c == b"more!", "pread after pwrite: {}", show(&c));
        ok("close", fd.close())?;
        fails("stat(repos/p/ul4)", stat(&t.r("ul4")), &[libc::ENOENT])?;
        ensure!(t.cli_get("p/ul4").is_none(), "polykey get p/ul4 finds the unlinked secret again");
        // The other unlinked secrets (closed before) did not come back either.
        for (path, s) in [("p/ul1", "ul1"), ("p/ul2", "ul2")] {
            ensure!(t.cli_get(path).is_none(), "polykey get {path} finds the unlinked secret again");
            fails(&format!("stat(repos/p/{s})"), stat(&t.r(s)), &[libc::ENOENT])?;
        }
        ensure!(!t.cli(&["tags", "ptag"]).contains("ul2 ->"), "polykey tags ptag still lists ul2");
        ensure!(t.cli_get("p/ul3").as_deref() == Some(b"new"), "polykey get p/ul3: {:?}", t.cli_get("p/ul3"));
        Ok(())
    });
    tb.case("unlink.missing_enoent", || fails("unlink(repos/p/missing)", unlink(&t.r("missing")), &[libc::ENOENT]));
    tb.case("unlink.folder_eisdir", || {
        fails("unlink(repos/void)", unlink(&t.p("repos/void")), &[libc::EISDIR])?;
        fails("unlink(tags/ops)", unlink(&t.p("tags/ops")), &[libc::EISDIR])
    });
    tb.case("unlink.repo_path_removes_tag_entries", || {
        ok("unlink(repos/p/ur1)", unlink(&t.r("ur1")))?;
        fails("stat(tags/ptag/ur1)", stat(&t.t("ur1")), &[libc::ENOENT])?;
        ensure!(!listing(&t.p("tags/ptag")).unwrap().contains(&"ur1".to_owned()), "readdir(tags/ptag) still lists ur1");
        // The CLI's reads see what is committed: the removal, once the grace period ends.
        ensure!(wait_for(5, || !t.cli(&["tags", "ptag"]).contains("ur1 ->")), "polykey tags ptag still lists ur1 after 5 s");
        ensure!(t.cli_get("p/ur1").is_none(), "polykey get p/ur1 still finds it");
        Ok(())
    });
    tb.case("unlink.tag_path_only_untags", || {
        ok("unlink(tags/ptag/ut1)", unlink(&t.t("ut1")))?;
        fails("stat(tags/ptag/ut1)", stat(&t.t("ut1")), &[libc::ENOENT])?;
        let st = ok("stat(repos/p/ut1)", stat(&t.r("ut1")))?;
        ensure!(st.st_nlink == 1, "nlink of repos/p/ut1: {}, expected 1", st.st_nlink);
        ensure!(read_file(&t.r("ut1")) == Ok(b"untag me".to_vec()), "content changed");
        after_grace();
        ensure!(t.cli_get("p/ut1").as_deref() == Some(b"untag me"), "polykey get p/ut1: {:?}", t.cli_get("p/ut1"));
        ensure!(!t.cli(&["tags", "ptag"]).contains("ut1 ->"), "polykey tags ptag still lists ut1");
        Ok(())
    });
}

fn rename_cases(tb: &mut Table, t: &T) {
    tb.case("rename.over_existing_file", || {
        let ino_a = ok("stat(repos/p/ra)", stat(&t.r("ra")))?.st_ino;
        let old_b = ok("open(repos/p/rb)", Fd::open(&t.r("rb"), libc::O_RDONLY))?;
        ok("rename(repos/p/ra, repos/p/rb)", rename(&t.r("ra"), &t.r("rb")))?;
        fails("stat(repos/p/ra)", stat(&t.r("ra")), &[libc::ENOENT])?;
        let st = ok("stat(repos/p/rb)", stat(&t.r("rb")))?;
        ensure!(st.st_ino == ino_a, "repos/p/rb has inode {}, expected the renamed file's {ino_a}", st.st_ino);
        ensure!(read_file(&t.r("rb")) == Ok(b"A".to_vec()), "content of repos/p/rb: {:?}", read_file(&t.r("rb")));
        let c = ok("pread of a descriptor open on the replaced file", old_b.pread(10, 0))?;
        ensure!(c == b"B", "the replaced file's open descriptor reads {}, expected \"B\"", show(&c));
        ensure!(t.cli_get("p/rb").as_deref() == Some(b"A"), "polykey get p/rb: {:?}", t.cli_get("p/rb"));
        Ok(())
    });
    tb.case("rename.to_new_name_in_folder", || {
        let ino = ok("stat(repos/p/rc)", stat(&t.r("rc")))?.st_ino;
        ok("rename(repos/p/rc, repos/p/rc2)", rename(&t.r("rc"), &t.r("rc2")))?;
        fails("stat(repos/p/rc)", stat(&t.r("rc")), &[libc::ENOENT])?;
        let st = ok("stat(repos/p/rc2)", stat(&t.r("rc2")))?;
        ensure!(st.st_ino == ino, "inode changed from {ino} to {}", st.st_ino);
        ensure!(read_file(&t.r("rc2")) == Ok(b"C".to_vec()), "content changed");
        ensure!(t.cli_get("p/rc2").as_deref() == Some(b"C") && t.cli_get("p/rc").is_none(), "polykey get disagrees");
        Ok(())
    });
    tb.case("rename.across_repository_folders_exdev", || {
        fails("rename(repos/p/rd, repos/aws/rd)", rename(&t.r("rd"), &t.p("repos/aws/rd")), &[libc::EXDEV])?;
        ensure!(stat(&t.r("rd")).is_ok(), "repos/p/rd is gone");
        Ok(())
    });
    tb.case("rename.repository_to_tag_folder_exdev", || {
        fails("rename(repos/p/rd, tags/ops/rd)", rename(&t.r("rd"), &t.p("tags/ops/rd")), &[libc::EXDEV])?;
        fails("rename(tags/ptag/exist1, repos/p/x)", rename(&t.t("exist1"), &t.r("x")), &[libc::EXDEV])
    });
    tb.case("rename.across_tag_folders", || {
        let ino = ok("stat(repos/p/re)", stat(&t.r("re")))?.st_ino;
        ok("rename(tags/ptag/re, tags/ops/re2)", rename(&t.t("re"), &t.p("tags/ops/re2")))?;
        fails("stat(tags/ptag/re)", stat(&t.t("re")), &[libc::ENOENT])?;
        let st = ok("stat(tags/ops/re2)", stat(&t.p("tags/ops/re2")))?;
        ensure!(st.st_ino == ino, "tags/ops/re2 has inode {}, expected {ino}", st.st_ino);
        ensure!(st.st_nlink == 2, "nlink {}, expected 2", st.st_nlink);
        ensure!(t.cli(&["tags", "ops"]).contains("re2 -> p/re\n"), "polykey tags ops: {}", t.cli(&["tags", "ops"]));
        Ok(())
    });
    tb.case("rename.within_tag_folder", || {
        ok("link(repos/p/rd, tags/ops/rd1)", link(&t.r("rd"), &t.p("tags/ops/rd1")))?;
        ok("rename(tags/ops/rd1, tags/ops/rd2)", rename(&t.p("tags/ops/rd1"), &t.p("tags/ops/rd2")))?;
        fails("stat(tags/ops/rd1)", stat(&t.p("tags/ops/rd1")), &[libc::ENOENT])?;
        ensure!(read_file(&t.p("tags/ops/rd2")) == Ok(b"D".to_vec()), "content of tags/ops/rd2");
        ensure!(t.cli(&["tags", "ops"]).contains("rd2 -> p/rd\n"), "polykey tags ops: {}", t.cli(&["tags", "ops"]));
        Ok(())
    });
    tb.case("rename.onto_itself", || {
        let before = ok("stat", stat(&t.r("rf")))?;
        ok("rename(repos/p/rf, repos/p/rf)", rename(&t.r("rf"), &t.r("rf")))?;
        let after = ok("stat", stat(&t.r("rf")))?;
        ensure!(before.st_ino == after.st_ino, "inode changed");
        ensure!(read_file(&t.r("rf")) == Ok(b"F".to_vec()), "content changed");
        Ok(())
    });
    tb.case("rename.between_two_names_of_one_inode_does_nothing", || {
        ok("rename(repos/p/rg, tags/ptag/rg)", rename(&t.r("rg"), &t.t("rg")))?;
        ok("stat(repos/p/rg) afterwards", stat(&t.r("rg")))?;
        ok("stat(tags/ptag/rg) afterwards", stat(&t.t("rg")))?;
        Ok(())
    });
    tb.case("rename.noreplace_existing_eexist", || {
        fails(
            "renameat2(repos/p/rn1, repos/p/rn2, RENAME_NOREPLACE)",
            renameat2(&t.r("rn1"), &t.r("rn2"), libc::RENAME_NOREPLACE),
            &[libc::EEXIST],
        )?;
        ensure!(read_file(&t.r("rn2")) == Ok(b"N2".to_vec()), "target changed");
        ensure!(read_file(&t.r("rn1")) == Ok(b"N1".to_vec()), "source changed");
        Ok(())
    });
    tb.case("rename.noreplace_new_name", || {
        ok("renameat2(repos/p/rn3, repos/p/rn4, RENAME_NOREPLACE)", renameat2(&t.r("rn3"), &t.r("rn4"), libc::RENAME_NOREPLACE))?;
        ensure!(read_file(&t.r("rn4")) == Ok(b"N3".to_vec()), "content");
        fails("stat(repos/p/rn3)", stat(&t.r("rn3")), &[libc::ENOENT])
    });
    tb.case("rename.exchange_einval", || {
        fails(
            "renameat2(repos/p/rn1, repos/p/rn2, RENAME_EXCHANGE)",
            renameat2(&t.r("rn1"), &t.r("rn2"), libc::RENAME_EXCHANGE),
            &[libc::EINVAL],
        )
    });
    tb.case("rename.missing_enoent", || fails("rename(repos/p/missing, repos/p/x)", rename(&t.r("missing"), &t.r("x")), &[libc::ENOENT]));
    tb.case("rename.file_over_folder_eisdir", || {
        fails("rename(repos/p/ri, repos/void)", rename(&t.r("ri"), &t.p("repos/void")), &[libc::EISDIR])
    });
    tb.case("rename.folder_over_file_enotdir", || {
        fails("rename(repos/void, repos/p/ri)", rename(&t.p("repos/void"), &t.r("ri")), &[libc::ENOTDIR])
    });
    tb.case("rename.folder_over_nonempty_folder", || {
        fails("rename(repos/void, repos/aws)", rename(&t.p("repos/void"), &t.p("repos/aws")), &[libc::ENOTEMPTY, libc::EEXIST])?;
        ensure!(read_file(&t.p("repos/aws/key")) == Ok(b"AKIA1".to_vec()), "repos/aws/key changed");
        Ok(())
    });
    tb.case("rename.folder_over_empty_folder", || {
        ok("mkdir(repos/e1)", mkdir(&t.p("repos/e1"), 0o700))?;
        ok("mkdir(repos/e2)", mkdir(&t.p("repos/e2"), 0o700))?;
        ok("rename(repos/e1, repos/e2)", rename(&t.p("repos/e1"), &t.p("repos/e2")))?;
        fails("stat(repos/e1)", stat(&t.p("repos/e1")), &[libc::ENOENT])?;
        ok("stat(repos/e2)", stat(&t.p("repos/e2")))?;
        let ls = t.cli(&["ls"]);
        ensure!(ls.contains("e2\n") && !ls.contains("e1\n"), "polykey ls: {ls}");
        Ok(())
    });
    tb.case("rename.repository_folder", || {
        ok("rename(repos/rr, repos/rr2)", rename(&t.p("repos/rr"), &t.p("repos/rr2")))?;
        ensure!(read_file(&t.p("repos/rr2/one")) == Ok(b"1".to_vec()), "repos/rr2/one");
        fails("stat(repos/rr)", stat(&t.p("repos/rr")), &[libc::ENOENT])?;
        let a = ok("stat(repos/rr2/one)", stat(&t.p("repos/rr2/one")))?;
        let b = ok("stat(tags/tt/one)", stat(&t.p("tags/tt/one")))?;
        ensure!(a.st_ino == b.st_ino, "the tag entry no longer has the secret's inode");
        ensure!(t.cli(&["tags", "tt"]) == "one -> rr2/one\n", "polykey tags tt: {}", t.cli(&["tags", "tt"]));
        Ok(())
    });
    tb.case("rename.tag_folder", || {
        ok("rename(tags/tt, tags/tt2)", rename(&t.p("tags/tt"), &t.p("tags/tt2")))?;
        fails("stat(tags/tt)", stat(&t.p("tags/tt")), &[libc::ENOENT])?;
        ensure!(read_file(&t.p("tags/tt2/one")) == Ok(b"1".to_vec()), "tags/tt2/one");
        let tags = t.cli(&["tags"]);
        ensure!(tags.contains("tt2\n") && !tags.contains("tt\n"), "polykey tags: {tags}");
        Ok(())
    });
    tb.case("rename.open_descriptor_follows", || {
        let fd = ok("open(repos/p/rh, O_RDWR)", Fd::open(&t.r("rh"), libc::O_RDWR))?;
        ok("rename(repos/p/rh, repos/p/rh2)", rename(&t.r("rh"), &t.r("rh2")))?;
        ok("pwrite through the descriptor", fd.pwrite(b"HH", 0))?;
        ok("close", fd.close())?;
        ensure!(read_file(&t.r("rh2")) == Ok(b"HH".to_vec()), "repos/p/rh2: {:?}", read_file(&t.r("rh2")));
        ensure!(t.cli_get("p/rh2").as_deref() == Some(b"HH"), "polykey get p/rh2: {:?}", t.cli_get("p/rh2"));
        fails("stat(repos/p/rh)", stat(&t.r("rh")), &[libc::ENOENT])
    });
    tb.case("rename.new_file_over_secret_keeps_tag_links", || {
        ok("write repos/p/rj.tmp", write_file(&t.r("rj.tmp"), b"new"))?;
        ok("rename(repos/p/rj.tmp, repos/p/rj)", rename(&t.r("rj.tmp"), &t.r("rj")))?;
        let a = ok("stat(repos/p/rj)", stat(&t.r("rj")))?;
        let b = ok("stat(tags/ptag/rj)", stat(&t.t("rj")))?;
        ensure!(a.st_ino == b.st_ino, "repo path inode {} != tag path inode {}", a.st_ino, b.st_ino);
        ensure!(a.st_nlink == 2, "nlink {}, expected 2", a.st_nlink);
        ensure!(read_file(&t.t("rj")) == Ok(b"new".to_vec()), "tags/ptag/rj: {:?}", read_file(&t.t("rj")));
        ensure!(!listing(&t.p("repos/p")).unwrap().contains(&"rj.tmp".to_owned()), "rj.tmp still listed");
        Ok(())
    });
    tb.case("rename.name_too_long", || {
        let long = "n".repeat(256);
        fails("rename(repos/p/rd, repos/p/<256 bytes>)", rename(&t.r("rd"), &t.r(&long)), &[libc::ENAMETOOLONG])
    });
}

fn link_cases(tb: &mut Table, t: &T) {
    tb.case("link.repo_to_tag_counts_on_every_path", || {
        ok("link(repos/p/la, tags/ops/la)", link(&t.r("la"), &t.p("tags/ops/la")))?;
        let paths = [t.r("la"), t.p("tags/ops/la")];
        for p in &paths {
            let st = ok("stat", stat(p))?;
            ensure!(st.st_nlink == 2, "{}: nlink {}, expected 2", p.display(), st.st_nlink);
        }
        ok("link(repos/p/la, tags/ptag/la2)", link(&t.r("la"), &t.t("la2")))?;
        let ino = stat(&t.r("la")).unwrap().st_ino;
        for p in [t.r("la"), t.p("tags/ops/la"), t.t("la2")] {
            let st = ok("stat", stat(&p))?;
            ensure!(st.st_nlink == 3, "{}: nlink {}, expected 3", p.display(), st.st_nlink);
            ensure!(st.st_ino == ino, "{}: inode {}, expected {ino}", p.display(), st.st_ino);
        }
        Ok(())
    });
    tb.case("link.unlink_of_a_tag_entry_decrements", || {
        ok("unlink(tags/ops/la)", unlink(&t.p("tags/ops/la")))?;
        for p in [t.r("la"), t.t("la2")] {
            let st = ok("stat", stat(&p))?;
            ensure!(st.st_nlink == 2, "{}: nlink {}, expected 2", p.display(), st.st_nlink);
        }
        ok("unlink(tags/ptag/la2)", unlink(&t.t("la2")))?;
        let st = ok("stat", stat(&t.r("la")))?;
        ensure!(st.st_nlink == 1, "repos/p/la: nlink {}, expected 1", st.st_nlink);
        ensure!(read_file(&t.r("la")) == Ok(b"L".to_vec()), "content changed");
        Ok(())
    });
    tb.case("link.into_a_repository_folder_eperm", || {
        fails("link(repos/p/lb, repos/p/lb2)", link(&t.r("lb"), &t.r("lb2")), &[libc::EPERM])?;
        fails("link(repos/p/lb, repos/aws/lb)", link(&t.r("lb"), &t.p("repos/aws/lb")), &[libc::EPERM])?;
        fails("link(tags/ptag/lc, repos/p/lc2)", link(&t.t("lc"), &t.r("lc2")), &[libc::EPERM])
    });
    tb.case("link.existing_name_eexist", || {
        fails("link(repos/p/lb, tags/ptag/exist1)", link(&t.r("lb"), &t.t("exist1")), &[libc::EEXIST])?;
        ensure!(read_file(&t.t("exist1")) == Ok(b"hello".to_vec()), "tags/ptag/exist1 changed");
        Ok(())
    });
    tb.case("link.tag_entry_to_another_tag", || {
        ok("link(tags/ptag/lc, tags/ops/lc)", link(&t.t("lc"), &t.p("tags/ops/lc")))?;
        let st = ok("stat(repos/p/lc)", stat(&t.r("lc")))?;
        ensure!(st.st_nlink == 3, "nlink {}, expected 3", st.st_nlink);
        ensure!(t.cli(&["tags", "ops"]).contains("lc -> p/lc\n"), "polykey tags ops: {}", t.cli(&["tags", "ops"]));
        Ok(())
    });
    tb.case("link.folder_eperm", || {
        fails("link(repos/void, tags/ops/void)", link(&t.p("repos/void"), &t.p("tags/ops/void")), &[libc::EPERM])
    });
    tb.case("link.outside_tag_folders_eperm", || {
        fails("link(repos/p/lb, tags/lb)", link(&t.r("lb"), &t.p("tags/lb")), &[libc::EPERM])?;
        fails("link(repos/p/lb, lb)", link(&t.r("lb"), &t.p("lb")), &[libc::EPERM])
    });
    tb.case("link.fstat_of_an_open_descriptor_sees_it", || {
        let fd = ok("open(repos/p/ld)", Fd::open(&t.r("ld"), libc::O_RDONLY))?;
        ok("link(repos/p/ld, tags/ops/ld)", link(&t.r("ld"), &t.p("tags/ops/ld")))?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_nlink == 2, "fstat nlink {}, expected 2", st.st_nlink);
        Ok(())
    });
    tb.case("link.missing_source_enoent", || {
        fails("link(repos/p/missing, tags/ops/x)", link(&t.r("missing"), &t.p("tags/ops/x")), &[libc::ENOENT])
    });
    tb.case("link.name_too_long", || {
        let long = "n".repeat(256);
        fails("link(repos/p/lb, tags/ops/<256 bytes>)", link(&t.r("lb"), &t.p(&format!("tags/ops/{long}"))), &[libc::ENAMETOOLONG])
    });
}

fn folder_cases(tb: &mut Table, t: &T) {
    tb.case("mkdir.existing_eexist", || {
        fails("mkdir(repos/p)", mkdir(&t.p("repos/p"), 0o700), &[libc::EEXIST])?;
        fails("mkdir(tags/ptag)", mkdir(&t.p("tags/ptag"), 0o700), &[libc::EEXIST])?;
        fails("mkdir(repos)", mkdir(&t.p("repos"), 0o700), &[libc::EEXIST])
    });
    tb.case("mkdir.inside_a_repository_or_tag_eperm", || {
        fails("mkdir(repos/p/sub)", mkdir(&t.r("sub"), 0o700), &[libc::EPERM])?;
        fails("mkdir(tags/ptag/sub)", mkdir(&t.t("sub"), 0o700), &[libc::EPERM])
    });
    tb.case("mkdir.at_the_top_eperm", || fails("mkdir(other)", mkdir(&t.p("other"), 0o700), &[libc::EPERM]));
    tb.case("mkdir.mode_is_0700", || {
        ok("mkdir(repos/md, 0755)", mkdir(&t.p("repos/md"), 0o755))?;
        let st = ok("stat", stat(&t.p("repos/md")))?;
        ensure!(is_dir(&st) && perm(&st) == 0o700, "mode {:o}, expected a folder 0700", st.st_mode);
        ensure!(t.cli(&["ls"]).contains("md\n"), "polykey ls lacks md");
        ok("mkdir(tags/mt, 0777)", mkdir(&t.p("tags/mt"), 0o777))?;
        let st = ok("stat", stat(&t.p("tags/mt")))?;
        ensure!(is_dir(&st) && perm(&st) == 0o700, "tags/mt mode {:o}, expected a folder 0700", st.st_mode);
        ensure!(t.cli(&["tags"]).contains("mt\n"), "polykey tags lacks mt");
        Ok(())
    });
    tb.case("mkdir.name_too_long", || {
        let long = "n".repeat(256);
        fails("mkdir(repos/<256 bytes>)", mkdir(&t.p(&format!("repos/{long}")), 0o700), &[libc::ENAMETOOLONG])?;
        fails("mkdir(tags/<256 bytes>)", mkdir(&t.p(&format!("tags/{long}")), 0o700), &[libc::ENAMETOOLONG])
    });
    tb.case("rmdir.not_empty_enotempty", || {
        fails("rmdir(repos/p)", rmdir(&t.p("repos/p")), &[libc::ENOTEMPTY, libc::EEXIST])?;
        fails("rmdir(tags/ptag)", rmdir(&t.p("tags/ptag")), &[libc::ENOTEMPTY, libc::EEXIST])
    });
    tb.case("rmdir.missing_enoent", || {
        fails("rmdir(repos/nope)", rmdir(&t.p("repos/nope")), &[libc::ENOENT])?;
        fails("rmdir(tags/nope)", rmdir(&t.p("tags/nope")), &[libc::ENOENT])
    });
    tb.case("rmdir.file_enotdir", || {
        fails("rmdir(repos/p/exist1)", rmdir(&t.r("exist1")), &[libc::ENOTDIR])?;
        fails("rmdir(tags/ptag/exist1)", rmdir(&t.t("exist1")), &[libc::ENOTDIR])
    });
    tb.case("rmdir.empty_folders", || {
        ok("mkdir(repos/gone)", mkdir(&t.p("repos/gone"), 0o700))?;
        ok("rmdir(repos/gone)", rmdir(&t.p("repos/gone")))?;
        fails("stat(repos/gone)", stat(&t.p("repos/gone")), &[libc::ENOENT])?;
        ensure!(!t.cli(&["ls"]).contains("gone\n"), "polykey ls still lists gone");
        ok("mkdir(tags/gone)", mkdir(&t.p("tags/gone"), 0o700))?;
        ok("rmdir(tags/gone)", rmdir(&t.p("tags/gone")))?;
        ensure!(!t.cli(&["tags"]).contains("gone\n"), "polykey tags still lists gone");
        Ok(())
    });
    tb.case("rmdir.top_level_folders_refused", || {
        fails("rmdir(repos)", rmdir(&t.p("repos")), &[libc::EPERM, libc::EBUSY, libc::ENOTEMPTY])?;
        fails("rmdir(tags)", rmdir(&t.p("tags")), &[libc::EPERM, libc::EBUSY, libc::ENOTEMPTY])
    });
}

fn truncate_cases(tb: &mut Table, t: &T) {
    tb.case("truncate.shrink", || {
        ok("truncate(repos/p/t1, 4)", truncate(&t.r("t1"), 4))?;
        let st = ok("stat", stat(&t.r("t1")))?;
        ensure!(st.st_size == 4, "size {}, expected 4", st.st_size);
        ensure!(read_file(&t.r("t1")) == Ok(b"0123".to_vec()), "content {:?}", read_file(&t.r("t1")));
        ensure!(t.cli_get("p/t1").as_deref() == Some(b"0123"), "polykey get p/t1: {:?}", t.cli_get("p/t1"));
        Ok(())
    });
    tb.case("truncate.extend_with_zeros", || {
        ok("truncate(repos/p/t2, 6)", truncate(&t.r("t2"), 6))?;
        ensure!(read_file(&t.r("t2")) == Ok(b"ab\0\0\0\0".to_vec()), "content {:?}", read_file(&t.r("t2")));
        Ok(())
    });
    tb.case("truncate.ftruncate_through_a_descriptor", || {
        let fd = ok("open(repos/p/t3, O_RDWR)", Fd::open(&t.r("t3"), libc::O_RDWR))?;
        ok("ftruncate(2)", fd.ftruncate(2))?;
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_size == 2, "fstat size {}, expected 2", st.st_size);
        ok("pwrite(\"XY\", 2)", fd.pwrite(b"XY", 2))?;
        ok("close", fd.close())?;
        ensure!(read_file(&t.r("t3")) == Ok(b"01XY".to_vec()), "content {:?}", read_file(&t.r("t3")));
        ensure!(t.cli_get("p/t3").as_deref() == Some(b"01XY"), "polykey get p/t3: {:?}", t.cli_get("p/t3"));
        Ok(())
    });
    tb.case("truncate.through_a_tag_path", || {
        ok("truncate(tags/ptag/t4, 3)", truncate(&t.t("t4"), 3))?;
        ensure!(read_file(&t.r("t4")) == Ok(b"012".to_vec()), "repos/p/t4: {:?}", read_file(&t.r("t4")));
        Ok(())
    });
    tb.case("truncate.negative_einval", || fails("truncate(repos/p/t5, -1)", truncate(&t.r("t5"), -1), &[libc::EINVAL]));
    tb.case("truncate.folder_eisdir", || fails("truncate(repos/p, 0)", truncate(&t.p("repos/p"), 0), &[libc::EISDIR]));
}

fn attr_cases(tb: &mut Table, t: &T) {
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    tb.case("perm.folders_0700", || {
        for rel in ["", "repos", "tags", "repos/p", "tags/ptag", "repos/void", "tags/ops"] {
            let st = ok(&format!("stat({rel})"), stat(&t.p(rel)))?;
            ensure!(is_dir(&st) && perm(&st) == 0o700, "{rel}: mode {:o}, expected a folder 0700", st.st_mode);
        }
        Ok(())
    });
    tb.case("perm.files_0600", || {
        for p in [t.r("perm1"), t.t("perm1")] {
            let st = ok("stat", stat(&p))?;
            ensure!(is_reg(&st) && perm(&st) == 0o600, "{}: mode {:o}, expected a regular file 0600", p.display(), st.st_mode);
        }
        Ok(())
    });
    tb.case("owner.the_mounting_user", || {
        for p in [t.p(""), t.p("repos"), t.p("repos/p"), t.p("tags/ptag"), t.r("perm1"), t.t("perm1")] {
            let st = ok("stat", stat(&p))?;
            ensure!(st.st_uid == uid && st.st_gid == gid, "{}: owner {}:{}, expected {uid}:{gid}", p.display(), st.st_uid, st.st_gid);
        }
        Ok(())
    });
    tb.case("chmod.file_accepted_stays_0600", || {
        for mode in [0o644, 0o400, 0o777] {
            ok(&format!("chmod(repos/p/perm1, {mode:o})"), chmod(&t.r("perm1"), mode))?;
            let st = ok("stat", stat(&t.r("perm1")))?;
            ensure!(perm(&st) == 0o600, "after chmod {mode:o}: mode {:o}, expected 0600", perm(&st));
        }
        ok("open for writing after chmod 0400", Fd::open(&t.r("perm1"), libc::O_WRONLY))?;
        Ok(())
    });
    tb.case("chmod.folder_accepted_stays_0700", || {
        ok("chmod(repos/p, 0755)", chmod(&t.p("repos/p"), 0o755))?;
        let st = ok("stat", stat(&t.p("repos/p")))?;
        ensure!(perm(&st) == 0o700, "mode {:o}, expected 0700", perm(&st));
        Ok(())
    });
    tb.case("chown.to_the_owner_accepted", || {
        ok("chown(repos/p/own1, uid, gid)", chown(&t.r("own1"), uid, gid))?;
        ok("chown(repos/p/own1, -1, -1)", chown(&t.r("own1"), u32::MAX, u32::MAX))?;
        ok("chown(repos/p, uid, gid)", chown(&t.p("repos/p"), uid, gid))
    });
    tb.case("chown.to_another_user_eperm", || {
        let other = if uid == 65534 { 65533 } else { 65534 };
        fails("chown(repos/p/own1, other uid, -1)", chown(&t.r("own1"), other, u32::MAX), &[libc::EPERM])?;
        fails("chown(repos/p/own1, -1, other gid)", chown(&t.r("own1"), u32::MAX, other), &[libc::EPERM])?;
        fails("chown(repos/p, other uid, -1)", chown(&t.p("repos/p"), other, u32::MAX), &[libc::EPERM])?;
        let st = ok("stat", stat(&t.r("own1")))?;
        ensure!(st.st_uid == uid && st.st_gid == gid, "owner changed to {}:{}", st.st_uid, st.st_gid);
        Ok(())
    });
    tb.case("access.read_write_allowed_exec_denied", || {
        ok("access(repos/p/perm1, R_OK|W_OK)", access(&t.r("perm1"), libc::R_OK | libc::W_OK))?;
        fails("access(repos/p/perm1, X_OK)", access(&t.r("perm1"), libc::X_OK), &[libc::EACCES])?;
        ok("access(repos/p, R_OK|W_OK|X_OK)", access(&t.p("repos/p"), libc::R_OK | libc::W_OK | libc::X_OK))
    });
    tb.case("utimensat.sets_mtime", || {
        let c = cpath(&t.r("st3"));
        let ts = [libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 0 }, libc::timespec { tv_sec: 1_234_567_890, tv_nsec: 500 }];
        ok("utimensat(repos/p/st3)", sys(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) }))?;
        let st = ok("stat", stat(&t.r("st3")))?;
        ensure!(mtime(&st) == (1_234_567_890, 500), "mtime {:?}, expected (1234567890, 500)", mtime(&st));
        Ok(())
    });
    tb.case("stat.size", || {
        for p in [t.r("st1"), t.t("st1")] {
            let st = ok("stat", stat(&p))?;
            ensure!(st.st_size == 5, "{}: size {}, expected 5", p.display(), st.st_size);
            ensure!(st.st_blocks * 512 >= st.st_size, "{}: st_blocks {} too small", p.display(), st.st_blocks);
        }
        Ok(())
    });
    tb.case("stat.same_inode_and_device_on_every_path", || {
        let a = ok("stat(repos/p/st1)", stat(&t.r("st1")))?;
        let b = ok("stat(tags/ptag/st1)", stat(&t.t("st1")))?;
        ensure!(a.st_ino == b.st_ino && a.st_dev == b.st_dev, "repo path {}/{} vs tag path {}/{}", a.st_dev, a.st_ino, b.st_dev, b.st_ino);
        ensure!(a.st_nlink == 2 && b.st_nlink == 2, "nlink {} / {}, expected 2", a.st_nlink, b.st_nlink);
        let again = ok("stat again", stat(&t.r("st1")))?;
        ensure!(again.st_ino == a.st_ino, "inode changed between two stats");
        Ok(())
    });
    tb.case("stat.mtime_and_ctime_change_on_write", || {
        let before = ok("stat(repos/p/st2)", stat(&t.r("st2")))?;
        std::thread::sleep(Duration::from_millis(20)); // So the clock has moved on.
        let fd = ok("open(tags/ptag/st2, O_WRONLY)", Fd::open(&t.t("st2"), libc::O_WRONLY))?;
        ok("write", fd.write(b"y"))?;
        let during = ok("stat(repos/p/st2) while open", stat(&t.r("st2")))?;
        ok("close", fd.close())?;
        let after = ok("stat(repos/p/st2)", stat(&t.r("st2")))?;
        ensure!(mtime(&during) > mtime(&before), "mtime while open {:?}, not after {:?}", mtime(&during), mtime(&before));
        ensure!(mtime(&after) > mtime(&before), "mtime {:?}, not after {:?}", mtime(&after), mtime(&before));
        ensure!(ctime(&after) > ctime(&before), "ctime {:?}, not after {:?}", ctime(&after), ctime(&before));
        Ok(())
    });
    tb.case("stat.file_types", || {
        ensure!(is_reg(&ok("lstat file", lstat(&t.r("st1")))?), "not a regular file");
        ensure!(is_dir(&ok("lstat folder", lstat(&t.p("repos/p")))?), "not a folder");
        Ok(())
    });
    tb.case("stat.dir_nlink_counts_subfolders", || {
        let st = ok("stat(mount root)", stat(&t.p("")))?;
        ensure!(st.st_nlink == 4, "mount root (2 subfolders): nlink {}, expected 4", st.st_nlink);
        Ok(())
    });
    tb.case("statfs.name_max_255", || {
        let c = cpath(&t.p(""));
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        ok("statvfs", sys(unsafe { libc::statvfs(c.as_ptr(), &mut s) }))?;
        ensure!(s.f_namemax == 255, "f_namemax {}", s.f_namemax);
        Ok(())
    });
}

fn readdir_cases(tb: &mut Table, t: &T) {
    tb.case("readdir.dots_and_all_names", || {
        let got = ok("readdir(repos/aws)", listing(&t.p("repos/aws")))?;
        ensure!(got == [".", "..", "key", "secret"], "readdir(repos/aws): {got:?}");
        let got = ok("readdir(tags/prod)", listing(&t.p("tags/prod")))?;
        ensure!(got == [".", "..", "key"], "readdir(tags/prod): {got:?}");
        let got = ok("readdir(mount root)", listing(&t.p("")))?;
        ensure!(got == [".", "..", "repos", "tags"], "readdir(root): {got:?}");
        let mut want: Vec<String> = t.cli(&["ls"]).lines().map(str::to_owned).collect();
        want.extend([".".to_owned(), "..".to_owned()]);
        want.sort();
        let got = ok("readdir(repos)", listing(&t.p("repos")))?;
        ensure!(got == want, "readdir(repos) {got:?} != polykey ls {want:?}");
        Ok(())
    });
    tb.case("readdir.large_folder", || {
        let got = ok("readdir(repos/big)", listing(&t.p("repos/big")))?;
        ensure!(got.len() == 302, "readdir(repos/big): {} names, expected 300 + 2", got.len());
        let mut want: Vec<String> = (0..300).map(|i| format!("a-secret-with-a-rather-long-name-number-{i:04}")).collect();
        want.extend([".".to_owned(), "..".to_owned()]);
        want.sort();
        ensure!(got == want, "names differ");
        Ok(())
    });
    tb.case("readdir.d_ino_and_d_type_match_stat", || {
        for dir in ["repos/aws", "tags/prod", "repos", ""] {
            for (name, ino, ty) in ok("readdir", readdir(&t.p(dir)))? {
                if name == b"." || name == b".." {
                    continue;
                }
                let rel = if dir.is_empty() {
                    String::from_utf8_lossy(&name).into_owned()
                } else {
                    format!("{dir}/{}", String::from_utf8_lossy(&name))
                };
                let st = ok(&format!("lstat({rel})"), lstat(&t.p(&rel)))?;
                ensure!(st.st_ino == ino, "{rel}: d_ino {ino}, st_ino {}", st.st_ino);
                let want = if is_dir(&st) { libc::DT_DIR } else { libc::DT_REG };
                ensure!(ty == want, "{rel}: d_type {ty}, expected {want}");
            }
        }
        Ok(())
    });
    tb.case("readdir.no_scratch_or_temporary_leftovers", || {
        let d = t.p("repos/sc");
        for name in [".doc.swp", "doc~", "#doc#", "4913", ".#doc"] {
            ok(&format!("write repos/sc/{name}"), write_file(&d.join(name), b"scratch"))?;
        }
        ok("write repos/sc/doc.tmp", write_file(&d.join("doc.tmp"), b"v2\n"))?;
        ok("rename(repos/sc/doc.tmp, repos/sc/doc)", rename(&d.join("doc.tmp"), &d.join("doc")))?;
        for name in [".doc.swp", "doc~", "#doc#", "4913", ".#doc"] {
            ok(&format!("unlink(repos/sc/{name})"), unlink(&d.join(name)))?;
        }
        let got = ok("readdir(repos/sc)", listing(&d))?;
        ensure!(got == [".", "..", "doc"], "readdir(repos/sc) right away: {got:?}");
        after_grace();
        let got = ok("readdir(repos/sc)", listing(&d))?;
        ensure!(got == [".", "..", "doc"], "readdir(repos/sc) after the grace period: {got:?}");
        ensure!(t.cli(&["ls", "sc"]) == "doc\n", "polykey ls sc: {}", t.cli(&["ls", "sc"]));
        ensure!(t.cli_get("sc/doc").as_deref() == Some(b"v2\n"), "polykey get sc/doc");
        Ok(())
    });
}

fn unsupported_cases(tb: &mut Table, t: &T) {
    tb.case("symlink.ordinary_name_eperm", || {
        fails("symlink(\"x\", repos/p/sl)", symlink("x", &t.r("sl")), &[libc::EPERM])?;
        fails("symlink(\"x\", tags/ptag/sl)", symlink("x", &t.t("sl")), &[libc::EPERM])?;
        fails("symlink(\"x\", repos/sl)", symlink("x", &t.p("repos/sl")), &[libc::EPERM])
    });
    tb.case("symlink.scratch_name_allowed", || {
        ok("symlink(\"user@host.1234\", repos/p/.#lockme)", symlink("user@host.1234", &t.r(".#lockme")))?;
        let st = ok("lstat", lstat(&t.r(".#lockme")))?;
        ensure!(st.st_mode & libc::S_IFMT == libc::S_IFLNK, "not a symlink: mode {:o}", st.st_mode);
        let target = ok("readlink", readlink(&t.r(".#lockme")))?;
        ensure!(target == b"user@host.1234", "readlink: {}", show(&target));
        ok("unlink", unlink(&t.r(".#lockme")))?;
        fails("lstat after unlink", lstat(&t.r(".#lockme")), &[libc::ENOENT])
    });
    tb.case("mknod.fifo_and_devices_eperm", || {
        let c = cpath(&t.r("fifo"));
        fails("mkfifo(repos/p/fifo)", sys(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }), &[libc::EPERM])?;
        let c = cpath(&t.r("chr"));
        fails(
            "mknod(repos/p/chr, S_IFCHR)",
            sys(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) }),
            &[libc::EPERM],
        )?;
        let c = cpath(&t.r("sock"));
        fails("mknod(repos/p/sock, S_IFSOCK)", sys(unsafe { libc::mknod(c.as_ptr(), libc::S_IFSOCK | 0o600, 0) }), &[libc::EPERM])
    });
    tb.case("mknod.regular_file_eperm", || {
        // POSIX leaves mknod of a regular file to the implementation; this tree refuses it.
        let c = cpath(&t.r("reg"));
        fails("mknod(repos/p/reg, S_IFREG)", sys(unsafe { libc::mknod(c.as_ptr(), libc::S_IFREG | 0o600, 0) }), &[libc::EPERM])
    });
    tb.case("xattr.unsupported", || {
        let p = cpath(&t.r("xa1"));
        let name = CString::new("user.test").unwrap();
        let unsupported = [libc::ENOTSUP, libc::ENOSYS];
        let v = b"value";
        fails(
            "setxattr(repos/p/xa1, user.test)",
            sys(unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), v.as_ptr().cast(), v.len(), 0) }),
            &unsupported,
        )?;
        let mut buf = [0u8; 64];
        fails(
            "getxattr(repos/p/xa1, user.test)",
            sys_size(unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }),
            &unsupported,
        )?;
        fails("removexattr(repos/p/xa1, user.test)", sys(unsafe { libc::removexattr(p.as_ptr(), name.as_ptr()) }), &unsupported)?;
        // listxattr: "none" (0) is as good an answer as "unsupported".
        match sys_size(unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }) {
            Ok(0) => {}
            Err(e) if unsupported.contains(&e) => {}
            other => return Err(format!("listxattr(repos/p/xa1): expected 0 or ENOTSUP, got {other:?}")),
        }
        ensure!(read_file(&t.r("xa1")) == Ok(b"x".to_vec()), "content changed");
        Ok(())
    });
    tb.case("name.256_bytes_create_enametoolong", || {
        let long = "n".repeat(256);
        fails("open(repos/p/<256 bytes>, O_CREAT)", Fd::open(&t.r(&long), libc::O_CREAT | libc::O_WRONLY), &[libc::ENAMETOOLONG])?;
        fails("open(tags/ptag/<256 bytes>, O_CREAT)", Fd::open(&t.t(&long), libc::O_CREAT | libc::O_WRONLY), &[libc::ENAMETOOLONG])
    });
    tb.case("name.256_bytes_lookup", || {
        let long = "n".repeat(256);
        fails("stat(repos/p/<256 bytes>)", stat(&t.r(&long)), &[libc::ENAMETOOLONG])?;
        fails("unlink(repos/p/<256 bytes>)", unlink(&t.r(&long)), &[libc::ENAMETOOLONG])
    });
    tb.case("name.255_bytes_work", || {
        let long = "m".repeat(255);
        ok("write repos/p/<255 bytes>", write_file(&t.r(&long), b"long"))?;
        ok("rename(<255 bytes>, <255 bytes>2)", rename(&t.r(&long), &t.r(&format!("{}2", &long[1..]))))?;
        let back = format!("{}2", &long[1..]);
        ensure!(read_file(&t.r(&back)) == Ok(b"long".to_vec()), "content after rename");
        ensure!(t.cli_get(&format!("p/{back}")).as_deref() == Some(b"long"), "polykey get p/<255 bytes>");
        Ok(())
    });
    tb.case("lock.fcntl_and_flock", || {
        let fd = ok("open(repos/p/lk1, O_RDWR)", Fd::open(&t.r("lk1"), libc::O_RDWR))?;
        ok("flock(LOCK_EX|LOCK_NB)", sys(unsafe { libc::flock(fd.0, libc::LOCK_EX | libc::LOCK_NB) }))?;
        ok("flock(LOCK_UN)", sys(unsafe { libc::flock(fd.0, libc::LOCK_UN) }))?;
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        ok("fcntl(F_SETLK, F_WRLCK)", sys(unsafe { libc::fcntl(fd.0, libc::F_SETLK, &fl) }))?;
        Ok(())
    });
    tb.case("posix_fallocate.extends", || {
        let fd = ok("open(repos/p/fa1, O_RDWR)", Fd::open(&t.r("fa1"), libc::O_RDWR))?;
        let r = unsafe { libc::posix_fallocate(fd.0, 0, 100) };
        ensure!(r == 0, "posix_fallocate(0, 100): {}", errname(r));
        let st = ok("fstat", fd.fstat())?;
        ensure!(st.st_size == 100, "size {}, expected 100", st.st_size);
        ok("close", fd.close())?;
        let c = ok("read", read_file(&t.r("fa1")))?;
        ensure!(c.len() == 100 && c[0] == b'x' && c[1..].iter().all(|b| *b == 0), "content {}", show(&c));
        Ok(())
    });
    tb.case("fsync.durable_in_the_node", || {
        let fd = ok("open(repos/p/exist2, O_WRONLY|O_TRUNC)", Fd::open(&t.r("exist2"), libc::O_WRONLY | libc::O_TRUNC))?;
        ok("write", fd.write(b"synced"))?;
        ok("fsync", fd.fsync())?;
        // Still open: the CLI reads what the node holds.
        ensure!(t.cli_get("p/exist2").as_deref() == Some(b"synced"), "polykey get p/exist2 after fsync: {:?}", t.cli_get("p/exist2"));
        ok("close", fd.close())
    });
}

#[test]
fn posix_conformance() {
    let Some(m) = Mounted::with(seed) else { return };
    let t = T { m: &m };
    let mut tb = Table::default();
    open_cases(&mut tb, &t);
    unlink_cases(&mut tb, &t);
    rename_cases(&mut tb, &t);
    link_cases(&mut tb, &t);
    folder_cases(&mut tb, &t);
    truncate_cases(&mut tb, &t);
    attr_cases(&mut tb, &t);
    readdir_cases(&mut tb, &t);
    unsupported_cases(&mut tb, &t);

    let passed = tb.rows.iter().filter(|r| r.result.is_ok()).count();
    println!("POSIX conformance: {passed}/{} cases pass", tb.rows.len());
    for r in &tb.rows {
        match &r.result {
            Ok(()) => println!("  pass  {}", r.name),
            Err(d) => println!("  FAIL  {}: {d}", r.name),
        }
    }
    let mut unexpected = Vec::new();
    for r in &tb.rows {
        let known = KNOWN_DIFFERENCES.iter().find(|(n, _)| *n == r.name);
        match (&r.result, known) {
            (Err(d), None) => unexpected.push(format!("{}: {d}", r.name)),
            (Err(_), Some((_, why))) => println!("  known difference {}: {why}", r.name),
            (Ok(()), Some(_)) => println!("  note: {} is listed in KNOWN_DIFFERENCES but passes now", r.name),
            (Ok(()), None) => {}
        }
    }
    for (n, _) in KNOWN_DIFFERENCES {
        assert!(tb.rows.iter().any(|r| r.name == *n), "KNOWN_DIFFERENCES names a case that does not exist: {n}");
    }
    assert!(unexpected.is_empty(), "unexpected POSIX failures:\n{}", unexpected.join("\n"));
}
