//! Growth benchmark: one repository of N secrets made two ways, by `polykey import` (one
//! `Node::put_many`, one save) and one secret at a time (`Node::put` + `Node::save` per secret,
//! what creating files one by one through the mount does), with for each: the node file's
//! size, the process's peak RSS (each scenario runs in a child process of its own, VmHWM), the
//! bytes a later one-secret save writes (100 saves after the N: 50 updates, 50 new secrets),
//! and, on the resulting nodes, `Node::open` time and peak RSS and `polykey get`/`polykey ls`
//! wall time (the CLI opens the node itself: nothing is mounted). Then one open secret saved
//! again and again (2,000 × 100 KiB, each save replacing the last one's commit, as a file kept
//! open through the mount does with `Node::put_amending`): node size and peak RSS. Asserts
//! nothing.
//!
//! Run: `cargo bench --bench growth` (or `scripts/bench/growth.sh`, which also builds the CLI).
//! Sizes: POLYKEY_GROWTH_SIZES (default 1000,10000). The CLI is `target/release/polykey`
//! (POLYKEY_BIN overrides). Uses only `Node` calls that Polykey 0.1.0 had, so the same file
//! measures the code before a change (docs/PERFORMANCE.md, "Storage growth").

use polykey::{Access, KdfParams, Name, NameKind, Node, Passphrase};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
const LATER_SAVES: usize = 100;
const PASSWORD: &[u8] = b"growth bench";

fn name(kind: NameKind, s: &str) -> Name {
    Name::new(kind, s.as_bytes()).unwrap()
}

fn secret(i: usize) -> (String, Vec<u8>) {
    (format!("secret-{i:05}"), format!("value {i:026}").into_bytes())
}

/// The process's peak resident set (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn pass() -> Passphrase {
    Passphrase::new(PASSWORD.to_vec())
}

/// One scenario, in this (child) process; prints `key=value` lines.
fn scenario(what: &str, n: usize, path: &Path) {
    let repo = name(NameKind::Repo, "big");
    let start = Instant::now();
    match what {
        "import" => {
            let mut node = Node::create(path, &pass(), FAST).unwrap();
            let items: Vec<(String, Vec<u8>)> = (0..n).map(secret).collect();
            let refs: Vec<(Name, &[u8])> = items.iter().map(|(s, v)| (name(NameKind::Secret, s), v.as_slice())).collect();
            node.put_many(&repo, &refs).unwrap();
            node.save().unwrap();
            println!("node_bytes={}", node.file_len());
        }
        "oneby" => {
            let mut node = Node::create(path, &pass(), FAST).unwrap();
            let mut last_bytes = 0u64;
            for i in 0..n {
                let (s, v) = secret(i);
                node.put(&repo, &name(NameKind::Secret, &s), &v).unwrap();
                let w = node.save().unwrap().bytes_written;
                if i + 1000 >= n {
                    last_bytes += w;
                }
            }
            println!("node_bytes={}", node.file_len());
            println!("create_bytes_per_save={}", last_bytes / n.min(1000) as u64);
            println!("create_seconds={:.3}", start.elapsed().as_secs_f64());
            let mut later = Vec::new();
            for k in 0..LATER_SAVES {
                let (s, v) = if k % 2 == 0 { (secret(k * 7 % n).0, b"updated".to_vec()) } else { secret(n + k) };
                node.put(&repo, &name(NameKind::Secret, &s), &v).unwrap();
                later.push(node.save().unwrap().bytes_written);
            }
            println!("later_save_max_bytes={}", later.iter().max().unwrap());
            println!("later_save_mean_bytes={}", later.iter().sum::<u64>() / later.len() as u64);
        }
        "amend" => {
            let mut node = Node::create(path, &pass(), FAST).unwrap();
            let s = name(NameKind::Secret, "open");
            let mut last = None;
            let mut value = vec![0u8; 100 << 10];
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..n {
                // Bytes that do not compress, new at every save (a secret file being edited).
                for b in value.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                last = node.put_amending(&repo, &s, &value, last).unwrap();
                node.save().unwrap();
            }
            println!("node_bytes={}", node.file_len());
        }
        "open" => {
            let mut times = Vec::new();
            for _ in 0..3 {
                let t = Instant::now();
                let node = Node::open(path, &pass(), Access::Read).unwrap();
                let names = node.secrets(&repo).unwrap();
                node.get(&repo, &names[0]).unwrap();
                times.push(t.elapsed());
            }
            times.sort();
            println!("open_ms={:.2}", times[1].as_secs_f64() * 1e3);
        }
        _ => panic!("unknown scenario {what}"),
    }
    println!("peak_rss={}", peak_rss());
}

