//! Node benchmarks: bulk import through the library (`Node::put_many`), open time, bytes written
//! and latency of a one-secret save, and `polykey get` wall time on an unmounted node, for nodes
//! of several sizes. Prints a table and, with POLYKEY_BENCH_OUT=FILE, writes every figure as
//! JSON records (`scripts/bench/report.py` reads them). Asserts nothing.
//!
//! Run: `scripts/bench/all.sh` (everything) or `cargo bench --bench node`. Sizes:
//! POLYKEY_BENCH_SIZES (default 10,100,1000,10000; POLYKEY_BENCH_FULL=1 adds 100000).
//!
//! Open alone, for profilers and peak-memory figures: `POLYKEY_BENCH_OPEN=FILE` builds a node
//! of the first size in FILE if it is absent (and stops: the build's memory would count;
//! POLYKEY_BENCH_COMPACT=1 compacts it into one checkpoint), else opens it POLYKEY_BENCH_RUNS
//! times (default 1) and prints each time and the process's peak RSS (VmHWM). For example
//! `POLYKEY_BENCH_SIZES=10000 POLYKEY_BENCH_OPEN=n.node valgrind --tool=callgrind
//! --toggle-collect='*Node::open_storage*' target/release/deps/node-HASH`.

use polykey::{Access, KdfParams, Name, NameKind, Node, Passphrase};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
const SECRETS_PER_REPO: usize = 4;
const SAVES: usize = 30;

fn name(kind: NameKind, s: &str) -> Name {
    Name::new(kind, s.as_bytes()).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// Builds a node of `n` secrets of 40 bytes, `per_repo` to a repository, and compacts it.
fn build(path: &Path, pass: &Passphrase, params: KdfParams, n: usize, per_repo: usize) {
    let mut node = Node::create(path, pass, params).unwrap();
    let values: Vec<String> = (0..n).map(|i| format!("value {i:032}")).collect();
    for (r, chunk) in (0..n).collect::<Vec<_>>().chunks(per_repo).enumerate() {
        let repo = name(NameKind::Repo, &format!("repo-{r:05}"));
        let items: Vec<(Name, &[u8])> =
            chunk.iter().map(|&i| (name(NameKind::Secret, &format!("secret-{i:05}")), values[i].as_bytes())).collect();
        node.put_many(&repo, &items).unwrap();
        if r % 250 == 249 {
            node.save().unwrap();
        }
    }
    node.save().unwrap();
}

/// Builds a node of `n` secrets at `path` if there is none; otherwise opens it and reports.
fn open_only(path: &Path, n: usize) {
    let pass = Passphrase::new(b"bench".to_vec());
    if !path.exists() {
        build(path, &pass, FAST, n, SECRETS_PER_REPO);
        if std::env::var("POLYKEY_BENCH_COMPACT").is_ok_and(|v| v == "1") {
            Node::open(path, &pass, Access::Write).unwrap().compact().unwrap();
        }
        println!("built {} ({n} secrets, {} KiB)", path.display(), std::fs::metadata(path).unwrap().len() / 1024);
        return;
    }
    let runs: usize = std::env::var("POLYKEY_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    for _ in 0..runs {
        let t = Instant::now();
        let node = Node::open(path, &pass, Access::Read).unwrap();
        let took = t.elapsed();
        println!("open: {} ({} repositories)", fmt(took), node.repos().len());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines().filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS")) {
        println!("{line}");
    }
}

struct Row {
    case: String,
    n: usize,
    one_repo: bool,
    file_kib: u64,
    import: Duration,
    open: Duration,
    save: Duration,
    save_bytes: u64,
}

fn measure(case: String, n: usize, per_repo: usize) -> Row {
    // On this project's disk, not /tmp, which may be tmpfs.
    let dir = tempfile::Builder::new().prefix("polykey-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("bench.node");
    let pass = Passphrase::new(b"bench".to_vec());
    let t = Instant::now();
    build(&path, &pass, FAST, n, per_repo);
    let import = t.elapsed();
    let file_kib = std::fs::metadata(&path).unwrap().len() / 1024;
    let open = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                drop(Node::open(&path, &pass, Access::Read).unwrap());
                t.elapsed()
            })
            .collect(),
    );
    let mut node = Node::open(&path, &pass, Access::Write).unwrap();
    let mut times = Vec::new();
    let mut bytes = Vec::new();
    for k in 0..SAVES {
        let i = (k * 7919) % n;
        let repo = name(NameKind::Repo, &format!("repo-{:05}", i / per_repo));
        let secret = name(NameKind::Secret, &format!("secret-{i:05}"));
        let t = Instant::now();
        node.put(&repo, &secret, format!("changed {k:032}").as_bytes()).unwrap();
        let stats = node.save().unwrap();
        times.push(t.elapsed());
        bytes.push(stats.bytes_written);
    }
    bytes.sort();
    Row { case, n, one_repo: per_repo == n, file_kib, import, open, save: median(times), save_bytes: bytes[bytes.len() / 2] }
}

