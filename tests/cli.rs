//! The `polykey` command as a user drives it: the CLI half of the contract.
//!
//! Guards exact stdout of every command, exact bytes through `put`/`get`, the passphrase
//! sources and their precedence, exit statuses (0 success, 1 failure, 2 usage or no
//! passphrase source), one-line error messages that never leak a panic, hostile and exotic
//! names, and that `export` gives ordinary git repositories with tags as hard links.
//! Everything runs the real binary with a clean environment.

use crate::util::{self, run, run_with_stdin, stderr, unchanged, TempNode, FAST_KDF_ARGS, PASSWORD};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ---------------------------------------------------------------------------------------------
// Helpers

/// Asserts `o` succeeded and returns its stdout.
#[track_caller]
fn ok(o: Output) -> Vec<u8> {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status.code(), stderr(&o));
    o.stdout
}

/// Asserts `o` printed exactly one line on stderr, nothing on stdout, and no trace of a panic;
/// returns the line.
#[track_caller]
fn one_line_error(o: &Output) -> String {
    let e = stderr(o);
    assert!(e.ends_with('\n') && e.matches('\n').count() == 1, "stderr is not exactly one line: {e:?}");
    assert!(!e.contains("panicked") && !e.contains("RUST_BACKTRACE"), "stderr shows a panic: {e:?}");
    assert!(o.stdout.is_empty(), "a failing command wrote to stdout: {:?}", String::from_utf8_lossy(&o.stdout));
    e.trim_end().to_owned()
}

/// Asserts `o` failed with exit status `code` and one line on stderr; returns the line.
#[track_caller]
fn fails(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "stdout: {:?}, stderr: {}", String::from_utf8_lossy(&o.stdout), stderr(o));
    one_line_error(o)
}

/// Asserts `o` failed because the passphrase was wrong for the node at `node`.
#[track_caller]
fn wrong_passphrase(o: &Output, node: &Path) {
    let line = fails(o, 1);
    let want = format!("wrong passphrase for node {}", node.display());
    assert!(line.contains(&want), "{line:?} does not contain {want:?}");
}

/// An OsString from raw bytes (names need not be UTF-8).
fn os(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_owned()
}

/// A node created through the CLI with the test passphrase and the cheap KDF.
fn init() -> TempNode {
    let t = TempNode::new();
    let o = run(t.cli().args(FAST_KDF_ARGS).arg("init"));
    assert!(ok(o).is_empty(), "init prints nothing on stdout");
    t
}

/// `polykey put path` with `data` on stdin; asserts success and an empty stdout.
#[track_caller]
fn put(t: &TempNode, path: impl AsRef<OsStr>, data: &[u8]) {
    let out = ok(run_with_stdin(t.cli().arg("put").arg(path), data));
    assert!(out.is_empty(), "put prints nothing");
}

/// Runs `polykey <args>` on `t` and returns its stdout, asserting success.
#[track_caller]
fn cli_ok<I, S>(t: &TempNode, args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ok(run(t.cli().args(args)))
}

/// Stdout of a successful `polykey <args>` as a string.
#[track_caller]
fn cli_text<I, S>(t: &TempNode, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    String::from_utf8(cli_ok(t, args)).unwrap()
}

/// Stdout of a successful `polykey --json <args>`, parsed.
#[track_caller]
fn cli_json(t: &TempNode, args: &[&str]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let out = ok(run(t.cli().arg("--json").args(args)));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out:?}"));
    let serde_json::Value::Array(items) = v else { panic!("{args:?}: not a JSON array: {v}") };
    items.into_iter().map(|i| if let serde_json::Value::Object(m) = i { m } else { panic!("{args:?}: not an object: {i}") }).collect()
}

/// The ids of `polykey log <args>`, newest first.
#[track_caller]
fn log_ids(t: &TempNode, args: &[&str]) -> Vec<String> {
    cli_json(t, &[&["log"], args].concat()).iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `YYYY-MM-DDTHH:MM:SSZ`
fn is_iso8601_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// A `git` command in `dir` that ignores the user's and the system's configuration.
fn git(dir: &Path, home: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir).env("HOME", home).env("GIT_CONFIG_NOSYSTEM", "1").env("GIT_CONFIG_GLOBAL", "/dev/null");
    for k in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"] {
        c.env_remove(k);
    }
    c
}

/// `polykey export` of `t`, extracted with the real `tar` into a new directory.
fn export_and_extract(t: &TempNode) -> tempfile::TempDir {
    let tar_bytes = ok(run(t.cli().arg("export")));
    assert!(!tar_bytes.is_empty());
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("backup.tar");
    std::fs::write(&archive, &tar_bytes).unwrap();
    let dir = out.path().join("x");
    std::fs::create_dir(&dir).unwrap();
    let o = run(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&dir));
    assert!(o.status.success(), "tar -x failed: {}", stderr(&o));
    out
}

/// Names in a directory, as raw bytes.
fn dir_names(dir: &Path) -> BTreeSet<Vec<u8>> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().as_bytes().to_vec()).collect()
}

fn names(list: &[&[u8]]) -> BTreeSet<Vec<u8>> {
    list.iter().map(|n| n.to_vec()).collect()
}

/// Lines, each followed by `\n`, as bytes.
fn lines(list: &[&[u8]]) -> Vec<u8> {
    list.iter().flat_map(|l| [*l, b"\n"].concat()).collect()
}

// ---------------------------------------------------------------------------------------------
// init

#[test]
fn init_creates_a_private_node_file() {
    let t = TempNode::new();
    let o = run(t.cli().args(FAST_KDF_ARGS).arg("init"));
    assert!(ok(o).is_empty());
    let meta = std::fs::metadata(&t.path).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(cli_ok(&t, ["ls"]), b"", "a new node is empty");
    assert_eq!(cli_ok(&t, ["tags"]), b"");
}

#[test]
fn init_refuses_to_overwrite_any_existing_file() {
    let t = init();
    let before = std::fs::read(&t.path).unwrap();
    let line = fails(&run(t.cli().args(FAST_KDF_ARGS).arg("init")), 1);
    assert!(line.contains(&t.path.display().to_string()), "{line}");
    assert!(unchanged(&t.path, &before));

    for content in [&b""[..], b"not a node\n"] {
        let other = t.file("other", content);
        let o = run(util::polykey_cmd()
            .args(FAST_KDF_ARGS)
            .arg("--node")
            .arg(&other)
            .arg("--password-file")
            .arg(t.password_file())
            .arg("init"));
        fails(&o, 1);
        assert!(unchanged(&other, content));
    }
}

