//! The mount point (issue 10 §6, CONTRACT.md `polykey mount`/`unmount`): a missing one is
//! created (0700) and removed again when the mount then fails; one that already has a mount on
//! it is refused, naming what is there; `unmount` removes the mount on top, asks the daemon that
//! serves it (and names that one), and succeeds only once that mount is really gone. A failed
//! mount leaves no control socket or record behind.

use crate::mounted::{fuse_available, is_mounted, mountd_binary, wait_for, Mounted};
use crate::util::{repo, run, run_with_stdin, secret, stderr, TempNode, PASSWORD};
use std::fs;
use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The runtime folder's leftovers: control sockets and mount records.
fn leftovers(runtime: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(runtime.join("polykey")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sock" || x == "mount")).collect()
}

/// A node that is not mounted yet, with its own runtime folder; unmounts whatever it mounted.
struct Scene {
    node: TempNode,
    runtime: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Scene {
    fn new() -> Option<Scene> {
        if !fuse_available() {
            return None;
        }
        let node = TempNode::new();
        node.create().save().unwrap();
        let runtime = node.dir.path().join("run");
        fs::create_dir(&runtime).unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
        Some(Scene { node, runtime, mounts: Vec::new() })
    }

    fn cli(&self) -> Command {
        let mut c = self.node.cli();
        c.env("XDG_RUNTIME_DIR", &self.runtime);
        c
    }

    /// `polykey mount` with a wrong passphrase.
    fn cli_wrong_passphrase(&self) -> Command {
        let bad = self.node.file("bad-pw", b"not the passphrase\n");
        let mut c = self.node.cli_detached();
        c.env("XDG_RUNTIME_DIR", &self.runtime).arg("--password-file").arg(bad);
        c
    }

    fn mount(&mut self, at: &Path) -> std::process::Output {
        self.mounts.push(at.to_owned());
        run(self.cli().arg("mount").arg(at))
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for m in &self.mounts {
            if is_mounted(m) {
                let _ = run(self.cli().arg("unmount").arg(m));
                if !wait_for(5, || !is_mounted(m)) {
                    let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(m).status();
                }
            }
        }
    }
}

#[test]
fn mount_creates_a_missing_mountpoint_and_removes_it_when_mounting_fails() {
    let Some(mut s) = Scene::new() else { return };
    let mnt = s.node.dir.path().join("polykey");
    let o = s.mount(&mnt);
    assert!(o.status.success(), "mount on a missing folder: {}", stderr(&o));
    assert!(stderr(&o).contains(&format!("created the folder {}", mnt.display())), "say it was created: {}", stderr(&o));
    assert!(is_mounted(&mnt));
    let o = run(s.cli().arg("unmount").arg(&mnt));
    assert!(o.status.success(), "unmount: {}", stderr(&o));
    assert_eq!(fs::metadata(&mnt).unwrap().permissions().mode() & 0o7777, 0o700, "created 0700, kept after unmount");

    // A mount that fails removes the folder it created, in the background and the foreground.
    for foreground in [false, true] {
        let fresh = s.node.dir.path().join(format!("fresh-{foreground}"));
        let mut c = s.cli_wrong_passphrase();
        c.arg("mount").arg(&fresh);
        if foreground {
            c.arg("--foreground");
        }
        let o = run(&mut c);
        assert!(!o.status.success(), "a wrong passphrase mounted");
        assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
        assert!(!fresh.exists(), "a failed mount (foreground: {foreground}) left the folder it created");
        assert!(!is_mounted(&fresh));
    }
    // Only the last component is created: a missing parent is an error, and nothing is made.
    let deep = s.node.dir.path().join("no/such");
    let o = s.mount(&deep);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
    assert!(!s.node.dir.path().join("no").exists());
    // A file is not a folder, and is left alone.
    let file = s.node.file("plain", b"x");
    let o = s.mount(&file);
    assert!(!o.status.success() && stderr(&o).contains("is not a folder"), "{}", stderr(&o));
    assert_eq!(fs::read(&file).unwrap(), b"x");
}

/// A real failure of fusermount3 after the daemon has bound its control socket: a
/// `FUSERMOUNT_PATH` that fails (`false`). Nothing may stay in the runtime folder, and the
/// folder `mount` created goes too.
#[test]
fn a_failed_mount_leaves_no_control_socket_behind() {
    let Some(mut s) = Scene::new() else { return };
    let mnt = s.node.dir.path().join("m");
    s.mounts.push(mnt.clone());
    let o = run(s.cli().env("FUSERMOUNT_PATH", "false").arg("mount").arg(&mnt));
    assert!(!o.status.success(), "a mount through a failing fusermount3 succeeded");
    let err = stderr(&o);
    let complaints: Vec<&str> = err.lines().filter(|l| !l.contains("created the folder")).collect();
    assert_eq!(complaints.len(), 1, "one line: {err}");
    assert!(complaints[0].contains("cannot mount at"), "{err}");
    assert_eq!(leftovers(&s.runtime), Vec::<PathBuf>::new(), "a failed mount left its control socket or record");
    assert!(!mnt.exists(), "the folder mount created stays after the mount failed");
    assert!(!is_mounted(&mnt));
    // And the node mounts normally right after.
    let o = s.mount(&mnt);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn mount_refuses_a_mountpoint_that_already_has_a_mount_on_it() {
    let Some(m) = Mounted::with(|n| {
        n.put(&repo("a"), &secret("x"), b"first").unwrap();
    }) else {
        return;
    };
    let pid = m.pid();
    let other = TempNode::new();
    other.create().save().unwrap();
    let o = run(other.cli().env("XDG_RUNTIME_DIR", &m.runtime).arg("mount").arg(&m.mnt));
    assert!(!o.status.success(), "a second node was mounted on top of a live mount");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("already has a mount on it"), "{err}");
    assert!(err.contains(&m.node.path.display().to_string()) && err.contains(&pid.to_string()), "name what is mounted there: {err}");
    assert_eq!(fs::read(m.p("repos/a/x")).unwrap(), b"first", "the first mount is untouched");
    let status: serde_json::Value = serde_json::from_slice(&run(m.cli().args(["--json", "status"])).stdout).unwrap();
    assert_eq!(status.as_array().map(Vec::len), Some(1), "one mount: {status}");
}

/// `polykey-mountd` started by hand for `node` at `mnt` (as an older polykey, or a race
/// between two `mount`s, would stack it); returns once it is ready.
fn daemon_over(node: &TempNode, runtime: &Path, mnt: &Path) -> Child {
    let mut child = Command::new(mountd_binary())
        .arg("--node")
        .arg(&node.path)
        .arg("--mountpoint")
        .arg(mnt)
        .env("XDG_RUNTIME_DIR", runtime)
        .env("XDG_STATE_HOME", node.dir.path().join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), PASSWORD).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "ready");
    child
}

