//! Shared helpers: temporary nodes with a cheap KDF, and running the real `polykey` binary.

#![allow(dead_code)]

use polykey::{Access, KdfParams, Name, NameKind, Node, Passphrase};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A cheap Argon2id cost so tests create many nodes quickly (never the default for users).
pub const FAST_KDF: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
/// The passphrase of every test node.
pub const PASSWORD: &[u8] = b"correct horse battery staple";

pub fn pass() -> Passphrase {
    Passphrase::new(PASSWORD.to_vec())
}

pub fn repo(s: &str) -> Name {
    Name::new(NameKind::Repo, s.as_bytes()).unwrap()
}

pub fn secret(s: &str) -> Name {
    Name::new(NameKind::Secret, s.as_bytes()).unwrap()
}

/// A temporary directory holding a node file path (not created).
pub struct TempNode {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempNode {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.node");
        TempNode { dir, path }
    }

    /// Creates the node with [`FAST_KDF`] and returns it open for writing.
    pub fn create(&self) -> Node {
        Node::create(&self.path, &pass(), FAST_KDF).unwrap()
    }

    pub fn open(&self) -> polykey::Result<Node> {
        Node::open(&self.path, &pass(), Access::Write)
    }

    /// A file in the same temporary directory holding the test passphrase.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("pw");
        std::fs::write(&p, [PASSWORD, b"\n"].concat()).unwrap();
        p
    }

    /// A `polykey` command with `--node` and a password file set, and a clean environment.
    pub fn cli(&self) -> Command {
        let mut c = polykey_cmd();
        // Rollback records go to this test's own state folder, not the user's.
        c.env("XDG_STATE_HOME", self.dir.path().join("state"));
        c.arg("--node").arg(&self.path).arg("--password-file").arg(self.password_file());
        c
    }
}

/// The real `polykey` binary with no POLYKEY_* variables inherited.
pub fn polykey_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_polykey"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("POLYKEY_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

/// Runs `cmd` with `stdin` as its standard input.
pub fn run_with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // A child that fails before reading its input closes the pipe: that is its answer, not ours.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "writing the child's stdin: {e}");
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd` and captures its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

/// Standard error of `o` as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether `path`'s bytes equal `before`.
pub fn unchanged(path: &Path, before: &[u8]) -> bool {
    std::fs::read(path).unwrap() == before
}

/// Arguments that make `init` and `passwd` use [`FAST_KDF`] (hidden CLI options).
pub const FAST_KDF_ARGS: [&str; 4] = ["--kdf-memory-kib", "8", "--kdf-time", "1"];

/// The real `polykey` binary run through `setsid -w`: a new session with no controlling
/// terminal, so no passphrase prompt is possible (and none can hang a test run from a tty).
pub fn polykey_detached() -> Command {
    let mut c = Command::new("setsid");
    c.arg("-w").arg(env!("CARGO_BIN_EXE_polykey"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("POLYKEY_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null());
    c
}

impl TempNode {
    /// A detached `polykey` command (see [`polykey_detached`]) with only `--node` set.
    pub fn cli_detached(&self) -> Command {
        let mut c = polykey_detached();
        c.arg("--node").arg(&self.path).env("XDG_STATE_HOME", self.dir.path().join("state"));
        c
    }

    /// Writes `bytes` to a file named `name` in the temporary directory and returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}
