//! The control socket: CLI commands on a mounted node go through the daemon that holds it.
//!
//! The socket lives in the user's private runtime folder (0700) and is itself 0600; each
//! connection's peer user id is checked against ours as well.

use crate::{log, Event, Shared};
use polykey::control::{self, read_message, write_message, Request, Response};
use polykey::runtime;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

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

/// Serves connections, one thread each.
pub fn spawn(listener: UnixListener, shared: Shared, events: Sender<Event>, notifier: fuser::Notifier) {
    let notifier = std::sync::Arc::new(notifier);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (shared, events, notifier) = (shared.clone(), events.clone(), notifier.clone());
            std::thread::spawn(move || {
                if let Err(e) = serve(stream, &shared, &events, &notifier) {
                    log(&format!("control connection: {e}"));
                }
            });
        }
    });
}

fn serve(mut stream: UnixStream, shared: &Shared, events: &Sender<Event>, notifier: &fuser::Notifier) -> std::io::Result<()> {
    if crate::sys::peer_uid(&stream)? != runtime::euid() {
        return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, "peer is another user"));
    }
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    while let Some(body) = read_message(&mut stream)? {
        let req = Request::decode(&body)?;
        let (delivered, told) = std::sync::mpsc::channel();
        let resp = answer(req, shared, events, notifier, (delivered.clone(), told));
        write_message(&mut stream, &resp.encode())?;
        let _ = delivered.send(());
    }
    Ok(())
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
            let mut vfs = shared.vfs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let out = if req.access() == polykey::Access::Read {
                vfs.read_node(|node| control::execute(node, req))
            } else {
                vfs.with_node(|node| control::execute(node, req))
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
