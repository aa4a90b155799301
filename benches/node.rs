//! Node benchmarks: open time, bytes written and latency of a one-secret save, and `polykey get`
//! wall time, for nodes of several sizes. Prints a table; asserts nothing.
//!
//! Run: `cargo bench --bench node` (sizes: `POLYKEY_BENCH_SIZES=10,1000,10000`).
//! Nodes are built with one bulk commit per repository: small repositories (4 secrets each, as
//! users are advised), plus one case with every secret in a single repository, where git's
//! tree object grows with the repository (each save writes a new tree).

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

struct Row {
    case: String,
    file_kib: u64,
    open: Duration,
    save: Duration,
    save_bytes: u64,
}

fn measure(case: String, n: usize, per_repo: usize) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.node");
    let pass = Passphrase::new(b"bench".to_vec());
    build(&path, &pass, FAST, n, per_repo);
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
    Row { case, file_kib, open, save: median(times), save_bytes: bytes[bytes.len() / 2] }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing useful: run quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("POLYKEY_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![10] } else { vec![10, 1000, 10_000] });

    println!("Polykey node benchmark (release build; medians; Argon2 cost excluded from open)");
    println!("{:<34} {:>9} {:>10} {:>12} {:>12}", "case", "file", "open", "save", "bytes/save");
    let mut rows = Vec::new();
    for &n in &sizes {
        rows.push(measure(format!("{n} secrets, {SECRETS_PER_REPO} per repository"), n, SECRETS_PER_REPO));
    }
    if let Some(&n) = sizes.iter().max() {
        rows.push(measure(format!("{n} secrets, one repository"), n, n));
    }
    for r in &rows {
        println!("{:<34} {:>6} KiB {:>10} {:>12} {:>10} B", r.case, r.file_kib, fmt(r.open), fmt(r.save), r.save_bytes);
    }

    // The passphrase KDF at the default cost, which every open pays once.
    let t = Instant::now();
    KdfParams::default().derive(&Passphrase::new(b"bench".to_vec()), &[7; 16]);
    println!("Argon2id at the default cost (64 MiB, t=3, p=1): {}", fmt(t.elapsed()));

    // `polykey get` wall time: the whole process, KDF included, on the largest node.
    if quick {
        return;
    }
    let n = *sizes.iter().max().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("get.node");
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, b"bench\n").unwrap();
    for (label, params) in [("default Argon2 cost", KdfParams::default()), ("cheap Argon2 cost (8 KiB, t=1)", FAST)] {
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
                    .args(["get", "repo-00000/secret-00000"])
                    .output()
                    .unwrap();
                assert!(o.status.success());
                t.elapsed()
            })
            .collect();
        println!("polykey get, {n} secrets, {label}: {}", fmt(median(runs)));
    }
}
