//! The few operating-system calls std does not offer: memory locking, session and signal
//! handling, peer credentials, descriptor hygiene (core-dump and ptrace protection is shared
//! with the CLI: `polykey::process`). The daemon's only unsafe code on Unix.

#![allow(unsafe_code)]

use std::io;

/// What hardening achieved, for the log.
pub struct Hardening {
    /// Whether all present and future memory is locked against swapping.
    pub memory_locked: bool,
    /// Why not, if not.
    pub memory_note: Option<String>,
}

/// Disables core dumps and ptrace/`/proc/PID/mem` access by other processes, and locks memory
/// where the limit allows (an unlimited or ≥ 4 GiB RLIMIT_MEMLOCK).
pub fn harden() -> Hardening {
    polykey::process::disable_core_dumps();
    // SAFETY: plain syscalls with valid, stack-owned arguments.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim);
        // A privileged daemon may lift the limit; anyone may raise the soft limit to the hard one.
        let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
        }
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim);
        // With MCL_FUTURE every later allocation must fit the limit, or it fails: lock only
        // when the limit cannot starve the daemon, or when CAP_IPC_LOCK lifts the limit.
        if lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < (4 << 30) && !has_ipc_lock() {
            return Hardening {
                memory_locked: false,
                memory_note: Some(format!(
                    "RLIMIT_MEMLOCK is {} bytes; memory is not locked and may be swapped (raise it with `ulimit -l unlimited`)",
                    lim.rlim_cur
                )),
            };
        }
        // MCL_ONFAULT: lock pages as they are touched, not every reserved buffer and stack up
        // front (fuser reserves 16 MiB for requests); secrets live in touched pages anyway.
        #[cfg(target_os = "linux")]
        let flags = libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT;
        #[cfg(not(target_os = "linux"))]
        let flags = libc::MCL_CURRENT | libc::MCL_FUTURE;
        if libc::mlockall(flags) != 0 {
            return Hardening { memory_locked: false, memory_note: Some(format!("mlockall failed: {}", io::Error::last_os_error())) };
        }
    }
    Hardening { memory_locked: true, memory_note: None }
}

/// Whether this process has CAP_IPC_LOCK in its effective set (then RLIMIT_MEMLOCK does not
/// bound what it may lock).
fn has_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:").map(|v| u64::from_str_radix(v.trim(), 16).unwrap_or(0))))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Closes every descriptor above standard error that this process inherited. A daemon lives
/// on after whoever started it: a pipe it kept open would hold that caller's reader waiting for
/// an end of file (`$(polykey mount …)`, a CI runner), a kept file would keep a disk busy, and
/// the watcher would inherit them in turn. Called first thing in `main`, before this process
/// opens anything of its own.
pub fn close_inherited_fds() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: close_range(2) only closes descriptors; none above 2 is owned by anything yet.
        if unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) } == 0 {
            return;
        }
    }
    // No close_range (Linux < 5.9, other systems): close what /dev/fd lists.
    let Ok(entries) = std::fs::read_dir("/dev/fd") else { return };
    let fds: Vec<i32> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect();
    for fd in fds {
        // SAFETY: as above; the listing's own descriptor is already closed (EBADF is harmless).
        unsafe {
            libc::close(fd);
        }
    }
}

/// Names this process `name` for `ps`, `top` and `pkill` (Linux's `comm`, at most 15 bytes); a
/// no-op elsewhere.
pub fn set_process_name(name: &std::ffi::CStr) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, truncated to 16 bytes by the kernel.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

/// Starts a new session, detaching from the controlling terminal.
pub fn setsid() {
    // SAFETY: setsid has no memory-safety preconditions; failure (already a leader) is harmless.
    unsafe {
        libc::setsid();
    }
}

/// Points standard error at `file` (the background daemon's log).
pub fn redirect_stderr(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are valid for the duration of the call.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn shutdown_set() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it starts afterwards,
/// so that [`wait_signal`] receives them.
pub fn block_shutdown_signals() {
    let set = shutdown_set();
    // SAFETY: `set` is a valid signal set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for one of the blocked shutdown signals; returns its number.
pub fn wait_signal() -> i32 {
    let set = shutdown_set();
    let mut sig = 0;
    // SAFETY: `set` and `sig` are valid for the call.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    sig
}

/// The user id of the process at the other end of a Unix socket.
pub fn peer_uid(stream: &std::os::unix::net::UnixStream) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `cred` is a properly sized out-buffer for SO_PEERCRED.
        unsafe {
            let mut cred: libc::ucred = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
            if libc::getsockopt(stream.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, (&raw mut cred).cast(), &mut len) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(cred.uid)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let (mut uid, mut gid) = (0, 0);
        // SAFETY: out-parameters are valid.
        if unsafe { libc::getpeereid(stream.as_raw_fd(), &mut uid, &mut gid) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// Lets the program `cmd` runs inherit `fd` (clears close-on-exec in the child only, so no
/// other program this process starts meanwhile inherits it).
pub fn pass_fd(cmd: &mut std::process::Command, fd: &impl std::os::fd::AsRawFd) {
    use std::os::unix::process::CommandExt;
    let fd = fd.as_raw_fd();
    // SAFETY: the hook runs in the child between fork and exec and only calls fcntl, which is
    // async-signal-safe, on a descriptor the child inherited.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Receives one descriptor sent with SCM_RIGHTS over `sock` (close-on-exec from the start);
/// `None` when the other end closed without sending one.
pub fn recv_fd(sock: &std::os::unix::net::UnixStream) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut byte = [0u8; 1];
    // Room for one descriptor's control message, aligned as cmsghdr wants.
    let mut control = [0u64; 8];
    loop {
        // SAFETY: `msg` points at the buffers above, which outlive the call; CMSG_* walk only
        // the control length the kernel reports.
        unsafe {
            let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut fd = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let raw = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    // Owned from here on: the kernel installed it in this process for us.
                    fd = Some(std::os::fd::OwnedFd::from_raw_fd(raw));
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            return Ok(fd);
        }
    }
}
