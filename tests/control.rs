//! The mount daemon's control socket under a misbehaving client of the same user (issue 10,
//! §5): oversized requests, many large ones at once, thousands of idle connections, a slow
//! sender, and running out of descriptors. Each must leave the daemon's memory, threads and CPU
//! bounded and the mount serving. Measured on a real daemon through /proc, never by timing.

use crate::mounted::{wait_for, Mounted};
use crate::util::{repo, run, secret, stderr};
use polykey::control::{read_message, Response, MAX_REQUEST_BYTES};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

fn seeded() -> Option<Mounted> {
    Mounted::with(|n| {
        n.put(&repo("r"), &secret("s"), b"value").unwrap();
    })
}

fn socket(m: &Mounted) -> PathBuf {
    std::fs::read_dir(m.runtime.join("polykey"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("a control socket")
}

/// A `/proc/PID/status` field in KiB (or a count).
fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("{field} in {s}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// The daemon's answer on `c` (a refusal it sent before hanging up), if any.
fn answer(c: &mut UnixStream) -> Option<Response> {
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = read_message(c, 1 << 20).ok()??;
    Response::decode(&body).ok()
}

fn failed_with(r: Option<Response>, what: &str) -> String {
    match r {
        Some(Response::Failed(msg, _)) if msg.contains(what) => msg,
        other => panic!("expected a refusal mentioning {what:?}, got {other:?}"),
    }
}

/// The mount and its socket still serve.
fn still_serving(m: &Mounted) {
    assert!(
        wait_for(30, || run(m.cli().args(["get", "r/s"])).stdout == b"value"),
        "the daemon no longer answers: {}{}",
        stderr(&run(m.cli().args(["get", "r/s"]))),
        m.diagnosis()
    );
    assert_eq!(std::fs::read(m.p("repos/r/s")).unwrap(), b"value");
}

#[test]
fn an_oversized_request_is_refused_from_its_length() {
    let Some(m) = seeded() else { return };
    let pid = m.pid();
    let hwm = status_field(pid, "VmHWM");
    // Declares 256 MiB and sends as much as the daemon takes.
    let mut c = UnixStream::connect(socket(&m)).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let declared: usize = 256 << 20;
    let mut sent = 0;
    let chunk = vec![0xFFu8; 1 << 20];
    if c.write_all(&u32::try_from(declared).unwrap().to_le_bytes()).is_ok() {
        while sent < declared && c.write_all(&chunk).is_ok() {
            sent += chunk.len();
        }
    }
    let msg = failed_with(answer(&mut c), "limit");
    assert!(msg.contains(&MAX_REQUEST_BYTES.to_string()), "{msg}");
    assert!(sent < declared, "the daemon read all {declared} bytes of a request it cannot take");
    let grew = status_field(pid, "VmHWM").saturating_sub(hwm);
    eprintln!("256 MiB request: {sent} bytes taken, daemon VmHWM +{grew} KiB");
    assert!(grew < 32 << 10, "the daemon's peak memory grew by {grew} KiB for a refused request");
    still_serving(&m);
}

#[test]
fn many_large_requests_at_once_stay_within_the_memory_bound() {
    let Some(m) = seeded() else { return };
    let pid = m.pid();
    let hwm = status_field(pid, "VmHWM");
    // Eight clients each send a request of 60 MiB but its last byte, and stop when the daemon
    // stops reading (their writes then wait in vain).
    let len = 60usize << 20;
    let payload: &'static [u8] = Box::leak(vec![0xFFu8; len - 1].into_boxed_slice());
    let sock = socket(&m);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = UnixStream::connect(&sock).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut sent = 0;
                if c.write_all(&u32::try_from(len).unwrap().to_le_bytes()).is_ok() {
                    for piece in payload.chunks(1 << 20) {
                        if c.write_all(piece).is_err() {
                            break;
                        }
                        sent += piece.len();
                    }
                }
                (c, sent)
            })
        })
        .collect();
    let clients: Vec<(UnixStream, usize)> = clients.into_iter().map(|h| h.join().unwrap()).collect();
    let grew = status_field(pid, "VmHWM").saturating_sub(hwm);
    let whole = clients.iter().filter(|(_, sent)| *sent == len - 1).count();
    // The bound: two of the largest requests in flight, each read into a buffer that grows by
    // doubling (so up to one and a half times its size while it moves), with room to spare.
    let bound = (3 * MAX_REQUEST_BYTES + (32 << 20)) >> 10;
    eprintln!("8 x 60 MiB requests: daemon VmHWM +{grew} KiB, {whole} sent whole");
    assert!(
        grew < bound as u64,
        "8 requests of 60 MiB raised the daemon's peak memory by {grew} KiB (bound {bound} KiB; {whole} sent whole)"
    );
    drop(clients);
    still_serving(&m);
}