#[test]
fn init_refuses_an_empty_passphrase() {
    let t = TempNode::new();
    for content in [&b""[..], b"\n", b"\r\n"] {
        let f = t.file("empty", content);
        fails(&run(t.cli_detached().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&f).arg("init")), 1);
        assert!(!t.path.exists());
        fails(&run(t.cli_detached().args(FAST_KDF_ARGS).arg("--password-file").arg(&f).arg("init")), 1);
        assert!(!t.path.exists());
    }
    fails(&run(t.cli_detached().args(FAST_KDF_ARGS).env("POLYKEY_PASSWORD", "").arg("init")), 1);
    fails(&run(t.cli_detached().args(FAST_KDF_ARGS).arg("--password-command").arg("true").arg("init")), 1);
    assert!(!t.path.exists());
}

#[test]
fn init_takes_the_new_passphrase_file_over_the_current_sources() {
    let t = TempNode::new();
    let new = t.file("new", b"brand new\n");
    ok(run(t.cli().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&new).arg("init")));
    wrong_passphrase(&run(t.cli().arg("ls")), &t.path);
    ok(run(t.cli_detached().arg("--password-file").arg(&new).arg("ls")));
}

#[test]
fn the_node_path_comes_from_the_flag_then_the_environment_then_xdg() {
    let t = TempNode::new();
    let pw = t.password_file();
    let base = || {
        let mut c = util::polykey_detached();
        c.args(FAST_KDF_ARGS).arg("--password-file").arg(&pw).env_remove("XDG_DATA_HOME");
        c
    };
    let (flag, env, xdg, home) =
        (t.dir.path().join("flag.node"), t.dir.path().join("env.node"), t.dir.path().join("xdg"), t.dir.path().join("home"));
    ok(run(base().env("XDG_DATA_HOME", &xdg).env("POLYKEY_NODE", &env).arg("--node").arg(&flag).arg("init")));
    assert!(flag.exists() && !env.exists() && !xdg.exists());
    ok(run(base().env("XDG_DATA_HOME", &xdg).env("POLYKEY_NODE", &env).arg("init")));
    assert!(env.exists() && !xdg.exists());
    ok(run(base().env("XDG_DATA_HOME", &xdg).arg("init")));
    assert!(xdg.join("polykey/default.node").is_file());
    ok(run(base().env("HOME", &home).arg("init")));
    assert!(home.join(".local/share/polykey/default.node").is_file());
}

// ---------------------------------------------------------------------------------------------
// Every command's exact output

#[test]
fn every_command_prints_exactly_its_output() {
    let t = init();
    put(&t, "aws/key", b"AKIA\n");
    put(&t, "aws/region", b"eu-west-1");
    put(&t, "mail/pw", b"hunter2");

    assert_eq!(cli_text(&t, ["ls"]), "aws\nmail\n");
    assert_eq!(cli_text(&t, ["ls", "aws"]), "key\nregion\n");
    assert_eq!(cli_ok(&t, ["get", "aws/key"]), b"AKIA\n");

    assert_eq!(cli_text(&t, ["tag", "prod", "aws/key"]), "");
    assert_eq!(cli_text(&t, ["tag", "prod", "aws/region", "--as", "where"]), "");
    assert_eq!(cli_text(&t, ["tag", "prod", "mail/pw"]), "");
    assert_eq!(cli_text(&t, ["tag", "personal", "mail/pw", "--as", "mail"]), "");
    assert_eq!(cli_text(&t, ["tags"]), "personal\nprod\n");
    assert_eq!(cli_text(&t, ["tags", "prod"]), "key -> aws/key\npw -> mail/pw\nwhere -> aws/region\n");

    assert_eq!(cli_text(&t, ["mv", "aws/key", "aws/access"]), "");
    assert_eq!(cli_text(&t, ["ls", "aws"]), "access\nregion\n");
    assert_eq!(cli_text(&t, ["tags", "prod"]), "key -> aws/access\npw -> mail/pw\nwhere -> aws/region\n");
    assert_eq!(cli_ok(&t, ["get", "aws/access"]), b"AKIA\n");

    assert_eq!(cli_text(&t, ["untag", "prod", "where"]), "");
    assert_eq!(cli_text(&t, ["tags", "prod"]), "key -> aws/access\npw -> mail/pw\n");
    // The tag goes with its last entry.
    assert_eq!(cli_text(&t, ["untag", "personal", "mail"]), "");
    assert_eq!(cli_text(&t, ["tags"]), "prod\n");

    assert_eq!(cli_text(&t, ["rm", "aws/access"]), "");
    assert_eq!(cli_text(&t, ["ls", "aws"]), "region\n");
    assert_eq!(cli_text(&t, ["tags", "prod"]), "pw -> mail/pw\n");

    let log = cli_text(&t, ["log", "aws"]);
    let messages: Vec<&str> = log.lines().map(|l| l.splitn(3, ' ').nth(2).unwrap()).collect();
    assert_eq!(messages, ["Remove access", "Rename key to access", "Add region", "Add key"]);
    let json = cli_json(&t, &["log", "aws"]);
    let expected: String = json
        .iter()
        .map(|e| format!("{} {} {}\n", e["id"].as_str().unwrap(), e["time"].as_str().unwrap(), e["message"].as_str().unwrap()))
        .collect();
    assert_eq!(log, expected);
    let region = cli_text(&t, ["log", "aws", "region"]);
    assert_eq!(region.lines().count(), 1);
    assert!(region.ends_with(" Add region\n"), "{region}");
    assert_eq!(region, log.lines().nth(2).unwrap().to_owned() + "\n");

    assert_eq!(cli_text(&t, ["rm", "-r", "mail"]), "");
    assert_eq!(cli_text(&t, ["ls"]), "aws\n");

    let export = cli_ok(&t, ["export"]);
    assert_eq!(&export[257..262], b"ustar", "export writes a tar archive");

    let new = t.file("new", b"next\n");
    assert!(ok(run(t.cli().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&new).arg("passwd"))).is_empty());
}

#[test]
fn get_returns_the_exact_bytes_stored() {
    let t = init();
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(3 * 256 + 7).collect();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: [(&str, &[u8]); 8] = [
        ("r/binary", &all_bytes),
        ("r/two-newlines", b"secret\n\n"),
        ("r/crlf", b"secret\r\n"),
        ("r/no-newline", b"secret"),
        ("r/only-newline", b"\n"),
        ("r/nul", b"\0\0\0"),
        ("r/empty", b""),
        ("r/big", &big),
    ];
    for (path, data) in cases {
        put(&t, path, data);
    }
    for (path, data) in cases {
        assert_eq!(cli_ok(&t, ["get", path]), data, "{path}");
    }
}

