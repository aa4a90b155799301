//! `polykey-mountd`: the mount daemon. Holds one node decrypted in locked memory, presents it
//! through the platform's filesystem adapter, answers CLI commands on a control socket, and
//! writes everything out before it goes.
//!
//! Started by `polykey mount`, which passes the passphrase on standard input (a pipe) and reads
//! one line from standard output: `ready`, or `error: <message>`.

#[cfg(unix)]
mod fuse;
#[cfg(unix)]
mod fusermount;
#[cfg(unix)]
mod server;
#[cfg(unix)]
mod sys;
#[cfg(unix)]
mod watch;
#[cfg(windows)]
mod winfsp;

use polykey::control::Health;
use polykey::vfs::Vfs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often periodic work runs (grace-period commits, save retries, the node file's place,
/// auto-lock).
const TICK: Duration = Duration::from_millis(250);
/// A log file past this size is moved aside (replacing the one moved aside before) and a new
/// one begun: a flood of lines takes at most twice this on disk.
const LOG_MAX_BYTES: u64 = 4 << 20;

/// What the adapters, the control server and the main loop share.
pub struct State {
    /// The filesystem core; every access goes through this lock.
    pub vfs: Mutex<Vfs>,
    start: Instant,
    last_access_ms: AtomicU64,
    /// How saving goes, for `polykey status` (its own lock: answered even while a save blocks).
    pub health: Mutex<Health>,
}

/// Shared state handle.
pub type Shared = std::sync::Arc<State>;

impl State {
    /// The shared state of a freshly opened node, owned by `uid`/`gid` in the mount.
    pub fn shared(node: polykey::Node, uid: u32, gid: u32) -> Shared {
        std::sync::Arc::new(State {
            vfs: Mutex::new(Vfs::new(node, uid, gid)),
            start: Instant::now(),
            last_access_ms: AtomicU64::new(0),
            health: Mutex::new(Health::default()),
        })
    }

    /// How saving goes now: from the node when it is free, else as last seen (a tick ago).
    pub fn health(&self) -> Health {
        match self.vfs.try_lock() {
            Ok(vfs) => self.note_health(vfs.node()),
            Err(_) => self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// Records how saving goes for `node`, and returns it.
    fn note_health(&self, node: &polykey::Node) -> Health {
        let mut h = self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let failing = node.failing();
        let secs = |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        h.failing_since = failing.map(|(t, _)| secs(t));
        h.error = failing.map(|(_, e)| e.to_owned()).unwrap_or_default();
        h.waiting = if failing.is_some() { node.waiting().max(1) } else { 0 };
        h.rescued = node.rescued().map(Path::to_owned);
        h.clone()
    }

    /// Records an access (for `--lock-after`).
    pub fn touch(&self) {
        self.last_access_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_access_ms.load(Ordering::Relaxed)))
    }
}

/// Why the main loop wakes up.
pub enum Event {
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(i32),
    /// The kernel ended the session (fusermount3 -u, umount).
    Unmounted,
    /// `polykey unmount`: reply on the channel once everything is written, or why not; the
    /// receiver hears when the reply has reached the client (so the daemon outlives it).
    UnmountRequest(std::sync::mpsc::Sender<Result<(), String>>, std::sync::mpsc::Receiver<()>),
    /// Periodic work.
    Tick,
}

/// Periodic work, the same on every platform: checks that the node's path still leads to the
/// file written, grace-period commits and save retries (logged when they start and stop
/// failing), the health `polykey status` shows, remembering the node's position for rollback
/// detection, and `--lock-after`. Returns whether saving is failing now.
pub fn on_tick(
    shared: &Shared,
    recorded: &mut Option<(u32, u64)>,
    failing: bool,
    lock_after: Option<Duration>,
    stopping: &mut bool,
) -> bool {
    let mut vfs = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = shared.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let lost = vfs.check_placement();
    if let (Some(why), false) = (&lost, failing) {
        log(&format!("{why}: nothing more is written into the file this mount held; writing everything where it can be found"));
    }
    // A failure shows in the node's health below.
    let _ = vfs.tick();
    if lost.is_some() && vfs.node().lost().is_none() && vfs.node().rescued().is_none() {
        log(&format!("{} is this node again (checked with its key): writing there", vfs.node().path().display()));
    }
    // Remember how far the node has come, so an old copy put back is noticed.
    if *recorded != Some(vfs.node().position()) && !vfs.has_unsaved() {
        polykey::rollback::record(vfs.node());
        *recorded = Some(vfs.node().position());
    }
    let node = vfs.node();
    let health = shared.note_health(node);
    let error = health.failing_since.map(|_| health.error.clone());
    let node_path = node.path().to_owned();
    drop(vfs);
    match (&error, failing) {
        (Some(e), false) => log(&format!("saving failed, will retry: {e}")),
        (None, true) => log("saving works again; everything is written"),
        _ => {}
    }
    if health.rescued != before.rescued {
        match &health.rescued {
            Some(r) => log(&format!(
                "WARNING: {} now leads to another file, which was left untouched; everything this mount holds is saved in {} \
                 (same passphrase: open it with `polykey --node {}`), and written there from now on; move it over {} to carry on there",
                node_path.display(),
                r.display(),
                r.display(),
                node_path.display()
            )),
            None => log(&format!("the rescue file is at {} again: writing there", node_path.display())),
        }
    }
    if let Some(limit) = lock_after {
        if !*stopping && shared.idle() >= limit {
            log("idle for the --lock-after duration: locking");
            *stopping = true;
        }
    }
    error.is_some()
}

/// Reads the passphrase from standard input (a pipe from `polykey mount`), opens the node for
/// writing and checks it against rollback. Returns it, its canonical path, and a note for the
/// log if its last save was cut short.
pub fn open_node(args: &Args) -> Result<(polykey::Node, PathBuf, Option<String>), String> {
    use std::io::Read;
    let mut pass = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut pass).map_err(|e| format!("cannot read the passphrase: {e}"))?;
    let pass = polykey::Passphrase::new(std::mem::take(&mut *pass));
    let node_path = std::fs::canonicalize(&args.node).map_err(|e| format!("node {}: {e}", args.node.display()))?;
    let mut node = polykey::Node::open(&node_path, &pass, polykey::Access::Write).map_err(|e| e.to_string())?;
    drop(pass);
    if args.accept_rollback {
        polykey::rollback::accept(&node);
        node.allow_cutting_tail();
    } else {
        polykey::rollback::check_and_record(&node).map_err(|e| e.to_string())?;
    }
    // A mount that could never write: refused now, not at the first save.
    node.writable().map_err(|e| e.to_string())?;
    let note = node
        .discarded_tail()
        .map(|(offset, what)| format!("the last save (from byte {offset}) was cut short or damaged ({what}) and is ignored"));
    Ok((node, node_path, note))
}