/// Two nodes stacked at one mount point, in both orders (which record `unmount` came across
/// first used to depend on the runtime folder's listing order, and it then asked the daemon
/// underneath, which detached the mount on top, reported success naming itself, and stayed for
/// ever). Each `unmount` must end the mount on top, name its daemon, and leave the one under it.
#[test]
fn unmount_removes_the_mount_on_top_and_names_its_daemon() {
    let Some(mut s) = Scene::new() else { return };
    let other = TempNode::new();
    {
        let mut n = s.node.open().unwrap();
        n.put(&repo("a"), &secret("x"), b"first").unwrap();
        n.save().unwrap();
        let mut n = other.create();
        n.put(&repo("b"), &secret("y"), b"second").unwrap();
        n.save().unwrap();
    }
    let mnt = s.node.dir.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let pid_at = |s: &Scene| -> Option<u32> {
        let o = run(s.cli().args(["status", "--json"]));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array().unwrap().first().map(|m| m["pid"].as_u64().unwrap() as u32)
    };
    for round in 0..2 {
        let (under, over) = if round == 0 { (&s.node, &other) } else { (&other, &s.node) };
        let (under_value, over_rel, over_value) =
            if round == 0 { (&b"first"[..], "repos/b/y", &b"second"[..]) } else { (&b"second"[..], "repos/a/x", &b"first"[..]) };
        s.mounts.push(mnt.clone());
        let o = run(under.cli().env("XDG_RUNTIME_DIR", &s.runtime).arg("mount").arg(&mnt));
        assert!(o.status.success(), "round {round}: mount: {}", stderr(&o));
        let under_pid = pid_at(&s).unwrap();
        let mut top = daemon_over(over, &s.runtime, &mnt);
        assert_eq!(fs::read(mnt.join(over_rel)).unwrap(), over_value, "round {round}: the second mount is on top");

        let o = run(s.cli().arg("unmount").arg(&mnt));
        let err = stderr(&o);
        assert!(o.status.success(), "round {round}: unmount: {err}");
        assert!(!err.contains(&under_pid.to_string()), "round {round}: named the daemon underneath: {err}");
        assert!(wait_for(10, || top.try_wait().unwrap().is_some()), "round {round}: the daemon on top did not end");
        assert!(is_mounted(&mnt), "round {round}: the mount underneath went too");
        let rel = if round == 0 { "repos/a/x" } else { "repos/b/y" };
        assert_eq!(fs::read(mnt.join(rel)).unwrap(), under_value, "round {round}: the first mount is served again");

        let o = run(s.cli().arg("unmount").arg(&mnt));
        assert!(o.status.success(), "round {round}: second unmount: {}", stderr(&o));
        assert!(!is_mounted(&mnt), "round {round}: unmount returned with the mount still there");
        assert!(wait_for(10, || pid_at(&s).is_none()), "round {round}: a daemon stays");
    }
}