#[test]
fn put_of_identical_bytes_makes_no_commit_and_a_change_makes_one() {
    let t = init();
    put(&t, "r/s", b"one\n");
    assert_eq!(log_ids(&t, &["r"]).len(), 1);
    put(&t, "r/s", b"one\n");
    assert_eq!(log_ids(&t, &["r"]).len(), 1, "identical bytes make no new commit");
    put(&t, "r/s", b"one");
    assert_eq!(log_ids(&t, &["r"]).len(), 2, "one changed byte makes exactly one commit");
    put(&t, "r/other", b"one");
    let log = cli_json(&t, &["log", "r"]);
    assert_eq!(log.len(), 3);
    assert_eq!(log[0]["message"], "Add other");
    assert_eq!(log[1]["message"], "Update s");
    assert_eq!(cli_ok(&t, ["get", "r/s"]), b"one");
}

// ---------------------------------------------------------------------------------------------
// Passphrase sources

/// A node with one secret, and the paths and commands that give the right or a wrong passphrase.
struct Sources {
    t: TempNode,
    good_file: PathBuf,
    bad_file: PathBuf,
    good_command: String,
    bad_command: &'static str,
}

fn sources() -> Sources {
    let t = init();
    put(&t, "r/s", b"x");
    let good_file = t.password_file();
    let bad_file = t.file("bad", b"not the passphrase\n");
    let good_command = format!("cat '{}'", good_file.display());
    Sources { t, good_file, bad_file, good_command, bad_command: "echo not the passphrase" }
}

#[test]
fn each_passphrase_source_works_alone() {
    let s = sources();
    let good = String::from_utf8(PASSWORD.to_vec()).unwrap();
    let ls = |c: &mut Command| ok(run(c.arg("ls")));
    assert_eq!(ls(s.t.cli_detached().arg("--password-file").arg(&s.good_file)), b"r\n");
    assert_eq!(ls(s.t.cli_detached().env("POLYKEY_PASSWORD_FILE", &s.good_file)), b"r\n");
    assert_eq!(ls(s.t.cli_detached().arg("--password-command").arg(&s.good_command)), b"r\n");
    assert_eq!(ls(s.t.cli_detached().env("POLYKEY_PASSWORD_COMMAND", &s.good_command)), b"r\n");
    assert_eq!(ls(s.t.cli_detached().env("POLYKEY_PASSWORD", &good)), b"r\n");

    wrong_passphrase(&run(s.t.cli_detached().arg("--password-file").arg(&s.bad_file).arg("ls")), &s.t.path);
    wrong_passphrase(&run(s.t.cli_detached().env("POLYKEY_PASSWORD_FILE", &s.bad_file).arg("ls")), &s.t.path);
    wrong_passphrase(&run(s.t.cli_detached().arg("--password-command").arg(s.bad_command).arg("ls")), &s.t.path);
    wrong_passphrase(&run(s.t.cli_detached().env("POLYKEY_PASSWORD_COMMAND", s.bad_command).arg("ls")), &s.t.path);
    wrong_passphrase(&run(s.t.cli_detached().env("POLYKEY_PASSWORD", "nope").arg("ls")), &s.t.path);
}

#[test]
fn passphrase_sources_take_precedence_file_then_command_then_value() {
    let s = sources();
    let good = String::from_utf8(PASSWORD.to_vec()).unwrap();
    let bad = "not the passphrase";
    // Each pair: (the source that must win, the source that must lose), tried both ways round,
    // so a pass cannot come from the loser.
    type Set = Box<dyn Fn(&mut Command, bool)>;
    let (gf, bf) = (s.good_file.clone(), s.bad_file.clone());
    let file_flag: Set = Box::new(move |c, g| {
        c.arg("--password-file").arg(if g { &gf } else { &bf });
    });
    let (gf, bf) = (s.good_file.clone(), s.bad_file.clone());
    let file_env: Set = Box::new(move |c, g| {
        c.env("POLYKEY_PASSWORD_FILE", if g { &gf } else { &bf });
    });
    let (gc, bc) = (s.good_command.clone(), s.bad_command);
    let cmd_flag: Set = Box::new(move |c, g| {
        c.arg("--password-command").arg(if g { gc.as_str() } else { bc });
    });
    let (gc, bc) = (s.good_command.clone(), s.bad_command);
    let cmd_env: Set = Box::new(move |c, g| {
        c.env("POLYKEY_PASSWORD_COMMAND", if g { gc.as_str() } else { bc });
    });
    let value: Set = Box::new(move |c, g| {
        c.env("POLYKEY_PASSWORD", if g { good.as_str() } else { bad });
    });
    let order = [
        ("--password-file", &file_flag),
        ("$POLYKEY_PASSWORD_FILE", &file_env),
        ("--password-command", &cmd_flag),
        ("$POLYKEY_PASSWORD_COMMAND", &cmd_env),
        ("$POLYKEY_PASSWORD", &value),
    ];
    for (i, (winner, win)) in order.iter().enumerate() {
        for (loser, lose) in &order[i + 1..] {
            let mut c = s.t.cli_detached();
            win(&mut c, true);
            lose(&mut c, false);
            let o = run(c.arg("ls"));
            assert!(o.status.success(), "{winner} (right) must beat {loser} (wrong): {}", stderr(&o));
            let mut c = s.t.cli_detached();
            win(&mut c, false);
            lose(&mut c, true);
            wrong_passphrase(&run(c.arg("ls")), &s.t.path);
        }
    }
}

#[test]
fn exactly_one_trailing_newline_is_stripped_from_files_and_commands() {
    // A passphrase file "pw\n\n" means the passphrase "pw\n".
    let t = TempNode::new();
    let init_file = t.file("init", b"pw\n\n");
    ok(run(t.cli_detached().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&init_file).arg("init")));
    let file_ok = |content: &[u8]| {
        let f = t.file("try", content);
        run(t.cli_detached().arg("--password-file").arg(&f).arg("ls"))
    };
    ok(file_ok(b"pw\n\n"));
    ok(file_ok(b"pw\n\r\n"));
    for wrong in [&b"pw\n"[..], b"pw", b"pw\r\n", b"pw\n\n\n", b"pw \n\n", b" pw\n\n"] {
        wrong_passphrase(&file_ok(wrong), &t.path);
    }
    let command = |cmd: &str| run(t.cli_detached().arg("--password-command").arg(cmd).arg("ls"));
    ok(command(r"printf 'pw\n\n'"));
    ok(command(r"printf 'pw\n\r\n'"));
    wrong_passphrase(&command(r"printf 'pw\n'"), &t.path);
    wrong_passphrase(&command(r"printf 'pw'"), &t.path);
    // The value of $POLYKEY_PASSWORD is taken as it is.
    ok(run(t.cli_detached().env("POLYKEY_PASSWORD", "pw\n").arg("ls")));
    wrong_passphrase(&run(t.cli_detached().env("POLYKEY_PASSWORD", "pw").arg("ls")), &t.path);

    // "pw\r\n" means "pw", and nothing but one newline is stripped.
    let t = TempNode::new();
    let init_file = t.file("init", b"pw\r\n");
    ok(run(t.cli_detached().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&init_file).arg("init")));
    for right in [&b"pw"[..], b"pw\n", b"pw\r\n"] {
        let f = t.file("try", right);
        ok(run(t.cli_detached().arg("--password-file").arg(&f).arg("ls")));
    }
    for wrong in [&b"pw\n\n"[..], b"pw \n", b" pw\n", b"pw\t\n", b"pw\r"] {
        let f = t.file("try", wrong);
        wrong_passphrase(&run(t.cli_detached().arg("--password-file").arg(&f).arg("ls")), &t.path);
    }
}

