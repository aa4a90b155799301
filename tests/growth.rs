//! Storage growth: what repeated saves leave in the node file and in memory. Replaced saves
//! (`Node::put_amending`, one logical save through the mount) are garbage that compaction
//! reclaims; sizes are asserted, never times.

use crate::roundtrip::{check_export, Content};
use crate::util::{repo, secret, TempNode};
use polykey::{Access, Node};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Deterministic bytes that do not compress, different for each `seed`.
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// One open secret saved again and again (an editor's write + fsync, each replacing the last
/// commit of the same logical save): the node file stays within a bound proportional to the
/// live data, because compaction counts the replaced commits as garbage, and memory drops
/// them too. It used to count them as live and never compacted (213 MB after 2,000 saves).
#[test]
fn amending_saves_of_one_secret_are_compacted() {
    const SIZE: usize = 100 << 10;
    let t = TempNode::new();
    let mut node = t.create();
    let (r, s) = (repo("r"), secret("open"));
    let mut last = None;
    let mut compactions = 0;
    for i in 0..60 {
        last = node.put_amending(&r, &s, &noise(i, SIZE), last).unwrap();
        compactions += usize::from(node.save().unwrap().compacted);
        // The live data is one 100 KiB secret (its blob, tree and commit): the file never
        // holds more than that, the compaction threshold (1 MiB) and one save beyond it.
        assert!(node.file_len() < (1 << 20) + 3 * SIZE as u64, "save {i}: node is {} bytes", node.file_len());
    }
    assert!(compactions >= 2, "{compactions} compactions");
    // Memory kept only what a checkpoint keeps: one blob, tree and commit (and a replaced
    // save or two since the last compaction).
    assert!(node.state().stored_bytes() < (1 << 20) + 3 * SIZE as u64, "{} bytes in memory", node.state().stored_bytes());
    drop(node);
    let node = t.open().unwrap();
    assert_eq!(&node.get(&r, &s).unwrap()[..], &noise(59, SIZE)[..]);
    assert_eq!(node.log(&r, None).unwrap().len(), 1, "one logical save, one commit");
    drop(node);
    let node = Node::open(&t.path, &crate::util::pass(), Access::Read).unwrap();
    assert!(node.file_len() < (1 << 20) + 3 * SIZE as u64);
}

/// Whether the node file's header asks for tree deltas (required feature bit 0x1).
fn needs_tree_deltas(path: &std::path::Path) -> bool {
    let head = std::fs::read(path).unwrap();
    u32::from_le_bytes(head[12..16].try_into().unwrap()) & 1 != 0
}

/// Every commit of `r` (first-parent history) and its tree, read back through the node.
fn history(node: &Node, r: &polykey::Name) -> Vec<(git2::Oid, usize)> {
    let repo = &node.state().repos[r];
    node.log(r, None)
        .unwrap()
        .into_iter()
        .map(|e| {
            let c = repo.commit(e.id).unwrap();
            (e.id, repo.read_tree(c.tree).unwrap().len())
        })
        .collect()
}

