//! `polykey mount`, `unmount` and `status`: starting, stopping and listing mount daemons.
//!
//! The passphrase is resolved here (so the terminal prompt works) and handed to
//! `polykey-mountd` through a pipe on its standard input: never argv, never the environment.
//! The daemon answers on its standard output with one line: `ready` or `error: <message>`.

use crate::cli::Global;
use crate::{sources, Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::control::{Request, Response};
use polykey::runtime;
use polykey::{password, Passphrase};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long `unmount` waits for the daemon to exit after it has written everything out and
/// detached the mount (it stays while files opened on the old mount are still open).
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

fn fail(msg: String) -> Failure {
    Failure(msg, EXIT_FAILURE)
}

/// The daemon binary: beside this one, else on PATH.
fn mountd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("polykey-mountd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("polykey-mountd"))
}

pub fn mount(g: &Global, node: &Path, mountpoint: &Path, foreground: bool, lock_after: Option<&str>) -> Result<(), Failure> {
    let lock_secs = lock_after
        .map(|d| {
            polykey::duration::parse(d)
                .ok_or_else(|| Failure(format!("invalid --lock-after {d:?}: use e.g. 90s, 15m, 2h, 1h30m"), EXIT_USAGE))
        })
        .transpose()?;
    if !node.exists() {
        return Err(polykey::Error::NoNode { path: node.to_owned() }.into());
    }
    if !mountpoint.is_dir() {
        return Err(fail(format!("mountpoint {} is not a folder", mountpoint.display())));
    }
    if let Some(rec) = runtime::find(node) {
        return Err(fail(format!("node {} is already mounted at {} by process {}", node.display(), rec.mountpoint.display(), rec.pid)));
    }
    let src = sources(g);
    let mut attempt = 1;
    loop {
        let pass = src.resolve("Passphrase", false)?;
        match start(g, node, mountpoint, foreground, lock_secs, pass) {
            // The daemon checks the passphrase; a typo at the prompt gets another try.
            Err(Failure(msg, _))
                if msg.starts_with("wrong passphrase for node ") && src.prompts() && attempt < password::PROMPT_ATTEMPTS =>
            {
                attempt += 1;
                eprintln!("polykey: wrong passphrase; try again");
            }
            done => return done,
        }
    }
}

/// Starts the daemon with `pass` and waits until it reports the mount ready (or why not).
fn start(g: &Global, node: &Path, mountpoint: &Path, foreground: bool, lock_secs: Option<u64>, pass: Passphrase) -> Result<(), Failure> {
    let (reader, mut writer) = std::io::pipe().map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    writer.write_all(pass.expose()).map_err(|e| fail(format!("cannot hand over the passphrase: {e}")))?;
    drop(writer);
    drop(pass);
    let mut cmd = Command::new(mountd());
    cmd.arg("--node").arg(node).arg("--mountpoint").arg(mountpoint).stdin(reader);
    for var in ["POLYKEY_PASSWORD", "POLYKEY_PASSWORD_FILE", "POLYKEY_PASSWORD_COMMAND", "POLYKEY_NEW_PASSWORD_FILE"] {
        cmd.env_remove(var);
    }
    if g.accept_rollback {
        cmd.arg("--accept-rollback");
    }
    if let Some(s) = lock_secs {
        cmd.arg("--lock-after").arg(s.to_string());
    }
    if foreground {
        cmd.arg("--foreground");
        use std::os::unix::process::CommandExt;
        let e = cmd.exec(); // Only returns on failure.
        return Err(fail(format!("cannot start {}: {e}", mountd().display())));
    }
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().map_err(|e| fail(format!("cannot start {}: {e}", mountd().display())))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(|e| fail(format!("mount daemon: {e}")))?;
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ready" => {
            if !g.quiet {
                eprintln!("polykey: mounted {} at {} (process {})", node.display(), mountpoint.display(), child.id());
            }
            Ok(())
        }
        Some(msg) => {
            let _ = child.wait();
            Err(fail(msg.to_owned()))
        }
        None => {
            let status = child.wait().map_err(|e| fail(e.to_string()))?;
            Err(fail(format!("mount daemon exited before the mount was ready ({status}); see its log")))
        }
    }
}

pub fn unmount(g: &Global, mountpoint: &Path) -> Result<(), Failure> {
    let canon = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_owned());
    let records = runtime::list().map_err(|e| fail(format!("cannot read the runtime folder: {e}")))?;
    let rec = records
        .into_iter()
        .find(|r| r.mountpoint == canon)
        .ok_or_else(|| fail(format!("no polykey node is mounted at {}", mountpoint.display())))?;
    match runtime::call(&rec.node, &Request::Unmount) {
        Some(Ok(Response::Done)) => {}
        Some(Ok(Response::Failed(msg, _))) => return Err(fail(msg)),
        Some(Ok(_)) => return Err(fail("unexpected answer from the mount daemon".into())),
        Some(Err(e)) => return Err(fail(format!("mount daemon of {}: {e}", rec.node.display()))),
        None => {
            return Err(fail(format!(
                "the mount daemon (process {}) does not answer; use fusermount3 -u {}",
                rec.pid,
                mountpoint.display()
            )))
        }
    }
    if !rec.wait_gone(UNMOUNT_WAIT) {
        if !g.quiet {
            eprintln!(
                "polykey: unmounted {}; process {} stays until the files still open there are closed, and saves what they write",
                mountpoint.display(),
                rec.pid
            );
        }
        return Ok(());
    }
    if !g.quiet {
        eprintln!("polykey: unmounted {}", mountpoint.display());
    }
    Ok(())
}

pub fn status(g: &Global) -> Result<(), Failure> {
    let records = runtime::list().map_err(|e| fail(format!("cannot read the runtime folder: {e}")))?;
    let mut out = std::io::stdout().lock();
    if g.json {
        let v: Vec<_> = records
            .iter()
            .map(|r| serde_json::json!({ "node": r.node.to_string_lossy(), "mountpoint": r.mountpoint.to_string_lossy(), "pid": r.pid }))
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
    } else {
        for r in &records {
            writeln!(out, "{} on {} (process {})", r.node.display(), r.mountpoint.display(), r.pid)?;
        }
    }
    Ok(())
}