/// Tells `polykey mount` how starting went (background mode), or the user (foreground).
pub fn report(foreground: bool, line: &str) {
    if foreground {
        if let Some(msg) = line.strip_prefix("error: ") {
            eprintln!("polykey: {msg}");
        }
    } else {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The log file standard error goes to (in the background), to bound its size.
static LOG_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Writes a line to the log (standard error; this daemon's own file in the background, moved
/// aside past [`LOG_MAX_BYTES`]). Never a secret.
pub fn log(msg: &str) {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    #[cfg(unix)]
    let stamp = polykey::runtime::iso8601(t as i64);
    #[cfg(not(unix))]
    let stamp = t.to_string();
    let file = LOG_FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(std::io::stderr(), "{stamp} polykey-mountd[{}]: {msg}", std::process::id());
    #[cfg(unix)]
    if let Some(path) = file.as_ref().filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > LOG_MAX_BYTES)) {
        let _ = std::fs::rename(path, path.with_extension("log.old"));
        if let Some(f) = unix::open_log(path) {
            let _ = sys::redirect_stderr(&f);
        }
    }
}

/// The daemon's arguments (given by `polykey mount`).
pub struct Args {
    node: PathBuf,
    mountpoint: PathBuf,
    foreground: bool,
    lock_after: Option<Duration>,
    accept_rollback: bool,
    /// `polykey mount` created the mount point for this mount: remove it if mounting fails.
    #[cfg_attr(windows, allow(dead_code))]
    remove_mountpoint_on_failure: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args_os().skip(1);
    let (mut node, mut mountpoint, mut foreground, mut lock_after, mut accept_rollback) = (None, None, false, None, false);
    let mut remove_mountpoint_on_failure = false;
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--node") => node = it.next().map(PathBuf::from),
            Some("--mountpoint") => mountpoint = it.next().map(PathBuf::from),
            Some("--foreground") => foreground = true,
            Some("--accept-rollback") => accept_rollback = true,
            Some("--remove-mountpoint-on-failure") => remove_mountpoint_on_failure = true,
            Some("--lock-after") => {
                let secs = it.next().and_then(|s| s.to_str()?.parse::<u64>().ok()).ok_or("--lock-after takes seconds")?;
                lock_after = Some(Duration::from_secs(secs));
            }
            _ => return Err(format!("unexpected argument {a:?}; polykey-mountd is started by `polykey mount`")),
        }
    }
    Ok(Args {
        node: node.ok_or("--node is required")?,
        mountpoint: mountpoint.ok_or("--mountpoint is required")?,
        foreground,
        lock_after,
        accept_rollback,
        remove_mountpoint_on_failure,
    })
}