#[test]
fn a_failing_passphrase_source_is_one_clear_error() {
    let s = sources();
    let before = std::fs::read(&s.t.path).unwrap();
    let missing = s.t.dir.path().join("no-such-file");
    let line = fails(&run(s.t.cli_detached().arg("--password-file").arg(&missing).arg("ls")), 1);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    fails(&run(s.t.cli_detached().arg("--password-command").arg("exit 3").arg("ls")), 1);
    fails(&run_with_stdin(s.t.cli_detached().arg("--password-command").arg("exit 3").arg("put").arg("r/s"), b"y"), 1);
    assert!(unchanged(&s.t.path, &before));
}

#[test]
fn no_passphrase_source_and_no_terminal_exits_2_and_writes_nothing() {
    let t = init();
    put(&t, "r/s", b"x");
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    let before = std::fs::read(&t.path).unwrap();
    let commands: [&[&str]; 11] = [
        &["ls"],
        &["ls", "r"],
        &["tags"],
        &["get", "r/s"],
        &["rm", "r/s"],
        &["rm", "-r", "r"],
        &["mv", "r/s", "r/u"],
        &["tag", "t2", "r/s"],
        &["untag", "t", "s"],
        &["log", "r"],
        &["export"],
    ];
    for args in commands {
        let o = run(t.cli_detached().args(args));
        fails(&o, 2);
        assert!(unchanged(&t.path, &before), "{args:?} wrote to the node");
    }
    fails(&run_with_stdin(t.cli_detached().args(["put", "r/new"]), b"data"), 2);
    let new = t.file("new", b"new passphrase\n");
    fails(&run(t.cli_detached().arg("--new-password-file").arg(&new).arg("passwd")), 2);
    assert!(unchanged(&t.path, &before));

    let fresh = t.dir.path().join("new.node");
    fails(&run(util::polykey_detached().args(FAST_KDF_ARGS).arg("--node").arg(&fresh).arg("init")), 2);
    assert!(!fresh.exists());
}

#[test]
fn init_without_a_passphrase_creates_no_directory() {
    let t = TempNode::new();
    let fresh = t.dir.path().join("sub/dir/new.node");
    fails(&run(util::polykey_detached().args(FAST_KDF_ARGS).arg("--node").arg(&fresh).arg("init")), 2);
    assert!(!t.dir.path().join("sub").exists(), "init created a directory without a passphrase");
}

#[test]
fn a_wrong_passphrase_is_refused_by_every_command_and_changes_nothing() {
    let t = init();
    put(&t, "r/s", b"x");
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    let before = std::fs::read(&t.path).unwrap();
    let bad = t.file("bad", b"wrong\n");
    let new = t.file("new", b"new passphrase\n");
    let commands: [&[&str]; 12] = [
        &["ls"],
        &["ls", "r"],
        &["tags"],
        &["tags", "t"],
        &["get", "r/s"],
        &["rm", "r/s"],
        &["rm", "-r", "r"],
        &["mv", "r/s", "r/u"],
        &["tag", "t2", "r/s"],
        &["untag", "t", "s"],
        &["log", "r", "s"],
        &["export"],
    ];
    for args in commands {
        wrong_passphrase(&run(t.cli_detached().arg("--password-file").arg(&bad).args(args)), &t.path);
        assert!(unchanged(&t.path, &before), "{args:?} wrote to the node");
    }
    wrong_passphrase(&run_with_stdin(t.cli_detached().arg("--password-file").arg(&bad).args(["put", "r/s"]), b"y"), &t.path);
    let passwd =
        run(t.cli_detached().args(FAST_KDF_ARGS).arg("--password-file").arg(&bad).arg("--new-password-file").arg(&new).arg("passwd"));
    wrong_passphrase(&passwd, &t.path);
    assert!(unchanged(&t.path, &before));
}

// ---------------------------------------------------------------------------------------------
// passwd

#[test]
fn passwd_rewraps_the_key_and_leaves_the_log_alone() {
    let t = init();
    let binary: Vec<u8> = (0..=255).collect();
    put(&t, "aws/key", &binary);
    put(&t, "aws/region", b"eu\n");
    put(&t, "mail/pw", b"hunter2");
    ok(run(t.cli().args(["tag", "prod", "aws/key"])));
    let log_before = cli_text(&t, ["log", "aws"]);
    let before = std::fs::read(&t.path).unwrap();

    let new = t.file("new", b"a new passphrase\n");
    let o = run(t.cli().args(FAST_KDF_ARGS).arg("--new-password-file").arg(&new).arg("passwd"));
    assert!(ok(o).is_empty());
    let after = std::fs::read(&t.path).unwrap();
    assert_eq!(after[1024..], before[1024..], "passwd must not touch the log (key wrapping only)");
    assert_ne!(after[..1024], before[..1024], "passwd must rewrite the header");

    wrong_passphrase(&run(t.cli().arg("ls")), &t.path);
    let with_new = |args: &[&str]| ok(run(t.cli_detached().arg("--password-file").arg(&new).args(args)));
    assert_eq!(with_new(&["ls"]), b"aws\nmail\n");
    assert_eq!(with_new(&["get", "aws/key"]), binary);
    assert_eq!(with_new(&["get", "aws/region"]), b"eu\n");
    assert_eq!(with_new(&["get", "mail/pw"]), b"hunter2");
    assert_eq!(with_new(&["tags", "prod"]), b"key -> aws/key\n");
    assert_eq!(String::from_utf8(with_new(&["log", "aws"])).unwrap(), log_before);

    // The new passphrase may also come from $POLYKEY_NEW_PASSWORD_FILE; the old one stops working.
    let newer = t.file("newer", b"newer still\n");
    let o =
        run(t.cli_detached().args(FAST_KDF_ARGS).arg("--password-file").arg(&new).env("POLYKEY_NEW_PASSWORD_FILE", &newer).arg("passwd"));
    ok(o);
    wrong_passphrase(&run(t.cli_detached().arg("--password-file").arg(&new).arg("ls")), &t.path);
    assert_eq!(ok(run(t.cli_detached().arg("--password-file").arg(&newer).args(["get", "mail/pw"]))), b"hunter2");
    assert_eq!(std::fs::read(&t.path).unwrap()[1024..], before[1024..]);
}

