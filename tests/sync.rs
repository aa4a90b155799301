//! Nodes working together through the real CLI: `sync` both ways, `backup` (full and
//! sub-node), `conflicts`; merges checked with real git on `polykey export`.

use crate::util::{polykey_cmd, run, run_with_stdin, stderr, FAST_KDF_ARGS, PASSWORD};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Node files side by side in one folder (a laptop's and a stick's), one passphrase file.
pub struct Nodes {
    pub dir: tempfile::TempDir,
    pub pw: PathBuf,
}

impl Nodes {
    pub fn new() -> Nodes {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, [PASSWORD, b"\n"].concat()).unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        Nodes { dir, pw }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.node"))
    }

    /// `polykey` on node `name`, with its passphrase and this folder's state and runtime.
    pub fn cli(&self, name: &str) -> Command {
        let mut c = polykey_cmd();
        c.env("XDG_STATE_HOME", self.dir.path().join("state")).env("XDG_RUNTIME_DIR", self.dir.path().join("run"));
        c.arg("--node").arg(self.path(name)).arg("--password-file").arg(&self.pw);
        c
    }

    pub fn ok(&self, name: &str, args: &[&str]) -> Output {
        let o = run(self.cli(name).args(args));
        assert!(o.status.success(), "{name}: polykey {args:?}: {}", stderr(&o));
        o
    }

    pub fn init(&self, name: &str) {
        self.ok(name, &[&FAST_KDF_ARGS[..], &["init"]].concat());
    }

    pub fn put(&self, name: &str, path: &str, value: &[u8]) {
        let o = run_with_stdin(self.cli(name).args(["put", path]), value);
        assert!(o.status.success(), "{name}: put {path}: {}", stderr(&o));
    }

    pub fn get(&self, name: &str, path: &str) -> Vec<u8> {
        self.ok(name, &["get", path]).stdout
    }

    pub fn lines(&self, name: &str, args: &[&str]) -> Vec<String> {
        String::from_utf8(self.ok(name, args).stdout).unwrap().lines().map(str::to_owned).collect()
    }

    /// `polykey sync` from `name` with `other`; returns its output.
    pub fn sync(&self, name: &str, other: &str, extra: &[&str]) -> Output {
        let o = run(self.cli(name).arg("sync").arg(self.path(other)).args(extra).arg("--other-password-file").arg(&self.pw));
        assert!(o.status.success(), "sync {name} with {other}: {}", stderr(&o));
        o
    }

    /// `polykey backup` of `name` into `dest` (created under the same passphrase if absent).
    pub fn backup(&self, name: &str, dest: &str, extra: &[&str]) -> Output {
        let o = run(self
            .cli(name)
            .args(FAST_KDF_ARGS)
            .arg("backup")
            .arg(self.path(dest))
            .args(extra)
            .arg("--new-password-file")
            .arg(&self.pw)
            .arg("--other-password-file")
            .arg(&self.pw));
        assert!(o.status.success(), "backup {name} into {dest}: {}", stderr(&o));
        o
    }

    /// Every repository's secrets and values, as one sorted listing.
    pub fn contents(&self, name: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for r in self.lines(name, &["ls"]) {
            for s in self.lines(name, &["ls", &r]) {
                let path = format!("{r}/{s}");
                out.push((path.clone(), self.get(name, &path)));
            }
        }
        out
    }

    /// `polykey export` of `name` extracted into a fresh folder.
    pub fn export(&self, name: &str) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        let tar = self.dir.path().join(format!("{name}.tar"));
        self.ok(name, &["export", "-o", tar.to_str().unwrap()]);
        let o = run(Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(out.path()));
        assert!(o.status.success(), "tar: {}", stderr(&o));
        std::fs::remove_file(tar).unwrap();
        out
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = run(Command::new("git").arg("-C").arg(dir).args(args));
    assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// A laptop node with `work/.env` and a stick made from it with `polykey backup`.
fn laptop_and_stick() -> Nodes {
    let n = Nodes::new();
    n.init("laptop");
    n.put("laptop", "work/.env", b"USER=alice\nHOST=db.example\nPORT=5432\nMODE=prod\n");
    n.put("laptop", "work/token", b"t0");
    n.backup("laptop", "stick", &[]);
    n
}