/// The JSON records of the run.
#[derive(Default)]
struct Out(Vec<serde_json::Value>);

impl Out {
    fn rec(&mut self, key: &str, size: usize, value: f64, unit: &str, note: &str) {
        self.0.push(serde_json::json!({"bench": "node", "key": key, "size": size, "value": value, "unit": unit, "note": note}));
    }
    fn write(&self) {
        if let Some(path) = std::env::var_os("POLYKEY_BENCH_OUT") {
            std::fs::write(&path, serde_json::to_string_pretty(&self.0).unwrap()).unwrap();
            println!("(records written to {})", std::path::PathBuf::from(path).display());
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let full = std::env::var("POLYKEY_BENCH_FULL").is_ok_and(|v| v == "1");
    let mut sizes: Vec<usize> = std::env::var("POLYKEY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![10] } else { vec![10, 100, 1000, 10_000] });
    if full && !quick && !sizes.contains(&100_000) {
        sizes.push(100_000);
    }
    if let Some(path) = std::env::var_os("POLYKEY_BENCH_OPEN") {
        open_only(Path::new(&path), sizes[0]);
        return;
    }
    let mut out = Out::default();

    println!("Polykey node benchmark (release build; medians; Argon2 cost excluded from import and open)");
    println!("{:<34} {:>9} {:>10} {:>10} {:>12} {:>12}", "case", "file", "import", "open", "save", "bytes/save");
    let mut rows = Vec::new();
    for &n in &sizes {
        rows.push(measure(format!("{n} secrets, {SECRETS_PER_REPO} per repository"), n, SECRETS_PER_REPO));
    }
    // One repository holding every secret, at 10,000 (or the largest size below it).
    if let Some(n) = sizes.iter().copied().filter(|&n| n <= 10_000).max() {
        rows.push(measure(format!("{n} secrets, one repository"), n, n));
    }
    for r in &rows {
        println!(
            "{:<34} {:>6} KiB {:>10} {:>10} {:>12} {:>10} B",
            r.case,
            r.file_kib,
            fmt(r.import),
            fmt(r.open),
            fmt(r.save),
            r.save_bytes
        );
        let sfx = if r.one_repo { "_onerepo" } else { "" };
        out.rec(
            &format!("import.put_many{sfx}"),
            r.n,
            r.import.as_secs_f64() * 1e3,
            "ms",
            "Node::put_many per repository + save, Argon2 at 8 KiB",
        );
        out.rec(
            &format!("open.node{sfx}"),
            r.n,
            r.open.as_secs_f64() * 1e3,
            "ms",
            "Node::open (read, decrypt, replay), Argon2 at 8 KiB; median of 5",
        );
        out.rec(&format!("save.lib{sfx}"), r.n, r.save.as_secs_f64() * 1e6, "us", "Node::put + Node::save of one secret; median of 30");
        out.rec(&format!("save.lib_bytes{sfx}"), r.n, r.save_bytes as f64, "B", "bytes appended per save; median of 30");
        out.rec(&format!("node.file{sfx}"), r.n, (r.file_kib * 1024) as f64, "B", "node file after import");
    }

    // The passphrase KDF at the default cost, which every open pays once.
    let t = Instant::now();
    KdfParams::default().derive(&Passphrase::new(b"bench".to_vec()), &[7; 16]);
    let kdf = t.elapsed();
    println!("Argon2id at the default cost (64 MiB, t=3, p=1): {}", fmt(kdf));
    out.rec("argon2.default", 0, kdf.as_secs_f64() * 1e3, "ms", "Argon2id 64 MiB, t=3, p=1: what every unlock pays");

    // `polykey get` wall time, not mounted: the whole process, KDF included, on the largest node.
    if quick {
        return;
    }
    let n = *sizes.iter().max().unwrap();
    let dir = tempfile::Builder::new().prefix("polykey-bench-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("get.node");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, b"bench\n").unwrap();
    for (key, label, params) in [
        ("cli.get_unmounted", "default Argon2 cost", KdfParams::default()),
        ("cli.get_unmounted_cheapkdf", "cheap Argon2 cost (8 KiB, t=1)", FAST),
    ] {
        let _ = std::fs::remove_file(&path);
        build(&path, &Passphrase::new(b"bench".to_vec()), params, n, SECRETS_PER_REPO);
        let runs: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let o = Command::new(env!("CARGO_BIN_EXE_polykey"))
                    .arg("--node")
                    .arg(&path)
                    .arg("--password-file")
                    .arg(&pwfile)
                    .env("XDG_STATE_HOME", dir.path())
                    .env("XDG_RUNTIME_DIR", dir.path())
                    .args(["get", "repo-00000/secret-00000"])
                    .output()
                    .unwrap();
                assert!(o.status.success());
                t.elapsed()
            })
            .collect();
        let m = median(runs);
        println!("polykey get, not mounted, {n} secrets, {label}: {}", fmt(m));
        out.rec(key, n, m.as_secs_f64() * 1e3, "ms", &format!("polykey get on an unmounted node, {label}; median of 5"));
    }
    out.write();
}