/// Runs a scenario in a child process and returns its `key=value` lines.
fn child(what: &str, n: usize, path: &Path) -> std::collections::BTreeMap<String, String> {
    let out = Command::new(std::env::current_exe().unwrap()).args(["--scenario", what, &n.to_string()]).arg(path).output().unwrap();
    assert!(out.status.success(), "{what} {n}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Median wall time of `polykey ARGS` over 7 runs, on the node at `path`.
fn cli_ms(bin: &Path, path: &Path, password: &Path, args: &[&str]) -> Option<f64> {
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let out = Command::new(bin).arg("--node").arg(path).arg("--password-file").arg(password).args(args).output().ok()?;
        if !out.status.success() {
            eprintln!("polykey {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        times.push(t.elapsed());
    }
    times.sort();
    Some(times[3].as_secs_f64() * 1e3)
}

fn mib(bytes: &str) -> String {
    bytes.parse::<f64>().map_or("?".into(), |b| format!("{:.1} MiB", b / 1048576.0))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--scenario") {
        return scenario(&args[at + 1], args[at + 2].parse().unwrap(), Path::new(&args[at + 3]));
    }
    let sizes: Vec<usize> = std::env::var("POLYKEY_GROWTH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("POLYKEY_GROWTH_SIZES: numbers"))
        .collect();
    let bin = std::env::var_os("POLYKEY_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(Path::parent).unwrap().join("polykey")
    });
    let dir = tempfile::Builder::new().prefix("polykey-growth-").tempdir_in("target").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let password = dir.path().join("password");
    std::fs::write(&password, PASSWORD).unwrap();
    println!("| secrets | way | node | node / imported | peak RSS | bound 2×plain+30 MiB | bytes/save (last 1,000) | later save max | create | open | `get` | `ls` |");
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let plaintext: usize = (0..n).map(|i| secret(i).0.len() + secret(i).1.len()).sum();
        let bound = 2 * plaintext + (30 << 20);
        let imported_path = dir.path().join(format!("import-{n}.node"));
        let oneby_path = dir.path().join(format!("oneby-{n}.node"));
        let imported = child("import", n, &imported_path);
        let oneby = child("oneby", n, &oneby_path);
        let base: f64 = imported["node_bytes"].parse().unwrap();
        for (way, r, path) in [("import", &imported, &imported_path), ("one by one", &oneby, &oneby_path)] {
            let open = child("open", n, path);
            let get = cli_ms(&bin, path, &password, &["get", "big/secret-00001"]);
            let ls = cli_ms(&bin, path, &password, &["ls", "big"]);
            let ms = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.1} ms"));
            let get_or = |k: &str| r.get(k).cloned().unwrap_or_else(|| "–".into());
            println!(
                "| {n} | {way} | {} | {:.2}× | {} (open: {}) | {} | {} | {} | {} | {} ms | {} | {} |",
                mib(&r["node_bytes"]),
                r["node_bytes"].parse::<f64>().unwrap() / base,
                mib(&r["peak_rss"]),
                mib(&open["peak_rss"]),
                mib(&bound.to_string()),
                get_or("create_bytes_per_save"),
                get_or("later_save_max_bytes"),
                r.get("create_seconds").map_or("–".into(), |s| format!("{s} s")),
                open["open_ms"],
                ms(get),
                ms(ls),
            );
        }
        let _ = std::fs::remove_file(&oneby_path);
        let _ = std::fs::remove_file(&imported_path);
    }
    let amend_path = dir.path().join("amend.node");
    let amend = child("amend", 2000, &amend_path);
    println!(
        "\nOne open secret, 2,000 saves of 100 KiB each replacing the last: node {}, peak RSS {}",
        mib(&amend["node_bytes"]),
        mib(&amend["peak_rss"])
    );
}