#[test]
fn offline_edits_on_different_lines_merge_and_both_nodes_end_equal() {
    let n = laptop_and_stick();
    n.put("laptop", "work/.env", b"USER=bob\nHOST=db.example\nPORT=5432\nMODE=prod\n");
    n.put("stick", "work/.env", b"USER=alice\nHOST=db.example\nPORT=5432\nMODE=test\n");
    n.put("stick", "work/new", b"made on the stick");
    let o = n.sync("laptop", "stick", &[]);
    assert!(stderr(&o).contains("merged"), "{}", stderr(&o));
    assert_eq!(n.get("laptop", "work/.env"), b"USER=bob\nHOST=db.example\nPORT=5432\nMODE=test\n");
    assert_eq!(n.contents("laptop"), n.contents("stick"));
    assert_eq!(n.get("stick", "work/new"), b"made on the stick");
    // One merge commit with two parents, the same history on both; git agrees.
    let log = n.lines("laptop", &["log", "work"]);
    assert!(log[0].ends_with("Merge from stick"), "{log:?}");
    assert_eq!(log, n.lines("stick", &["log", "work"]));
    let x = n.export("laptop");
    let repo = x.path().join("repos/work");
    git(&repo, &["fsck", "--strict"]);
    assert_eq!(git(&repo, &["rev-list", "--merges", "--count", "HEAD"]).trim(), "1");
    assert_eq!(git(&repo, &["rev-list", "--parents", "-n", "1", "HEAD"]).split_whitespace().count(), 3);
    assert!(n.lines("laptop", &["conflicts"]).is_empty());
}

#[test]
fn the_same_line_changed_on_both_sides_leaves_ours_in_place_and_theirs_beside() {
    let n = laptop_and_stick();
    n.put("laptop", "work/.env", b"USER=bob\nHOST=db.example\nPORT=5432\nMODE=prod\n");
    n.put("stick", "work/.env", b"USER=carol\nHOST=db.example\nPORT=5432\nMODE=prod\n");
    n.put("laptop", "work/token", b"\x00\x01binary laptop");
    n.put("stick", "work/token", b"\x00\x02binary stick");
    n.sync("laptop", "stick", &[]);
    for node in ["laptop", "stick"] {
        assert_eq!(n.get(node, "work/.env"), b"USER=bob\nHOST=db.example\nPORT=5432\nMODE=prod\n");
        assert_eq!(n.get(node, "work/.env.conflict-stick"), b"USER=carol\nHOST=db.example\nPORT=5432\nMODE=prod\n");
        assert_eq!(n.get(node, "work/token"), b"\x00\x01binary laptop");
        assert_eq!(n.get(node, "work/token.conflict-stick"), b"\x00\x02binary stick");
        for (_, v) in n.contents(node) {
            assert!(!v.windows(7).any(|w| w == b"<<<<<<<"), "conflict markers in a secret");
        }
    }
    assert_eq!(n.lines("laptop", &["conflicts"]), ["work/.env.conflict-stick", "work/token.conflict-stick"]);
    // Removing a conflict file resolves it; the removal travels.
    n.ok("laptop", &["rm", "work/.env.conflict-stick"]);
    n.sync("laptop", "stick", &[]);
    assert_eq!(n.lines("stick", &["conflicts"]), ["work/token.conflict-stick"]);
}

#[test]
fn a_change_beats_a_removal_and_a_rename_on_one_side_loses_nothing() {
    let n = laptop_and_stick();
    n.ok("laptop", &["rm", "work/token"]);
    n.put("stick", "work/token", b"t1");
    n.ok("stick", &["mv", "work/.env", "work/env"]);
    n.put("laptop", "work/other", b"o");
    n.sync("stick", "laptop", &[]);
    for node in ["laptop", "stick"] {
        assert_eq!(n.get(node, "work/token"), b"t1", "{node}");
        assert_eq!(n.get(node, "work/env"), b"USER=alice\nHOST=db.example\nPORT=5432\nMODE=prod\n");
        assert_eq!(n.lines(node, &["ls", "work"]), ["env", "other", "token"]);
    }
}

#[test]
fn repositories_are_matched_by_identity_not_by_name() {
    let n = Nodes::new();
    n.init("a");
    n.init("b");
    n.put("a", "mail/pw", b"from a");
    n.put("b", "mail/pw", b"from b");
    let o = n.sync("a", "b", &[]);
    assert!(stderr(&o).contains("mail-2"), "said on stderr: {}", stderr(&o));
    assert_eq!(n.get("a", "mail/pw"), b"from a");
    assert_eq!(n.get("a", "mail-2/pw"), b"from b");
    assert_eq!(n.get("b", "mail/pw"), b"from b");
    assert_eq!(n.get("b", "mail-2/pw"), b"from a");
}

