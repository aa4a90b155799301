//! A normal user's mount on a stock system (issue 10 §1; CONTRACT.md: `polykey mount` "works
//! for any user on a stock system").
//!
//! The setup makes this machine look like a desktop to a normal user: the user `polykey-test`
//! exists (created once, idempotently), `/dev/fuse` has mode 0666 (as udev gives it; here it is
//! 0600), and `/etc/fuse.conf` is stock: no `user_allow_other` (a file that has it is moved aside).
//! Both are restored when the last test that needs them ends: the tests run in parallel threads,
//! so a process-wide count guards the change. The binaries are copied to a folder the user can
//! read, and everything of the user's lives in a temporary folder the user owns.
//!
//! Then, all as that user (`setpriv`, no supplementary groups, a clean environment): `init`,
//! `mount`, `put`/`get` through the daemon and reads and
//! writes through the mount, vim (`-Es`) and nano (in tmux) editing a secret, then another user
//! (`nobody`, given the way to the mount point) and root (this process, not the owner) refused
//! with EACCES, then `kill -9` of the daemon (the mount must go, the node keep every save),
//! then a normal mount (on a folder that does not exist yet) and unmount. A mount that fusermount3 refuses leaves no control socket.

use crate::editors::{have, shell_quote, Tmux};
use crate::mounted::{fuse_available, wait_for};
use crate::util::{FAST_KDF_ARGS, PASSWORD};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// The unprivileged account the tests run as.
const USER: &str = "polykey-test";
const FUSE_DEV: &str = "/dev/fuse";
const FUSE_CONF: &str = "/etc/fuse.conf";
const FUSE_CONF_ASIDE: &str = "/etc/fuse.conf.polykey-test-aside";

/// What the setup changed, to put back when the last user of it is done.
struct Changed {
    fuse_mode: u32,
    conf_aside: bool,
    bin: tempfile::TempDir,
}

/// How many tests use the desktop setup now, and what it changed.
static DESKTOP: Mutex<(usize, Option<Changed>)> = Mutex::new((0, None));

/// The desktop setup, held by one test; undone when the last holder drops it.
struct Desktop {
    uid: u32,
    gid: u32,
    bin: PathBuf,
}

fn id(flag: &str, user: &str) -> Option<u32> {
    let o = Command::new("id").args([flag, user]).output().ok()?;
    String::from_utf8(o.stdout).ok()?.trim().parse().ok()
}

impl Desktop {
    /// Sets the machine up (or joins the setup another test made); `None` with a SKIP line
    /// where it cannot be done.
    fn get() -> Option<Desktop> {
        if polykey::runtime::euid() != 0 {
            eprintln!("SKIP: the normal-user tests need root to create the user and set /dev/fuse's mode");
            return None;
        }
        if !fuse_available() || !have("setpriv") {
            return None;
        }
        let mut state = DESKTOP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 == 0 {
            if id("-u", USER).is_none() {
                let o = Command::new("useradd")
                    .args(["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", USER])
                    .output()
                    .expect("useradd (passwd) is missing: run scripts/install-deps.sh");
                assert!(o.status.success() || id("-u", USER).is_some(), "useradd: {}", String::from_utf8_lossy(&o.stderr));
            }
            let fuse_mode = fs::metadata(FUSE_DEV).unwrap().permissions().mode() & 0o7777;
            fs::set_permissions(FUSE_DEV, fs::Permissions::from_mode(0o666)).unwrap();
            let allows_other =
                fs::read_to_string(FUSE_CONF).is_ok_and(|c| c.lines().any(|l| l.split('#').next().unwrap().trim() == "user_allow_other"));
            if allows_other {
                fs::rename(FUSE_CONF, FUSE_CONF_ASIDE).unwrap();
            }
            // The binaries where the user can run them, side by side (`polykey` finds the
            // daemon beside itself).
            let bin = tempfile::Builder::new().prefix("polykey-test-bin").tempdir().unwrap();
            fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
            for exe in [env!("CARGO_BIN_EXE_polykey"), crate::mounted::mountd_binary().to_str().unwrap()] {
                let to = bin.path().join(Path::new(exe).file_name().unwrap());
                fs::copy(exe, &to).unwrap();
                fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
            }
            state.1 = Some(Changed { fuse_mode, conf_aside: allows_other, bin });
        }
        state.0 += 1;
        let bin = state.1.as_ref().unwrap().bin.path().to_owned();
        Some(Desktop { uid: id("-u", USER).unwrap(), gid: id("-g", USER).unwrap(), bin })
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        let mut state = DESKTOP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 -= 1;
        if state.0 == 0 {
            if let Some(c) = state.1.take() {
                let _ = fs::set_permissions(FUSE_DEV, fs::Permissions::from_mode(c.fuse_mode));
                if c.conf_aside {
                    let _ = fs::rename(FUSE_CONF_ASIDE, FUSE_CONF);
                }
            }
        }
    }
}

