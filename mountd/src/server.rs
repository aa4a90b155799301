//! The control socket: CLI commands on a mounted node go through the daemon that holds it.
//!
//! The socket lives in the user's private runtime folder (0700) and is itself 0600; each
//! connection's peer user id is checked against ours as well. Only our own user gets here, but
//! one buggy script must not take the mount down: requests, the bytes in flight, connections
//! (threads), the time a request may take to arrive and the pace of retries after a failed
//! `accept` are all bounded.

use crate::{log, Event, Shared};
use polykey::control::{self, write_message, Request, Response};
use polykey::runtime;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Binds the node's control socket, replacing a stale one left by a dead daemon.
pub fn bind(node: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = runtime::socket_path(node)?;
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another daemon answers for this node"));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// At most this many connections are served at once, one thread each. Further ones are told
/// so and closed: a runaway script costs neither threads nor descriptors beyond this.
const MAX_CONNECTIONS: usize = 32;

/// Bytes of requests in flight (being received or answered) across all connections: two of the
/// largest. A request is admitted for its whole declared length before its bytes are read, so
/// concurrent large requests wait their turn instead of each holding part of the budget.
const MAX_INFLIGHT_BYTES: usize = 2 * control::MAX_REQUEST_BYTES;

/// A request must arrive whole within this time of the connection opening (or of the previous
/// answer), however slowly its bytes trickle in. The CLI sends each request at once.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (out of descriptors, out of memory), doubling up to the last:
/// the error lasts until something is freed, and retrying at once only spins.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Serves connections, one thread each, within the bounds above.
pub fn spawn(listener: UnixListener, shared: Shared, events: Sender<Event>, notifier: fuser::Notifier) {
    let notifier = Arc::new(notifier);
    let limits = Arc::new(Limits { connections: AtomicUsize::new(0), inflight: Mutex::new(0), freed: Condvar::new() });
    let accept = move || {
        let mut pause = ACCEPT_BACKOFF.0;
        let mut refusing = false;
        loop {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    if pause == ACCEPT_BACKOFF.0 {
                        log(&format!("control socket: cannot accept a connection ({e}); retrying, more slowly while it lasts"));
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            };
            pause = ACCEPT_BACKOFF.0;
            let Some(slot) = Slot::take(&limits) else {
                if !refusing {
                    log(&format!("control socket: {MAX_CONNECTIONS} connections are open; refusing more until one closes"));
                }
                refusing = true;
                refuse(stream);
                continue;
            };
            refusing = false;
            let (shared, events, notifier) = (shared.clone(), events.clone(), notifier.clone());
            let serve_one = move || {
                if let Err(e) = serve(stream, &slot, &shared, &events, &notifier) {
                    log(&format!("control connection: {e}"));
                }
            };
            // A thread that cannot start drops the connection (and its slot) with it.
            if let Err(e) = std::thread::Builder::new().name("pk-control".into()).spawn(serve_one) {
                log(&format!("control socket: cannot start a thread: {e}"));
            }
        }
    };
    if let Err(e) = std::thread::Builder::new().name("pk-accept".into()).spawn(accept) {
        log(&format!("control socket: cannot start: {e}"));
    }
}

/// The shared bounds: connections being served, and request bytes in flight.
struct Limits {
    connections: AtomicUsize,
    inflight: Mutex<usize>,
    freed: Condvar,
}

/// One of the [`MAX_CONNECTIONS`], given back on drop.
struct Slot(Arc<Limits>);

impl Slot {
    fn take(limits: &Arc<Limits>) -> Option<Slot> {
        let taken = limits.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_CONNECTIONS).then_some(n + 1));
        taken.ok().map(|_| Slot(limits.clone()))
    }

    /// Admits a request of `len` bytes into [`MAX_INFLIGHT_BYTES`], waiting for room until
    /// `deadline`.
    fn admit(&self, len: usize, deadline: Instant) -> std::io::Result<Admitted<'_>> {
        let mut inflight = self.0.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        while *inflight + len > MAX_INFLIGHT_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the mount daemon is busy receiving other large requests; try again",
                ));
            }
            inflight = self.0.freed.wait_timeout(inflight, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *inflight += len;
        Ok(Admitted(&self.0, len))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Request bytes admitted into the in-flight budget, given back on drop.
struct Admitted<'a>(&'a Limits, usize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        *self.0.inflight.lock().unwrap_or_else(PoisonError::into_inner) -= self.1;
        self.0.freed.notify_all();
    }
}

