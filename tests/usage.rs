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
fn no_command_shows_the_help_as_a_usage_error() {
    let o = run(&mut util::polykey_detached());
    let (code, err, out) = (o.status.code(), stderr(&o), o.stdout);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty());
    assert!(err.starts_with("A secret manager") && err.contains("Commands:"), "{err}");
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

#[test]
fn export_to_a_file_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let t = init();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"top secret").status.success());
    let fresh = t.dir.path().join("fresh.tar");
    let old = t.file("old.tar", b"an older, world-readable backup");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    for file in [&fresh, &old] {
        // The usual umask, which leaves `polykey export > FILE` readable by everyone.
        let mut c = std::process::Command::new("sh");
        c.args(["-c", "umask 022; exec \"$@\"", "sh"]).arg(env!("CARGO_BIN_EXE_polykey"));
        c.arg("--node").arg(&t.path).arg("--password-file").arg(t.password_file()).env("XDG_STATE_HOME", t.dir.path().join("state"));
        let o = run(c.args(["export", "-o"]).arg(file));
        assert!(o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
        assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
        let listing = run(std::process::Command::new("tar").arg("-tf").arg(file));
        assert!(String::from_utf8_lossy(&listing.stdout).lines().any(|l| l == "repos/r/s"), "{}", stderr(&listing));
    }
}

// ---------------------------------------------------------------------------------------------
// The docs say what the code does

fn doc(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// Whether `actual` is `template` with each `PATH` and `(E, F)` filled in.
fn fills(template: &str, actual: &str) -> bool {
    let mut rest = actual;
    for piece in template.split("PATH").flat_map(|p| p.split("(E, F)")) {
        match rest.find(piece) {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    true
}

#[test]
fn the_rollback_refusal_reads_as_documented() {
    let t = init();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v1").status.success());
    let old = std::fs::read(&t.path).unwrap();
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v2").status.success());
    std::fs::write(&t.path, &old).unwrap();
    let (code, _, err) = polykey(&t, &["get", "r/s"]);
    assert_eq!(code, Some(1), "{err}");
    let cli = doc("docs/CLI.md");
    let documented: Vec<&str> = cli.lines().filter(|l| l.starts_with("polykey: node PATH is older than")).collect();
    assert_eq!(documented.len(), 1, "CLI.md's list of messages has one rollback refusal");
    assert!(fills(documented[0], err.trim_end()), "printed:    {err}documented: {}", documented[0]);
}

#[test]
fn every_file_with_unsafe_code_is_named_in_the_architecture() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src"), root.join("mountd/src")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && std::fs::read_to_string(&p).unwrap().contains("allow(unsafe_code)") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty());
    let arch = doc("docs/ARCHITECTURE.md");
    let unsafe_lines: Vec<&str> = arch.lines().filter(|l| l.to_lowercase().contains("unsafe")).collect();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            unsafe_lines.iter().any(|l| l.contains(&format!("{name}`"))),
            "{} holds unsafe code, but ARCHITECTURE.md does not say so:\n{}",
            f.display(),
            unsafe_lines.join("\n")
        );
    }
    for d in ["README.md", "docs/ARCHITECTURE.md", "docs/SECURITY.md", "docs/CLI.md"] {
        assert!(!doc(d).contains("only unsafe code"), "{d} claims one place holds the only unsafe code; {} files do", files.len());
    }
}