#[test]
fn passwd_refuses_an_empty_or_missing_new_passphrase() {
    let t = init();
    put(&t, "r/s", b"x");
    let before = std::fs::read(&t.path).unwrap();
    let empty = t.file("empty", b"\n");
    fails(&run(t.cli_detached().arg("--password-file").arg(t.password_file()).arg("--new-password-file").arg(&empty).arg("passwd")), 1);
    assert!(unchanged(&t.path, &before));
    // Without a new-passphrase source and no terminal, passwd does not reuse the current one.
    fails(&run(t.cli_detached().arg("--password-file").arg(t.password_file()).arg("passwd")), 2);
    assert!(unchanged(&t.path, &before));
    assert_eq!(cli_ok(&t, ["get", "r/s"]), b"x");
}

// ---------------------------------------------------------------------------------------------
// Options and JSON

#[test]
fn global_options_are_accepted_before_and_after_the_subcommand() {
    let t = TempNode::new();
    let pw = t.password_file();
    let bin = util::polykey_detached;
    // init with every option after the subcommand, quietly.
    let o = run(bin().arg("init").arg("-q").arg("--node").arg(&t.path).arg("--new-password-file").arg(&pw).args(FAST_KDF_ARGS));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "-q silences init: {}", stderr(&o));
    ok(run_with_stdin(bin().arg("put").arg("r/s").arg("--node").arg(&t.path).arg("--password-file").arg(&pw), b"v"));
    ok(run_with_stdin(bin().arg("--password-file").arg(&pw).arg("put").arg("--node").arg(&t.path).arg("r/u"), b"w"));

    let before = ok(run(bin().arg("--node").arg(&t.path).arg("--password-file").arg(&pw).arg("ls").arg("r")));
    let after = ok(run(bin().arg("ls").arg("r").arg("--node").arg(&t.path).arg("--password-file").arg(&pw)));
    let mixed = ok(run(bin().arg("--node").arg(&t.path).arg("ls").arg("--password-file").arg(&pw).arg("r")));
    assert_eq!(before, b"s\nu\n");
    assert_eq!(after, before);
    assert_eq!(mixed, before);

    let j1 = ok(run(bin().arg("--json").arg("--node").arg(&t.path).arg("--password-file").arg(&pw).arg("ls")));
    let j2 = ok(run(bin().arg("ls").arg("--node").arg(&t.path).arg("--json").arg("--password-file").arg(&pw)));
    assert_eq!(j1, b"[{\"name\":\"r\"}]\n");
    assert_eq!(j2, j1);

    let g1 = ok(run(bin().arg("-q").arg("--node").arg(&t.path).arg("--password-file").arg(&pw).arg("get").arg("r/s")));
    let g2 = ok(run(bin().arg("get").arg("r/s").arg("--password-file").arg(&pw).arg("--node").arg(&t.path).arg("-q")));
    assert_eq!((g1.as_slice(), g2.as_slice()), (&b"v"[..], &b"v"[..]));

    let l1 = ok(run(bin().arg("log").arg("r").arg("s").arg("--json").arg("--node").arg(&t.path).arg("--password-file").arg(&pw)));
    let l2 = ok(run(bin().arg("--json").arg("--node").arg(&t.path).arg("--password-file").arg(&pw).arg("log").arg("r").arg("s")));
    assert_eq!(l1, l2);
    assert!(l1.starts_with(b"[{"));

    ok(run(bin().arg("tag").arg("t").arg("r/s").arg("--node").arg(&t.path).arg("--as").arg("e").arg("--password-file").arg(&pw)));
    assert_eq!(ok(run(bin().arg("tags").arg("t").arg("--password-file").arg(&pw).arg("--node").arg(&t.path))), b"e -> r/s\n");
}

#[test]
fn json_output_is_an_array_of_objects_with_the_documented_keys() {
    let t = init();
    put(&t, "aws/key", b"k");
    put(&t, "aws/key", b"k2");
    put(&t, "mail/pw", b"p");
    ok(run(t.cli().args(["tag", "prod", "aws/key", "--as", "aws-key"])));
    ok(run(t.cli().args(["tag", "prod", "mail/pw"])));

    let keys = |m: &serde_json::Map<String, serde_json::Value>| m.keys().cloned().collect::<BTreeSet<_>>();
    let set = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    let repos = cli_json(&t, &["ls"]);
    assert_eq!(repos.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(), ["aws", "mail"]);
    assert!(repos.iter().all(|m| keys(m) == set(&["name"])));
    let secrets = cli_json(&t, &["ls", "aws"]);
    assert_eq!(secrets.iter().map(|m| m["name"].as_str().unwrap()).collect::<Vec<_>>(), ["key"]);

    let tags = cli_json(&t, &["tags"]);
    assert_eq!(tags.len(), 1);
    assert_eq!(tags[0]["name"], "prod");
    assert_eq!(keys(&tags[0]), set(&["name"]));

    let entries = cli_json(&t, &["tags", "prod"]);
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|m| keys(m) == set(&["name", "repo", "secret"])));
    assert_eq!(
        (entries[0]["name"].as_str(), entries[0]["repo"].as_str(), entries[0]["secret"].as_str()),
        (Some("aws-key"), Some("aws"), Some("key"))
    );
    assert_eq!(
        (entries[1]["name"].as_str(), entries[1]["repo"].as_str(), entries[1]["secret"].as_str()),
        (Some("pw"), Some("mail"), Some("pw"))
    );

    let log = cli_json(&t, &["log", "aws"]);
    assert_eq!(log.len(), 2);
    for e in &log {
        assert_eq!(keys(e), set(&["id", "time", "message"]));
        assert!(is_commit_id(e["id"].as_str().unwrap()), "{e:?}");
        assert!(is_iso8601_utc(e["time"].as_str().unwrap()), "{e:?}");
    }
    assert_eq!(log[0]["message"], "Update key");
    assert_eq!(log[1]["message"], "Add key");
    assert_ne!(log[0]["id"], log[1]["id"]);
    assert_eq!(cli_json(&t, &["log", "mail", "pw"]).len(), 1);
}

#[test]
fn log_text_lines_start_with_the_full_commit_id() {
    let t = init();
    put(&t, "r/a", b"1");
    put(&t, "r/b", b"2");
    put(&t, "r/a", b"3");
    let ids = log_ids(&t, &["r"]);
    let text = cli_text(&t, ["log", "r"]);
    assert_eq!(text.lines().count(), 3);
    for (line, id) in text.lines().zip(&ids) {
        assert!(is_commit_id(id));
        assert!(line.starts_with(&format!("{id} ")), "{line:?} does not start with {id}");
    }
    let a = cli_text(&t, ["log", "r", "a"]);
    assert_eq!(a.lines().map(|l| &l[..40]).collect::<Vec<_>>(), [ids[0].as_str(), ids[2].as_str()]);
}

