//! Rollback detection: a node replaced by an older copy of itself is refused when opened,
//! until the user accepts it; a copy at another path is an independent node.

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
fn a_copy_at_another_path_is_an_independent_node() {
    let t = TempNode::new();
    assert!(run(t.cli().args(["init", "--kdf-memory-kib", "8", "--kdf-time", "1"])).status.success());
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v1").status.success());
    let copy = t.dir.path().join("copy.node");
    std::fs::copy(&t.path, &copy).unwrap();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v2").status.success());
    let mut c = crate::util::polykey_cmd();
    c.arg("--node").arg(&copy).arg("--password-file").arg(t.password_file()).env("XDG_STATE_HOME", t.dir.path().join("state"));
    let o = run(c.args(["get", "r/s"]));
    assert_eq!(o.stdout, b"v1", "{}", stderr(&o));
}
