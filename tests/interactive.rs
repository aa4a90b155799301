//! The CLI on a real terminal (a pseudo-terminal driven by python3's `pty`), as a person uses
//! it (issue 10, §6): `put` asks for the value twice without echo and before replacing a
//! secret (`-f` skips that); a mistyped passphrase at the prompt may be typed again, three
//! times in all.

use crate::util::{self, run, run_with_stdin, stderr, TempNode, FAST_KDF_ARGS, PASSWORD};
use std::process::Command;

/// Runs the command given after the steps on a new pseudo-terminal (its controlling terminal
/// and standard input, output and error). Each step waits for a text on the screen, past the
/// previous one (after a prompt ending in ": ", until the terminal's echo is off), then types
/// a line. Prints the whole screen, then `EXIT <status>`.
const DRIVER: &str = r#"
import json, os, pty, select, sys, termios, time
steps, cmd = json.loads(sys.argv[1]), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
screen, seen = b"", 0
def more():
    global screen
    if not select.select([fd], [], [], 30)[0]:
        return False
    try:
        b = os.read(fd, 4096)
    except OSError:
        return False
    screen += b
    return bool(b)
def echo_off():
    end = time.monotonic() + 30
    while termios.tcgetattr(fd)[3] & termios.ECHO and time.monotonic() < end:
        time.sleep(0.01)
for want, typed in steps:
    want = want.encode()
    while screen.find(want, seen) < 0:
        if not more():
            break
    if screen.find(want, seen) < 0:
        screen += b"\n[driver: never saw " + want + b"]"
        break
    seen = screen.find(want, seen) + len(want)
    # A prompt for a secret turns echo off just after it shows: type once it has, as a person
    # would (what is typed earlier is echoed by the terminal, whoever reads it).
    if want.endswith(b": "):
        echo_off()
    os.write(fd, typed.encode())
while more():
    pass
# Silent for 30 s and still running (waiting for input it will never get): end it.
done, status = os.waitpid(pid, os.WNOHANG)
if done == 0:
    os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
sys.stdout.write(screen.decode(errors="replace"))
print("\nEXIT", os.waitstatus_to_exitcode(status))
"#;

/// The screen and the exit status of `polykey ARGS` run on a terminal, typing `steps`.
fn on_terminal(t: &TempNode, args: &[&str], steps: &[(&str, &str)]) -> (String, i32) {
    on_terminal_with(t, args, steps, &[])
}

/// [`on_terminal`] with more environment variables.
fn on_terminal_with(t: &TempNode, args: &[&str], steps: &[(&str, &str)], env: &[(&str, &std::path::Path)]) -> (String, i32) {
    let mut c = Command::new("python3");
    c.envs(env.iter().copied());
    let steps = serde_json::to_string(steps).unwrap();
    c.args(["-c", DRIVER, &steps, env!("CARGO_BIN_EXE_polykey"), "--node"]).arg(&t.path).args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("POLYKEY_") {
            c.env_remove(k);
        }
    }
    c.env("XDG_STATE_HOME", t.dir.path().join("state"));
    let o = run(&mut c);
    assert!(o.status.success(), "the terminal driver failed: {}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (screen, code) = out.rsplit_once("\nEXIT ").unwrap_or_else(|| panic!("no exit status in {out:?}"));
    (screen.to_owned(), code.trim().parse().unwrap())
}

fn init() -> Option<TempNode> {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("SKIP: python3 is missing; run scripts/install-deps.sh");
        return None;
    }
    let t = TempNode::new();
    let o = run(util::polykey_detached()
        .arg("--node")
        .arg(&t.path)
        .arg("--new-password-file")
        .arg(t.password_file())
        .args(FAST_KDF_ARGS)
        .arg("init"));
    assert!(o.status.success(), "{}", stderr(&o));
    Some(t)
}

fn get(t: &TempNode, path: &str) -> Vec<u8> {
    run(t.cli().args(["get", path])).stdout
}

fn pw(t: &TempNode) -> String {
    t.password_file().display().to_string()
}

#[test]
fn put_on_a_terminal_asks_twice_without_echo() {
    let Some(t) = init() else { return };
    let pw = pw(&t);
    let typed = "s3cret-typed-here";
    let line = format!("{typed}\n");
    let (screen, code) = on_terminal(&t, &["--password-file", &pw, "put", "r/s"], &[("Value for r/s: ", &line), ("(again): ", &line)]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains(typed), "the value was echoed: {screen:?}");
    assert_eq!(get(&t, "r/s"), typed.as_bytes());

    // Two different answers store nothing.
    let (screen, code) = on_terminal(&t, &["--password-file", &pw, "put", "r/t"], &[("Value for r/t: ", "one\n"), ("(again): ", "two\n")]);
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("do not match"), "{screen}");
    assert_eq!(run(t.cli().args(["ls", "r"])).stdout, b"s\n");

    // From a pipe, stdin is stored as before, bytes and all, without a question.
    let o = run_with_stdin(t.cli().args(["put", "r/s"]), b"piped\nvalue\n");
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    assert_eq!(get(&t, "r/s"), b"piped\nvalue\n");
}