#[test]
fn connections_past_the_cap_are_refused_with_a_message_and_cost_no_thread() {
    let Some(m) = seeded() else { return };
    let pid = m.pid();
    let before = threads(pid);
    let sock = socket(&m);
    let mut conns: Vec<UnixStream> = (0..300).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    // The last one is answered once the daemon has dealt with all before it.
    let msg = failed_with(answer(conns.last_mut().unwrap()), "connections");
    let during = threads(pid);
    eprintln!("300 idle connections: daemon threads {before} -> {during}");
    // 32 connection threads at most, and the few the daemon starts on its own as it goes.
    assert!(during <= before + 32 + 8, "300 idle connections made {during} threads (from {before})");
    // The CLI meanwhile gets the same clear refusal, not a hang.
    let o = run(m.cli().args(["get", "r/s"]));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&msg), "{}", stderr(&o));
    drop(conns);
    still_serving(&m);
}

#[test]
fn a_slow_sender_is_cut_off_at_the_request_deadline() {
    let Some(m) = seeded() else { return };
    let mut c = UnixStream::connect(socket(&m)).unwrap();
    // Declares 200 bytes, then sends one a second: each read is quick, the whole is not.
    c.write_all(&200u32.to_le_bytes()).unwrap();
    let mut sent = 0;
    let mut reply = Vec::new();
    c.set_nonblocking(true).unwrap();
    while sent < 200 {
        std::thread::sleep(Duration::from_secs(1));
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        if !reply.is_empty() || c.write_all(&[0xFF]).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent < 200, "a request trickling in byte by byte was read whole");
    c.set_nonblocking(false).unwrap();
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = c.read_to_end(&mut rest);
    reply.extend_from_slice(&rest);
    let r = reply.get(4..).and_then(|b| Response::decode(b).ok());
    failed_with(r, "did not arrive whole");
    still_serving(&m);
}

/// Whether any thread of `pid` is running or runnable (`R`).
fn any_thread_running(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('R'))
    })
}

#[test]
fn out_of_descriptors_the_daemon_waits_instead_of_spinning() {
    let Some(m) = seeded() else { return };
    let pid = m.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();

    let original = String::from_utf8(
        run(std::process::Command::new("prlimit").args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
            "-o",
            "SOFT,HARD",
        ]))
        .stdout,
    )
    .unwrap();
    let (soft, hard) = match original.split_whitespace().collect::<Vec<_>>()[..] {
        [soft, hard] => (soft.to_owned(), hard.to_owned()),
        _ => panic!("prlimit said {original:?}"),
    };
    // Only the soft limit: raising a hard limit again needs privileges a container may not give.
    let limit = format!("--nofile={}:{hard}", open + 3);
    assert!(run(std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &limit])).status.success());
    // Three connections use the descriptors left; the rest wait in the listen queue, and each
    // accept fails with EMFILE until one of the three ends.
    let sock = socket(&m);
    let conns: Vec<UnixStream> = (0..20).map(|_| UnixStream::connect(&sock).unwrap()).collect();
    assert!(wait_for(10, || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() >= open + 3));
    let samples = 100;
    let running = (0..samples)
        .filter(|_| {
            std::thread::sleep(Duration::from_millis(10));
            any_thread_running(pid)
        })
        .count();
    assert!(run(std::process::Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--nofile={soft}:{hard}")]))
        .status
        .success());
    assert!(running < samples / 2, "a daemon out of descriptors was running in {running} of {samples} samples: it spins");
    drop(conns);
    still_serving(&m);
}

/// docs/CLI.md, `polykey passwd`: on a mounted node the daemon holds the key, but the current
/// passphrase is still asked and checked, so whoever reaches the mount cannot lock its owner out.
#[test]
fn passwd_on_a_mounted_node_asks_for_and_checks_the_current_passphrase() {
    let Some(mut m) = seeded() else { return };
    let new = m.node.file("new-pw", b"a new passphrase\n");
    let wrong = m.node.file("wrong-pw", b"not it\n");
    let mut c = crate::util::polykey_cmd();
    c.env("XDG_RUNTIME_DIR", &m.runtime).env("XDG_STATE_HOME", m.node.dir.path().join("state"));
    let o = run(c.arg("--node").arg(&m.node.path).arg("--password-file").arg(&wrong).arg("--new-password-file").arg(&new).arg("passwd"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    let o = run(m.cli().arg("--new-password-file").arg(&new).arg("passwd"));
    assert!(o.status.success(), "{}", stderr(&o));
    m.unmount();
    let pass = polykey::Passphrase::new(b"a new passphrase".to_vec());
    assert!(polykey::Node::open(&m.node.path, &pass, polykey::Access::Read).is_ok());
}
