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
    // The same bytes written again and again while `put` runs: an open file idle for a second
    // commits by itself, and on a loaded machine `put` can take longer than that.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                file.write_all_at(ours, 0).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        n.put("n", "r/s", theirs);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
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

/// An editor in a terminal, open on a secret across a `polykey sync` that changes another line
/// of it: its save is merged with the synced change (the buffer holds what was read before).
/// With the same line changed, the synced value stays and vim's is beside it.
fn vim_across_sync(edit_line: &str, stick_value: &[u8]) -> Option<Nodes> {
    use crate::editors::{have, shell_quote, Tmux};
    if !crate::mounted::fuse_available() || !have("vim") || !have("tmux") {
        return None;
    }
    let n = Nodes::new();
    n.init("laptop");
    n.put("laptop", "r/s", BASE);
    n.backup("laptop", "stick", &[]);
    n.put("stick", "r/s", stick_value);
    let mnt = n.dir.path().join("mnt");
    n.ok("laptop", &["mount", mnt.to_str().unwrap()]);
    let home = n.dir.path().join("home");
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let t = Tmux { sock: home.join("tmux.sock"), home: home.clone(), prefix: Vec::new() };
    let line = format!("vim -N -u NONE -i NONE {}", shell_quote(&mnt.join("repos/r/s")));
    let o = t.run(&["new-session", "-d", "-s", "edit", "-x", "100", "-y", "30", &line]);
    assert!(o.status.success(), "tmux: {}", stderr(&o));
    t.wait_pane("L4=d", "vim shows the file");
    n.sync("laptop", "stick", &[]);
    t.keys(&["-l", edit_line]);
    t.keys(&["Escape"]);
    t.keys(&["-l", ":wq"]);
    t.keys(&["Enter"]);
    assert!(crate::mounted::wait_for(10, || !t.run(&["has-session", "-t", "edit"]).status.success()), "vim did not exit:\n{}", t.pane());
    let o = run(n.cli("laptop").arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    Some(n)
}

#[test]
fn vim_open_across_a_sync_ends_merged() {
    // `ggc$L1=X`: vim changes line 1; the stick changed line 4.
    let Some(n) = vim_across_sync("ggc$L1=X", b"L1=a\nL2=b\nL3=c\nL4=Y\n") else { return };
    assert_eq!(n.get("laptop", "r/s"), b"L1=X\nL2=b\nL3=c\nL4=Y\n");
}

#[test]
fn vim_open_across_a_sync_of_the_same_line_ends_beside() {
    let Some(n) = vim_across_sync("ggc$L1=X", b"L1=Y\nL2=b\nL3=c\nL4=d\n") else { return };
    let log = n.lines("laptop", &["log", "r"]);
    assert_eq!(String::from_utf8(n.get("laptop", "r/s")).unwrap(), "L1=Y\nL2=b\nL3=c\nL4=d\n", "{log:?}");
    assert_eq!(n.get("laptop", "r/s.conflict-mount"), b"L1=X\nL2=b\nL3=c\nL4=d\n");
}
