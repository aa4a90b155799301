//! The mounted tree (CONTRACT.md, "The mounted tree"): layout, ownership, hard-link tags,
//! folder operations, scratch files, the daemon's lifecycle and durability, all through a real
//! FUSE mount driven by real processes.

use crate::mounted::{is_mounted, processes_with, wait_for, Mounted};
use crate::util::{repo, run, secret};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn seeded() -> Option<Mounted> {
    Mounted::with(|n| {
        n.put(&repo("aws"), &secret("key"), b"AKIA1").unwrap();
        n.put(&repo("aws"), &secret("secret"), b"s3cr3t").unwrap();
        n.tag(&repo("prod"), &secret("key"), &repo("aws"), &secret("key")).unwrap();
    })
}

#[test]
fn layout_permissions_and_hard_links() {
    let Some(m) = seeded() else { return };
    for d in ["", "repos", "tags", "repos/aws", "tags/prod"] {
        let md = fs::metadata(m.p(d)).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.permissions().mode() & 0o777, 0o700, "{d}");
        assert_eq!(md.uid(), polykey::runtime::euid());
    }
    let a = fs::metadata(m.p("repos/aws/key")).unwrap();
    let b = fs::metadata(m.p("tags/prod/key")).unwrap();
    assert_eq!(a.permissions().mode() & 0o777, 0o600);
    assert_eq!(a.ino(), b.ino(), "a tag entry is the same inode as its secret");
    assert_eq!(a.nlink(), 2);
    assert_eq!(fs::metadata(m.p("repos/aws/secret")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.p("tags/prod/key")).unwrap(), b"AKIA1");
    let mut names: Vec<_> = fs::read_dir(m.p("repos/aws")).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["key", "secret"]);
}

