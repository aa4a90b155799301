//! Sync benchmark: two nodes of N secrets (one made from the other with `backup`), laid out as
//! one big repository or as many small ones, then:
//! - each side changes 5 different secrets (a real merge in each touched repository): the time
//!   of `sync::sync` plus both saves, beside the time of the two unlocks (`Node::open`), and
//!   the bytes written to each file;
//! - the same two nodes synced again (identical): bytes written (must be 0);
//! - 1,000 secrets changed on one side: bytes written to each node against the node's size
//!   (O(change), not O(node)).
//!
//! Run: `cargo bench --bench sync` (or `scripts/bench/sync.sh`). Sizes: POLYKEY_SYNC_SIZES
//! (default 10000). Asserts nothing but that the identical sync wrote nothing.

use polykey::sync::{self, Options};
use polykey::{Access, KdfParams, Name, NameKind, Node, Passphrase};
use std::path::Path;
use std::time::Instant;

const FAST: KdfParams = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };

fn name(kind: NameKind, s: &str) -> Name {
    Name::new(kind, s.as_bytes()).unwrap()
}

fn pass() -> Passphrase {
    Passphrase::new(b"sync bench".to_vec())
}

/// Where secret `i` of `n` lives: one repository, or repositories of 10.
fn place(i: usize, big: bool) -> (Name, Name) {
    let repo = if big { "big".to_owned() } else { format!("repo-{:04}", i / 10) };
    (name(NameKind::Repo, &repo), name(NameKind::Secret, &format!("secret-{i:05}")))
}

fn edit(path: &Path, ids: impl Iterator<Item = usize>, big: bool, tag: &str) {
    let mut node = Node::open(path, &pass(), Access::Write).unwrap();
    let mut by_repo: std::collections::BTreeMap<Name, Vec<(Name, Vec<u8>)>> = Default::default();
    for i in ids {
        let (r, s) = place(i, big);
        by_repo.entry(r).or_default().push((s, format!("value {i} changed on {tag}\n").into_bytes()));
    }
    for (r, items) in by_repo {
        let refs: Vec<(Name, &[u8])> = items.iter().map(|(s, v)| (s.clone(), v.as_slice())).collect();
        node.put_many(&r, &refs).unwrap();
    }
    node.save().unwrap();
}

/// Opens both, syncs, saves both: (unlock ms, sync+save ms, bytes written to a, to b).
fn measure(a: &Path, b: &Path) -> (f64, f64, u64, u64) {
    let t0 = Instant::now();
    let mut x = Node::open(a, &pass(), Access::Write).unwrap();
    let mut y = Node::open(b, &pass(), Access::Write).unwrap();
    let t1 = Instant::now();
    let (la, lb) = (x.file_len(), y.file_len());
    sync::sync(&mut x, &mut y, &Options::default()).unwrap();
    y.save().unwrap();
    x.save().unwrap();
    let t2 = Instant::now();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    (ms(t1 - t0), ms(t2 - t1), x.file_len() - la, y.file_len() - lb)
}

fn main() {
    let sizes: Vec<usize> =
        std::env::var("POLYKEY_SYNC_SIZES").unwrap_or_else(|_| "10000".into()).split(',').map(|s| s.trim().parse().unwrap()).collect();
    println!("| secrets | layout | step | unlock both (ms) | sync + saves (ms) | written to A | written to B | node size |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        for big in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = (dir.path().join("a.node"), dir.path().join("b.node"));
            {
                let mut node = Node::create(&a, &pass(), FAST).unwrap();
                edit_all(&mut node, n, big);
                node.save().unwrap();
                let mut dest = Node::create(&b, &pass(), FAST).unwrap();
                sync::fill_backup(&node, &mut dest, None).unwrap();
                dest.save().unwrap();
            }
            let layout = if big { "1 repository".to_owned() } else { format!("{} repositories", n.div_ceil(10)) };
            let size = std::fs::metadata(&a).unwrap().len();
            let row = |step: &str, (u, s, wa, wb): (f64, f64, u64, u64)| {
                println!("| {n} | {layout} | {step} | {u:.1} | {s:.1} | {wa} B | {wb} B | {size} B |");
            };
            // 10 secrets differ: 5 changed on each side, in different secrets.
            edit(&a, (0..5).map(|k| k * (n / 10) + 1), big, "a");
            edit(&b, (0..5).map(|k| k * (n / 10) + 3), big, "b");
            row("10 secrets differ (merge)", measure(&a, &b));
            let same = measure(&a, &b);
            assert_eq!((same.2, same.3), (0, 0), "a sync of identical nodes wrote bytes");
            row("identical", same);
            edit(&a, (0..1000.min(n)).map(|k| k * (n / 1000.min(n))), big, "a2");
            row("1,000 changed on A", measure(&a, &b));
        }
    }
}

fn edit_all(node: &mut Node, n: usize, big: bool) {
    let mut by_repo: std::collections::BTreeMap<Name, Vec<(Name, Vec<u8>)>> = Default::default();
    for i in 0..n {
        let (r, s) = place(i, big);
        by_repo.entry(r).or_default().push((s, format!("value {i:026}\n").into_bytes()));
    }
    for (r, items) in by_repo {
        let refs: Vec<(Name, &[u8])> = items.iter().map(|(s, v)| (s.clone(), v.as_slice())).collect();
        node.put_many(&r, &refs).unwrap();
    }
}
