//! What a new user meets first (issue 10, §6): whole usage errors with clap's suggestions, help
//! text for every argument, global options listed once, `log REPO/SECRET`, and an export hint
//! that keeps the backup private.

use crate::util::{self, run, run_with_stdin, stderr, TempNode, FAST_KDF_ARGS};

fn init() -> TempNode {
    let t = TempNode::new();
    let o = run(util::polykey_detached()
        .arg("--node")
        .arg(&t.path)
        .arg("--new-password-file")
        .arg(t.password_file())
        .args(FAST_KDF_ARGS)
        .arg("init"));
    assert!(o.status.success(), "{}", stderr(&o));
    t
}

/// Runs `polykey ARGS` (detached from any terminal) and returns (exit status, stdout, stderr).
fn polykey(t: &TempNode, args: &[&str]) -> (Option<i32>, String, String) {
    let o = run(t.cli().args(args));
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), stderr(&o))
}

#[test]
fn usage_errors_show_what_is_wrong_the_usage_line_and_suggestions() {
    let t = init();
    let cases: [(&[&str], &[&str]); 6] = [
        (&["get"], &["required arguments were not provided", "<REPO/SECRET>", "Usage: polykey get"]),
        (&["tag", "t"], &["<REPO/SECRET>", "Usage: polykey tag"]),
        (&["lss"], &["unrecognized subcommand 'lss'", "similar subcommand exists: 'ls'", "Usage: polykey"]),
        (&["ls", "--jsn"], &["unexpected argument '--jsn'", "similar argument exists: '--json'", "Usage: polykey ls"]),
        (&["--no-such-flag", "ls"], &["unexpected argument '--no-such-flag'", "Usage:"]),
        (&["get", "r/s", "extra"], &["unexpected argument 'extra'", "Usage: polykey get"]),
    ];
    for (args, wants) in cases {
        let (code, out, err) = polykey(&t, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} wrote to stdout: {out}");
        assert!(err.starts_with("polykey: "), "{args:?}: the first line names the program: {err}");
        for want in wants {
            assert!(err.contains(want), "{args:?}: {want:?} missing from:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The `Arguments:` and `Options:` lines of a help page: `(name, help text)`.
fn described(help: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut section = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            section = line.ends_with(':') && (line.starts_with("Arguments") || line.contains("ptions"));
            continue;
        }
        let item = line.trim_start();
        if section && (item.starts_with('<') || item.starts_with('[') || item.starts_with('-')) {
            // The name, then two or more spaces, then its help.
            let (name, text) = item.split_once("  ").unwrap_or((item, ""));
            items.push((name.to_owned(), text.trim().to_owned()));
        }
    }
    items
}

#[test]
fn every_argument_has_help_and_global_options_are_listed_once() {
    let t = init();
    let (code, top, _) = polykey(&t, &["--help"]);
    assert_eq!(code, Some(0));
    assert_eq!(top.matches("--password-file").count(), 1, "{top}");
    let commands: Vec<String> = top
        .split("Commands:")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 16, "{commands:?}");
    for c in &commands {
        let (code, help, err) = polykey(&t, &[c, "--help"]);
        assert_eq!(code, Some(0), "{c}: {err}");
        for (name, text) in described(&help) {
            assert!(!text.is_empty(), "`polykey {c} --help`: {name} has no help text:\n{help}");
            for global in ["--node", "--password-file", "--password-command", "--new-password-file", "--accept-rollback", "--quiet"] {
                assert!(!name.contains(global), "`polykey {c} --help` repeats the global option {global}:\n{help}");
            }
        }
        assert!(help.contains("polykey --help"), "`polykey {c} --help` points to the global options:\n{help}");
    }
    // Hidden from each command's help, still accepted after it.
    let (code, _, err) = polykey(&t, &["ls", "--json", "-q", "--accept-rollback"]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn log_takes_repo_slash_secret_like_every_other_command() {
    let t = init();
    for (path, v) in [("r/a", "1"), ("r/b", "2"), ("r/a", "3")] {
        assert!(run_with_stdin(t.cli().args(["put", path]), v.as_bytes()).status.success());
    }
    let (code, slash, err) = polykey(&t, &["log", "r/a"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, space, _) = polykey(&t, &["log", "r", "a"]);
    let (_, all, _) = polykey(&t, &["log", "r"]);
    assert_eq!(slash, space);
    assert_eq!(slash.lines().count(), 2, "{slash}");
    assert_eq!(all.lines().count(), 3, "{all}");
    // Both forms at once, or a bad path, are usage errors.
    assert_eq!(polykey(&t, &["log", "r/a", "b"]).0, Some(2));
    assert_eq!(polykey(&t, &["log", "r/a/b"]).0, Some(2));
}
