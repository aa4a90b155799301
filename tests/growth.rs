//! Storage growth: what repeated saves leave in the node file and in memory. Replaced saves
//! (`Node::put_amending`, one logical save through the mount) are garbage that compaction
//! reclaims; sizes are asserted, never times.

use crate::util::{repo, secret, TempNode};
use polykey::{Access, Node};

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
