//! `polykey mount`, `unmount` and `status`: starting, stopping and listing mount daemons.
//!
//! The passphrase is resolved here (so the terminal prompt works) and handed to
//! `polykey-mountd` through a pipe on its standard input: never argv, never the environment.
//! The daemon answers on its standard output with one line: `ready` or `error: <message>`.

use crate::cli::Global;
use crate::{sources, Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::control::{Health, Request, Response};
use polykey::mounts;
use polykey::runtime::{self, MountRecord};
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
    let at = mounts::canonical(mountpoint)
        .ok_or_else(|| fail(format!("mountpoint {}: the folder it would be in does not exist", mountpoint.display())))?;
    // A second mount would hide the first, and the first could then neither be reached nor
    // unmounted by name.
    if let Some(top) = mounts::top(&at) {
        let records = runtime::list().unwrap_or_default();
        return Err(fail(format!("mountpoint {} already has a mount on it: {}", mountpoint.display(), describe(&top, &records))));
    }
    let create = match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {
            // Allowed (FUSE mounts over anything), but what is there disappears until the unmount.
            if !g.quiet && std::fs::read_dir(mountpoint).is_ok_and(|mut d| d.next().is_some()) {
                eprintln!(
                    "polykey: warning: mountpoint {} is not empty; its files are hidden while the node is mounted",
                    mountpoint.display()
                );
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        _ => return Err(fail(format!("mountpoint {} is not a folder", mountpoint.display()))),
    };
    if let Some(rec) = runtime::find(node) {
        return Err(fail(format!("node {} is already mounted at {} by process {}", node.display(), rec.mountpoint.display(), rec.pid)));
    }
    let src = sources(g);
    let mut attempt = 1;
    loop {
        let pass = src.resolve("Passphrase", false)?;
        match start(g, node, mountpoint, create, foreground, lock_secs, pass) {
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
/// `create`: make the mount point first (and remove it again if the mount fails).
fn start(
    g: &Global,
    node: &Path,
    mountpoint: &Path,
    create: bool,
    foreground: bool,
    lock_secs: Option<u64>,
    pass: Passphrase,
) -> Result<(), Failure> {
    let (reader, mut writer) = std::io::pipe().map_err(|e| fail(format!("cannot create a pipe: {e}")))?;
    writer.write_all(pass.expose()).map_err(|e| fail(format!("cannot hand over the passphrase: {e}")))?;
    drop(writer);
    drop(pass);
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(mountpoint)
            .map_err(|e| fail(format!("cannot create mountpoint {}: {e}", mountpoint.display())))?;
        if !g.quiet {
            eprintln!("polykey: created the folder {} to mount on", mountpoint.display());
        }
    }
    // Removes the folder made above when the mount does not happen (only while it is empty).
    let undo = |f: Failure| {
        if create {
            let _ = std::fs::remove_dir(mountpoint);
        }
        f
    };
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
    if create {
        cmd.arg("--remove-mountpoint-on-failure");
    }
    if foreground {
        cmd.arg("--foreground");
        use std::os::unix::process::CommandExt;
        let e = cmd.exec(); // Only returns on failure.
        return Err(undo(fail(format!("cannot start {}: {e}", mountd().display()))));
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| undo(fail(format!("cannot start {}: {e}", mountd().display()))))?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| undo(fail(format!("mount daemon: {e}"))))?;
    match line.trim_end().strip_prefix("error: ") {
        None if line.trim_end() == "ready" => {
            if !g.quiet {
                eprintln!("polykey: mounted {} at {} (process {})", node.display(), mountpoint.display(), child.id());
            }
            Ok(())
        }
        Some(msg) => {
            let _ = child.wait();
            Err(undo(fail(msg.to_owned())))
        }
        None => {
            let status = child.wait().map_err(|e| fail(e.to_string()))?;
            Err(undo(fail(format!("mount daemon exited before the mount was ready ({status}); see its log"))))
        }
    }
}

/// What is mounted at a path, for a message: the node and daemon of a Polykey mount of this
/// user, else the filesystem and its source.
fn describe(top: &mounts::Mount, records: &[MountRecord]) -> String {
    match records.iter().find(|r| r.dev.as_deref() == Some(top.dev.as_str())) {
        Some(r) if top.is_polykey() => format!("polykey node {} (process {})", r.node.display(), r.pid),
        _ => top.to_string(),
    }
}

/// The daemon serving the mount on top at `at`, which is what an unmount of `at` removes.
fn daemon_on_top(mountpoint: &Path, at: &Path) -> Result<(MountRecord, Option<mounts::Mount>), Failure> {
    let records = runtime::list().map_err(|e| fail(format!("cannot read the runtime folder: {e}")))?;
    let here: Vec<&MountRecord> = records.iter().filter(|r| r.mountpoint == at).collect();
    if !Path::new("/proc/self/mountinfo").exists() {
        // No mount table to ask: trust the record.
        let rec = here.first().ok_or_else(|| fail(format!("no polykey node is mounted at {}", mountpoint.display())))?;
        return Ok(((*rec).clone(), None));
    }
    let Some(top) = mounts::top(at) else {
        return Err(fail(match here.first() {
            Some(r) => format!(
                "nothing is mounted at {} any more; process {} stays until the files still open on its old mount are closed",
                mountpoint.display(),
                r.pid
            ),
            None => format!("no polykey node is mounted at {}", mountpoint.display()),
        }));
    };
    let ours = here.iter().find(|r| r.dev.as_deref() == Some(top.dev.as_str()));
    // A daemon from before records named the device: the only one recorded there.
    let ours = ours.or_else(|| here.first().filter(|r| here.len() == 1 && r.dev.is_none()));
    match ours {
        Some(rec) if top.is_polykey() => Ok(((*rec).clone(), Some(top))),
        _ if top.is_polykey() => Err(fail(format!(
            "the polykey mount at {} is served by no mount daemon of yours; use fusermount3 -u {}",
            mountpoint.display(),
            mountpoint.display()
        ))),
        _ => Err(fail(format!(
            "{} has {} mounted on top{}; unmount that first",
            mountpoint.display(),
            top,
            here.first().map(|r| format!(" of polykey node {} (process {})", r.node.display(), r.pid)).unwrap_or_default()
        ))),
    }
}

pub fn unmount(g: &Global, mountpoint: &Path) -> Result<(), Failure> {
    let at = mounts::canonical(mountpoint).unwrap_or_else(|| mountpoint.to_owned());
    let (rec, top) = daemon_on_top(mountpoint, &at)?;
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
    // The daemon answers once everything is written, then detaches: success is the mount
    // gone from the mount table, not the answer.
    if let Some(top) = top {
        let still_there = || mounts::top(&at).is_some_and(|m| m.dev == top.dev);
        if still_there() && !wait_until(UNMOUNT_WAIT, || !still_there()) {
            return Err(fail(format!(
                "{} is still mounted: process {} wrote everything out but its mount did not go away; see its log",
                mountpoint.display(),
                rec.pid
            )));
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

/// Polls `done` every 20 ms for up to `limit`; returns whether it came true.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
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
pub fn describe_health(h: &Health) -> String {
    let mut s = match h.failing_since {
        None if h.rescued.is_some() => "NOT AT THE NODE'S PATH".to_owned(),
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
            eprintln!("polykey: warning: the mount of {}: {} (see `polykey status`)", node.display(), describe_health(&h));
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
            // An unmount detaches at once, but the daemon lives on while files stay open.
            if mounts::top(&r.mountpoint).is_none() {
                writeln!(out, "  unmounted; the daemon ends once the files still open in it are closed")?;
            }
            match h {
                Ok(h) => {
                    writeln!(out, "  {}", describe_health(h))?;
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
    // Writing, but not where the user looks for the node: that needs the user too.
    let rescued = healths.iter().filter(|h| h.as_ref().is_ok_and(|h| h.rescued.is_some())).count();
    if rescued > 0 {
        let what = if rescued == 1 { "a mount writes".to_owned() } else { format!("{rescued} mounts write") };
        return Err(fail(format!("{what} to a rescue file, not to the node's path (see above)")));
    }
    Ok(())
}
