//! A file open for writing in a mount across a change of its secret through the control
//! socket (`put` here; `sync` and `revert` go the same way) is merged at its save, or saved
//! beside, never written over the change.

use crate::sync::Nodes;
use crate::util::{run, stderr};
use std::os::unix::fs::FileExt;

const BASE: &[u8] = b"L1=a\nL2=b\nL3=c\nL4=d\n";

/// Mounts a node holding `r/s` = BASE, writes `ours` at offset 0 through a descriptor held
/// open, changes the secret to `theirs` with `polykey put` meanwhile, closes; returns the node.
fn across(ours: &[u8], theirs: &[u8]) -> Option<Nodes> {
    if !crate::mounted::fuse_available() {
        return None;
    }
    let n = Nodes::new();
    n.init("n");
    n.put("n", "r/s", BASE);
    let mnt = n.dir.path().join("mnt");
    n.ok("n", &["mount", mnt.to_str().unwrap()]);
    let file = std::fs::OpenOptions::new().read(true).write(true).open(mnt.join("repos/r/s")).unwrap();
    file.write_all_at(ours, 0).unwrap();
    n.put("n", "r/s", theirs); // Well within the second after which an idle open commits.
    drop(file);
    let o = run(n.cli("n").arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    Some(n)
}

#[test]
fn changes_on_different_lines_are_merged_at_close() {
    let Some(n) = across(b"L1=X", b"L1=a\nL2=b\nL3=c\nL4=Y\n") else { return };
    assert_eq!(n.get("n", "r/s"), b"L1=X\nL2=b\nL3=c\nL4=Y\n");
    assert_eq!(n.lines("n", &["ls", "r"]), ["s"]);
}

#[test]
fn the_same_line_changed_keeps_the_change_and_saves_the_open_file_beside() {
    let Some(n) = across(b"L1=X", b"L1=Y\nL2=b\nL3=c\nL4=d\n") else { return };
    assert_eq!(n.get("n", "r/s"), b"L1=Y\nL2=b\nL3=c\nL4=d\n");
    assert_eq!(n.get("n", "r/s.conflict-mount"), b"L1=X\nL2=b\nL3=c\nL4=d\n");
    assert_eq!(n.lines("n", &["conflicts"]), ["r/s.conflict-mount"]);
}
