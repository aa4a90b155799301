//! Mounting through fusermount3 without `allow_other`, so that a normal user can mount on a
//! stock system.
//!
//! fuser mounts with `auto_unmount` only together with `allow_other` (its `allow_root` is
//! `allow_other` to the kernel too), and fusermount3 grants a normal user that option only where
//! /etc/fuse.conf says `user_allow_other`, which stock Debian and Ubuntu do not. So the daemon
//! speaks fusermount3's protocol itself, as libfuse does: a socket pair, one end named in
//! `_FUSE_COMMFD`; fusermount3 (setuid root) mounts, opens `/dev/fuse` and sends that
//! descriptor back over the socket (SCM_RIGHTS); fuser serves it (`Session::from_fd`). Without
//! `allow_other` the kernel refuses every other user, root included, before a request reaches
//! the daemon.
//!
//! `auto_unmount` stays: fusermount3 then waits on its end of the socket and, once this process
//! has gone, unmounts the mount if it is dead. It decides that by opening the mount point, and
//! for a normal user's mount without `allow_other` the kernel answers its (root) `open` with
//! EACCES rather than ENOTCONN, so it leaves the mount; the dead-mount watcher (watch.rs), which
//! runs as the user, removes it then. For root's own mounts both work.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};

/// The options every Polykey mount gets. `default_permissions`: the kernel checks the modes
/// (0700 folders, 0600 files) before asking. `auto_unmount`: see the module doc.
pub const OPTIONS: &str = "fsname=polykey,subtype=polykey,default_permissions,nodev,nosuid,noexec,auto_unmount";

/// A mount made by fusermount3: the `/dev/fuse` descriptor to serve, and this process's end of
/// the socket fusermount3 watches for `auto_unmount` (kept open for as long as the daemon runs).
pub struct FuseMount {
    pub fd: OwnedFd,
    pub monitor: UnixStream,
}

/// The fusermount3 to run: `$FUSERMOUNT_PATH` (fuser's and libfuse's override), else
/// `fusermount3` on PATH.
fn program() -> OsString {
    std::env::var_os("FUSERMOUNT_PATH").filter(|p| !p.is_empty()).unwrap_or_else(|| "fusermount3".into())
}

/// Mounts a FUSE filesystem at `mountpoint` (canonical) with [`OPTIONS`].
pub fn mount(mountpoint: &Path) -> Result<FuseMount, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
    let program = program();
    let mut cmd = Command::new(&program);
    cmd.arg("-o").arg(OPTIONS).arg("--").arg(mountpoint);
    cmd.env("_FUSE_COMMFD", theirs.as_raw_fd().to_string());
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    crate::sys::pass_fd(&mut cmd, &theirs);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {}: {e} (install fuse3)", program.to_string_lossy()))?;
    drop(theirs);
    match crate::sys::recv_fd(&ours) {
        Ok(Some(fd)) => {
            // fusermount3 stays, in its own session, until `monitor` closes; what it might
            // still say goes nowhere (it is quiet in that phase).
            drop(child.stderr.take());
            Ok(FuseMount { fd, monitor: ours })
        }
        outcome => {
            drop(ours);
            let mut said = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut said);
            }
            let status = child.wait().map_err(|e| e.to_string())?;
            let said = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
            Err(match outcome {
                Err(e) => format!("fusermount3: {e}"),
                _ if !said.is_empty() => said,
                _ => format!("{} failed ({status})", program.to_string_lossy()),
            })
        }
    }
}
