//! Mount benchmark: open+read+close through a Polykey mount beside the same loop on tmpfs and
//! on a minimal FUSE filesystem (`examples/hello.rs`), save latency (write+fsync) beside a plain
//! write+fsync on the same disk, mount time, `polykey get` through the daemon, and daemon RSS,
//! for nodes of several sizes. Prints figures and ratios measured in one run; asserts nothing.
//!
//! Run: `scripts/bench/mount.sh` (builds release binaries and the hello example first).

use polykey::{KdfParams, Name, NameKind, Node, Passphrase};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };

fn name(kind: NameKind, s: &str) -> Name {
    Name::new(kind, s.as_bytes()).unwrap()
}

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_polykey-mountd")).with_file_name(name)
}

fn mounted(mnt: &Path) -> bool {
    let canon = fs::canonicalize(mnt).unwrap();
    fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == canon.to_str())
}

fn wait(mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mean time of `f` over `n` runs, after `n / 10` warm-up runs.
fn mean(n: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn read_loop(path: &Path, n: u32) -> Duration {
    let mut buf = Vec::with_capacity(4096);
    mean(n, || {
        buf.clear();
        fs::File::open(path).unwrap().read_to_end(&mut buf).unwrap();
    })
}

fn save_loop(path: &Path, n: u32) -> Duration {
    let mut i = 0u32;
    mean(n, || {
        i += 1;
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(path).unwrap();
        f.write_all(format!("value {i:026}").as_bytes()).unwrap();
        f.sync_all().unwrap();
    })
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok()).unwrap_or(0)
}

struct Env {
    dir: tempfile::TempDir,
    pwfile: PathBuf,
}

impl Env {
    fn polykey(&self, node: &Path) -> Command {
        let mut c = Command::new(bin("polykey"));
        c.arg("--node").arg(node).arg("--password-file").arg(&self.pwfile).env("XDG_RUNTIME_DIR", self.dir.path().join("run"));
        c
    }
}

fn build(node: &Path, n: usize) {
    let mut nd = Node::create(node, &Passphrase::new(b"bench".to_vec()), FAST).unwrap();
    let values: Vec<String> = (0..n).map(|i| format!("value {i:026}")).collect();
    for r in 0..n.div_ceil(4) {
        let items: Vec<(Name, &[u8])> =
            (r * 4..(r * 4 + 4).min(n)).map(|i| (name(NameKind::Secret, &format!("secret-{i:05}")), values[i].as_bytes())).collect();
        nd.put_many(&name(NameKind::Repo, &format!("repo-{r:05}")), &items).unwrap();
    }
    nd.save().unwrap();
}

fn hello(env: &Env) -> Option<(Child, PathBuf)> {
    let exe = bin("examples/hello");
    if !exe.exists() {
        eprintln!("(no hello example at {}: run scripts/bench/mount.sh)", exe.display());
        return None;
    }
    let mnt = env.dir.path().join("hello");
    fs::create_dir_all(&mnt).unwrap();
    let child = Command::new(exe).arg(&mnt).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait(|| mounted(&mnt));
    Some((child, mnt))
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick || !Path::new("/dev/fuse").exists() {
        println!("mount benchmark: run with `cargo bench` (scripts/bench/mount.sh)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("POLYKEY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or(vec![1000, 10_000]);
    let iters: u32 = 2000;
    // On this project's disk (where the node lives), not /tmp, which may be tmpfs.
    let env = Env { dir: tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(), pwfile: PathBuf::new() };
    let env = Env { pwfile: env.dir.path().join("pw"), ..env };
    fs::write(&env.pwfile, "bench\n").unwrap();
    fs::create_dir(env.dir.path().join("run")).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(&mut fs::metadata(env.dir.path().join("run")).unwrap().permissions(), 0o700);
    fs::set_permissions(env.dir.path().join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();

    // Baselines.
    let shm = Path::new("/dev/shm").join(format!("polykey-bench-{}", std::process::id()));
    fs::write(&shm, "value 00000000000000000000000000").unwrap();
    let tmpfs_read = read_loop(&shm, iters);
    let _ = fs::remove_file(&shm);
    let disk_file = env.dir.path().join("plain");
    let disk_save = save_loop(&disk_file, 200);
    let hello_read = hello(&env).map(|(mut child, mnt)| {
        let d = read_loop(&mnt.join("hello.txt"), iters);
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
        let _ = child.wait();
        d
    });
    println!("Polykey mount benchmark ({iters} iterations; means; Argon2 at 8 KiB so mount time is the rest)");
    println!("baseline  tmpfs open+read+close             {}", us(tmpfs_read));
    if let Some(h) = hello_read {
        println!("baseline  minimal FUSE fs open+read+close   {}", us(h));
    }
    println!("baseline  disk write+fsync (small file)     {}", us(disk_save));

    for n in sizes {
        let node = env.dir.path().join(format!("n{n}.node"));
        build(&node, n);
        let mnt = env.dir.path().join(format!("m{n}"));
        fs::create_dir_all(&mnt).unwrap();
        let t = Instant::now();
        let o = env.polykey(&node).arg("mount").arg(&mnt).arg("-q").output().unwrap();
        let mount_time = t.elapsed();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let status = env.polykey(&node).args(["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let pid = v[0]["pid"].as_u64().unwrap() as u32;
        let rss_mounted = rss_kib(pid);

        let secret = mnt.join("repos/repo-00000/secret-00000");
        let read = read_loop(&secret, iters);
        let len0 = fs::metadata(&node).unwrap().len();
        let saves = 100;
        let save = save_loop(&mnt.join("repos/repo-00001/secret-00004"), saves);
        let bytes_per_save = (fs::metadata(&node).unwrap().len() - len0) / u64::from(saves + saves / 10);
        let get = mean(20, || {
            let o = env.polykey(&node).args(["get", "repo-00000/secret-00000"]).output().unwrap();
            assert!(o.status.success());
        });
        let t = Instant::now();
        let mut files = 0;
        for repo in fs::read_dir(mnt.join("repos")).unwrap() {
            for f in fs::read_dir(repo.unwrap().path()).unwrap() {
                let _ = fs::read(f.unwrap().path()).unwrap();
                files += 1;
            }
        }
        let read_all = t.elapsed();
        let rss_read = rss_kib(pid);
        let o = env.polykey(&node).arg("unmount").arg(&mnt).arg("-q").output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        println!("--- {n} secrets ({} KiB node)", len0 / 1024);
        println!("mount time (polykey mount → ready)          {:.1} ms", mount_time.as_secs_f64() * 1e3);
        print!("open+read+close through the mount           {}  = {:.1}× tmpfs", us(read), read.as_secs_f64() / tmpfs_read.as_secs_f64());
        match hello_read {
            Some(h) => println!(", {:.1}× minimal FUSE", read.as_secs_f64() / h.as_secs_f64()),
            None => println!(),
        }
        println!(
            "save (open O_TRUNC+write+fsync+close)       {}  = {:.1}× disk write+fsync; {bytes_per_save} B written per save",
            us(save),
            save.as_secs_f64() / disk_save.as_secs_f64()
        );
        println!("polykey get (through the daemon)            {:.2} ms", get.as_secs_f64() * 1e3);
        println!("read all {files} secrets through the mount       {:.1} ms", read_all.as_secs_f64() * 1e3);
        println!("daemon RSS: {} KiB after mount, {} KiB after reading everything", rss_mounted, rss_read);
    }
}