/// Secrets created one by one in one repository: each save writes the entries it changed,
/// not the whole tree (which it did: 242 KiB per save at 10,000 secrets), the node stays
/// within a few times what an import of the same secrets makes, the header asks for the
/// feature only once deltas are written, and every old tree, the log, the export and
/// `git fsck` stay exact after reopening and after compaction.
#[test]
fn a_big_repository_saved_one_secret_at_a_time_grows_linearly() {
    const N: usize = 700;
    let r = repo("big");
    let value = |i: usize| format!("value of secret {i:05} {}", "x".repeat(i % 7)).into_bytes();
    let name = |i: usize| secret(&format!("secret-{i:05}"));

    let imported = TempNode::new();
    let mut node = imported.create();
    let items: Vec<_> = (0..N).map(|i| (name(i), value(i))).collect();
    let refs: Vec<_> = items.iter().map(|(n, v)| (n.clone(), v.as_slice())).collect();
    node.put_many(&r, &refs).unwrap();
    node.save().unwrap();
    let imported_len = node.file_len();
    assert!(!needs_tree_deltas(&imported.path), "an import writes one whole tree");
    drop(node);

    let t = TempNode::new();
    let mut node = t.create();
    let mut largest_late_save = 0;
    for i in 0..N {
        node.put(&r, &name(i), &value(i)).unwrap();
        let stats = node.save().unwrap();
        if i >= N / 2 {
            largest_late_save = largest_late_save.max(stats.bytes_written);
        }
        if i == 50 {
            assert!(!needs_tree_deltas(&t.path), "small trees are saved whole: the node stays version 1");
        }
    }
    assert!(largest_late_save < 16 << 10, "a one-secret save wrote {largest_late_save} bytes");
    assert!(needs_tree_deltas(&t.path));
    assert!(node.file_len() < 3 * imported_len, "{} bytes one by one, {imported_len} imported", node.file_len());
    // An update and a removal are deltas too; so is a replaced save, against its parent.
    node.put(&r, &name(3), b"changed").unwrap();
    node.remove(&r, &name(4)).unwrap();
    let first = node.put_amending(&r, &name(5), b"draft", None).unwrap();
    let last = node.put_amending(&r, &name(5), b"final", first).unwrap();
    assert!(node.save().unwrap().bytes_written < 48 << 10);
    let mut want: BTreeMap<polykey::Name, Vec<u8>> = items.into_iter().collect();
    want.insert(name(3), b"changed".to_vec());
    want.remove(&name(4));
    want.insert(name(5), b"final".to_vec());
    let model = Content { repos: [(r.clone(), want.clone())].into(), tags: BTreeMap::new() };

    let before = history(&node, &r);
    assert_eq!(before.len(), N + 3, "one commit per logical save");
    assert_eq!(before[0], (last.unwrap(), N - 1));
    assert_eq!(before.last().unwrap().1, 1, "the first commit's tree, rebuilt through every delta");
    let log3 = node.log(&r, Some(&name(3))).unwrap();
    assert_eq!(log3.len(), 2, "secret-00003: added, then changed");
    drop(node);

    for compact in [false, true] {
        let mut node = t.open().unwrap();
        if compact {
            node.compact().unwrap();
            drop(node);
            node = t.open().unwrap();
            assert!(needs_tree_deltas(&t.path), "the checkpoint keeps the deltas");
            assert!(node.file_len() < 3 * imported_len, "compacted: {} bytes, {imported_len} imported", node.file_len());
        }
        assert!(Content::of(&node) == model, "compacted: {compact}");
        assert_eq!(history(&node, &r), before, "compacted: {compact}");
        assert_eq!(node.log(&r, Some(&name(3))).unwrap(), log3);
        let tar = polykey::export::export(node.state(), Vec::new()).unwrap();
        check_export(&tar, &model);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any run of saves in a repository big enough for deltas (adds, updates, removals,
    /// renames, replaced saves) reads back the same from memory, after reopening and after
    /// compaction, with every old tree intact.
    #[test]
    fn deltas_read_back_exactly(steps in prop::collection::vec((0u8..5, 0usize..160, any::<u8>()), 1..40)) {
        let r = repo("r");
        let t = TempNode::new();
        let mut node = t.create();
        let mut model: BTreeMap<polykey::Name, Vec<u8>> = (0..150).map(|i| (secret(&format!("s{i:04}")), vec![i as u8; 3])).collect();
        let refs: Vec<_> = model.iter().map(|(n, v)| (n.clone(), v.as_slice())).collect();
        node.put_many(&r, &refs).unwrap();
        node.save().unwrap();
        let mut amend = None;
        for (op, i, byte) in steps {
            let s = secret(&format!("s{i:04}"));
            match op {
                0 => { node.put(&r, &s, &[byte]).unwrap(); model.insert(s, vec![byte]); amend = None; }
                1 => if model.remove(&s).is_some() { node.remove(&r, &s).unwrap(); amend = None; },
                2 => {
                    let to = secret(&format!("s{:04}", (i + 7) % 160));
                    if let Some(v) = model.remove(&s) {
                        node.rename(&r, &s, &to, true).unwrap();
                        model.insert(to, v);
                        amend = None;
                    }
                }
                _ => { amend = node.put_amending(&r, &s, &[byte, 1], amend).unwrap(); model.insert(s, vec![byte, 1]); }
            }
            if byte % 3 == 0 {
                node.save().unwrap();
            }
        }
        node.save().unwrap();
        let want = Content { repos: [(r.clone(), model)].into(), tags: BTreeMap::new() };
        let before = history(&node, &r);
        prop_assert!(Content::of(&node) == want);
        drop(node);
        let mut node = t.open().unwrap();
        prop_assert!(Content::of(&node) == want);
        prop_assert_eq!(history(&node, &r), before.clone());
        node.compact().unwrap();
        drop(node);
        let node = t.open().unwrap();
        prop_assert!(Content::of(&node) == want);
        prop_assert_eq!(history(&node, &r), before);
    }
}

/// A node already full of replaced saves when it is opened (left by an older polykey, which
/// never compacted them, or by a session that ended first): a later session that writes
/// compacts it once its log has grown by an eighth (at least 1 MiB), not only after doubling
/// a file that was mostly garbage.
#[test]
fn a_node_left_full_of_replaced_saves_is_compacted_by_a_later_session() {
    use git2::ObjectType::{Blob, Commit, Tree};
    use polykey::format::{header::Header, journal, log};
    use polykey::storage::MemStorage;
    let t = TempNode::new();
    let (r, s) = (repo("r"), secret("open"));
    let mut node = t.create();
    node.put(&r, &s, b"first").unwrap();
    node.save().unwrap();
    drop(node);
    // 30 saves of 100 KiB, each replacing the last, in one transaction, as the log holds them.
    let mut w = journal::Writer::new();
    for i in 0..30 {
        let (blob, blob_z) = polykey::git::encode(Blob, &noise(i, 100 << 10));
        let (tree, tree_z) = polykey::git::encode(Tree, &polykey::git::tree_body(&[(s.clone(), blob)].into()));
        let (commit, commit_z) =
            polykey::git::encode(Commit, &polykey::git::commit_body(tree, &[], 1_700_000_000 + i64::from(i), b"Update open\n"));
        for (oid, z) in [(blob, blob_z), (tree, tree_z), (commit, commit_z)] {
            w.push(&journal::Record::Object(r.clone(), oid, z));
        }
        w.push(&journal::Record::Head(r.clone(), commit));
    }
    let bytes = std::fs::read(&t.path).unwrap();
    let (header, key, _) = Header::open(&bytes, &crate::util::pass()).unwrap();
    let mut pos = log::replay(&bytes, &header, &key, |_| Ok(())).unwrap().position;
    let mut storage = MemStorage { bytes };
    log::append(&mut storage, &header, &key, &mut pos, &w.into_bytes(), false).unwrap();
    std::fs::write(&t.path, &storage.bytes).unwrap();
    let bloated = storage.bytes.len() as u64;
    assert!(bloated > 3 << 20);

    let mut node = t.open().unwrap();
    assert_eq!(&node.get(&r, &s).unwrap()[..], &noise(29, 100 << 10)[..]);
    let mut compacted = false;
    for i in 0..1000 {
        node.put(&r, &secret("small"), format!("{i}").as_bytes()).unwrap();
        compacted |= node.save().unwrap().compacted;
        if compacted {
            break;
        }
    }
    assert!(
        compacted,
        "never compacted: {} bytes, live {} stored {}",
        node.file_len(),
        node.state().checkpoint_bytes(),
        node.state().stored_bytes()
    );
    assert!(node.file_len() < 1 << 20, "{} bytes after compaction, {bloated} before", node.file_len());
    drop(node);
    assert_eq!(&t.open().unwrap().get(&r, &s).unwrap()[..], &noise(29, 100 << 10)[..]);
}

/// The issue's case through a real mount: one file kept open, 100 KiB written and fsynced
/// again and again (each fsync a commit replacing the last, one logical save): the node file
/// stays within the same bound, and the file reads back with one commit.
#[test]
fn a_file_kept_open_and_fsynced_through_the_mount_is_compacted() {
    use std::os::unix::fs::FileExt;
    let Some(mut m) = crate::mounted::Mounted::with(|n| {
        n.put(&repo("r"), &secret("open"), b"before").unwrap();
    }) else {
        return;
    };
    const SIZE: usize = 100 << 10;
    let f = std::fs::OpenOptions::new().write(true).open(m.p("repos/r/open")).unwrap();
    for i in 0..40 {
        f.write_all_at(&noise(i, SIZE), 0).unwrap();
        f.sync_all().unwrap();
        let len = std::fs::metadata(&m.node.path).unwrap().len();
        assert!(len < (1 << 20) + 3 * SIZE as u64, "fsync {i}: node is {len} bytes");
    }
    drop(f);
    assert_eq!(std::fs::read(m.p("repos/r/open")).unwrap(), noise(39, SIZE));
    m.unmount();
    let node = m.node.open().unwrap();
    assert_eq!(node.log(&repo("r"), None).unwrap().len(), 2, "the put, then one logical save: one commit");
}
