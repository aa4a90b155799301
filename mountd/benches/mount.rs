//! Mount benchmark: every figure beside its baselines, measured in the same run.
//!
//! - read: open+read+close of one secret, repeated, through a Polykey mount, beside the same
//!   loop on tmpfs, on a minimal FUSE filesystem (`examples/hello.rs`) and on gocryptfs;
//!   and each secret read once (cold), per secret;
//! - save: open(O_TRUNC)+write+fsync+close through the mount (committed and durable when fsync
//!   returns), beside a plain write+fsync on the same disk and on gocryptfs; bytes appended to
//!   the node file per save; also for one repository holding every secret;
//! - `polykey mount` time (Argon2 at 8 KiB, so the figure is everything but the KDF);
//! - `polykey get` / `polykey ls` through the daemon (hyperfine when installed);
//! - `ls -R` of the mount and `cp -r` of the same files into an empty mount, beside tmpfs and
//!   gocryptfs; `polykey import` when the CLI has it;
//! - daemon RSS (after mount; peak after reading everything) beside the plaintext size.
//!
//! Prints a summary and, with POLYKEY_BENCH_OUT=FILE, writes every figure as JSON records
//! (`scripts/bench/report.py` turns them into the table and the plot). Asserts nothing.
//!
//! Run: `scripts/bench/all.sh` (everything) or `scripts/bench/mount.sh` (this alone).
//! Sizes: POLYKEY_BENCH_SIZES (default 10,100,1000,10000; POLYKEY_BENCH_FULL=1 adds 100000).
//! Every mount it makes is unmounted on the way out, a panic included.

use polykey::{KdfParams, Name, NameKind, Node, Passphrase};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
/// Above this many secrets, `cp -r` into the mount is skipped (one durable save per file).
const CP_MAX: usize = 10_000;
/// Secrets read once each for the cold-read figure (at most).
const COLD_MAX: usize = 10_000;

fn name(kind: NameKind, s: &str) -> Name {
    Name::new(kind, s.as_bytes()).unwrap()
}

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_polykey-mountd")).with_file_name(name)
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn mounted(mnt: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(mnt) else { return false };
    fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == canon.to_str())
}