#[test]
fn put_on_a_terminal_asks_before_replacing_unless_forced() {
    let Some(t) = init() else { return };
    let pw = pw(&t);
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"old").status.success());
    let (screen, code) = on_terminal(&t, &["--password-file", &pw, "put", "r/s"], &[("replace it? [y/N] ", "n\n")]);
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("r/s exists"), "{screen}");
    assert!(!screen.contains("Value for"), "asked for a value it will not store: {screen}");
    assert_eq!(get(&t, "r/s"), b"old");

    let (screen, code) = on_terminal(
        &t,
        &["--password-file", &pw, "put", "r/s"],
        &[("replace it? [y/N] ", "y\n"), ("Value for r/s: ", "new\n"), ("(again): ", "new\n")],
    );
    assert_eq!(code, 0, "{screen}");
    assert_eq!(get(&t, "r/s"), b"new");

    let (screen, code) =
        on_terminal(&t, &["--password-file", &pw, "put", "-f", "r/s"], &[("Value for r/s: ", "newer\n"), ("(again): ", "newer\n")]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("replace it?"), "-f still asked: {screen}");
    assert_eq!(get(&t, "r/s"), b"newer");
}

#[test]
fn a_mistyped_passphrase_at_the_prompt_can_be_typed_again() {
    let Some(t) = init() else { return };
    assert!(run_with_stdin(t.cli().args(["put", "r/s"]), b"v").status.success());
    let right = format!("{}\n", String::from_utf8_lossy(PASSWORD));
    let (screen, code) = on_terminal(&t, &["get", "r/s"], &[("Passphrase: ", "wrong\n"), ("Passphrase: ", &right)]);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("wrong passphrase; try again"), "{screen}");
    assert!(screen.ends_with('v'), "{screen:?}");

    // Three wrong ones end the command with the usual error, after exactly three prompts.
    let (screen, code) = on_terminal(&t, &["get", "r/s"], &[("Passphrase: ", "a\n"), ("Passphrase: ", "b\n"), ("Passphrase: ", "c\n")]);
    assert_eq!(code, 1, "{screen}");
    assert_eq!(screen.matches("Passphrase: ").count(), 3, "{screen}");
    assert!(screen.contains(&format!("wrong passphrase for node {}", t.path.display())), "{screen}");

    // A wrong passphrase from a file is not retried: it would only be wrong again.
    let bad = t.file("bad", b"nope\n");
    let o = run(t.cli_detached().arg("--password-file").arg(&bad).args(["get", "r/s"]));
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn a_mistyped_passphrase_for_mount_can_be_typed_again_and_put_asks_through_the_daemon() {
    if !crate::mounted::fuse_available() {
        return;
    }
    let Some(t) = init() else { return };
    let (mnt, runtime) = (t.dir.path().join("mnt"), t.dir.path().join("run"));
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let right = format!("{}\n", String::from_utf8_lossy(PASSWORD));
    let mnt_s = mnt.display().to_string();
    let (screen, code) = on_terminal_with(
        &t,
        &["mount", &mnt_s],
        &[("Passphrase: ", "wrong\n"), ("Passphrase: ", &right)],
        &[("XDG_RUNTIME_DIR", &runtime)],
    );
    let mounted = crate::mounted::is_mounted(&mnt);
    let mut through_daemon = (String::new(), -1);
    if mounted {
        // Mounted, put asks its questions and no passphrase: the daemon holds the key.
        through_daemon = on_terminal_with(
            &t,
            &["put", "r/new"],
            &[("Value for r/new: ", "typed\n"), ("(again): ", "typed\n")],
            &[("XDG_RUNTIME_DIR", &runtime)],
        );
        through_daemon.0.push_str(&String::from_utf8_lossy(&std::fs::read(mnt.join("repos/r/new")).unwrap_or_default()));
        let o = run(t.cli().env("XDG_RUNTIME_DIR", &runtime).arg("unmount").arg(&mnt));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("wrong passphrase; try again"), "{screen}");
    assert!(mounted, "{screen}");
    let (screen, code) = through_daemon;
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("Passphrase"), "{screen}");
    assert!(screen.ends_with("typed"), "the mount shows the value put through the daemon: {screen:?}");
}