#[test]
fn a_sync_of_identical_nodes_writes_nothing() {
    let n = laptop_and_stick();
    n.put("laptop", "work/x", b"1");
    n.sync("laptop", "stick", &[]);
    let (a, b) = (std::fs::read(n.path("laptop")).unwrap(), std::fs::read(n.path("stick")).unwrap());
    let o = n.sync("laptop", "stick", &[]);
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    assert_eq!(std::fs::read(n.path("laptop")).unwrap(), a);
    assert_eq!(std::fs::read(n.path("stick")).unwrap(), b);
}

#[test]
fn a_removed_repository_stays_removed_unless_changed_since() {
    let n = laptop_and_stick();
    n.put("laptop", "old/x", b"1");
    n.put("laptop", "kept/x", b"1");
    n.sync("laptop", "stick", &[]);
    n.ok("laptop", &["rm", "-r", "old"]);
    n.ok("laptop", &["rm", "-r", "kept"]);
    n.put("stick", "kept/x", b"2"); // Changed on the stick after the last sync.
    n.sync("laptop", "stick", &[]);
    for node in ["laptop", "stick"] {
        let repos = n.lines(node, &["ls"]);
        assert!(!repos.contains(&"old".to_owned()), "{node}: {repos:?}");
        assert!(repos.contains(&"kept".to_owned()), "{node}: {repos:?}");
    }
    assert_eq!(n.get("laptop", "kept/x"), b"2");
    // A third node made before the removal does not bring it back.
    n.init("third");
    n.sync("third", "stick", &[]);
    n.sync("third", "laptop", &[]);
    assert!(!n.lines("laptop", &["ls"]).contains(&"old".to_owned()));
}

#[test]
fn a_sub_node_holds_only_its_repositories_and_syncs_back() {
    let n = Nodes::new();
    n.init("main");
    n.put("main", "aws/key", b"AKIA");
    n.put("main", "aws-prod/key", b"AKIB");
    n.put("main", "mail/pw", b"m");
    n.ok("main", &["tag", "aws", "aws/key"]);
    n.ok("main", &["tag", "aws", "aws-prod/key", "--as", "prod"]);
    n.backup("main", "sub", &["--only", "tag:aws"]);
    assert_eq!(n.lines("sub", &["ls"]), ["aws", "aws-prod"]);
    assert_eq!(n.lines("sub", &["tags", "aws"]), ["key -> aws/key", "prod -> aws-prod/key"]);
    n.put("sub", "aws/key", b"AKIA-rotated");
    n.put("sub", "aws/region", b"eu-west-1");
    n.put("main", "mail/pw", b"m2");
    n.sync("main", "sub", &[]);
    assert_eq!(n.get("main", "aws/key"), b"AKIA-rotated");
    assert_eq!(n.get("main", "aws/region"), b"eu-west-1");
    assert_eq!(n.lines("sub", &["ls"]), ["aws", "aws-prod"], "the sub-node took a repository it was not given");
    // From the sub-node's side too.
    n.put("main", "aws-prod/key", b"AKIB2");
    n.sync("sub", "main", &[]);
    assert_eq!(n.get("sub", "aws-prod/key"), b"AKIB2");
    assert_eq!(n.lines("sub", &["ls"]), ["aws", "aws-prod"]);
}

#[test]
fn a_full_backup_equals_its_node_and_syncs_into_it_one_way() {
    let n = laptop_and_stick();
    assert_eq!(n.contents("laptop"), n.contents("stick"));
    assert_eq!(n.lines("laptop", &["log", "work"]), n.lines("stick", &["log", "work"]));
    n.put("laptop", "work/token", b"t9");
    n.put("stick", "work/only-on-backup", b"b");
    let before = n.contents("laptop");
    n.backup("laptop", "stick", &[]);
    assert_eq!(n.contents("laptop"), before, "a backup changed the node it was made from");
    assert_eq!(n.get("stick", "work/token"), b"t9");
    assert_eq!(n.get("stick", "work/only-on-backup"), b"b");
}

