//! Where mount daemons announce themselves: a private runtime folder holding, for each
//! mounted node, a control socket and a record of who mounted it where.
//!
//! The folder is `$XDG_RUNTIME_DIR/polykey`, else `/tmp/polykey-<uid>`; it is created 0700 and
//! refused if another user owns it or others can enter it.

use crate::control::{read_message, write_message, Request, Response, MAX_RESPONSE_BYTES};
use std::io;
use std::path::{Path, PathBuf};

/// A mount, as recorded by its daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRecord {
    /// The daemon's process id.
    pub pid: u32,
    /// The node file (canonical path).
    pub node: PathBuf,
    /// The mountpoint (canonical path).
    pub mountpoint: PathBuf,
    /// The mount's device number (`major:minor`, see [`crate::mounts`]): which mount at the
    /// mountpoint is this daemon's. `None` in records of older daemons, or where it is unknown.
    pub dev: Option<String>,
}

/// Formats Unix seconds as ISO 8601 UTC (civil-from-days, Howard Hinnant's algorithm).
pub fn iso8601(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// The effective user id of this process.
#[allow(unsafe_code)]
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id of this process.
#[allow(unsafe_code)]
pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// The runtime folder, created if needed and checked to be private.
pub fn dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(base) => PathBuf::from(base).join("polykey"),
        None => std::env::temp_dir().join(format!("polykey-{}", euid())),
    };
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != euid() || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{} is not a private folder of this user", dir.display())));
    }
    Ok(dir)
}

/// A short stable key for a node path (its canonical form, hashed).
fn key(node: &Path) -> String {
    let canon = std::fs::canonicalize(node).unwrap_or_else(|_| node.to_owned());
    let hex = sha1_smol::Sha1::from(canon.as_os_str().as_encoded_bytes()).digest().to_string();
    hex[..16].to_owned()
}

/// The control socket path for `node`.
pub fn socket_path(node: &Path) -> io::Result<PathBuf> {
    Ok(dir()?.join(format!("{}.sock", key(node))))
}

/// The log file of the daemon mounting `node`.
pub fn log_path(node: &Path) -> io::Result<PathBuf> {
    Ok(dir()?.join(format!("{}.log", key(node))))
}

/// The mount record path for `node`.
pub fn record_path(node: &Path) -> io::Result<PathBuf> {
    Ok(dir()?.join(format!("{}.mount", key(node))))
}

impl MountRecord {
    /// Writes the record (0600) for its node.
    pub fn write(&self) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::OpenOptionsExt;
        let path = record_path(&self.node)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let dev = self.dev.as_ref().map(|d| format!("{d}\n")).unwrap_or_default();
        let body = [
            format!("{}\n", self.pid).as_bytes(),
            self.node.as_os_str().as_bytes(),
            b"\n",
            self.mountpoint.as_os_str().as_bytes(),
            b"\n",
            dev.as_bytes(),
        ]
        .concat();
        io::Write::write_all(&mut f, &body)?;
        std::fs::rename(tmp, path)
    }

    fn parse(bytes: &[u8]) -> Option<MountRecord> {
        use std::os::unix::ffi::OsStrExt;
        let mut lines = bytes.split(|&b| b == b'\n');
        let pid = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
        let node = PathBuf::from(std::ffi::OsStr::from_bytes(lines.next()?));
        let mountpoint = PathBuf::from(std::ffi::OsStr::from_bytes(lines.next()?));
        let dev = lines.next().and_then(|l| std::str::from_utf8(l).ok()).filter(|l| !l.is_empty()).map(str::to_owned);
        Some(MountRecord { pid, node, mountpoint, dev })
    }

    /// Whether the recording daemon is still alive: the process exists, is not a zombie,
    /// and is a polykey-mountd (not an unrelated process that reused the pid).
    pub fn alive(&self) -> bool {
        if !Path::new("/proc/self").exists() {
            return true; // No procfs: trust the record; the node lock still guards writes.
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else { return false };
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap_or_default();
        !matches!(state, Some('Z' | 'X')) && comm.trim_end() == "polykey-mountd"
    }
}

impl MountRecord {
    /// Waits up to `timeout` for the recording daemon to end; returns whether it did. Woken by
    /// the kernel the moment it exits where there is a pidfd (Linux 5.3+), else polls every
    /// 20 ms.
    pub fn wait_gone(&self, timeout: std::time::Duration) -> bool {
        use std::time::Instant;
        let deadline = Instant::now() + timeout;
        #[cfg(target_os = "linux")]
        if let Some(fd) = pidfd(self.pid) {
            // Checked after the pidfd is open: a pid already reused by another process is no
            // polykey-mountd, so `alive` says no and nothing is waited for.
            loop {
                if !self.alive() {
                    return true;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                match wait_readable(&fd, left) {
                    // Exited: gone or a zombie, which `alive` counts as dead; if it somehow
                    // still looks alive, poll below rather than spin here.
                    Some(true) => return !self.alive() || self.poll_gone(deadline),
                    Some(false) => {} // timed out or interrupted: check again
                    None => break,    // poll failed: fall back to polling
                }
            }
        }
        self.poll_gone(deadline)
    }

    fn poll_gone(&self, deadline: std::time::Instant) -> bool {
        while self.alive() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        true
    }
}

/// A pidfd for `pid` (readable once the process has exited), if the kernel has them.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn pidfd(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Waits until `fd` is readable (`Some(true)`) or `timeout` passes or a signal interrupts
/// (`Some(false)`); `None` if poll itself failed.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn wait_readable(fd: &std::os::fd::OwnedFd, timeout: std::time::Duration) -> Option<bool> {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(timeout.as_millis().saturating_add(1)).unwrap_or(i32::MAX);
    // SAFETY: `p` is one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    match r {
        // POLLNVAL: a kernel (or sandbox) that cannot poll pidfds; the caller polls instead.
        r if r > 0 && p.revents & libc::POLLNVAL != 0 => None,
        r if r > 0 => Some(p.revents & libc::POLLIN != 0 || p.revents & (libc::POLLERR | libc::POLLHUP) != 0),
        0 => Some(false),
        _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => Some(false),
        _ => None,
    }
}

/// The record of `node`'s mount, if a live daemon holds it.
pub fn find(node: &Path) -> Option<MountRecord> {
    let rec = MountRecord::parse(&std::fs::read(record_path(node).ok()?).ok()?)?;
    rec.alive().then_some(rec)
}

/// Every live mount of this user.
pub fn list() -> io::Result<Vec<MountRecord>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir()?)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "mount") {
            if let Some(rec) = std::fs::read(&path).ok().and_then(|b| MountRecord::parse(&b)) {
                if rec.alive() {
                    out.push(rec);
                } else {
                    let _ = std::fs::remove_file(&path); // A daemon that died without cleaning up.
                }
            }
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    Ok(out)
}

/// Sends `req` to the daemon holding `node`; `None` if no daemon answers.
pub fn call(node: &Path, req: &Request) -> Option<io::Result<Response>> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket_path(node).ok()?).ok()?;
    let mut exchange = || -> io::Result<Response> {
        // A daemon that refuses the request (too large, too busy) answers, then hangs up without
        // reading the rest: its answer, not the failed write, says what happened.
        let sent = write_message(&mut stream, &req.encode());
        let body = match (read_message(&mut stream, MAX_RESPONSE_BYTES), sent) {
            (Ok(Some(body)), _) => body,
            (_, Err(e)) => return Err(e),
            (Ok(None), Ok(())) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the mount daemon closed the connection")),
            (Err(e), Ok(())) => return Err(e),
        };
        Response::decode(&body)
    };
    Some(exchange())
}
