//! What a process holding secrets leaves behind in memory (issue 10 §4, §5).
//!
//! - **Reads leave no copy.** A 2 MiB secret with a marker in its middle is read 100 bytes at a
//!   time through a real mount, away from the marker; then the daemon's writable memory (read
//!   through `/proc/PID/mem`, which root's CAP_SYS_PTRACE allows even though the daemon is not
//!   dumpable) must not hold the marker. Before the reads it must not either (the node keeps
//!   the secret compressed, so the marker is not there as such), and a secret's name, which the
//!   daemon does hold as such, must be found (a search that finds nothing proves nothing).
//! - **The CLI leaves no core.** `polykey edit` waiting for its editor, with the secret in its
//!   memory, started with `ulimit -c unlimited`, shows a core limit of 0 and leaves no core
//!   when killed by SIGABRT, where a plain process started the same way does.
//! - **Scratch files are capped in total.** Through a real mount, scratch files may hold
//!   `scratch::MAX_TOTAL_BYTES` together and number `scratch::MAX_FILES`; past either, creating
//!   or growing one fails with ENOSPC, the daemon's memory stays bounded, and removing one makes
//!   room again.

use crate::mounted::{wait_for, Mounted};
use crate::secrecy::{alive, children, is_root, limit, marker, occurring, wrap, Killed};
use crate::util::{repo, run, secret, TempNode};
use polykey::vfs::scratch::{MAX_FILES, MAX_TOTAL_BYTES};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

/// Which of `needles` occur in the writable memory of process `pid`, or `None` if its memory
/// cannot be read.
fn in_memory(pid: u32, needles: &[(&str, &str)]) -> Option<Vec<String>> {
    let needles: Vec<(String, Vec<u8>)> = needles.iter().map(|(l, v)| (l.to_string(), v.as_bytes().to_vec())).collect();
    let longest = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mem = fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut found = std::collections::BTreeSet::new();
    let mut read_any = false;
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else { continue };
        if !perms.starts_with("rw") {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(mut at), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
        let mut buf = vec![0u8; 4 << 20];
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            let Ok(got) = mem.read_at(&mut buf[..n], at) else { break };
            if got == 0 {
                break;
            }
            read_any = true;
            found.extend(occurring(&buf[..got], &needles).into_iter().map(str::to_owned));
            // Overlap by a needle's length, so one split across chunks is still seen.
            at += (got.saturating_sub(longest).max(1)) as u64;
        }
    }
    read_any.then(|| found.into_iter().collect())
}

#[test]
fn reading_part_of_a_large_secret_leaves_no_copy_of_it_in_the_daemon() {
    if !is_root() {
        eprintln!("SKIP: reading the daemon's memory needs root (CAP_SYS_PTRACE)");
        return;
    }
    let inside = marker("inside");
    let name = marker("name");
    // 2 MiB of compressible text, the marker at 1 MiB: stored compressed, it is not there as such.
    let line = b"filler line of a large secret, compressed in the node\n";
    let mut big: Vec<u8> = line.iter().copied().cycle().take(1 << 20).collect();
    big.extend_from_slice(inside.as_bytes());
    big.extend(line.iter().copied().cycle().take(1 << 20));
    let (b, n) = (big.clone(), name.clone());
    let Some(m) = Mounted::with(move |node| {
        node.put(&repo("r"), &secret("big"), &b).unwrap();
        node.put(&repo("r"), &secret(&n), b"small").unwrap();
    }) else {
        return;
    };
    let pid = m.pid();
    let needles = [("inside", inside.as_str()), ("name", name.as_str())];
    // The secret's name is listed (and so in the daemon's memory as such).
    assert!(fs::read_dir(m.p("repos/r")).unwrap().count() >= 2);
    let Some(before) = in_memory(pid, &needles) else {
        eprintln!("SKIP: the daemon's memory cannot be read here");
        return;
    };
    assert!(before.contains(&"name".to_owned()), "the search must find the secret's name in the daemon: {before:?}");
    assert!(!before.contains(&"inside".to_owned()), "before any read, the daemon holds the secret only compressed");
    // 100 bytes at a time, each from a fresh open, all far from the marker (kernel read-ahead
    // fetches at most 128 KiB around each).
    let path = m.p("repos/r/big");
    for offset in [0u64, 300 << 10, 600 << 10, 1536 << 10, 1800 << 10] {
        let f = fs::File::open(&path).unwrap();
        let mut buf = [0u8; 100];
        f.read_exact_at(&mut buf, offset).unwrap();
        assert_eq!(&buf[..], &big[offset as usize..offset as usize + 100]);
    }
    let after = in_memory(pid, &needles).unwrap();
    assert!(!after.contains(&"inside".to_owned()), "reads through the mount left a copy of the whole secret in the daemon's memory");
}