fn wait(mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Unmounts on drop (a panic included): `polykey unmount` for Polykey, else fusermount3.
struct MountGuard {
    mnt: PathBuf,
    unmount: Option<Command>,
    child: Option<Child>,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.unmount.take() {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        for _ in 0..50 {
            if !mounted(&self.mnt) {
                break;
            }
            let _ = Command::new("fusermount3").arg("-u").arg(&self.mnt).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(100));
        }
        if mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Removes a folder tree on drop.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The median of timed runs.
#[derive(Clone, Copy)]
struct Stat {
    median: Duration,
}

/// Times `n` runs of `f`, after `n / 10` warm-up runs.
fn sample(n: u32, mut f: impl FnMut()) -> Stat {
    for _ in 0..n / 10 {
        f();
    }
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    Stat { median: v[v.len() / 2] }
}

fn read_once(path: &Path, buf: &mut Vec<u8>) {
    buf.clear();
    fs::File::open(path).unwrap().read_to_end(buf).unwrap();
}

fn read_loop(path: &Path, n: u32) -> Stat {
    let mut buf = Vec::with_capacity(4096);
    sample(n, || read_once(path, &mut buf))
}

fn save_once(path: &Path, i: u32) {
    let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).unwrap();
    f.write_all(format!("value {i:026}").as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// One measured operation of an interleaved loop.
type Op<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// Runs the operations in turn, `n` times each after `n / 10` warm-up rounds, timing each
/// run: so a figure and its baselines see the same machine (this one is shared and its disk
/// latency swings by 10× within seconds).
fn interleaved(n: u32, ops: &mut [Op<'_>]) -> Vec<(&'static str, Stat)> {
    for _ in 0..n / 10 {
        for (_, f) in ops.iter_mut() {
            f();
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(n as usize); ops.len()];
    for _ in 0..n {
        for (k, (_, f)) in ops.iter_mut().enumerate() {
            let t = Instant::now();
            f();
            times[k].push(t.elapsed());
        }
    }
    ops.iter()
        .zip(times)
        .map(|((key, _), mut v)| {
            v.sort();
            (*key, Stat { median: v[v.len() / 2] })
        })
        .collect()
}

/// The read loop of `polykey` beside the same loop on every baseline available.
fn reads<'a>(polykey: &'a Path, base: &'a Baselines, n: u32) -> Vec<(&'static str, Stat)> {
    let mut ops: Vec<Op<'a>> = Vec::new();
    let file = |p: &'a Path| {
        let mut buf = Vec::with_capacity(4096);
        Box::new(move || read_once(p, &mut buf)) as Box<dyn FnMut() + 'a>
    };
    ops.push(("polykey", file(polykey)));
    ops.push(("tmpfs", file(&base.tmpfs_file)));
    if let Some(h) = &base.hello_file {
        ops.push(("hello", file(h)));
    }
    if let Some(g) = &base.gocryptfs_file {
        ops.push(("gocryptfs", file(g)));
    }
    interleaved(n, &mut ops)
}

/// The save loop of `polykey` beside a plain write+fsync on the same disk, an append+fsync of
/// a 4 KiB record (the node's own I/O pattern), and gocryptfs.
fn saves<'a>(polykey: &'a Path, base: &'a Baselines, n: u32) -> Vec<(&'static str, Stat)> {
    let mut ops: Vec<Op<'a>> = Vec::new();
    let file = |p: &'a Path| {
        let mut i = 0u32;
        Box::new(move || {
            i += 1;
            save_once(p, i);
        }) as Box<dyn FnMut() + 'a>
    };
    ops.push(("polykey", file(polykey)));
    ops.push(("disk", file(&base.disk_file)));
    let log = fs::OpenOptions::new().append(true).create(true).open(&base.append_file).unwrap();
    let record = vec![7u8; 4164];
    ops.push((
        "disk_append",
        Box::new(move || {
            (&log).write_all(&record).unwrap();
            log.sync_data().unwrap();
        }),
    ));
    if let Some(g) = &base.gocryptfs_file {
        ops.push(("gocryptfs", file(g)));
    }
    interleaved(n, &mut ops)
}

/// Files of the baselines, each holding a 32-byte value.
struct Baselines {
    tmpfs_file: PathBuf,
    disk_file: PathBuf,
    append_file: PathBuf,
    hello_file: Option<PathBuf>,
    gocryptfs_file: Option<PathBuf>,
}

/// Median bytes appended to `node` by one save through `path` (a save that compacted, which
/// shrinks the file, is left out).
fn bytes_per_save(node: &Path, path: &Path, n: u32) -> u64 {
    let mut v: Vec<u64> = (0..n)
        .filter_map(|i| {
            let before = fs::metadata(node).unwrap().len();
            save_once(path, 1_000_000 + i);
            fs::metadata(node).unwrap().len().checked_sub(before)
        })
        .collect();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

/// Wall time of a shell command line (`sh -c`), which must succeed.
fn timed_sh(script: &str) -> Duration {
    let t = Instant::now();
    let o = Command::new("sh").arg("-c").arg(script).output().unwrap();
    let d = t.elapsed();
    assert!(o.status.success(), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    d
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// The JSON records of the run.
#[derive(Default)]
struct Out(Vec<serde_json::Value>);

impl Out {
    fn rec(&mut self, key: &str, size: usize, value: f64, unit: &str, note: &str) {
        self.0.push(serde_json::json!({"bench": "mount", "key": key, "size": size, "value": value, "unit": unit, "note": note}));
    }
    fn us(&mut self, key: &str, size: usize, d: Duration, note: &str) {
        self.rec(key, size, d.as_secs_f64() * 1e6, "us", note);
    }
    fn ms(&mut self, key: &str, size: usize, d: Duration, note: &str) {
        self.rec(key, size, d.as_secs_f64() * 1e3, "ms", note);
    }
    fn write(&self) {
        if let Some(path) = std::env::var_os("POLYKEY_BENCH_OUT") {
            fs::write(&path, serde_json::to_string_pretty(&self.0).unwrap()).unwrap();
            println!("(records written to {})", PathBuf::from(path).display());
        }
    }
}

struct Env {
    dir: PathBuf,
    pwfile: PathBuf,
}

impl Env {
    fn polykey(&self, node: &Path) -> Command {
        let mut c = Command::new(bin("polykey"));
        c.arg("--node").arg(node).arg("--password-file").arg(&self.pwfile);
        c.env("XDG_RUNTIME_DIR", self.dir.join("run")).env("XDG_STATE_HOME", self.dir.join("state"));
        c
    }

    /// Mounts `node` at a new folder; returns the guard and the time `polykey mount` took.
    fn mount(&self, node: &Path, label: &str) -> (MountGuard, Duration) {
        let mnt = self.dir.join(format!("mnt-{label}"));
        fs::create_dir_all(&mnt).unwrap();
        let t = Instant::now();
        let o = self.polykey(node).arg("mount").arg(&mnt).arg("-q").output().unwrap();
        let d = t.elapsed();
        let mut unmount = self.polykey(node);
        unmount.arg("unmount").arg(&mnt).arg("-q");
        let guard = MountGuard { mnt, unmount: Some(unmount), child: None };
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (guard, d)
    }

    fn daemon_pid(&self, node: &Path) -> u32 {
        let status = self.polykey(node).args(["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        v.as_array().unwrap().iter().find(|m| m["node"].as_str() == node.to_str()).unwrap_or(&v[0])["pid"].as_u64().unwrap() as u32
    }

    /// Median and least wall time of a `polykey` command line: hyperfine (-N, no shell) when installed,
    /// else 30 timed runs.
    fn cli(&self, node: &Path, args: &[&str], label: &str) -> (Duration, Duration, &'static str) {
        let mut words = vec![bin("polykey").display().to_string(), "--node".into(), node.display().to_string()];
        words.extend(args.iter().map(|s| s.to_string()));
        if have("hyperfine") {
            let json = self.dir.join(format!("hf-{label}.json"));
            let o = Command::new("hyperfine")
                .args(["-N", "--warmup", "5", "--runs", "50", "--style", "none", "--export-json"])
                .arg(&json)
                .arg(words.join(" "))
                .env("XDG_RUNTIME_DIR", self.dir.join("run"))
                .env("XDG_STATE_HOME", self.dir.join("state"))
                .output()
                .unwrap();
            assert!(o.status.success(), "hyperfine: {}", String::from_utf8_lossy(&o.stderr));
            let v: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
            let r = &v["results"][0];
            let secs = |k: &str| Duration::from_secs_f64(r[k].as_f64().unwrap());
            return (secs("median"), secs("min"), "hyperfine -N, median of 50");
        }
        let mut runs: Vec<Duration> = (0..30)
            .map(|_| {
                let t = Instant::now();
                let o = self.polykey(node).args(args).output().unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                t.elapsed()
            })
            .collect();
        runs.sort();
        (runs[15], runs[0], "no hyperfine: median of 30 timed runs")
    }
}

/// A node of `n` secrets of 32 bytes, `per_repo` to a repository, one commit per repository.
fn build(node: &Path, n: usize, per_repo: usize) {
    let mut nd = Node::create(node, &Passphrase::new(b"bench".to_vec()), FAST).unwrap();
    let values: Vec<String> = (0..n).map(|i| format!("value {i:026}")).collect();
    for r in 0..n.div_ceil(per_repo) {
        let items: Vec<(Name, &[u8])> = (r * per_repo..(r * per_repo + per_repo).min(n))
            .map(|i| (name(NameKind::Secret, &format!("secret-{i:05}")), values[i].as_bytes()))
            .collect();
        nd.put_many(&name(NameKind::Repo, &format!("repo-{r:05}")), &items).unwrap();
        if r % 1000 == 999 {
            nd.save().unwrap();
        }
    }
    nd.save().unwrap();
}

/// The same secrets as plain files, DIR/<repo>/<secret>, 4 to a repository; returns the
/// bytes of names and values (the plaintext).
fn lay_out(dir: &Path, n: usize) -> u64 {
    let mut bytes = 0;
    for r in 0..n.div_ceil(4) {
        let repo = format!("repo-{r:05}");
        fs::create_dir_all(dir.join(&repo)).unwrap();
        bytes += repo.len() as u64;
        for i in r * 4..(r * 4 + 4).min(n) {
            let (s, v) = (format!("secret-{i:05}"), format!("value {i:026}"));
            fs::write(dir.join(&repo).join(&s), &v).unwrap();
            bytes += (s.len() + v.len()) as u64;
        }
    }
    bytes
}

fn hello(env: &Env) -> Option<MountGuard> {
    let exe = bin("examples/hello");
    if !exe.exists() {
        eprintln!("(no hello example at {}: run scripts/bench/all.sh)", exe.display());
        return None;
    }
    let mnt = env.dir.join("hello");
    fs::create_dir_all(&mnt).unwrap();
    let child = Command::new(exe).arg(&mnt).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let guard = MountGuard { mnt, unmount: None, child: Some(child) };
    wait(|| mounted(&guard.mnt));
    Some(guard)
}

/// gocryptfs, initialised with a password file (scrypt N=2^10 so init and mount are quick;
/// the per-file costs measured do not depend on it).
fn gocryptfs(env: &Env) -> Option<MountGuard> {
    if !have("gocryptfs") {
        return None;
    }
    let cipher = env.dir.join("gocryptfs-cipher");
    let mnt = env.dir.join("gocryptfs");
    fs::create_dir_all(&cipher).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    let ok = |c: &mut Command| c.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok(Command::new("gocryptfs").args(["-init", "-q", "-scryptn", "10", "-passfile"]).arg(&env.pwfile).arg(&cipher)) {
        eprintln!("(gocryptfs -init failed: baseline skipped)");
        return None;
    }
    let guard = MountGuard { mnt: mnt.clone(), unmount: None, child: None };
    if !ok(Command::new("gocryptfs").args(["-q", "-passfile"]).arg(&env.pwfile).arg(&cipher).arg(&mnt)) {
        eprintln!("(gocryptfs mount failed: baseline skipped)");
        return None;
    }
    wait(|| mounted(&mnt));
    Some(guard)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Records an interleaved loop's figures as `{group}.{op}{suffix}` and prints them with the
/// ratio of the first (Polykey's) to each baseline.
fn report(out: &mut Out, group: &str, suffix: &str, n: usize, figures: &[(&'static str, Stat)], what: &str) {
    let first = figures[0].1.median;
    let mut line = format!("{:<46}", format!("{what}{suffix}"));
    for (k, st) in figures {
        out.us(&format!("{group}.{k}{suffix}"), n, st.median, &format!("{what}; median, interleaved with its baselines"));
        if *k == figures[0].0 {
            line += &format!(" {}", us(st.median));
        } else {
            line += &format!("  {:.2}× {k} ({})", first.as_secs_f64() / st.median.as_secs_f64(), us(st.median));
        }
    }
    println!("{line}");
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick || !Path::new("/dev/fuse").exists() {
        println!("mount benchmark: run with `cargo bench` (scripts/bench/all.sh)");
        return;
    }
    let full = std::env::var("POLYKEY_BENCH_FULL").is_ok_and(|v| v == "1");
    let mut sizes: Vec<usize> = std::env::var("POLYKEY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or(vec![10, 100, 1000, 10_000]);
    if full && !sizes.contains(&100_000) {
        sizes.push(100_000);
    }
    let iters: u32 = 2000;
    let saves_n: u32 = 100;
    let mut out = Out::default();

    // On this project's disk (where the node lives), not /tmp, which may be tmpfs.
    let tmp = tempfile::Builder::new().prefix("polykey-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let env = Env { dir: tmp.path().to_owned(), pwfile: tmp.path().join("pw") };
    fs::write(&env.pwfile, "bench\n").unwrap();
    for d in ["run", "state"] {
        fs::create_dir(env.dir.join(d)).unwrap();
        fs::set_permissions(env.dir.join(d), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    }
    let shm = DirGuard(Path::new("/dev/shm").join(format!("polykey-bench-{}", std::process::id())));
    fs::create_dir_all(&shm.0).unwrap();

    // Baselines, mounted for the whole run and measured beside each figure.
    let value = "value 00000000000000000000000000";
    let hello = hello(&env);
    let gocrypt = gocryptfs(&env);
    let base = Baselines {
        tmpfs_file: shm.0.join("one"),
        disk_file: env.dir.join("plain"),
        append_file: env.dir.join("append"),
        hello_file: hello.as_ref().map(|g| g.mnt.join("hello.txt")),
        gocryptfs_file: gocrypt.as_ref().map(|g| g.mnt.join("one")),
    };
    fs::write(&base.tmpfs_file, value).unwrap();
    if let Some(g) = &base.gocryptfs_file {
        fs::write(g, value).unwrap();
    }
    println!("Polykey mount benchmark (medians, each interleaved with its baselines; Argon2 at 8 KiB)");
    println!("minimal FUSE fs: {}", if hello.is_some() { "examples/hello.rs" } else { "not built" });
    println!("gocryptfs:       {}", if gocrypt.is_some() { "mounted" } else { "not installed" });

    let import_cli = Command::new(bin("polykey"))
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim_start().starts_with("import ")));
    out.rec("import.cli_available", 0, f64::from(u8::from(import_cli)), "", "whether `polykey --help` lists import");
    let one_repo_at = sizes.iter().copied().filter(|&n| n <= 10_000).max();

    for &n in &sizes {
        let plain = shm.0.join(format!("plain-{n}"));
        let plaintext = lay_out(&plain, n);
        out.rec("plaintext.bytes", n, plaintext as f64, "B", "names and values of the secrets");
        let node = env.dir.join(format!("n{n}.node"));
        build(&node, n, 4);
        let node_len = fs::metadata(&node).unwrap().len();
        out.rec("node.bytes", n, node_len as f64, "B", "node file, one commit per repository");
        println!("--- {n} secrets ({} KiB node, {plaintext} B plaintext)", node_len / 1024);

        let (mnt, mount_time) = env.mount(&node, &n.to_string());
        out.ms("mount.polykey", n, mount_time, "polykey mount → ready, Argon2 at 8 KiB");
        println!("{:<46} {}", "polykey mount → ready (KDF excluded)", ms(mount_time));
        let pid = env.daemon_pid(&node);
        let rss_mounted = proc_status(pid, "VmRSS:");
        out.rec("rss.mounted", n, rss_mounted as f64, "KiB", "daemon VmRSS after mount");
        out.rec("rss.peak_mount", n, proc_status(pid, "VmHWM:") as f64, "KiB", "daemon VmHWM right after mount (opening the node)");

        let secret = mnt.mnt.join("repos/repo-00000/secret-00000");
        report(&mut out, "read", "", n, &reads(&secret, &base, iters), "open+read+close, repeated");
        let path = mnt.mnt.join(format!("repos/repo-{:05}/secret-{:05}", (n - 1) / 4, n - 1));
        report(&mut out, "save", "", n, &saves(&path, &base, saves_n), "save: O_TRUNC+write+fsync+close");
        let bytes = bytes_per_save(&node, &path, 21);
        out.rec("save.bytes", n, bytes as f64, "B", "bytes appended to the node per save; median of 21");
        println!("{:<46} {bytes} B", "bytes appended to the node per save");

        let (get, get_min, how) = env.cli(&node, &["get", "repo-00000/secret-00000"], &format!("get-{n}"));
        out.ms("cli.get", n, get, how);
        out.ms("cli.get_min", n, get_min, "polykey get, least of the runs");
        let (ls, ls_min, how) = env.cli(&node, &["ls"], &format!("ls-{n}"));
        out.ms("cli.ls", n, ls, &format!("{how}; lists all {} repositories", n.div_ceil(4)));
        out.ms("cli.ls_min", n, ls_min, "polykey ls, least of the runs");
        let (ls_repo, _, how) = env.cli(&node, &["ls", "repo-00000"], &format!("lsrepo-{n}"));
        out.ms("cli.ls_repo", n, ls_repo, how);
        println!("{:<46} {} / {} / {}", "polykey get / ls / ls REPO (through daemon)", ms(get), ms(ls), ms(ls_repo));

        // ls -R: the mount beside tmpfs (the same tree) and gocryptfs (filled by cp -r below).
        let ls_r = timed_sh(&format!("ls -R {} > /dev/null", q(&mnt.mnt.join("repos"))));
        out.ms("lsR.polykey", n, ls_r, "ls -R of repos/, first time after mount");
        let ls_r2 = timed_sh(&format!("ls -R {} > /dev/null", q(&mnt.mnt.join("repos"))));
        out.ms("lsR.polykey_again", n, ls_r2, "ls -R of repos/, second time");
        let ls_r_tmpfs = timed_sh(&format!("ls -R {} > /dev/null", q(&plain)));
        out.ms("lsR.tmpfs", n, ls_r_tmpfs, "ls -R of the same tree on tmpfs");
        println!("{:<46} {} (again {}) / {}", "ls -R mount / tmpfs", ms(ls_r), ms(ls_r2), ms(ls_r_tmpfs));

        // Every secret read once (cold: first lookup of each), per secret.
        let cold_n = n.min(COLD_MAX);
        let t = Instant::now();
        for i in 0..cold_n {
            let _ = fs::read(mnt.mnt.join(format!("repos/repo-{:05}/secret-{i:05}", i / 4))).unwrap();
        }
        let cold = t.elapsed() / cold_n as u32;
        out.us("read.cold", n, cold, &format!("each of {cold_n} secrets read once, mean per secret"));
        let rss_peak = proc_status(pid, "VmHWM:");
        out.rec("rss.peak", n, rss_peak as f64, "KiB", "daemon VmHWM after the saves and reading every secret");
        println!("{:<46} {}", "each secret read once (cold), per secret", us(cold));
        println!("{:<46} {rss_mounted} KiB / {rss_peak} KiB", "daemon RSS after mount / peak");
        drop(mnt);

        // One repository holding every secret: git's tree object grows with it.
        if Some(n) == one_repo_at {
            let node1 = env.dir.join(format!("n{n}-one.node"));
            build(&node1, n, n);
            let (m1, _) = env.mount(&node1, &format!("{n}-one"));
            let p = m1.mnt.join(format!("repos/repo-00000/secret-{:05}", n - 1));
            report(&mut out, "save", "_onerepo", n, &saves(&p, &base, 50), "save: O_TRUNC+write+fsync+close");
            let b1 = bytes_per_save(&node1, &p, 11);
            out.rec("save.bytes_onerepo", n, b1 as f64, "B", "bytes appended per save, one repository; median of 11");
            println!("{:<46} {b1} B", "bytes per save_onerepo");
            let r1 = read_loop(&m1.mnt.join("repos/repo-00000/secret-00000"), iters);
            out.us("read.polykey_onerepo", n, r1.median, "as read.polykey, one repository; median");
            drop(m1);
            let _ = fs::remove_file(&node1);
        }

        // The same node on tmpfs: what a save costs besides the disk (FUSE round trips, hashing,
        // compression, encryption), beside a write+fsync on tmpfs.
        if Some(n) == one_repo_at {
            let node_shm = shm.0.join(format!("n{n}.node"));
            build(&node_shm, n, 4);
            let (m2, _) = env.mount(&node_shm, &format!("{n}-shm"));
            let p = m2.mnt.join(format!("repos/repo-{:05}/secret-{:05}", (n - 1) / 4, n - 1));
            let mut i = 0u32;
            let mut j = 0u32;
            let figures = interleaved(
                saves_n,
                &mut [
                    (
                        "polykey",
                        Box::new(|| {
                            i += 1;
                            save_once(&p, i);
                        }),
                    ),
                    (
                        "tmpfs",
                        Box::new(|| {
                            j += 1;
                            save_once(&base.tmpfs_file, j);
                        }),
                    ),
                ],
            );
            report(&mut out, "save", "_nodeontmpfs", n, &figures, "save, node file on tmpfs");
            drop(m2);
            let _ = fs::remove_file(&node_shm);
        }

        // cp -r of the same files into an empty mount, and the time until all are committed.
        if n <= CP_MAX {
            let empty = env.dir.join(format!("e{n}.node"));
            drop(Node::create(&empty, &Passphrase::new(b"bench".to_vec()), FAST).unwrap());
            let (m, _) = env.mount(&empty, &format!("{n}-cp"));
            let cp = timed_sh(&format!("cp -r {}/. {}", q(&plain), q(&m.mnt.join("repos"))));
            out.ms("cp.polykey", n, cp, "cp -r into repos/ of an empty mount: the cp alone");
            let t = Instant::now();
            let o = env.polykey(&empty).args(["ls", "-q"]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let committed = cp + t.elapsed();
            out.ms("cp.polykey_committed", n, committed, "cp -r, then until every file is a saved secret (polykey ls)");
            drop(m);
            let _ = fs::remove_file(&empty);
            let dst = shm.0.join(format!("cp-{n}"));
            let cp_tmpfs = timed_sh(&format!("cp -r {} {}", q(&plain), q(&dst)));
            out.ms("cp.tmpfs", n, cp_tmpfs, "cp -r of the same tree to tmpfs");
            let _ = fs::remove_dir_all(&dst);
            print!("{:<46} {} (all saved: {}) / {}", "cp -r into mount / tmpfs", ms(cp), ms(committed), ms(cp_tmpfs));
            if let Some(g) = &gocrypt {
                let dst = g.mnt.join(format!("cp-{n}"));
                let cp_g = timed_sh(&format!("cp -r {} {}", q(&plain), q(&dst)));
                out.ms("cp.gocryptfs", n, cp_g, "cp -r of the same tree into gocryptfs (not synced)");
                let ls_g = timed_sh(&format!("ls -R {} > /dev/null", q(&dst)));
                out.ms("lsR.gocryptfs", n, ls_g, "ls -R of the same tree on gocryptfs");
                let _ = fs::remove_dir_all(&dst);
                print!(" / gocryptfs {} (ls -R {})", ms(cp_g), ms(ls_g));
            }
            println!();
        }

        // Bulk import through the CLI, when it has the command.
        if import_cli {
            let imp = env.dir.join(format!("i{n}.node"));
            let init = env.polykey(&imp).args(["--kdf-memory-kib", "8", "--kdf-time", "1", "-q", "init"]).output().unwrap();
            let t = Instant::now();
            let o = env.polykey(&imp).arg("-q").arg("import").arg(&plain).output().unwrap();
            let d = t.elapsed();
            if init.status.success() && o.status.success() {
                out.ms("import.cli", n, d, "polykey import DIR (DIR/<repo>/<secret>), Argon2 at 8 KiB");
                println!("{:<46} {}", "polykey import DIR", ms(d));
            } else {
                let why = String::from_utf8_lossy(if init.status.success() { &o.stderr } else { &init.stderr }).trim().to_owned();
                println!("polykey import failed at {n}: {why}");
                out.rec("import.cli_failed", n, 0.0, "", &why);
            }
            let _ = fs::remove_file(&imp);
            // The same as a tar on standard input.
            let imp = env.dir.join(format!("t{n}.node"));
            let init = env.polykey(&imp).args(["--kdf-memory-kib", "8", "--kdf-time", "1", "-q", "init"]).output().unwrap();
            let mut cmd = env.polykey(&imp);
            cmd.args(["-q", "import", "-"]);
            let script = format!(
                "tar -C {} -cf - . | {}",
                q(&plain),
                std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| q(Path::new(a))).collect::<Vec<_>>().join(" ")
            );
            let t = Instant::now();
            let o = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .env("XDG_RUNTIME_DIR", env.dir.join("run"))
                .env("XDG_STATE_HOME", env.dir.join("state"))
                .output()
                .unwrap();
            let d = t.elapsed();
            if init.status.success() && o.status.success() {
                out.ms("import.cli_tar", n, d, "tar -c DIR | polykey import -, Argon2 at 8 KiB");
                println!("{:<46} {}", "tar | polykey import -", ms(d));
            } else {
                println!("polykey import - failed at {n}: {}", String::from_utf8_lossy(&o.stderr).trim());
            }
            let _ = fs::remove_file(&imp);
        }
        let _ = fs::remove_dir_all(&plain);
        let _ = fs::remove_file(&node);
    }
    drop(hello);
    drop(gocrypt);
    out.write();
}