// ---------------------------------------------------------------------------------------------
// Names

#[test]
fn hostile_names_are_refused_and_nothing_is_written() {
    let t = init();
    put(&t, "r/s", b"x");
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    let before = std::fs::read(&t.path).unwrap();
    let long = "n".repeat(256);
    let long_path = format!("r/{long}");
    let long_repo = format!("{long}/s");
    let bad_paths = ["../x", "./x", "r/..", "r/.", "/x", "r/", "", "a/b/c", "r/s/t", "r/.git", "r/.GIT", &long_path, &long_repo];
    let bad_names = ["..", ".", "", "a/b", &long];
    let mut cases: Vec<(Vec<&str>, &[u8])> = Vec::new();
    for p in bad_paths {
        cases.push((vec!["put", p], b"data"));
        cases.push((vec!["get", p], b""));
        cases.push((vec!["rm", p], b""));
        cases.push((vec!["mv", "r/s", p], b""));
        cases.push((vec!["mv", p, "r/z"], b""));
        cases.push((vec!["tag", "t2", p], b""));
    }
    for n in bad_names {
        cases.push((vec!["ls", n], b""));
        cases.push((vec!["tags", n], b""));
        cases.push((vec!["log", n], b""));
        cases.push((vec!["log", "r", n], b""));
        cases.push((vec!["rm", "-r", n], b""));
        cases.push((vec!["tag", n, "r/s"], b""));
        cases.push((vec!["tag", "t", "r/s", "--as", n], b""));
        cases.push((vec!["untag", n, "s"], b""));
        cases.push((vec!["untag", "t", n], b""));
    }
    cases.push((vec!["log", "r", ".git"], b""));
    for (args, stdin) in cases {
        let o = run_with_stdin(t.cli().args(&args), stdin);
        assert!(!o.status.success(), "{args:?} succeeded");
        let line = one_line_error(&o);
        assert!(line.contains("invalid") || line.contains("repository"), "{args:?}: unclear error {line:?}");
        assert!(unchanged(&t.path, &before), "{args:?} wrote to the node");
    }
    // A NUL cannot even be passed on a command line; what is left is unchanged.
    assert_eq!(cli_text(&t, ["ls"]), "r\n");
    assert_eq!(cli_text(&t, ["ls", "r"]), "s\n");
    assert_eq!(cli_text(&t, ["tags", "t"]), "s -> r/s\n");
}

#[test]
fn long_unicode_and_non_utf8_names_work_everywhere() {
    let t = init();
    let long = vec![b'k'; 255];
    let unicode = "clé ✓ 鍵".as_bytes().to_vec();
    let raw = b"\xff\xfe raw \x80".to_vec();
    let all = [long.clone(), unicode.clone(), raw.clone()];
    let path = |r: &[u8], s: &[u8]| os(&[r, b"/", s].concat());
    let content = |r: usize, s: usize| format!("secret {r}.{s}\n").into_bytes();

    for (i, r) in all.iter().enumerate() {
        for (j, s) in all.iter().enumerate() {
            put(&t, path(r, s), &content(i, j));
        }
    }
    let mut sorted = all.clone();
    sorted.sort();
    let sorted: Vec<&[u8]> = sorted.iter().map(Vec::as_slice).collect();
    assert_eq!(cli_ok(&t, ["ls"]), lines(&sorted));
    for (i, r) in all.iter().enumerate() {
        assert_eq!(ok(run(t.cli().arg("ls").arg(os(r)))), lines(&sorted));
        for (j, s) in all.iter().enumerate() {
            assert_eq!(ok(run(t.cli().arg("get").arg(path(r, s)))), content(i, j));
        }
        assert_eq!(log_ids_os(&t, r).len(), 3);
    }

    // Tags and tag entries with the same names.
    for (i, tag) in all.iter().enumerate() {
        let (r, s) = (&all[(i + 1) % 3], &all[(i + 2) % 3]);
        ok(run(t.cli().arg("tag").arg(os(tag)).arg(path(r, s)).arg("--as").arg(os(tag))));
        let want = [tag.as_slice(), b" -> ", r, b"/", s, b"\n"].concat();
        assert_eq!(ok(run(t.cli().arg("tags").arg(os(tag)))), want);
    }
    assert_eq!(cli_ok(&t, ["tags"]), lines(&sorted));

    // Renames keep links, and the export holds the exact byte names.
    let (r, s) = (&all[1], &all[2]);
    let renamed = b"renamed \xfa".to_vec();
    ok(run(t.cli().arg("mv").arg(path(r, s)).arg(path(r, &renamed))));
    let want = [all[0].as_slice(), b" -> ", r, b"/", &renamed, b"\n"].concat();
    assert_eq!(ok(run(t.cli().arg("tags").arg(os(&all[0])))), want);

    let out = export_and_extract(&t);
    let x = out.path().join("x");
    assert_eq!(dir_names(&x.join("repos")), names(&sorted));
    for (i, r) in all.iter().enumerate() {
        let repo_dir = x.join("repos").join(OsStr::from_bytes(r));
        for (j, s) in all.iter().enumerate() {
            let s = if i == 1 && j == 2 { &renamed } else { s };
            assert_eq!(std::fs::read(repo_dir.join(OsStr::from_bytes(s))).unwrap(), content(i, j));
        }
    }
    for (i, tag) in all.iter().enumerate() {
        let (r, s) = (&all[(i + 1) % 3], if i == 0 { &renamed } else { &all[(i + 2) % 3] });
        let link = x.join("tags").join(OsStr::from_bytes(tag)).join(OsStr::from_bytes(tag));
        let target = x.join("repos").join(OsStr::from_bytes(r)).join(OsStr::from_bytes(s));
        assert_eq!(std::fs::metadata(&link).unwrap().ino(), std::fs::metadata(&target).unwrap().ino());
    }

    // Untag with byte names.
    for tag in &all {
        ok(run(t.cli().arg("untag").arg(os(tag)).arg(os(tag))));
    }
    assert_eq!(cli_ok(&t, ["tags"]), b"");
}

fn log_ids_os(t: &TempNode, repo: &[u8]) -> Vec<String> {
    let out = ok(run(t.cli().arg("--json").arg("log").arg(os(repo))));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out).unwrap();
    v.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// rm, mv, tags

