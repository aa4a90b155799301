//! Rollback detection: a node replaced by an older copy of itself is refused when opened,
//! until the user accepts it, wherever the copy is (the record is keyed by the node's id);
//! the record is written durably; records of earlier versions (keyed by id and path) count.

use crate::util::{run, run_with_stdin, stderr, TempNode};

#[test]
fn an_old_copy_put_back_is_refused_until_accepted() {
    let t = TempNode::new();
    assert!(run(t.cli().args(["init", "--kdf-memory-kib", "8", "--kdf-time", "1"])).status.success());
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v1").status.success());
    let old = std::fs::read(&t.path).unwrap();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v2").status.success());
    std::fs::write(&t.path, &old).unwrap();

    let o = run(t.cli().args(["get", "r/s"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("older than when it was last used here"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(std::fs::read(&t.path).unwrap() == old, "a refused open changed the file");

    let o = run(t.cli().args(["get", "r/s", "--accept-rollback"]));
    assert_eq!(o.stdout, b"v1");
    // Accepted once: the older state is now the baseline.
    assert_eq!(run(t.cli().args(["get", "r/s"])).stdout, b"v1");
}

#[test]
fn an_old_copy_at_another_path_is_refused_too() {
    let t = TempNode::new();
    assert!(run(t.cli().args(["init", "--kdf-memory-kib", "8", "--kdf-time", "1"])).status.success());
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v1").status.success());
    // The same old copy on a stick mounted under another label.
    let copy = t.dir.path().join("other-label").join("test.node");
    std::fs::create_dir(copy.parent().unwrap()).unwrap();
    std::fs::copy(&t.path, &copy).unwrap();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v2").status.success());
    let cli = || {
        let mut c = crate::util::polykey_cmd();
        c.arg("--node").arg(&copy).arg("--password-file").arg(t.password_file()).env("XDG_STATE_HOME", t.dir.path().join("state"));
        c
    };
    let o = run(cli().args(["get", "r/s"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("older than when it was last used here"), "{}", stderr(&o));
    assert_eq!(run(cli().args(["get", "r/s", "--accept-rollback"])).stdout, b"v1");
    // The original, newer, still opens (and becomes the baseline again).
    assert_eq!(run(t.cli().args(["get", "r/s"])).stdout, b"v2");
}

/// The node's id, from its header (docs/FORMAT.md: bytes 24..40).
fn node_id(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[24..40].to_vec()
}

fn sha1_24(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()[..24].to_owned()
}

/// A record an earlier version kept (keyed by the node's id and canonical path) still
/// catches a rollback, and is moved to the node's own record at the next write.
#[test]
fn path_keyed_records_of_earlier_versions_are_migrated() {
    let t = TempNode::new();
    assert!(run(t.cli().args(["init", "--kdf-memory-kib", "8", "--kdf-time", "1"])).status.success());
    let seen = t.dir.path().join("state/polykey/seen");
    let id = node_id(&t.path);
    let new = seen.join(sha1_24(&id));
    std::fs::remove_file(&new).unwrap(); // As if `init` had been run by an earlier version.
    let canon = std::fs::canonicalize(&t.path).unwrap();
    let old = seen.join(sha1_24(&[&id[..], canon.as_os_str().as_encoded_bytes()].concat()));
    std::fs::write(&old, "0 5\n").unwrap();
    // The node (0, 0) is older than the old record says.
    let o = run(t.cli().args(["ls"]));
    assert!(stderr(&o).contains("older than when it was last used here"), "{}", stderr(&o));
    assert!(old.exists() && !new.exists(), "a refused open writes no record");
    // An old record below the node's position: moved to the new record, which keeps the path
    // as context.
    std::fs::write(&old, "0 0\n").unwrap();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v").status.success());
    assert!(!old.exists(), "the path-keyed record is gone");
    let text = std::fs::read_to_string(&new).unwrap();
    assert_eq!(text, format!("0 1\nlast seen at {}\n", canon.display()));
}

/// The record is written as a temporary file, synced, renamed over the record, and the folder
/// synced: traced on the real binary.
#[test]
fn the_record_is_written_durably() {
    let t = TempNode::new();
    assert!(run(t.cli().args(["init", "--kdf-memory-kib", "8", "--kdf-time", "1"])).status.success());
    let trace = t.dir.path().join("trace");
    let mut c = std::process::Command::new("strace");
    c.arg("-f").arg("-y").args(["-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o"]).arg(&trace);
    let pk = t.cli();
    c.arg(pk.get_program()).args(pk.get_args()).args(["put", "r/s"]);
    for (k, v) in pk.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = run_with_stdin(&mut c, b"v");
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = std::fs::canonicalize(t.dir.path().join("state/polykey/seen")).unwrap();
    let record = seen.join(sha1_24(&node_id(&t.path)));
    let text = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(&*seen.to_string_lossy())).collect();
    let tmp = format!("{}.tmp", record.display());
    let synced_tmp = lines.iter().position(|l| l.contains("fsync(") && l.contains(&tmp));
    let renamed = lines.iter().position(|l| l.contains("rename") && l.contains(&tmp) && l.contains(&format!("\"{}\"", record.display())));
    let synced_dir = lines.iter().rposition(|l| l.contains("fsync(") && l.contains(&format!("<{}>", seen.display())));
    match (synced_tmp, renamed, synced_dir) {
        (Some(a), Some(b), Some(c)) if a < b && b < c => {}
        _ => panic!("not temporary file, fsync, rename, fsync of the folder:\n{}", lines.join("\n")),
    }
}
