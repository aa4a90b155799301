//! `polykey import`: many secrets at once from a folder tree or a tar on stdin, one commit per
//! repository; an export imports back as it is; bad layouts are refused with nothing stored.

use crate::util::{run, run_with_stdin, stderr, TempNode, FAST_KDF_ARGS};
use std::fs;

fn node() -> TempNode {
    let t = TempNode::new();
    assert!(run(t.cli().args(FAST_KDF_ARGS).arg("init")).status.success());
    t
}

#[test]
fn a_folder_imports_with_one_commit_per_repository() {
    let t = node();
    let src = t.dir.path().join("src");
    for (r, s, v) in [("aws", "key", "k"), ("aws", "secret", "s"), ("db", "pw", "p")] {
        fs::create_dir_all(src.join(r)).unwrap();
        fs::write(src.join(r).join(s), v).unwrap();
    }
    let o = run(t.cli().arg("import").arg(&src));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(run(t.cli().args(["get", "aws/secret"])).stdout, b"s");
    assert_eq!(run(t.cli().args(["log", "aws"])).stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 1);
    // Importing the same again changes nothing and makes no commit.
    assert!(run(t.cli().arg("import").arg(&src)).status.success());
    assert_eq!(run(t.cli().args(["log", "aws"])).stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 1);
}

#[test]
fn an_export_imports_back_into_a_new_node() {
    let a = node();
    for (p, v) in [("aws/key", &b"\0binary\n"[..]), ("db/pw", b"p")] {
        assert!(run_with_stdin(a.cli().args(["put", p]), v).status.success());
    }
    let tar = run(a.cli().arg("export")).stdout;
    let b = node();
    let o = run_with_stdin(b.cli().args(["import", "-"]), &tar);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(run(b.cli().args(["get", "aws/key"])).stdout, b"\0binary\n");
    assert_eq!(run(b.cli().args(["get", "db/pw"])).stdout, b"p");
}

#[test]
fn bad_layouts_are_refused_and_nothing_is_stored() {
    let t = node();
    let before = fs::read(&t.path).unwrap();
    let src = t.dir.path().join("src");
    fs::create_dir_all(src.join("aws/nested")).unwrap();
    fs::write(src.join("aws/key"), "k").unwrap();
    let o = run(t.cli().arg("import").arg(&src));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("only plain files"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    tar.append_data(&mut h, "a/b/c", &b"x"[..]).unwrap();
    let o = run_with_stdin(t.cli().args(["import", "-"]), &tar.into_inner().unwrap());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("expected <repo>/<secret>"), "{}", stderr(&o));
    assert!(fs::read(&t.path).unwrap() == before, "a refused import wrote to the node");
}
