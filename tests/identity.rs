//! `polykey id`: keys made once inside the node, stable across reopen, compaction, `passwd`
//! and mounts; a full backup carries them, a sub-node and another node do not.

use crate::sync::Nodes;
use crate::util::{pass, run, stderr, FAST_KDF_ARGS, PASSWORD};

fn id(n: &Nodes, node: &str, form: &[&str]) -> String {
    let o = n.ok(node, &[&["id"][..], form].concat());
    String::from_utf8(o.stdout).unwrap().trim_end().to_owned()
}

fn features(path: &std::path::Path) -> u32 {
    u32::from_le_bytes(std::fs::read(path).unwrap()[12..16].try_into().unwrap())
}

#[test]
fn the_identity_is_made_once_and_never_changes() {
    let n = Nodes::new();
    n.init("a");
    n.put("a", "r/s", b"v");
    assert_eq!(features(&n.path("a")) & 0x4, 0, "no identity, no feature bit");
    let token = id(&n, "a", &[]);
    assert!(token.starts_with("pk1") && token.len() == 112, "{token}");
    assert_eq!(features(&n.path("a")) & 0x4, 0x4);
    let age = id(&n, "a", &["--age"]);
    assert!(age.starts_with("age1") && age.len() == 62, "{age}");
    let ssh = id(&n, "a", &["--ssh"]);
    assert!(ssh.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI") && ssh.ends_with(" polykey"), "{ssh}");
    assert_eq!(id(&n, "a", &[]), token, "reopened");
    // Compaction.
    {
        let mut node = polykey::Node::open(&n.path("a"), &pass(), polykey::Access::Write).unwrap();
        node.compact().unwrap();
    }
    assert_eq!(id(&n, "a", &[]), token, "after compaction");
    // passwd, then the new passphrase.
    let newpw = n.dir.path().join("newpw");
    std::fs::write(&newpw, "another passphrase\n").unwrap();
    n.ok("a", &[&FAST_KDF_ARGS[..], &["passwd", "--new-password-file", newpw.to_str().unwrap()]].concat());
    // From now on the passphrase file holds the new one (the same file every command reads).
    std::fs::copy(&newpw, &n.pw).unwrap();
    assert_eq!(id(&n, "a", &[]), token, "after passwd");
    // Another node: other keys. A full backup: the same node in another file; a sub-node: its own.
    n.init("b");
    assert_ne!(id(&n, "b", &[]), token);
    n.backup("a", "full", &[]);
    assert_eq!(id(&n, "full", &[]), token, "a full backup keeps the identity");
    n.backup("a", "sub", &["--only", "r"]);
    assert_ne!(id(&n, "sub", &[]), token, "a sub-node is a node of its own");
    std::fs::write(&n.pw, [PASSWORD, b"\n"].concat()).unwrap();
}

#[test]
fn the_identity_is_the_same_through_the_mount_daemon() {
    if !crate::mounted::fuse_available() {
        return;
    }
    let n = Nodes::new();
    n.init("a");
    let mnt = n.dir.path().join("mnt");
    n.ok("a", &["mount", mnt.to_str().unwrap()]);
    let mounted = run(n.cli("a").arg("id"));
    let again = run(n.cli("a").args(["id", "--age"]));
    let o = run(n.cli("a").arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(mounted.status.success() && again.status.success(), "{} {}", stderr(&mounted), stderr(&again));
    assert_eq!(String::from_utf8(mounted.stdout).unwrap().trim_end(), id(&n, "a", &[]), "made by the daemon, kept");
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim_end(), id(&n, "a", &["--age"]));
    let o = run(n.cli("a").args(["id", "--age", "--ssh"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
