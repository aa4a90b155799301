//! Whole node files through `Node::open_storage`: header, frame log, journal, state, git
//! objects, and what a node does with them once open (list, read, history, export, write,
//! compact, reopen).
//!
//! Input: a mode byte, then
//! - even mode: the whole file (bits 1 and 2 of the mode fix the CRC of header slot A and B),
//!   opened read-only with the test passphrase (the passphrase of `tests/vectors/`, whose
//!   nodes are the seeds) and read everywhere;
//! - odd mode: a recipe: transactions of journal records (names at the rules' edges, blobs,
//!   trees and commits that refer to each other or to nothing, objects under the wrong id,
//!   links, removals), possibly followed by raw tar bytes, sealed into the test node's log.
//!   Opened for writing, read everywhere, then one secret written, saved, maybe compacted,
//!   and the node reopened: what Polykey itself wrote must open and read back.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use polykey::format::journal::Writer;
use polykey::{Access, NameKind, Node};
use polykey_fuzz::{append_transaction, bytes, fix_slot_crc, name, pass, test_node, RecordGen, SharedStorage};
use std::path::Path;

fn open(bytes: Vec<u8>, access: Access) -> (polykey::Result<Node>, SharedStorage) {
    let storage = SharedStorage::new(bytes);
    (Node::open_storage(Path::new("fuzz.node"), Box::new(storage.clone()), &pass(), access), storage)
}

/// Reads everything a user could ask for; none of it may panic.
fn read_everything(node: &Node) {
    for r in node.repos() {
        let _ = node.log(&r, None);
        let Ok(secrets) = node.secrets(&r) else { continue };
        for s in secrets {
            let got = node.get(&r, &s);
            let size = node.secret_size(&r, &s);
            if let (Ok(data), Ok(size)) = (&got, &size) {
                assert_eq!(data.len() as u64, *size, "secret_size disagrees with the secret");
            }
            let _ = node.log(&r, Some(&s));
        }
    }
    for entries in node.state().tags.values() {
        for (r, s) in entries.values() {
            let _ = node.get(r, s);
        }
    }
    let _ = polykey::export::export(node.state(), Vec::new());
    let _ = (node.discarded_tail(), node.header_degraded());
}

fn recipe(u: &mut Unstructured<'_>) -> Result<()> {
    let t = test_node();
    let mut file = t.slots.clone();
    let mut gen = RecordGen::default();
    let mut seq = 0;
    for _ in 0..u.int_in_range(1..=3)? {
        let mut w = Writer::new();
        for _ in 0..u.int_in_range(0..=8)? {
            gen.records(u)?.iter().for_each(|r| w.push(r));
        }
        let mut plain = w.into_bytes();
        if u.ratio(1, 8)? {
            plain.extend_from_slice(bytes(u, 1024)?);
        }
        seq = append_transaction(&mut file, &t.header, &t.key, seq, &[&plain], u.ratio(1, 4)?);
    }
    let (Ok(mut node), storage) = open(file, Access::Write) else { return Ok(()) };
    read_everything(&node);
    // A write, a save and a reopen: what Polykey wrote itself must always open again.
    let (repo, secret, data) = (name(u, NameKind::Repo)?, name(u, NameKind::Secret)?, bytes(u, 64)?);
    if node.put(&repo, &secret, data).is_err() {
        return Ok(()); // A repository whose head is broken cannot take a commit.
    }
    node.save().expect("saving to memory");
    if u.arbitrary()? {
        node.compact().expect("compacting in memory");
    }
    let before = node.repos();
    drop(node);
    let (again, _) = open(storage.bytes(), Access::Read);
    let again = again.unwrap_or_else(|e| panic!("a node Polykey saved does not open: {e}"));
    assert_eq!(again.repos(), before);
    assert_eq!(&again.get(&repo, &secret).expect("the secret just saved")[..], data);
    read_everything(&again);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode & 1 == 0 {
        let mut file = rest.to_vec();
        if mode & 2 != 0 {
            fix_slot_crc(&mut file, 0);
        }
        if mode & 4 != 0 {
            fix_slot_crc(&mut file, 512);
        }
        // Argon2 with the file's own parameters: skip the costly ones (bounded, but slow).
        let u32_at = |at: usize| file.get(at..at + 4).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        let cheap = |slot: usize| u32_at(slot + 76) <= 256 && u32_at(slot + 80) <= 4;
        if !(cheap(0) && cheap(512)) {
            return;
        }
        if let (Ok(node), _) = open(file, Access::Read) {
            read_everything(&node);
        }
    } else {
        let _ = recipe(&mut Unstructured::new(rest));
    }
});