#[test]
fn sync_names_only_some_repositories_and_refuses_bad_input() {
    let n = laptop_and_stick();
    n.put("laptop", "work/token", b"t3");
    n.put("laptop", "mail/pw", b"m");
    n.sync("stick", "laptop", &["work"]);
    assert_eq!(n.get("stick", "work/token"), b"t3");
    assert!(!n.lines("stick", &["ls"]).contains(&"mail".to_owned()));
    // Wrong passphrase for the other node, a missing node, the node itself, an unknown repository.
    let wrong = n.dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let before = std::fs::read(n.path("stick")).unwrap();
    for (args, want) in [
        (vec![n.path("stick").into_os_string(), "--other-password-file".into(), wrong.into_os_string()], "wrong passphrase"),
        (vec![n.path("absent").into_os_string()], "no node"),
        (vec![n.path("laptop").into_os_string()], "this node itself"),
        (vec![n.path("stick").into_os_string(), "nosuch".into(), "--other-password-file".into(), n.pw.clone().into_os_string()], "nosuch"),
    ] {
        let o = run(n.cli("laptop").arg("sync").args(&args));
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = stderr(&o);
        assert!(err.contains(want) && err.lines().count() == 1, "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(n.path("stick")).unwrap(), before);
}

/// A sync through the mount daemon of a mounted node: readers of the mount see the old or the
/// new value, never a mix; the mount shows the merged result at once.
#[test]
fn a_mounted_node_syncs_through_its_daemon_and_readers_see_old_or_new() {
    if !crate::mounted::fuse_available() {
        return;
    }
    let n = laptop_and_stick();
    let old = b"USER=alice\nHOST=db.example\nPORT=5432\nMODE=prod\n".to_vec();
    let new = b"USER=alice\nHOST=db.example\nPORT=6543\nMODE=prod\n".to_vec();
    n.put("stick", "work/.env", &new);
    let mnt = n.dir.path().join("mnt");
    n.ok("laptop", &["mount", mnt.to_str().unwrap()]);
    let file = mnt.join("repos/work/.env");
    assert_eq!(std::fs::read(&file).unwrap(), old);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (file, stop) = (file.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.push(std::fs::read(&file).unwrap());
            }
            seen
        })
    };
    let o = n.sync("laptop", "stick", &[]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.join().unwrap();
    // Read after the sync answered (the reader thread's last read may have begun before).
    let after = std::fs::read(&file).unwrap();
    let unmount = run(n.cli("laptop").arg("unmount").arg(&mnt));
    assert!(unmount.status.success(), "{}", stderr(&unmount));
    assert!(seen.iter().all(|v| *v == old || *v == new), "a reader saw a mix");
    assert_eq!(after, new, "the mount did not show the synced value: {}", stderr(&o));
    assert_eq!(n.get("laptop", "work/.env"), new);
    assert_eq!(n.contents("laptop"), n.contents("stick"));
}

/// `kill -9` of `polykey sync` at many points: both nodes always open, each at its state
/// before or after the sync; a sync run to the end then makes them equal.
#[test]
fn a_sync_killed_at_any_point_leaves_each_node_before_or_after() {
    let n = laptop_and_stick();
    for i in 0..8 {
        n.put("laptop", "work/.env", format!("USER=a{i}\nHOST=db.example\nPORT=5432\nMODE=prod\n").as_bytes());
        n.put("stick", "work/.env", format!("USER=alice\nHOST=db.example\nPORT=5432\nMODE=s{i}\n").as_bytes());
        n.put("stick", &format!("work/s{i}"), b"x");
        let before = (n.contents("laptop"), n.contents("stick"));
        let mut child = n
            .cli("laptop")
            .arg("sync")
            .arg(n.path("stick"))
            .arg("--other-password-file")
            .arg(&n.pw)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(1500 * i as u64));
        let _ = child.kill();
        let killed = child.wait().unwrap();
        let after = (n.contents("laptop"), n.contents("stick"));
        let merged = format!("USER=a{i}\nHOST=db.example\nPORT=5432\nMODE=s{i}\n").into_bytes();
        for (node, was, is) in [("laptop", &before.0, &after.0), ("stick", &before.1, &after.1)] {
            let done = is.iter().any(|(p, v)| p == "work/.env" && *v == merged);
            assert!(is == was || done, "{node} is neither before nor after the sync (killed: {killed:?})");
        }
        n.sync("laptop", "stick", &[]);
        assert_eq!(n.contents("laptop"), n.contents("stick"));
    }
}

