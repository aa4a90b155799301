//! Model-based test of sync: random edits on two and three nodes made from one another, synced
//! in random order. After syncing everything, every node holds the same tree; every value ever
//! written is current, in history, or in a conflict file; and the same run gives the same trees.

use crate::util::{pass, repo, secret, FAST_KDF};
use git2::{ObjectType, Oid};
use polykey::sync::{self, Options};
use polykey::{Access, Node};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone)]
enum Op {
    /// Node, secret, value: lines `0..4` of which line `line` is changed.
    Put(usize, usize, usize, u8),
    /// Node, secret.
    Remove(usize, usize),
    /// Sync node a with node b.
    Sync(usize, usize),
}

const SECRETS: usize = 4;

fn value(line: usize, v: u8) -> Vec<u8> {
    (0..4).map(|i| if i == line { format!("line{i}={v}\n") } else { format!("line{i}=base\n") }).collect::<String>().into_bytes()
}

fn ops(nodes: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        4 => (0..nodes, 0..SECRETS, 0..4usize, any::<u8>()).prop_map(|(n, s, l, v)| Op::Put(n, s, l, v)),
        1 => (0..nodes, 0..SECRETS).prop_map(|(n, s)| Op::Remove(n, s)),
        2 => (0..nodes, 0..nodes).prop_filter("two nodes", |(a, b)| a != b).prop_map(|(a, b)| Op::Sync(a, b)),
    ];
    proptest::collection::vec(op, 1..24)
}

fn open(dir: &std::path::Path, i: usize) -> Node {
    Node::open(&dir.join(format!("n{i}.node")), &pass(), Access::Write).unwrap()
}

fn sync_pair(dir: &std::path::Path, a: usize, b: usize) {
    let (mut x, mut y) = (open(dir, a), open(dir, b));
    sync::sync(&mut x, &mut y, &Options::default()).unwrap();
    y.save().unwrap();
    x.save().unwrap();
}

/// Runs `ops` on `nodes` fresh nodes; returns the final tree of each node and every value
/// written.
/// A node's secrets of repository `r`: name → value.
type Contents = BTreeMap<String, Vec<u8>>;

fn play(nodes: usize, ops: &[Op]) -> (Vec<Contents>, Vec<Vec<u8>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (r, mut written) = (repo("r"), Vec::new());
    {
        let mut first = Node::create(&dir.path().join("n0.node"), &pass(), FAST_KDF).unwrap();
        for s in 0..SECRETS {
            let v = value(9, 0);
            first.put(&r, &secret(&format!("s{s}")), &v).unwrap();
            written.push(v);
        }
        first.save().unwrap();
        for i in 1..nodes {
            let mut dest = Node::create(&dir.path().join(format!("n{i}.node")), &pass(), FAST_KDF).unwrap();
            sync::fill_backup(&first, &mut dest, None).unwrap();
            dest.save().unwrap();
        }
    }
    for op in ops {
        match *op {
            Op::Put(n, s, line, v) => {
                let mut node = open(dir.path(), n);
                let val = value(line, v);
                node.put(&r, &secret(&format!("s{s}")), &val).unwrap();
                node.save().unwrap();
                written.push(val);
            }
            Op::Remove(n, s) => {
                let mut node = open(dir.path(), n);
                if node.get(&r, &secret(&format!("s{s}"))).is_ok() {
                    node.remove(&r, &secret(&format!("s{s}"))).unwrap();
                    node.save().unwrap();
                }
            }
            Op::Sync(a, b) => sync_pair(dir.path(), a, b),
        }
    }
    // Everything with everything, until nothing changes: a ring, twice.
    for _ in 0..2 {
        for i in 0..nodes {
            sync_pair(dir.path(), i, (i + 1) % nodes);
        }
    }
    let trees = (0..nodes)
        .map(|i| {
            let node = open(dir.path(), i);
            let secrets = node.secrets(&r).unwrap_or_default();
            secrets.iter().map(|s| (s.display().to_string(), node.get(&r, s).unwrap().to_vec())).collect()
        })
        .collect();
    (trees, written, dir)
}

/// Every blob any commit of `r` in node 0 reaches.
fn history_blobs(dir: &std::path::Path) -> HashSet<Oid> {
    let node = open(dir, 0);
    let rp = &node.state().repos[&repo("r")];
    let mut out = HashSet::new();
    for entry in node.log(&repo("r"), None).unwrap() {
        let tree = rp.read_tree(rp.commit(entry.id).unwrap().tree).unwrap();
        out.extend(tree.values().copied());
    }
    out
}

fn check(nodes: usize, ops: Vec<Op>) {
    let (trees, written, dir) = play(nodes, &ops);
    for t in &trees[1..] {
        assert_eq!(t, &trees[0], "nodes differ after syncing everything");
    }
    let history = history_blobs(dir.path());
    let current: HashSet<&Vec<u8>> = trees[0].values().collect();
    for v in &written {
        let id = Oid::hash_object(ObjectType::Blob, v).unwrap();
        assert!(current.contains(v) || history.contains(&id), "a written value is lost: {:?}", String::from_utf8_lossy(v));
    }
    for v in trees[0].values() {
        assert!(!v.windows(7).any(|w| w == b"<<<<<<<"), "conflict markers in a secret");
    }
    // Deterministic: the same run gives the same trees.
    let (again, _, _) = play(nodes, &ops);
    assert_eq!(again, trees, "the same edits and syncs gave other trees");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn two_nodes_converge_and_lose_nothing(ops in ops(2)) {
        check(2, ops);
    }

    #[test]
    fn three_nodes_converge_and_lose_nothing(ops in ops(3)) {
        check(3, ops);
    }
}
