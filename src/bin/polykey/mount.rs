//! `polykey mount`, `unmount` and `status`: starting, stopping and listing mount daemons.
//!
//! The passphrase is resolved here (so the terminal prompt works) and handed to
//! `polykey-mountd` through a pipe on its standard input: never argv, never the environment.
//! The daemon answers on its standard output with one line: `ready` or `error: <message>`.

use crate::cli::Global;
use crate::{sources, Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::control::{Health, Request, Response};
use polykey::runtime;
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

/// Parses `90`, `90s`, `15m`, `2h` or `1d` into seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v > 0)
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
        .map(|d| parse_duration(d).ok_or_else(|| Failure(format!("invalid --lock-after {d:?}: use e.g. 90s, 15m, 2h"), EXIT_USAGE)))
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
    let pass = sources(g).resolve("Passphrase", false)?;
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

/// How the daemon holding `node` is doing, or why it cannot say.
pub fn health(node: &Path) -> Result<Health, String> {
    match runtime::call(node, &Request::Status) {
        Some(Ok(Response::Health(h))) => Ok(h),
        Some(Ok(_)) => Err("unexpected answer from the mount daemon".into()),
        Some(Err(e)) => Err(format!("the mount daemon does not answer: {e}")),
        None => Err("the mount daemon does not answer".into()),
    }
}

/// One line for a user: how a mount is doing.
pub fn describe(h: &Health) -> String {
    let mut s = match h.failing_since {
        None => "writing fine".to_owned(),
        Some(t) => format!(
            "CANNOT WRITE since {}: {}; {} save{} waiting",
            runtime::iso8601(t as i64),
            h.error,
            h.waiting,
            if h.waiting == 1 { "" } else { "s" }
        ),
    };
    if let Some(r) = &h.rescued {
        s.push_str(&format!("; the node's path leads to another file, so everything is saved in {}", r.display()));
    }
    s
}

/// Prints one warning line when the daemon that just ran a command for `node` cannot write it
/// (or writes a rescue file instead).
pub fn warn_if_unhealthy(g: &Global, node: &Path) {
    if g.quiet {
        return;
    }
    if let Ok(h) = health(node) {
        if !h.ok() || h.rescued.is_some() {
            eprintln!("polykey: warning: the mount of {}: {} (see `polykey status`)", node.display(), describe(&h));
        }
    }
}

pub fn status(g: &Global) -> Result<(), Failure> {
    let records = runtime::list().map_err(|e| fail(format!("cannot read the runtime folder: {e}")))?;
    let healths: Vec<_> = records.iter().map(|r| health(&r.node)).collect();
    let mut out = std::io::stdout().lock();
    if g.json {
        let v: Vec<_> = records
            .iter()
            .zip(&healths)
            .map(|(r, h)| {
                let mut m =
                    serde_json::json!({ "node": r.node.to_string_lossy(), "mountpoint": r.mountpoint.to_string_lossy(), "pid": r.pid });
                match h {
                    Ok(h) => {
                        m["writing"] = h.ok().into();
                        m["failing_since"] = h.failing_since.map(|t| runtime::iso8601(t as i64)).into();
                        m["error"] = (!h.ok()).then(|| h.error.clone()).into();
                        m["waiting"] = h.waiting.into();
                        m["log"] = h.log.to_string_lossy().into();
                        m["rescued"] = h.rescued.as_ref().map(|r| r.to_string_lossy().into_owned()).into();
                    }
                    Err(e) => {
                        m["writing"] = false.into();
                        m["error"] = e.clone().into();
                    }
                }
                m
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(v))?;
    } else if records.is_empty() {
        writeln!(out, "no node is mounted")?;
    } else {
        for (r, h) in records.iter().zip(&healths) {
            writeln!(out, "{} on {} (process {})", r.node.display(), r.mountpoint.display(), r.pid)?;
            match h {
                Ok(h) => {
                    writeln!(out, "  {}", describe(h))?;
                    writeln!(out, "  log: {}", h.log.display())?;
                }
                Err(e) => writeln!(out, "  {e}")?,
            }
        }
    }
    out.flush()?;
    let failing = healths.iter().filter(|h| !h.as_ref().is_ok_and(Health::ok)).count();
    if failing > 0 {
        let what =
            if failing == 1 { "a mount cannot write its node".to_owned() } else { format!("{failing} mounts cannot write their nodes") };
        return Err(fail(format!("{what} (see above)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration("90"), Some(90));
        assert_eq!(super::parse_duration("15m"), Some(900));
        assert_eq!(super::parse_duration("2h"), Some(7200));
        assert_eq!(super::parse_duration("0"), None);
        assert_eq!(super::parse_duration("5x"), None);
        assert_eq!(super::parse_duration(""), None);
    }
}