fn main() -> ExitCode {
    #[cfg(unix)]
    {
        unix::main()
    }
    #[cfg(windows)]
    {
        winfsp::main()
    }
}

#[cfg(unix)]
mod unix {
    use super::*;
    use polykey::runtime::{self, MountRecord};
    use std::sync::mpsc;

    pub fn main() -> ExitCode {
        sys::close_inherited_fds();
        let mut raw = std::env::args_os().skip(1);
        if raw.next().is_some_and(|a| a == crate::watch::FLAG) {
            return crate::watch::run(raw);
        }
        let args = match parse_args() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("polykey-mountd: {e}");
                return ExitCode::from(2);
            }
        };
        let fg = args.foreground;
        let hardening = sys::harden();
        if !fg {
            sys::setsid();
        }
        sys::block_shutdown_signals();
        match start(&args, &hardening) {
            Ok(code) => code,
            Err(msg) => {
                if args.remove_mountpoint_on_failure {
                    let _ = std::fs::remove_dir(&args.mountpoint); // Only if still empty.
                }
                report(fg, &format!("error: {msg}"));
                ExitCode::FAILURE
            }
        }
    }

    /// Opens (creating, 0600) this daemon's log file.
    pub(crate) fn open_log(path: &Path) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).ok()
    }

    fn start(args: &Args, hardening: &sys::Hardening) -> Result<ExitCode, String> {
        let mountpoint = std::fs::canonicalize(&args.mountpoint).map_err(|e| format!("mountpoint {}: {e}", args.mountpoint.display()))?;
        let (node, node_path, opened_note) = open_node(args)?;
        let shared = State::shared(node, runtime::euid(), runtime::egid());
        let (events_tx, events) = mpsc::channel::<Event>();
        let (destroyed_tx, destroyed_rx) = mpsc::channel();
        let listener = server::bind(&node_path).map_err(|e| format!("cannot create the control socket: {e}"))?;
        let mut made = Made { files: vec![runtime::socket_path(&node_path).unwrap_or_default()], mount: None };
        let fs = fuse::FuseFs::new(shared.clone(), destroyed_tx);
        // Without allow_other (see fusermount.rs): the kernel refuses every other user, root
        // included; fuser (`SessionACL::Owner`) and the adapter (`FuseFs::by_owner`) check the
        // owner again, on top of the 0700 root and default_permissions.
        let fuse_mount = fusermount::mount(&mountpoint).map_err(|e| format!("cannot mount at {}: {e}", mountpoint.display()))?;
        let dev = crate::watch::mount_dev(&mountpoint);
        made.mount = Some((mountpoint.clone(), dev.clone()));
        // fusermount3 unmounts a dead mount when this end closes (auto_unmount): it stays open
        // for as long as this process runs.
        let _auto_unmount = fuse_mount.monitor;
        let session = fuser::Session::from_fd(fs, fuse_mount.fd, fuser::SessionACL::Owner, fuser::Config::default())
            .map_err(|e| format!("cannot start the session at {}: {e}", mountpoint.display()))?;
        // fusermount3's auto_unmount can miss a kill -9, and never sees a normal user's mount
        // die (see watch.rs): a watcher backs it up.
        let watcher = crate::watch::spawn(&mountpoint, dev.as_deref());
        let bg = session.spawn().map_err(|e| format!("cannot start the session: {e}"))?;
        let record = MountRecord { pid: std::process::id(), node: node_path.clone(), mountpoint: mountpoint.clone(), dev: dev.clone() };
        made.files.push(runtime::record_path(&node_path).unwrap_or_default());
        record.write().map_err(|e| format!("cannot record the mount: {e}"))?;
        // Ready: the mount is served and recorded, and the control socket is bound (a client
        // that connects now waits in its backlog). The other threads start after the report:
        // nothing is lost meanwhile, since the shutdown signals are blocked (they stay pending)
        // and the events are queued on their channels.
        report(args.foreground, "ready");
        server::spawn(listener, shared.clone(), events_tx.clone(), bg.notifier());
        spawn_forwarders(events_tx, destroyed_rx);
        let log_path = runtime::log_path(&node_path).unwrap_or_default();
        if !args.foreground {
            if let Some(f) = open_log(&log_path) {
                let _ = sys::redirect_stderr(&f);
                *LOG_FILE.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(log_path.clone());
            }
        }
        shared.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner).log = log_path;
        log(&format!("mounted {} at {}", node_path.display(), mountpoint.display()));
        if let Err(e) = watcher {
            log(&format!("no dead-mount watcher ({e}): after a kill -9 only fusermount3 removes the mount"));
        }
        if let Some(note) = opened_note {
            log(&note);
        }
        if let Some(note) = &hardening.memory_note {
            log(note);
        } else if hardening.memory_locked {
            log("memory locked; core dumps disabled");
        }
        let code = run(&shared, &events, args.lock_after, bg, &mountpoint, dev.as_deref());
        made.mount = None; // `run` returns once the kernel has ended the mount.
        drop(made);
        log("stopped");
        Ok(code)
    }

    /// What [`start`] made that must not outlive the daemon: its control socket and mount
    /// record (removed), and its mount while `run` has not taken it over (detached). Undone
    /// on drop, so every way out of `start`, an error included, cleans up.
    struct Made {
        files: Vec<PathBuf>,
        mount: Option<(PathBuf, Option<String>)>,
    }

    impl Drop for Made {
        fn drop(&mut self) {
            if let Some((mountpoint, dev)) = self.mount.take() {
                crate::watch::detach_own(&mountpoint, dev.as_deref());
            }
            for f in &self.files {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    fn spawn_forwarders(events: mpsc::Sender<Event>, destroyed: mpsc::Receiver<()>) {
        let tx = events.clone();
        std::thread::spawn(move || loop {
            let sig = sys::wait_signal();
            if tx.send(Event::Signal(sig)).is_err() {
                break;
            }
        });
        let tx = events.clone();
        std::thread::spawn(move || {
            if destroyed.recv().is_ok() {
                let _ = tx.send(Event::Unmounted);
            }
        });
        std::thread::spawn(move || loop {
            std::thread::sleep(TICK);
            if events.send(Event::Tick).is_err() {
                break;
            }
        });
    }

    fn commit_all(shared: &Shared) -> Result<(), String> {
        let mut vfs = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        vfs.commit_all().map_err(|e| e.to_string())
    }

    /// A second stop signal while the node cannot be written: everything the mount holds goes
    /// to a new node file in Polykey's state folder (`rescued/`, same passphrase), which the
    /// daemon writes from then on, so stopping drops nothing; said loudly in the log.
    fn rescue_elsewhere(shared: &Shared, sig: i32) {
        let mut vfs = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let node = vfs.node().path().to_owned();
        let dir = polykey::rollback::polykey_state_dir().map(|d| d.join("rescued"));
        let made = dir.ok_or_else(|| "no state folder ($XDG_STATE_HOME or $HOME)".to_owned()).and_then(|d| {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(|e| format!("{}: {e}", d.display()))?;
            vfs.rescue_into(&d).map_err(|e| e.to_string())
        });
        drop(vfs);
        match made {
            Ok(r) => log(&format!(
                "WARNING: signal {sig} again while {} cannot be written: everything this mount holds is saved in {} \
                 (same passphrase: open it with `polykey --node {}`); {} itself has only what was written before; stopping",
                node.display(),
                r.display(),
                r.display(),
                node.display()
            )),
            Err(e) => log(&format!("signal {sig} again, but no rescue file could be written either ({e}): still retrying")),
        }
    }

    /// Detaches the mount (lazily, so files still open keep working until closed).
    pub(crate) fn detach(mountpoint: &std::path::Path) {
        let ok = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(mountpoint).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = std::process::Command::new("umount").arg("-l").arg(mountpoint).status();
        }
    }

    /// The main loop: periodic work until asked to stop, then write out and unmount.
    fn run(
        shared: &Shared,
        events: &mpsc::Receiver<Event>,
        lock_after: Option<Duration>,
        bg: fuser::BackgroundSession,
        mountpoint: &std::path::Path,
        dev: Option<&str>,
    ) -> ExitCode {
        let mut stopping = false; // Asked to stop; waiting for the data to reach the disk.
        let mut signalled = false; // A stop signal came; a second one while failing rescues.
        let mut hinted = false;
        let mut unmounted = false;
        let mut failing = false;
        let mut recorded = None;
        let mut replies = Vec::new();
        for ev in events {
            match ev {
                Event::Tick => failing = on_tick(shared, &mut recorded, failing, lock_after, &mut stopping),
                Event::Signal(sig) if signalled && failing => rescue_elsewhere(shared, sig),
                Event::Signal(sig) => {
                    log(&format!("signal {sig}: writing out and unmounting"));
                    (stopping, signalled) = (true, true);
                }
                Event::Unmounted => {
                    unmounted = true;
                    stopping = true;
                }
                Event::UnmountRequest(reply, delivered) => match commit_all(shared) {
                    Ok(()) => {
                        stopping = true;
                        let _ = reply.send(Ok(()));
                        replies.push(delivered);
                    }
                    Err(e) => {
                        log(&format!("unmount refused: {e}"));
                        let _ = reply.send(Err(format!("cannot write the node, so the mount stays: {e}")));
                    }
                },
            }
            if stopping {
                match commit_all(shared) {
                    Ok(()) => break,
                    Err(e) => {
                        if !failing {
                            failing = true;
                            log(&format!("cannot write out before unmounting, will retry: {e}"));
                        }
                        if signalled && !hinted {
                            hinted = true;
                            log("the node cannot be written, so the mount stays until it can; a second signal writes everything to a rescue file and stops");
                        }
                    }
                }
            }
        }
        if !unmounted {
            // Only this daemon's own mount: one stacked on top of it is not ours to remove,
            // and ours is detached once that one has gone.
            let mut detached = crate::watch::detach_own(mountpoint, dev);
            if !detached {
                log(&format!("another mount covers {}: detaching this one once it has gone", mountpoint.display()));
            }
            // Files still open on the detached mount keep the session alive; wait for the
            // kernel to end it, doing periodic work meanwhile.
            for ev in events {
                match ev {
                    Event::Unmounted => break,
                    Event::Tick => {
                        let _ = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).tick();
                        if !detached {
                            detached = crate::watch::detach_own(mountpoint, dev);
                        }
                    }
                    Event::UnmountRequest(reply, delivered) => {
                        let _ = reply.send(Ok(()));
                        replies.push(delivered);
                    }
                    Event::Signal(_) => {}
                }
            }
        }
        // Whatever arrived through files that stayed open is written too; never give up on data.
        while let Err(e) = commit_all(shared) {
            if !failing {
                log(&format!("cannot write out, will retry: {e}"));
                failing = true;
            }
            std::thread::sleep(TICK);
        }
        drop(bg);
        for delivered in replies {
            let _ = delivered.recv_timeout(Duration::from_secs(2));
        }
        // Wipe every plaintext buffer and key now, not whenever the process ends.
        shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).wipe();
        ExitCode::SUCCESS
    }
}