/// One test's user files: a temporary folder owned by the user, holding its home (the node,
/// the passphrase file, the mount point) and its runtime folder. Unmounts on drop.
struct User {
    desktop: Desktop,
    dir: tempfile::TempDir,
    home: PathBuf,
    runtime: PathBuf,
    node: PathBuf,
    mnt: PathBuf,
}

impl User {
    fn new() -> Option<User> {
        let desktop = Desktop::get()?;
        let dir = tempfile::Builder::new().prefix("polykey-user").tempdir().unwrap();
        let home = dir.path().join("home");
        let runtime = dir.path().join("run");
        for d in [&home, &runtime, &home.join("tmp")] {
            fs::create_dir_all(d).unwrap();
        }
        let pw = home.join("pw");
        fs::write(&pw, [PASSWORD, b"\n"].concat()).unwrap();
        fs::set_permissions(&pw, fs::Permissions::from_mode(0o600)).unwrap();
        for p in [dir.path(), &home, &runtime, &home.join("tmp"), &pw] {
            std::os::unix::fs::chown(p, Some(desktop.uid), Some(desktop.gid)).unwrap();
            if p.is_dir() {
                fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
        let (node, mnt) = (home.join("vault.node"), home.join("polykey"));
        Some(User { desktop, dir, home, runtime, node, mnt })
    }

    /// `program args` as the user, with a clean environment of its own.
    fn cmd(&self, program: impl AsRef<OsStr>, args: &[&OsStr]) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.desktop.uid)).arg(format!("--regid={}", self.desktop.gid)).arg("--clear-groups").arg("--");
        c.arg(program).args(args);
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.home)
            .env("TMPDIR", self.home.join("tmp"))
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .env("LANG", "C.UTF-8")
            .current_dir(&self.home)
            .stdin(Stdio::null());
        c
    }

    /// `polykey` as the user, with its node and passphrase file.
    fn polykey(&self, args: &[&str]) -> Command {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--node"), self.node.as_os_str(), OsStr::new("--password-file")];
        let pw = self.home.join("pw");
        all.push(pw.as_os_str());
        all.extend(args.iter().map(OsStr::new));
        let mut c = self.cmd(self.desktop.bin.join("polykey"), &all);
        c.env_remove("POLYKEY_PASSWORD");
        c
    }

    /// Runs `cmd`, feeding `input`, and returns its output.
    fn run(cmd: &mut Command, input: &[u8]) -> Output {
        crate::util::run_with_stdin(cmd, input)
    }

    /// Runs `cmd` and asserts it succeeds.
    fn ok(what: &str, cmd: &mut Command, input: &[u8]) -> Output {
        let o = Self::run(cmd, input);
        assert!(o.status.success(), "{what} as {USER} failed ({}): {}", o.status, String::from_utf8_lossy(&o.stderr));
        o
    }

    fn secret(&self, rel: &str) -> PathBuf {
        self.mnt.join("repos").join(rel)
    }

    /// The superoptions of the mount at the mount point (`rw,user_id=…,…`), if mounted.
    fn mount_options(&self) -> Option<String> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let at = self.mnt.to_str().unwrap();
        info.lines().rfind(|l| l.split(' ').nth(4) == Some(at)).map(|l| l.rsplit(' ').next().unwrap().to_owned())
    }

    fn mounted(&self) -> bool {
        self.mount_options().is_some()
    }

    /// The daemon's pid, from `polykey status --json` as the user.
    fn daemon(&self) -> u32 {
        let o = Self::ok("status", &mut self.polykey(&["status", "--json"]), b"");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["pid"].as_u64().expect("one mount in status") as u32
    }

    /// The control sockets and records left in the user's runtime folder.
    fn leftovers(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(self.runtime.join("polykey")) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sock" || x == "mount")).collect()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        if self.mounted() {
            let _ = Self::run(&mut self.polykey(&["unmount", self.mnt.to_str().unwrap()]), b"");
            if !wait_for(5, || !self.mounted()) {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mnt).status();
            }
        }
    }
}

