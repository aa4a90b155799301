//! The dead-mount watcher: a small second process per mount (`polykey-mountd --watch`) that
//! unmounts the mount if the daemon dies without doing so (`kill -9`, a crash) and
//! fusermount3's own `auto_unmount` missed it.
//!
//! fusermount3 decides that a mount is dead when its `open` of the mount point fails with
//! ENOTCONN, and it looks as soon as the daemon's end of its socket closes. A dying process
//! closes its descriptors one by one, so that can be just before `/dev/fuse` closes and the
//! kernel aborts the connection: fusermount3's `open` is then already queued, fails with
//! ECONNABORTED instead, and the dead mount stays (seen in `tests/faults.rs` under load). The
//! watcher waits on a pidfd instead, which is readable only once the daemon has wholly exited
//! (every descriptor closed, the connection aborted), and then looks the same way, as the user.
//! For a normal user's mount fusermount3 never can: its `open` runs as root, which a mount
//! without `allow_other` refuses with EACCES, not ENOTCONN (see fusermount.rs); the watcher is
//! then what removes a dead mount.
//!
//! It shows as `polykey-watch` in `ps` and `top`, so `pkill polykey-mountd` ends the daemon
//! but leaves the watcher to remove its mount. It holds nothing of the node: it is a fresh
//! `exec` of this binary, given the daemon's pid, the mount's device number and its path; its
//! standard streams are closed and its working folder is `/`, so it keeps nothing busy. It
//! blocks the shutdown signals (itself, not trusting the spawn to pass the daemon's mask on),
//! so a SIGTERM or SIGHUP sent to the daemon's process group does not end it before the
//! daemon. When the daemon unmounts normally, the watcher finds no mount and exits.

use polykey::runtime::MountRecord;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// The argument that starts the watcher instead of a daemon.
pub const FLAG: &str = "--watch";

/// Starts the watcher of the mount this process has just made at `mountpoint`, device `dev`.
pub fn spawn(mountpoint: &Path, dev: Option<&str>) -> io::Result<()> {
    let dev = dev.ok_or_else(|| io::Error::other("the new mount is not in /proc/self/mountinfo"))?;
    let start = |program: &Path| {
        Command::new(program)
            .arg0("polykey-mountd")
            .arg(FLAG)
            .arg(std::process::id().to_string())
            .arg(dev)
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .spawn()
    };
    // The exact binary running now, even if the file at its path was replaced since; where
    // the magic link cannot be executed (some sandboxes), the binary at its path.
    match start(Path::new("/proc/self/exe")) {
        Ok(_) => Ok(()),
        Err(first) => match std::env::current_exe() {
            Ok(path) => start(&path).map(drop).map_err(|e| io::Error::other(format!("{first}; {}: {e}", path.display()))),
            Err(_) => Err(first),
        },
    }
}

/// `polykey-mountd --watch PID DEV MOUNTPOINT`: waits for process PID to end, then detaches
/// the mount at MOUNTPOINT if it is still there, with device DEV, and dead.
pub fn run(mut args: impl Iterator<Item = OsString>) -> ExitCode {
    let (Some(pid), Some(dev), Some(mountpoint), None) = (args.next(), args.next(), args.next(), args.next()) else {
        return ExitCode::from(2);
    };
    let (Some(pid), Some(dev)) = (pid.to_str().and_then(|p| p.parse().ok()), dev.into_string().ok()) else {
        return ExitCode::from(2);
    };
    crate::sys::block_shutdown_signals();
    // Exec'd through /proc/self/exe it would show as "exe"; and `pkill polykey-mountd` should
    // leave it alive to clean up after the daemon it killed.
    crate::sys::set_process_name(c"polykey-watch");
    let mountpoint = PathBuf::from(mountpoint);
    let daemon = MountRecord { pid, node: PathBuf::new(), mountpoint: mountpoint.clone(), dev: None };
    while !daemon.wait_gone(Duration::from_secs(24 * 3600)) {}
    if mount_dev(&mountpoint).as_deref() == Some(dev.as_str()) && dead(&mountpoint) {
        crate::unix::detach(&mountpoint);
    }
    ExitCode::SUCCESS
}

/// Whether the FUSE connection behind the mount at `mountpoint` is gone.
fn dead(mountpoint: &Path) -> bool {
    std::fs::read_dir(mountpoint).is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
}

/// The device number (`major:minor`) of the topmost mount at `mountpoint`, if it is a Polykey
/// mount.
pub fn mount_dev(mountpoint: &Path) -> Option<String> {
    polykey::mounts::top(mountpoint).filter(polykey::mounts::Mount::is_polykey).map(|m| m.dev)
}

/// Detaches the mount at `mountpoint` if the one on top there is the mount `dev` (this
/// daemon's): never another mount stacked on it. Returns whether it did. With no device known
/// (no mountinfo), it detaches whatever is there, as before there was a mount table to read.
pub fn detach_own(mountpoint: &Path, dev: Option<&str>) -> bool {
    if dev.is_some_and(|d| mount_dev(mountpoint).as_deref() != Some(d)) {
        return false;
    }
    crate::unix::detach(mountpoint);
    true
}