fn required_features(path: &Path) -> u32 {
    let b = std::fs::read(path).unwrap();
    u32::from_le_bytes(b[12..16].try_into().unwrap())
}

/// `merge never`: shown, set, travels with a sync, and turns a line merge into a conflict.
/// Only a node that uses these records gets feature bit 0x4 (an older polykey refuses it as
/// needing unknown features, never as damaged: tests/hostile.rs checks that refusal).
#[test]
fn merge_never_makes_a_conflict_of_a_line_merge_and_sets_the_feature_bit_only_when_used() {
    let n = laptop_and_stick();
    assert_eq!(required_features(&n.path("laptop")) & 0x4, 0, "a node that never used them");
    assert_eq!(required_features(&n.path("stick")) & 0x4, 0, "a plain backup");
    assert_eq!(n.ok("laptop", &["config", "work"]).stdout, b"merge = lines\n");
    n.ok("laptop", &["config", "work", "merge", "never"]);
    assert_eq!(n.ok("laptop", &["config", "work"]).stdout, b"merge = never\n");
    assert_eq!(required_features(&n.path("laptop")) & 0x4, 0x4);
    n.put("laptop", "work/.env", b"USER=bob\nHOST=db.example\nPORT=5432\nMODE=prod\n");
    n.put("stick", "work/.env", b"USER=alice\nHOST=db.example\nPORT=5432\nMODE=test\n");
    n.sync("stick", "laptop", &[]);
    assert_eq!(n.ok("stick", &["config", "work"]).stdout, b"merge = never\n", "the setting travels");
    assert_eq!(n.lines("stick", &["conflicts"]), ["work/.env.conflict-laptop"]);
    for bad in [&["config", "work", "merge", "sometimes"][..], &["config", "work", "merge"], &["config", "work", "colour", "red"]] {
        let o = run(n.cli("laptop").args(bad));
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    let o = run(n.cli("laptop").args(["config", "nosuch"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// A backup with a selection that names nothing fails with one line and leaves no file.
#[test]
fn a_backup_of_an_unknown_selection_leaves_no_file_behind() {
    let n = laptop_and_stick();
    for only in ["tag:nope", "nosuch"] {
        let o = run(n
            .cli("laptop")
            .args(FAST_KDF_ARGS)
            .arg("backup")
            .arg(n.path("sub"))
            .args(["--only", only, "--new-password-file"])
            .arg(&n.pw));
        assert_eq!(o.status.code(), Some(1), "{only}: {}", stderr(&o));
        assert!(stderr(&o).contains("not found") && stderr(&o).lines().count() == 1, "{}", stderr(&o));
        assert!(!n.path("sub").exists(), "{only}: a backup node was left behind");
    }
}

/// Only OTHER is mounted: its daemon does the sync (naming this node), and the mount shows the
/// result at once; both mounted is refused with one line.
#[test]
fn a_sync_with_a_mounted_other_node_runs_in_its_daemon() {
    if !crate::mounted::fuse_available() {
        return;
    }
    let n = laptop_and_stick();
    n.put("laptop", "work/token", b"from the laptop");
    n.put("stick", "work/new", b"from the stick");
    let mnt = n.dir.path().join("mnt");
    n.ok("stick", &["mount", mnt.to_str().unwrap()]);
    let o = run(n.cli("laptop").arg("sync").arg(n.path("stick")).arg("--other-password-file").arg(&n.pw));
    let seen = std::fs::read(mnt.join("repos/work/token"));
    let mnt2 = n.dir.path().join("mnt2");
    n.ok("laptop", &["mount", mnt2.to_str().unwrap()]);
    let both = run(n.cli("laptop").arg("sync").arg(n.path("stick")).arg("--other-password-file").arg(&n.pw));
    for m in [&mnt, &mnt2] {
        let u = run(n.cli("laptop").arg("unmount").arg(m));
        assert!(u.status.success(), "{}", stderr(&u));
    }
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(seen.unwrap(), b"from the laptop");
    assert_eq!(n.get("laptop", "work/new"), b"from the stick");
    assert_eq!(n.contents("laptop"), n.contents("stick"));
    assert_eq!(both.status.code(), Some(1), "{}", stderr(&both));
    assert!(stderr(&both).contains("both nodes are mounted"), "{}", stderr(&both));
}