#[test]
fn folder_operations_mean_repositories_and_tags() {
    let Some(m) = seeded() else { return };
    fs::create_dir(m.p("repos/new")).unwrap();
    fs::write(m.p("repos/new/x"), b"1").unwrap();
    assert!(run(m.cli().args(["ls"])).stdout.starts_with(b"aws\nnew\n"));
    fs::rename(m.p("repos/new"), m.p("repos/renamed")).unwrap();
    assert_eq!(fs::read(m.p("repos/renamed/x")).unwrap(), b"1");
    assert_eq!(fs::remove_dir(m.p("repos/renamed")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_file(m.p("repos/renamed/x")).unwrap();
    fs::remove_dir(m.p("repos/renamed")).unwrap();
    assert!(!m.p("repos/renamed").exists());

    fs::create_dir(m.p("tags/db")).unwrap();
    fs::hard_link(m.p("repos/aws/secret"), m.p("tags/db/pw")).unwrap();
    assert_eq!(fs::metadata(m.p("repos/aws/secret")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.p("tags/db/pw")).unwrap().ino(), fs::metadata(m.p("repos/aws/secret")).unwrap().ino());
    assert_eq!(run(m.cli().args(["tags", "db"])).stdout, b"pw -> aws/secret\n");
    // rm in a tag only untags.
    fs::remove_file(m.p("tags/db/pw")).unwrap();
    assert_eq!(fs::read(m.p("repos/aws/secret")).unwrap(), b"s3cr3t");
    assert_eq!(fs::metadata(m.p("repos/aws/secret")).unwrap().nlink(), 1);
    // rm in a repository deletes the secret and its tag entries.
    fs::remove_file(m.p("repos/aws/key")).unwrap();
    assert!(!m.p("tags/prod/key").exists());
    assert_eq!(run(m.cli().args(["tags", "prod"])).stdout, b"");
    // Unsupported kinds are refused clearly.
    assert_eq!(fs::create_dir(m.p("repos/aws/sub")).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(std::os::unix::fs::symlink("x", m.p("repos/aws/link")).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(fs::hard_link(m.p("repos/aws/secret"), m.p("repos/aws/other")).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(fs::rename(m.p("repos/aws/secret"), m.p("tags/prod/secret")).unwrap_err().raw_os_error(), Some(libc::EXDEV));
}

#[test]
fn writes_through_any_path_change_the_one_secret_in_one_commit() {
    let Some(m) = seeded() else { return };
    let before = m.commits("aws");
    fs::write(m.p("tags/prod/key"), b"AKIA2").unwrap();
    assert_eq!(fs::read(m.p("repos/aws/key")).unwrap(), b"AKIA2");
    assert_eq!(m.commits("aws"), before + 1);
    assert_eq!(m.messages("aws")[0], "Update key");
    let mut f = fs::OpenOptions::new().append(true).open(m.p("repos/aws/key")).unwrap();
    f.write_all(b"+more").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(run(m.cli().args(["get", "aws/key"])).stdout, b"AKIA2+more");
    assert_eq!(m.commits("aws"), before + 2);
}

#[test]
fn scratch_files_live_in_memory_only() {
    let Some(m) = seeded() else { return };
    let before = m.commits("aws");
    for name in [".key.swp", "key~", "#key#", "4913", "notes.swx"] {
        fs::write(m.p(&format!("repos/aws/{name}")), b"scratch").unwrap();
        assert_eq!(fs::read(m.p(&format!("repos/aws/{name}"))).unwrap(), b"scratch");
    }
    std::thread::sleep(polykey::vfs::GRACE * 2);
    assert_eq!(m.commits("aws"), before);
    assert_eq!(run(m.cli().args(["ls", "aws"])).stdout, b"key\nsecret\n");
    for name in [".key.swp", "key~", "#key#", "4913", "notes.swx"] {
        fs::remove_file(m.p(&format!("repos/aws/{name}"))).unwrap();
    }
}

#[test]
fn a_new_file_becomes_a_secret_and_one_in_a_tag_folder_is_documented() {
    let Some(m) = seeded() else { return };
    fs::write(m.p("repos/aws/fresh"), b"new").unwrap();
    assert!(wait_for(5, || run(m.cli().args(["get", "aws/fresh"])).stdout == b"new"));
    assert_eq!(m.messages("aws")[0], "Add fresh");
    // A new file in tags/T becomes secret T/NAME, tagged T/NAME: it never silently vanishes.
    fs::write(m.p("tags/prod/cert"), b"PEM").unwrap();
    assert!(wait_for(5, || run(m.cli().args(["get", "prod/cert"])).stdout == b"PEM"));
    assert_eq!(run(m.cli().args(["tags", "prod"])).stdout, b"cert -> prod/cert\nkey -> aws/key\n");
}

#[test]
fn cli_goes_through_the_daemon_and_the_mount_sees_it() {
    let Some(m) = seeded() else { return };
    assert_eq!(run(m.cli().args(["get", "aws/key"])).stdout, b"AKIA1");
    let _ = fs::read(m.p("tags/prod/key")).unwrap();
    let o = crate::util::run_with_stdin(m.cli().args(["put", "aws/key"]), b"fromcli");
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    assert_eq!(fs::read(m.p("tags/prod/key")).unwrap(), b"fromcli");
    assert_eq!(fs::read(m.p("repos/aws/key")).unwrap(), b"fromcli");
    // A second mount of the same node is refused, naming where it is mounted.
    let other = m.node.dir.path().join("other");
    fs::create_dir(&other).unwrap();
    let o = run(m.cli().arg("mount").arg(&other));
    assert_eq!(o.status.code(), Some(1));
    assert!(crate::util::stderr(&o).contains("already mounted at"), "{}", crate::util::stderr(&o));
    // Status lists the mount, in text and JSON.
    let o = run(m.cli().arg("status"));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!(
        "on {} (process {})",
        fs::canonicalize(&m.mnt).unwrap().display(),
        m.pid()
    )));
}

/// A listing shows each secret with the inode number `stat` then gives it, whether or not it
/// had been looked up before (listed secrets get their inode only at the first lookup).
#[test]
fn listed_inode_numbers_are_the_ones_stat_gives() {
    use std::os::unix::fs::DirEntryExt;
    let Some(m) = seeded() else { return };
    for dir in ["repos/aws", "tags/prod"] {
        let listed: Vec<(String, u64)> =
            fs::read_dir(m.p(dir)).unwrap().map(|e| e.unwrap()).map(|e| (e.file_name().into_string().unwrap(), e.ino())).collect();
        assert!(!listed.is_empty());
        for (name, ino) in listed {
            assert_eq!(fs::metadata(m.p(&format!("{dir}/{name}"))).unwrap().ino(), ino, "{dir}/{name}");
        }
    }
}

/// The kernel caches folder listings (the daemon answers no OPENDIR); every change must still
/// show: at once for changes made in the folder itself or through the CLI, and once the
/// folder's attributes expire (1 s) for a change made through another folder.
#[test]
fn cached_folder_listings_follow_every_change() {
    let Some(m) = seeded() else { return };
    let names = |rel: &str| {
        let mut v: Vec<String> = fs::read_dir(m.p(rel)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names("repos/aws"), ["key", "secret"]);
    assert_eq!(names("repos/aws"), ["key", "secret"]); // served from the kernel's cache
                                                       // Through the CLI: invalidated before the command returns.
    let o = crate::util::run_with_stdin(m.cli().args(["put", "aws/new"]), b"n");
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    assert_eq!(names("repos/aws"), ["key", "new", "secret"]);
    assert!(run(m.cli().args(["tag", "prod", "aws/new"])).status.success());
    assert_eq!(names("tags/prod"), ["key", "new"]);
    assert!(run(m.cli().args(["rm", "aws/new"])).status.success());
    assert_eq!(names("repos/aws"), ["key", "secret"]);
    assert_eq!(names("tags/prod"), ["key"]);
    assert_eq!(names("repos"), ["aws"]);
    assert!(run(m.cli().args(["put", "gcp/token"]).stdin(std::process::Stdio::null())).status.success());
    assert_eq!(names("repos"), ["aws", "gcp"]);
    // In the folder itself, through the mount: the kernel drops its own cache.
    fs::write(m.p("repos/aws/third"), b"3").unwrap();
    assert_eq!(names("repos/aws"), ["key", "secret", "third"]);
    fs::remove_file(m.p("repos/aws/third")).unwrap();
    assert_eq!(names("repos/aws"), ["key", "secret"]);
    // Through another folder: the secret goes from its tag folder too; the name itself is
    // looked up afresh at once, the cached listing follows within the attribute lifetime.
    assert_eq!(names("tags/prod"), ["key"]);
    fs::remove_file(m.p("repos/aws/key")).unwrap();
    assert!(fs::metadata(m.p("tags/prod/key")).is_err());
    assert!(wait_for(5, || names("tags/prod").is_empty()), "tags/prod still lists {:?}", names("tags/prod"));
}

#[test]
fn unmount_writes_everything_and_the_node_keeps_it() {
    let Some(mut m) = seeded() else { return };
    fs::write(m.p("repos/aws/key"), b"v2").unwrap();
    fs::write(m.p("repos/aws/late"), b"closed just now").unwrap(); // Still in its grace period.
    m.unmount();
    let node = m.node.open().unwrap();
    assert_eq!(&node.get(&repo("aws"), &secret("key")).unwrap()[..], b"v2");
    assert_eq!(&node.get(&repo("aws"), &secret("late")).unwrap()[..], b"closed just now");
}

#[test]
fn unmount_while_a_file_is_open_keeps_its_writes() {
    let Some(mut m) = seeded() else { return };
    let mut f = fs::OpenOptions::new().write(true).open(m.p("repos/aws/key")).unwrap();
    f.write_all(b"written").unwrap();
    m.unmount();
    f.write_all(b"+after").unwrap();
    drop(f);
    assert!(wait_for(10, || m.node.open().is_ok()), "the daemon should let go of the node once the file is closed");
    let node = m.node.open().unwrap();
    assert_eq!(&node.get(&repo("aws"), &secret("key")).unwrap()[..], b"written+after");
}

#[test]
fn kill_9_leaves_no_dead_mount_and_keeps_fsynced_data() {
    let Some(mut m) = seeded() else { return };
    let mut f = fs::File::create(m.p("repos/aws/key")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    let pid = m.pid();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    drop(f);
    assert!(wait_for(10, || !is_mounted(&m.mnt)), "a dead mount was left behind");
    m.forget_mounted();
    let node = m.node.open().unwrap();
    assert_eq!(&node.get(&repo("aws"), &secret("key")).unwrap()[..], b"durable");
    drop(node);
    m.mount(&[]);
    assert_eq!(fs::read(m.p("tags/prod/key")).unwrap(), b"durable");
}

/// The dead-mount watchers of the mount at `mnt` (by their command line).
fn watchers_of(mnt: &std::path::Path) -> Vec<u32> {
    let mnt = fs::canonicalize(mnt).unwrap();
    processes_with(&[b"polykey-mountd", b"--watch", mnt.as_os_str().as_encoded_bytes()])
}

/// The one watcher of `m`'s mount. Waited for: the daemon's spawn returns once the kernel has
/// switched the child to the new program, but the child's command line reads as empty until
/// it has also mapped it, which a loaded machine can delay past "ready" (seen in CI).
fn the_watcher(m: &Mounted) -> u32 {
    wait_for(10, || !watchers_of(&m.mnt).is_empty());
    let found = watchers_of(&m.mnt);
    assert_eq!(found.len(), 1, "one dead-mount watcher per mount{}", m.diagnosis());
    found[0]
}

#[test]
fn kill_9_leaves_no_dead_mount_even_when_fusermounts_auto_unmount_is_gone() {
    let Some(mut m) = seeded() else { return };
    let mnt = fs::canonicalize(&m.mnt).unwrap();
    let mnt_arg = mnt.as_os_str().as_encoded_bytes();
    let watchers = || watchers_of(&mnt);
    the_watcher(&m);
    // Only the watcher is left to notice: fusermount3's auto_unmount helper goes first.
    let helpers = processes_with(&[b"fusermount3", mnt_arg]);
    assert!(!helpers.is_empty(), "fusermount3's auto_unmount helper for {}{}", mnt.display(), m.diagnosis());
    for pid in helpers {
        assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    }
    assert!(m.pid() != 0 && Command::new("kill").args(["-9", &m.pid().to_string()]).status().unwrap().success());
    assert!(wait_for(10, || !is_mounted(&m.mnt)), "a dead mount was left behind{}", m.diagnosis());
    m.forget_mounted();
    assert!(wait_for(10, || watchers().is_empty()), "the watcher ends with the mount{}", m.diagnosis());
    // A normal unmount ends the watcher too.
    m.mount(&[]);
    let watcher = the_watcher(&m);
    // Named for what it is: `ps` shows it, and `pkill polykey-mountd` leaves it to clean up.
    // It names itself first thing after exec, which a loaded machine can delay past "ready".
    let comm = || fs::read_to_string(format!("/proc/{watcher}/comm")).unwrap_or_default();
    wait_for(10, || comm() == "polykey-watch\n");
    assert_eq!(comm(), "polykey-watch\n");
    // SIGTERM and SIGHUP to the daemon's process group (a session ending) must not end it first.
    for sig in ["-TERM", "-HUP"] {
        assert!(Command::new("kill").args([sig, &watcher.to_string()]).status().unwrap().success());
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(watchers(), [watcher], "the watcher ignores shutdown signals{}", m.diagnosis());
    m.unmount();
    assert!(wait_for(10, || watchers().is_empty()), "the watcher ends with the unmount{}", m.diagnosis());
}

/// Where each of `pid`'s open descriptors points.
fn open_files(pid: u32) -> Vec<std::path::PathBuf> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.flatten().filter_map(|e| fs::read_link(e.path()).ok()).collect()
}

#[test]
fn the_daemon_and_its_watcher_keep_none_of_their_callers_descriptors() {
    let Some(mut m) = Mounted::new() else { return };
    m.unmount();
    // A caller's descriptor without close-on-exec (a CI runner's pipe, a shell's `9>file`):
    // the daemon outlives its caller and must not hold it.
    let marker = m.node.dir.path().join("callers-file");
    let cli = m.cli();
    let mut sh = Command::new("sh");
    sh.arg("-c").arg("exec \"$@\" 9>>\"$POLYKEY_TEST_MARKER\"").arg("sh").arg(cli.get_program()).args(cli.get_args());
    for (k, v) in cli.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let o = run(sh.env("POLYKEY_TEST_MARKER", &marker).arg("mount").arg(&m.mnt));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m.adopt_mounted();
    for pid in [m.pid(), the_watcher(&m)] {
        let files = open_files(pid);
        assert!(!files.contains(&marker), "process {pid} holds its caller's descriptor: {files:?}");
    }
    m.unmount();
}

#[test]
fn sigterm_and_fusermount_write_everything_out() {
    let Some(mut m) = seeded() else { return };
    fs::write(m.p("repos/aws/key"), b"by-term").unwrap();
    let pid = m.pid();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    assert!(wait_for(10, || !is_mounted(&m.mnt)));
    m.forget_mounted();
    assert!(wait_for(10, || m.node.open().is_ok()));
    assert_eq!(&m.node.open().unwrap().get(&repo("aws"), &secret("key")).unwrap()[..], b"by-term");
    m.mount(&[]);
    fs::write(m.p("repos/aws/key"), b"by-fusermount").unwrap();
    assert!(Command::new("fusermount3").arg("-u").arg(&m.mnt).status().unwrap().success());
    m.forget_mounted();
    assert!(wait_for(10, || m.node.open().is_ok()));
    assert_eq!(&m.node.open().unwrap().get(&repo("aws"), &secret("key")).unwrap()[..], b"by-fusermount");
}

#[test]
fn lock_after_unmounts_when_idle() {
    let Some(mut m) = seeded() else { return };
    m.unmount();
    m.mount(&["--lock-after", "1s"]);
    assert!(wait_for(15, || !is_mounted(&m.mnt)), "--lock-after did not unmount");
    m.forget_mounted();
}

#[test]
fn lock_after_takes_compound_durations() {
    let Some(mut m) = seeded() else { return };
    m.unmount();
    m.mount(&["--lock-after", "1d2h"]);
    // The daemon was told the whole duration, in seconds.
    let pid = m.pid().to_string();
    assert!(processes_with(&[b"polykey-mountd", b"--lock-after", b"93600"]).iter().any(|p| p.to_string() == pid));
    m.unmount();
    let o = run(m.cli().args(["mount", "--lock-after", "30m1h"]).arg(&m.mnt));
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid --lock-after \"30m1h\""));
    assert!(!is_mounted(&m.mnt));
}

#[test]
fn parallel_writers_on_different_secrets_lose_nothing() {
    let Some(m) = seeded() else { return };
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let dir = m.p("repos/aws");
            std::thread::spawn(move || {
                for i in 0..20 {
                    fs::write(dir.join(format!("w{w}")), format!("{w}:{i}")).unwrap();
                    let _ = fs::read(dir.join("key")).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for w in 0..4 {
        let path = format!("aws/w{w}");
        assert!(wait_for(5, || run(m.cli().args(["get", &path])).stdout == format!("{w}:19").as_bytes()), "{path}");
    }
}
