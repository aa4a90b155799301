//! History you can go back to: `polykey get --at REV` and `polykey revert --to REV`, through
//! the real CLI, unmounted and mounted; the result checked with real git.

use crate::sync::Nodes;
use crate::util::{run, stderr};

fn node_with_history() -> Nodes {
    let n = Nodes::new();
    n.init("n");
    for v in ["v1", "v2", "v3"] {
        n.put("n", "web/pw", v.as_bytes());
    }
    n.put("n", "web/other", b"o");
    n
}

#[test]
fn get_at_reads_every_kind_of_revision() {
    let n = node_with_history();
    for (rev, want) in [("@{0}", "v3"), ("@{1}", "v2"), ("@{2}", "v1")] {
        assert_eq!(n.ok("n", &["get", "web/pw", "--at", rev]).stdout, want.as_bytes(), "{rev}");
    }
    // Commit ids from `log`, whole and as a prefix.
    let log = n.lines("n", &["log", "web/pw"]);
    let oldest = log.last().unwrap().split(' ').next().unwrap().to_owned();
    assert_eq!(n.ok("n", &["get", "web/pw", "--at", &oldest]).stdout, b"v1");
    assert_eq!(n.ok("n", &["get", "web/pw", "--at", &oldest[..8]]).stdout, b"v1");
    assert_eq!(n.ok("n", &["get", "web/pw", "--at", &oldest[..8].to_uppercase()]).stdout, b"v1");
    // A time: far ahead is now; at a commit's own second (as log prints it) is that commit or later.
    assert_eq!(n.ok("n", &["get", "web/pw", "--at", "2999-01-01"]).stdout, b"v3");
    let when = log[0].split(' ').nth(1).unwrap();
    assert_eq!(n.ok("n", &["get", "web/pw", "--at", when]).stdout, b"v3");
    // Errors: one line, the right status.
    for (rev, code, want) in [
        ("@{3}", 1, "it has 3 saves"),
        ("1970-01-01", 1, "at or before 1970-01-01"),
        ("ffffffff", 1, "commit ffffffff in web not found"),
        ("@{x}", 2, "expected @{N}"),
        ("yesterday", 2, "expected a commit id"),
        ("2026-13-01", 2, "expected a commit id"),
    ] {
        let o = run(n.cli("n").args(["get", "web/pw", "--at", rev]));
        assert_eq!(o.status.code(), Some(code), "{rev}: {}", stderr(&o));
        assert!(stderr(&o).contains(want) && stderr(&o).lines().count() == 1, "{rev}: {}", stderr(&o));
    }
    let o = run(n.cli("n").args(["get", "web/other", "--at", &oldest]));
    assert!(!o.status.success() && stderr(&o).contains("web/other at"), "{}", stderr(&o));
}

#[test]
fn revert_makes_one_new_commit_and_keeps_history() {
    let n = node_with_history();
    n.ok("n", &["tag", "t", "web/other"]);
    let before = n.lines("n", &["log", "web"]).len();
    n.ok("n", &["revert", "web/pw", "--to", "@{2}"]);
    assert_eq!(n.get("n", "web/pw"), b"v1");
    let log = n.lines("n", &["log", "web"]);
    assert_eq!(log.len(), before + 1, "one commit");
    assert!(log[0].contains("Revert pw to "), "{log:?}");
    // Nothing to do: no commit.
    let o = n.ok("n", &["revert", "web/pw", "--to", "@{0}"]);
    assert!(stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    assert_eq!(n.lines("n", &["log", "web"]).len(), before + 1);
    // A removed secret comes back; a whole repository goes back (web/other did not exist then:
    // it goes, with its tag entry).
    n.ok("n", &["rm", "web/pw"]);
    n.ok("n", &["revert", "web/pw", "--to", "@{1}"]);
    assert_eq!(n.get("n", "web/pw"), b"v1");
    let first = n.lines("n", &["log", "web"]).last().unwrap().split(' ').next().unwrap().to_owned();
    n.ok("n", &["revert", "web", "--to", &first]);
    assert_eq!(n.lines("n", &["ls", "web"]), ["pw"]);
    assert_eq!(n.get("n", "web/pw"), b"v1");
    assert!(n.lines("n", &["tags", "t"]).is_empty(), "the tag entry of the reverted-away secret stays");
    let x = n.export("n");
    let repo = x.path().join("repos/web");
    let o = run(std::process::Command::new("git").arg("-C").arg(&repo).args(["fsck", "--strict"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(n.cli("n").args(["revert", "web/pw"]));
    assert_eq!(o.status.code(), Some(2), "--to is required: {}", stderr(&o));
}

#[test]
fn a_mounted_revert_shows_in_the_mount_at_once() {
    if !crate::mounted::fuse_available() {
        return;
    }
    let n = node_with_history();
    let mnt = n.dir.path().join("mnt");
    n.ok("n", &["mount", mnt.to_str().unwrap()]);
    let file = mnt.join("repos/web/pw");
    let seen = std::fs::read(&file).unwrap();
    let at = run(n.cli("n").args(["get", "web/pw", "--at", "@{1}"]));
    n.ok("n", &["revert", "web/pw", "--to", "@{1}"]);
    let after = std::fs::read(&file).unwrap();
    let o = run(n.cli("n").arg("unmount").arg(&mnt));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(seen, b"v3");
    assert_eq!(at.stdout, b"v2", "{}", stderr(&at));
    assert_eq!(after, b"v2");
}
