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
//! (every descriptor closed, the connection aborted), and then looks the same way.
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

/// Starts the watcher of the mount this process has just made at `mountpoint`.
pub fn spawn(mountpoint: &Path) -> io::Result<()> {
    let dev = mount_dev(mountpoint).ok_or_else(|| io::Error::other("the new mount is not in /proc/self/mountinfo"))?;
    let start = |program: &Path| {
        Command::new(program)
            .arg0("polykey-mountd")
            .arg(FLAG)
            .arg(std::process::id().to_string())
            .arg(&dev)
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
    let daemon = MountRecord { pid, node: PathBuf::new(), mountpoint: mountpoint.clone() };
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

/// The device number (`major:minor`) of the topmost Polykey mount at `mountpoint`.
fn mount_dev(mountpoint: &Path) -> Option<String> {
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let want = mountpoint.as_os_str().as_encoded_bytes();
    info.split(|&b| b == b'\n').rev().find_map(|line| polykey_mount(line, want))
}

/// The device of a mountinfo line if it is a Polykey mount at `want`: fields are
/// `id parent major:minor root mountpoint options [optional…] - fstype source superoptions`,
/// with spaces, tabs, newlines and backslashes in paths written as octal escapes. The type is
/// `fuse.polykey`, or plain `fuse` with source `polykey#polykey` where fusermount3 had to mount
/// without a subtype.
fn polykey_mount(line: &[u8], want: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let (fields, rest) = text.split_once(" - ")?;
    let mut fields = fields.split(' ');
    let dev = fields.nth(2)?;
    let at = fields.nth(1)?;
    let mut rest = rest.split(' ');
    let ours = match (rest.next(), rest.next()) {
        (Some("fuse.polykey"), _) => true,
        (Some("fuse"), Some(source)) => source == "polykey#polykey",
        _ => false,
    };
    (ours && unescape(at) == want).then(|| dev.to_owned())
}

fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let line = b"812 29 0:77 / /tmp/a\\040b\\134c rw,nosuid,nodev - fuse.polykey polykey rw,user_id=0";
        assert_eq!(polykey_mount(line, b"/tmp/a b\\c").as_deref(), Some("0:77"));
        assert_eq!(polykey_mount(line, b"/tmp/a b"), None);
        let shared = b"812 29 0:77 / /m rw shared:5 master:1 - fuse.polykey polykey rw";
        assert_eq!(polykey_mount(shared, b"/m").as_deref(), Some("0:77"));
        let other = b"812 29 0:78 / /m rw - fuse.sshfs host: rw";
        assert_eq!(polykey_mount(other, b"/m"), None);
        let no_subtype = b"812 29 0:79 / /m rw - fuse polykey#polykey rw";
        assert_eq!(polykey_mount(no_subtype, b"/m").as_deref(), Some("0:79"));
        let other_plain = b"812 29 0:80 / /m rw - fuse sshfs#host: rw";
        assert_eq!(polykey_mount(other_plain, b"/m"), None);
    }
}