#[test]
fn rm_removes_the_secret_and_its_tag_links() {
    let t = init();
    put(&t, "r/s", b"x");
    put(&t, "r/keep", b"y");
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    ok(run(t.cli().args(["tag", "t", "r/s", "--as", "alias"])));
    ok(run(t.cli().args(["tag", "t", "r/keep"])));
    ok(run(t.cli().args(["tag", "u", "r/s"])));
    ok(run(t.cli().args(["tag", "u", "r/keep"])));
    ok(run(t.cli().args(["rm", "r/s"])));
    assert_eq!(cli_text(&t, ["ls", "r"]), "keep\n");
    assert_eq!(cli_text(&t, ["tags", "t"]), "keep -> r/keep\n");
    assert_eq!(cli_text(&t, ["tags", "u"]), "keep -> r/keep\n");
    fails(&run(t.cli().args(["get", "r/s"])), 1);
    let out = export_and_extract(&t);
    assert_eq!(dir_names(&out.path().join("x/tags/t")), names(&[b"keep"]));
    // The secret's history stays; its last commit is the removal.
    let log = cli_json(&t, &["log", "r", "s"]);
    assert_eq!(log.iter().map(|e| e["message"].as_str().unwrap()).collect::<Vec<_>>(), ["Remove s", "Add s"]);
    // Putting the name again does not bring the links back.
    put(&t, "r/s", b"z");
    assert_eq!(cli_text(&t, ["tags", "t"]), "keep -> r/keep\n");
}

#[test]
fn mv_keeps_tag_links_pointing_at_the_new_name() {
    let t = init();
    put(&t, "r/old", b"x");
    ok(run(t.cli().args(["tag", "t", "r/old"])));
    ok(run(t.cli().args(["tag", "u", "r/old", "--as", "other"])));
    ok(run(t.cli().args(["mv", "r/old", "r/new"])));
    assert_eq!(cli_text(&t, ["ls", "r"]), "new\n");
    assert_eq!(cli_text(&t, ["tags", "t"]), "old -> r/new\n");
    assert_eq!(cli_text(&t, ["tags", "u"]), "other -> r/new\n");
    assert_eq!(cli_ok(&t, ["get", "r/new"]), b"x");
    let out = export_and_extract(&t);
    let x = out.path().join("x");
    let ino = std::fs::metadata(x.join("repos/r/new")).unwrap().ino();
    assert_eq!(std::fs::metadata(x.join("tags/t/old")).unwrap().ino(), ino);
    assert_eq!(std::fs::metadata(x.join("tags/u/other")).unwrap().ino(), ino);
    assert_eq!(std::fs::metadata(x.join("repos/r/new")).unwrap().nlink(), 3);
    // A later put through the new name is what the links show.
    put(&t, "r/new", b"changed");
    let out = export_and_extract(&t);
    assert_eq!(std::fs::read(out.path().join("x/tags/t/old")).unwrap(), b"changed");
}

#[test]
fn mv_refuses_to_overwrite_or_to_cross_repositories() {
    let t = init();
    put(&t, "r/a", b"1");
    put(&t, "r/b", b"2");
    put(&t, "q/c", b"3");
    let before = std::fs::read(&t.path).unwrap();
    fails(&run(t.cli().args(["mv", "r/a", "r/b"])), 1);
    fails(&run(t.cli().args(["mv", "r/a", "q/a"])), 2);
    fails(&run(t.cli().args(["mv", "r/missing", "r/z"])), 1);
    assert!(unchanged(&t.path, &before));
    assert_eq!(cli_ok(&t, ["get", "r/b"]), b"2");
}

#[test]
fn rm_r_removes_a_repository_and_its_links() {
    let t = init();
    put(&t, "gone/a", b"1");
    put(&t, "gone/b", b"2");
    put(&t, "kept/c", b"3");
    ok(run(t.cli().args(["tag", "t", "gone/a"])));
    ok(run(t.cli().args(["tag", "t", "kept/c"])));
    ok(run(t.cli().args(["tag", "only-gone", "gone/b"])));
    assert!(cli_ok(&t, ["rm", "-r", "gone"]).is_empty());
    assert_eq!(cli_text(&t, ["ls"]), "kept\n");
    assert_eq!(cli_text(&t, ["tags", "t"]), "c -> kept/c\n");
    fails(&run(t.cli().args(["ls", "gone"])), 1);
    fails(&run(t.cli().args(["get", "gone/a"])), 1);
    fails(&run(t.cli().args(["log", "gone"])), 1);
    let out = export_and_extract(&t);
    let x = out.path().join("x");
    assert_eq!(dir_names(&x.join("repos")), names(&[b"kept"]));
    assert_eq!(dir_names(&x.join("tags/t")), names(&[b"c"]));
    assert!(!x.join("tags/only-gone/b").exists());
    // The name is free again, with a fresh history.
    put(&t, "gone/a", b"new");
    assert_eq!(log_ids(&t, &["gone"]).len(), 1);
}

#[test]
fn rm_of_a_repository_without_r_is_a_usage_error() {
    let t = init();
    put(&t, "r/s", b"x");
    let before = std::fs::read(&t.path).unwrap();
    let line = fails(&run(t.cli().args(["rm", "r"])), 2);
    assert!(line.contains("-r"), "the error should say how: {line}");
    assert!(unchanged(&t.path, &before));
    assert_eq!(cli_text(&t, ["ls"]), "r\n");
}

#[test]
fn tag_and_untag_refuse_what_does_not_exist_or_conflicts() {
    let t = init();
    put(&t, "r/s", b"x");
    put(&t, "r/u", b"y");
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    let before = std::fs::read(&t.path).unwrap();
    fails(&run(t.cli().args(["tag", "t", "r/missing"])), 1);
    fails(&run(t.cli().args(["tag", "t", "nope/s"])), 1);
    fails(&run(t.cli().args(["tag", "t", "r/u", "--as", "s"])), 1);
    fails(&run(t.cli().args(["untag", "t", "missing"])), 1);
    fails(&run(t.cli().args(["untag", "missing", "s"])), 1);
    fails(&run(t.cli().args(["tags", "missing"])), 1);
    assert!(unchanged(&t.path, &before));
    // Tagging the same secret under the same name again is not an error.
    ok(run(t.cli().args(["tag", "t", "r/s"])));
    assert_eq!(cli_text(&t, ["tags", "t"]), "s -> r/s\n");
}

// ---------------------------------------------------------------------------------------------
// Errors