#[test]
fn cli_killed_by_sigabrt_during_edit_leaves_no_core_dump() {
    let pattern = fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let pattern = pattern.trim();
    if pattern.starts_with('|') || pattern.contains('/') || pattern.is_empty() {
        eprintln!("SKIP: core_pattern is {pattern:?}: core files do not land in the crashing process's folder");
        return;
    }
    let node = TempNode::new();
    let value = marker("core");
    {
        let mut n = node.create();
        n.put(&repo("r"), &secret("s"), value.as_bytes()).unwrap();
        n.save().unwrap();
    }
    let cores = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("core"))
            .collect()
    };
    let unlimited: [&str; 4] = ["sh", "-c", "ulimit -c unlimited && exec \"$@\"", "sh"];
    let (cwd, ctl) = (node.dir.path().join("cwd"), node.dir.path().join("ctl"));
    fs::create_dir(&cwd).unwrap();
    fs::create_dir(&ctl).unwrap();
    // Control: a plain process started the same way leaves a core when aborted.
    let mut sleep = Command::new("sleep");
    sleep.arg("60").current_dir(&ctl);
    let mut sleeper = Killed(wrap(&sleep, &unlimited).spawn().unwrap());
    assert!(wait_for(5, || fs::read_link(format!("/proc/{}/exe", sleeper.0.id())).is_ok_and(|e| e.ends_with("sleep"))));
    assert!(Command::new("kill").args(["-ABRT", &sleeper.0.id().to_string()]).status().unwrap().success());
    let _ = sleeper.0.wait();
    if !wait_for(5, || !cores(&ctl).is_empty()) {
        eprintln!("SKIP: even a plain process leaves no core file here (core_pattern {pattern:?})");
        return;
    }
    // An "editor" that just waits: the CLI then holds the decrypted secret.
    let waiter = node.dir.path().join("waiter");
    fs::write(&waiter, "#!/bin/sh\nexec sleep 60\n").unwrap();
    fs::set_permissions(&waiter, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut edit = node.cli();
    edit.env("EDITOR", &waiter).env_remove("VISUAL").args(["edit", "r/s"]).current_dir(&cwd);
    let mut cli = Killed(wrap(&edit, &unlimited).stderr(std::process::Stdio::null()).spawn().unwrap());
    let pid = cli.0.id();
    assert!(wait_for(10, || !children(pid).is_empty()), "polykey edit never started its editor");
    let editor = children(pid);
    assert_eq!(limit(pid, "Max core file size"), ("0".to_owned(), "0".to_owned()), "the CLI must set RLIMIT_CORE to 0");
    assert!(Command::new("kill").args(["-ABRT", &pid.to_string()]).status().unwrap().success());
    let status = cli.0.wait().unwrap();
    for p in editor {
        let _ = Command::new("kill").arg(p.to_string()).status();
        assert!(wait_for(5, || !alive(p)));
    }
    assert!(!status.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(cores(&cwd), Vec::<String>::new(), "the CLI left a core dump (its memory: the decrypted secret)");
}

/// The daemon's resident memory in bytes.
fn rss(pid: u32) -> u64 {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap();
    kib * 1024
}

#[test]
fn scratch_files_are_capped_in_total_size_and_number() {
    let Some(m) = Mounted::with(|n| {
        n.put(&repo("r"), &secret("s"), b"x").unwrap();
    }) else {
        return;
    };
    let pid = m.pid();
    let full = polykey::git::MAX_OBJECT_BYTES as u64;
    let fits = MAX_TOTAL_BYTES / full;
    // Full-size scratch files (truncate(2) grows them: the daemon holds the zeros) up to the cap.
    for i in 0..fits {
        let f = fs::File::create(m.p(&format!("repos/r/.big{i}.swp"))).unwrap();
        f.set_len(full).unwrap_or_else(|e| panic!("scratch file {i} within the cap: {e}"));
    }
    let over = fs::File::create(m.p("repos/r/.over.swp")).unwrap();
    let e = over.set_len(full).expect_err("growing past the mount's scratch total must fail");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Writing fails the same way.
    let e = over.write_all_at(&[7u8; 1 << 20], 0).and_then(|()| over.sync_all()).expect_err("writes past the cap must fail");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert!(rss(pid) < MAX_TOTAL_BYTES + (192 << 20), "daemon RSS {} with its scratch files at the cap", rss(pid));
    // Removing one makes room again.
    fs::remove_file(m.p("repos/r/.big0.swp")).unwrap();
    over.set_len(full).unwrap();
    drop(over);
    // The number of scratch files is capped too (empty ones, and links).
    let have = fits as usize; // .big1 … and .over
    for i in have..MAX_FILES {
        fs::File::create(m.p(&format!("repos/r/.n{i}~"))).unwrap_or_else(|e| panic!("scratch file {i} of {MAX_FILES}: {e}"));
    }
    let e = fs::File::create(m.p("repos/r/.one-too-many~")).expect_err("the scratch file count is capped");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    let e = std::os::unix::fs::symlink("x", m.p("repos/r/.#lock")).expect_err("links count as scratch files");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    // Ordinary files are not scratch: they still work, and become secrets.
    fs::write(m.p("repos/r/new"), b"fine").unwrap();
    let mut got = String::new();
    fs::File::open(m.p("repos/r/new")).unwrap().read_to_string(&mut got).unwrap();
    assert_eq!(got, "fine");
    let o = run(m.cli().args(["get", "r/new"]));
    assert_eq!(o.stdout, b"fine", "{}", String::from_utf8_lossy(&o.stderr));
}