/// `args` as `nobody` (no supplementary groups): refused with "Permission denied".
fn nobody_refused(args: &[&OsStr]) {
    let uid = id("-u", "nobody").unwrap_or(65534);
    let gid = id("-g", "nobody").unwrap_or(65534);
    let o = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .args(args)
        .current_dir("/")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "as nobody, {args:?} succeeded");
    assert!(err.contains("Permission denied"), "as nobody, {args:?} should get EACCES: {err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hunter"), "as nobody, {args:?} showed a secret");
}

#[test]
fn a_normal_user_mounts_edits_kills_and_unmounts_on_a_stock_system() {
    let Some(u) = User::new() else { return };
    let mnt = u.mnt.to_str().unwrap();
    let mut init = vec!["init"];
    init.extend(FAST_KDF_ARGS);
    User::ok("init", &mut u.polykey(&init), b"");

    User::ok("mkdir", &mut u.cmd("mkdir", &[u.mnt.as_os_str()]), b"");
    User::ok("mount", &mut u.polykey(&["mount", mnt]), b"");
    let opts = u.mount_options().expect("mounted");
    assert!(!opts.contains("allow_other") && !opts.contains("allow_root"), "the mount allows others: {opts}");
    assert!(opts.contains(&format!("user_id={}", u.desktop.uid)), "{opts}");
    let md = fs::metadata(&u.mnt);
    assert_eq!(md.map_err(|e| e.raw_os_error()).unwrap_err(), Some(libc::EACCES), "root, not the owner, may stat the mount");

    // put/get through the daemon, and reads and writes through the mount.
    User::ok("put", &mut u.polykey(&["put", "web/pw"]), b"hunter2");
    let cat = |rel: &str| User::ok("cat", &mut u.cmd("cat", &[u.secret(rel).as_os_str()]), b"").stdout;
    assert_eq!(cat("web/pw"), b"hunter2");
    let script = format!("printf hunter-other > {}", shell_quote(&u.secret("web/other")));
    User::ok("a shell redirect", &mut u.cmd("sh", &[OsStr::new("-c"), OsStr::new(&script)]), b"");
    assert_eq!(User::ok("get", &mut u.polykey(&["get", "web/other"]), b"").stdout, b"hunter-other");

    // vim, with the user's own defaults in a home of its own.
    if have("vim") {
        let file = u.secret("web/pw");
        let args: Vec<&OsStr> = ["-Es", "-i", "NONE", "-c", "%s/hunter2/hunter3/", "-c", "wq"].iter().map(OsStr::new).collect();
        User::ok("vim", &mut u.cmd("vim", &[&args[..], &[file.as_os_str()]].concat()), b"");
        assert_eq!(cat("web/pw"), b"hunter3\n");
    }
    // nano, in a terminal (tmux), as the user.
    if have("nano") && have("tmux") {
        let t = Tmux { sock: u.home.join("tmux.sock"), home: u.home.clone(), prefix: setpriv_prefix(&u) };
        let line = format!("nano --ignorercfiles {}", shell_quote(&u.secret("web/other")));
        let o = t.run(&["new-session", "-d", "-s", "edit", "-x", "120", "-y", "40", &line]);
        assert!(o.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&o.stderr));
        t.wait_pane("hunter-other", "nano shows the file");
        t.keys(&["-l", "new "]);
        t.wait_pane("new hunter-other", "typed");
        t.keys(&["C-o"]);
        t.wait_pane("File Name to Write", "^O");
        t.keys(&["Enter"]);
        t.wait_pane("Wrote", "written");
        t.keys(&["C-x"]);
        assert!(wait_for(10, || !t.run(&["has-session", "-t", "edit"]).status.success()), "nano did not exit:\n{}", t.pane());
        assert!(cat("web/other").starts_with(b"new hunter-other"), "{:?}", String::from_utf8_lossy(&cat("web/other")));
    }

    // Another user, given the way to the mount point, is refused by the mount itself.
    for d in [u.dir.path(), &u.home] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o711)).unwrap();
    }
    nobody_refused(&[OsStr::new("stat"), u.mnt.as_os_str()]);
    nobody_refused(&[OsStr::new("cat"), u.secret("web/pw").as_os_str()]);
    nobody_refused(&[OsStr::new("ls"), u.mnt.as_os_str()]);
    for d in [u.dir.path(), &u.home] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(fs::read(u.secret("web/pw")).map_err(|e| e.raw_os_error()).unwrap_err(), Some(libc::EACCES), "root read the mount");

    // kill -9 of the daemon, by the user: the mount goes (the watcher, running as the user,
    // removes it: fusermount3 cannot see a normal user's dead mount), the node keeps every save.
    let pid = u.daemon();
    User::ok("kill -9", &mut u.cmd("kill", &[OsStr::new("-9"), OsStr::new(&pid.to_string())]), b"");
    assert!(wait_for(10, || !u.mounted()), "kill -9 left a mount behind at {mnt}");
    let got = User::ok("get after kill -9", &mut u.polykey(&["get", "web/pw"]), b"").stdout;
    assert!(got == b"hunter3\n" || !have("vim"), "{:?}", String::from_utf8_lossy(&got));

    // A normal mount and unmount, on a folder that does not exist yet (a fresh account's
    // `polykey mount ~/polykey`).
    fs::remove_dir(&u.mnt).unwrap();
    let o = User::ok("mount again", &mut u.polykey(&["mount", mnt]), b"");
    assert!(String::from_utf8_lossy(&o.stderr).contains("created the folder"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(u.mounted());
    User::ok("unmount", &mut u.polykey(&["unmount", mnt]), b"");
    assert!(!u.mounted(), "unmount returned with the mount still there");
    let md = fs::metadata(&u.mnt).expect("the mount point stays after unmount");
    assert_eq!((md.uid(), md.permissions().mode() & 0o7777), (u.desktop.uid, 0o700));
    assert_eq!(u.leftovers(), Vec::<PathBuf>::new(), "the daemon left its control socket or record");
}

/// The prefix that runs a program as the test user with the environment given to it.
fn setpriv_prefix(u: &User) -> Vec<OsString> {
    ["setpriv".to_owned(), format!("--reuid={}", u.desktop.uid), format!("--regid={}", u.desktop.gid), "--clear-groups".into(), "--".into()]
        .into_iter()
        .map(OsString::from)
        .collect()
}

/// fusermount3 refuses a mount point the user cannot write: the mount fails with its one-line
/// reason, after the daemon bound its control socket, and leaves no socket or record behind.
#[test]
fn a_normal_users_refused_mount_leaves_no_control_socket_behind() {
    let Some(u) = User::new() else { return };
    let mut init = vec!["init"];
    init.extend(FAST_KDF_ARGS);
    User::ok("init", &mut u.polykey(&init), b"");
    let theirs = u.home.join("roots");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
    let o = User::run(&mut u.polykey(&["mount", theirs.to_str().unwrap()]), b"");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "mounted on root's folder");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("fusermount3"), "{err}");
    assert!(!err.contains("allow_other"), "{err}");
    assert_eq!(u.leftovers(), Vec::<PathBuf>::new(), "the failed mount left its control socket or record");
    // The same node then mounts where the user may.
    User::ok("mkdir", &mut u.cmd("mkdir", &[u.mnt.as_os_str()]), b"");
    User::ok("mount", &mut u.polykey(&["mount", u.mnt.to_str().unwrap()]), b"");
    assert!(u.mounted());
}