#[test]
fn errors_are_one_line_with_the_documented_exit_status() {
    let t = init();
    put(&t, "r/s", b"x");
    let before = std::fs::read(&t.path).unwrap();
    fails(&run(t.cli().args(["get", "r/missing"])), 1);
    fails(&run(t.cli().args(["get", "missing/s"])), 1);
    fails(&run(t.cli().args(["ls", "missing"])), 1);
    fails(&run(t.cli().args(["log", "missing"])), 1);
    fails(&run(t.cli().args(["rm", "r/missing"])), 1);
    fails(&run(t.cli().args(["rm", "-r", "missing"])), 1);
    assert!(unchanged(&t.path, &before));

    // Usage errors: exit 2 (their whole message is checked in the `usage` tests).
    const USAGE_ERRORS: [&[&str]; 6] =
        [&["frobnicate"], &["get"], &["get", "r/s", "extra"], &["--no-such-flag", "ls"], &["ls", "--no-such-flag"], &["tag", "t"]];
    for args in USAGE_ERRORS {
        let o = run(t.cli().args(args));
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty() && !stderr(&o).contains("panicked"));
    }
    assert!(unchanged(&t.path, &before));

    // No node there.
    let missing = t.dir.path().join("missing.node");
    let line = fails(&run(util::polykey_detached().arg("--node").arg(&missing).arg("--password-file").arg(t.password_file()).arg("ls")), 1);
    assert!(line.contains(&missing.display().to_string()), "{line}");
    assert!(!missing.exists());

    // Not a node.
    let junk = t.file("junk.node", &[0x42; 4096]);
    let line = fails(&run(util::polykey_detached().arg("--node").arg(&junk).arg("--password-file").arg(t.password_file()).arg("ls")), 1);
    assert!(line.contains(&junk.display().to_string()) && !line.contains("wrong passphrase"), "{line}");
}

// ---------------------------------------------------------------------------------------------
// export

#[test]
fn export_refuses_a_terminal() {
    let t = init();
    put(&t, "r/s", b"top secret");
    let before = std::fs::read(&t.path).unwrap();
    let inner = format!(
        "'{}' --node '{}' --password-file '{}' export",
        env!("CARGO_BIN_EXE_polykey"),
        t.path.display(),
        t.password_file().display()
    );
    // `script` runs the command with a pseudo-terminal as its stdout; -e passes its exit status on.
    let mut c = Command::new("script");
    c.args(["-qec", &inner, "/dev/null"]).env("SHELL", "/bin/sh");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("POLYKEY_") {
            c.env_remove(k);
        }
    }
    let o = run(&mut c);
    let screen = String::from_utf8_lossy(&o.stdout);
    assert_ne!(o.status.code(), Some(0), "export wrote to a terminal: {screen:?}");
    assert!(screen.contains("terminal"), "the refusal should say why: {screen:?}");
    assert!(screen.contains("polykey export -o backup.tar"), "the hint keeps the backup private: {screen:?}");
    assert!(!screen.contains("top secret") && !screen.contains("ustar"), "{screen:?}");
    assert_eq!(screen.trim_end().lines().count(), 1, "{screen:?}");
    assert!(unchanged(&t.path, &before));
}

#[test]
fn export_gives_git_repositories_and_tags_as_hard_links() {
    let t = init();
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    put(&t, "aws/key", &binary);
    put(&t, "aws/region", b"eu-west-1\n\n");
    put(&t, "aws/region", b"eu-west-2\n");
    put(&t, "mail/pw", b"hunter2");
    put(&t, "emptied/gone", b"bye");
    ok(run(t.cli().args(["rm", "emptied/gone"])));
    ok(run(t.cli().args(["tag", "prod", "aws/key"])));
    ok(run(t.cli().args(["tag", "prod", "mail/pw", "--as", "mail"])));
    ok(run(t.cli().args(["tag", "zone", "aws/region", "--as", "r"])));
    ok(run(t.cli().args(["mv", "aws/region", "aws/zone"])));

    let out = export_and_extract(&t);
    let home = out.path();
    let x = out.path().join("x");
    assert_eq!(dir_names(&x), names(&[b"repos", b"tags"]));
    assert_eq!(dir_names(&x.join("repos")), names(&[b"aws", b"emptied", b"mail"]));
    assert_eq!(dir_names(&x.join("tags")), names(&[b"prod", b"zone"]));

    type Files<'a> = &'a [(&'a str, &'a [u8])];
    let secrets: [(&str, Files); 3] =
        [("aws", &[("key", &binary), ("zone", b"eu-west-2\n")]), ("emptied", &[]), ("mail", &[("pw", b"hunter2")])];
    for (repo, files) in secrets {
        let dir = x.join("repos").join(repo);
        let mut want: Vec<&[u8]> = files.iter().map(|(n, _)| n.as_bytes()).collect();
        want.push(b".git");
        assert_eq!(dir_names(&dir), names(&want), "{repo}");
        for (name, data) in files {
            assert_eq!(std::fs::read(dir.join(name)).unwrap(), *data, "{repo}/{name}");
            let o = run(git(&dir, home).args(["cat-file", "blob", &format!("HEAD:{name}")]));
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(o.stdout, *data, "git's HEAD:{name} in {repo}");
        }

        let o = run(git(&dir, home).args(["log", "--format=%H %s"]));
        assert!(o.status.success(), "git log in {repo}: {}", stderr(&o));
        let git_log = String::from_utf8(o.stdout).unwrap();
        let ours: String = cli_json(&t, &["log", repo])
            .iter()
            .map(|e| format!("{} {}\n", e["id"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect();
        assert_eq!(git_log, ours, "git log and polykey log agree in {repo}");

        let o = run(git(&dir, home).args(["fsck", "--full", "--strict"]));
        assert!(o.status.success(), "git fsck in {repo}: {}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));

        let o = run(git(&dir, home).args(["status", "--porcelain"]));
        assert!(o.status.success(), "git status in {repo}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{repo} is not clean: {}", String::from_utf8_lossy(&o.stdout));
    }
    assert_eq!(log_ids(&t, &["aws"]).len(), 4);
    assert_eq!(log_ids(&t, &["emptied"]).len(), 2);

    let ino = |p: &str| std::fs::metadata(x.join(p)).unwrap().ino();
    assert_eq!(ino("tags/prod/key"), ino("repos/aws/key"));
    assert_eq!(ino("tags/prod/mail"), ino("repos/mail/pw"));
    assert_eq!(ino("tags/zone/r"), ino("repos/aws/zone"));
    assert_ne!(ino("repos/aws/key"), ino("repos/aws/zone"));
    assert_eq!(std::fs::read(x.join("tags/zone/r")).unwrap(), b"eu-west-2\n");
    assert_eq!(dir_names(&x.join("tags/prod")), names(&[b"key", b"mail"]));
}

#[test]
fn export_of_an_empty_node_is_an_empty_tree() {
    let t = init();
    let out = export_and_extract(&t);
    let x = out.path().join("x");
    assert_eq!(dir_names(&x), names(&[b"repos", b"tags"]));
    assert!(dir_names(&x.join("repos")).is_empty());
    assert!(dir_names(&x.join("tags")).is_empty());
}