/// Tells a connection over [`MAX_CONNECTIONS`] why it is closed (only our own user).
fn refuse(stream: UnixStream) {
    if crate::sys::peer_uid(&stream).ok() != Some(runtime::euid()) {
        return;
    }
    let msg = format!("the mount daemon is serving {MAX_CONNECTIONS} connections already; try again when they have finished");
    // A fresh socket's buffer takes a short answer at once; never wait on it.
    let _ = stream.set_nonblocking(true);
    let _ = write_message(&mut &stream, &Response::Failed(msg, false).encode());
}

/// Reads from a stream until a fixed deadline: each read waits only for what is left.
struct Deadline<'a>(&'a UnixStream, Instant);

impl std::io::Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let late = || {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the request did not arrive whole within {} s", REQUEST_DEADLINE.as_secs()),
            )
        };
        let left = self.1.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        self.0.set_read_timeout(Some(left))?;
        match (&mut &*self.0).read(buf) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Err(late()),
            r => r,
        }
    }
}

fn serve(stream: UnixStream, slot: &Slot, shared: &Shared, events: &Sender<Event>, notifier: &fuser::Notifier) -> std::io::Result<()> {
    if crate::sys::peer_uid(&stream)? != runtime::euid() {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "peer is another user"));
    }
    stream.set_write_timeout(Some(REQUEST_DEADLINE))?;
    loop {
        let mut from = Deadline(&stream, Instant::now() + REQUEST_DEADLINE);
        let received = control::read_length(&mut from, control::MAX_REQUEST_BYTES)
            .and_then(|len| len.map(|len| Ok((slot.admit(len, from.1)?, control::read_body(&mut from, len)?))).transpose());
        let (_admitted, body) = match received {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            // Too large, too slow, or no room: say so (the client shows it), then hang up.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::TimedOut) => {
                let _ = write_message(&mut &stream, &Response::Failed(e.to_string(), false).encode());
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let req = Request::decode(&body)?;
        drop(body);
        let (delivered, told) = std::sync::mpsc::channel();
        let resp = answer(req, shared, events, notifier, (delivered.clone(), told));
        write_message(&mut &stream, &resp.encode())?;
        let _ = delivered.send(());
    }
}

fn answer(
    req: Request,
    shared: &Shared,
    events: &Sender<Event>,
    notifier: &fuser::Notifier,
    (_delivered, told): (Sender<()>, std::sync::mpsc::Receiver<()>),
) -> Response {
    match req {
        // Never waits for the filesystem's lock: answered even while a save is stuck.
        Request::Status => Response::Health(shared.health()),
        Request::Unmount => {
            let (tx, rx) = std::sync::mpsc::channel();
            if events.send(Event::UnmountRequest(tx, told)).is_err() {
                return Response::Failed("the daemon is stopping".into(), false);
            }
            match rx.recv() {
                Ok(Ok(())) => Response::Done,
                Ok(Err(msg)) => Response::Failed(msg, false),
                Err(_) => Response::Failed("the daemon is stopping".into(), false),
            }
        }
        req => {
            shared.touch();
            // A sync or a backup opens the other node (Argon2, reading its file) before taking
            // the filesystem's lock, which readers of the mount wait on.
            let peer = match control::open_peer(&req) {
                Ok(peer) => peer,
                Err(e) => return Response::Failed(e.to_string(), e.is_usage()),
            };
            let mut vfs = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = if req.access() == polykey::Access::Read {
                vfs.read_node(|node| control::execute_with(node, req, peer))
            } else {
                vfs.with_node(|node| control::execute_with(node, req, peer))
            };
            let invalidations = vfs.take_invalidations();
            drop(vfs);
            // Before answering, so the caller's next read through the mount is current. No
            // kernel request is waiting on this thread, so this cannot deadlock.
            for inv in &invalidations {
                crate::fuse::notify(notifier, inv);
            }
            match out {
                Ok(r) => r,
                Err(e) => Response::Failed(e.to_string(), e.is_usage()),
            }
        }
    }
}