/// A mount that is not Polykey's on top of a Polykey mount (here a tmpfs; root only): `unmount`
/// must say so and change nothing, not ask the daemon underneath, which would remove the other
/// mount and report success for ever after.
#[test]
fn unmount_refuses_when_another_filesystem_covers_the_mount() {
    if polykey::runtime::euid() != 0 {
        eprintln!("SKIP: mounting a tmpfs on top needs root");
        return;
    }
    let Some(mut m) = Mounted::with(|n| {
        n.put(&repo("a"), &secret("x"), b"under").unwrap();
    }) else {
        return;
    };
    let pid = m.pid();
    let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "polykey-test-cover"]).arg(&m.mnt).status().unwrap();
    assert!(st.success(), "mount -t tmpfs");
    let cover = Cover(fs::canonicalize(&m.mnt).unwrap());
    for _ in 0..2 {
        let o = run(m.cli().arg("unmount").arg(&m.mnt));
        let err = stderr(&o);
        assert!(!o.status.success(), "unmount reported success with a tmpfs on top: {err}");
        assert!(err.contains("tmpfs") && err.contains(&pid.to_string()), "say what covers which daemon: {err}");
        assert!(cover.on_top(), "unmount removed the tmpfs");
    }
    drop(cover);
    assert_eq!(fs::read(m.p("repos/a/x")).unwrap(), b"under");
    m.unmount();
    let o = run_with_stdin(m.cli().arg("get").arg("a/x"), b"");
    assert_eq!(o.stdout, b"under");
}

/// A tmpfs mounted over a test's mount, removed on drop (also when the test fails).
struct Cover(PathBuf);

impl Cover {
    fn on_top(&self) -> bool {
        polykey::mounts::top(&self.0).is_some_and(|t| t.fstype == "tmpfs")
    }
}

impl Drop for Cover {
    fn drop(&mut self) {
        if self.on_top() {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
}

#[test]
fn mount_on_a_folder_that_is_not_empty_warns_that_its_files_are_hidden() {
    let Some(mut s) = Scene::new() else { return };
    let mnt = s.node.dir.path().join("full");
    fs::create_dir(&mnt).unwrap();
    fs::write(mnt.join("x"), b"kept").unwrap();
    let o = s.mount(&mnt);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&format!("mountpoint {} is not empty", mnt.display())), "{}", stderr(&o));
    assert!(!mnt.join("x").exists(), "hidden while mounted");
    let o = run(s.cli().arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(mnt.join("x")).unwrap(), b"kept", "back after the unmount");
}
