//! The object reader: `git::decode` and `git::peek_size` (loose zlib objects),
//! `git::parse_tree` and `git::parse_commit`. Polykey has no pack reader: every object is stored loose, so these are
//! what reads git data from a node.
//!
//! Input: a mode byte, then
//! - 0: zlib bytes, decoded as each kind under a fixed id (the empty blob's), and peeked;
//! - 1: an uncompressed object (`<kind> <size>\0<body>`), compressed here and decoded under the
//!   id its body hashes to, so the header checks are reached: whatever decodes must be
//!   exactly the body, of the kind and size its header says, and peek at that size;
//! - 2: a kind byte and a body, encoded and decoded back (also as another kind, and cut
//!   short: never another body), and peeked at its size;
//! - 3: a tree body: what parses writes back to an equal tree, byte-identical when every entry
//!   has mode 100644;
//! - 4: a commit body: what parses writes back (`commit_body`) to an equal commit;
//! - 5: a split byte, then two tree bodies: where both parse, the delta from one to the other
//!   applied to the first gives the second, byte for byte; any bytes applied as a delta to a
//!   valid tree either fail or rebuild a tree that parses.
#![no_main]

use flate2::{write::ZlibEncoder, Compression};
use git2::{ObjectType, Oid};
use libfuzzer_sys::fuzz_target;
use polykey::git::{self, ObjectError};
use std::io::Write;

const KINDS: [(ObjectType, &str); 4] =
    [(ObjectType::Blob, "blob"), (ObjectType::Tree, "tree"), (ObjectType::Commit, "commit"), (ObjectType::Tag, "tag")];

fn zlib(raw: &[u8]) -> Vec<u8> {
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(raw).unwrap();
    z.finish().unwrap()
}

fn some_id() -> Oid {
    Oid::hash_object(ObjectType::Blob, b"").unwrap()
}

fn decode_raw(raw: &[u8]) {
    let z = zlib(raw);
    let Some(nul) = raw.iter().position(|&b| b == 0) else {
        for (kind, _) in KINDS {
            assert!(git::decode(some_id(), &z, kind).is_err());
        }
        return;
    };
    let body = &raw[nul + 1..];
    for (kind, label) in KINDS {
        let oid = Oid::hash_object(kind, body).unwrap();
        if let Ok(got) = git::decode(oid, &z, kind) {
            assert_eq!(&got[..], body);
            let header = std::str::from_utf8(&raw[..nul]).expect("a decoded header is text");
            let (k, size) = header.split_once(' ').expect("a decoded header has a size");
            assert_eq!(k, label);
            assert_eq!(size.parse::<usize>().ok(), Some(body.len()));
            assert_eq!(git::peek_size(oid, &z), Ok(body.len() as u64));
        }
    }
}

fn encode_decode(data: &[u8]) {
    let Some((&k, body)) = data.split_first() else { return };
    let kind = KINDS[usize::from(k) % KINDS.len()].0;
    let (oid, z) = git::encode(kind, body);
    assert_eq!(&git::decode(oid, &z, kind).expect("an encoded object decodes")[..], body);
    assert_eq!(git::peek_size(oid, &z), Ok(body.len() as u64));
    let other = KINDS[(usize::from(k) + 1) % KINDS.len()].0;
    assert!(matches!(git::decode(oid, &z, other), Err(ObjectError::WrongKind(..))));
    let cut = z.len() * usize::from(k >> 2) / 64;
    if let Ok(got) = git::decode(oid, &z[..cut], kind) {
        assert_eq!(&got[..], body, "a cut object decoded to another body");
    }
}

fn tree(body: &[u8]) {
    let oid = some_id();
    let Ok(tree) = git::parse_tree(oid, body) else { return };
    // The in-place reader agrees with the map on everything it is asked.
    let names = git::index_tree(oid, body).expect("parse_tree accepted it");
    let flat = git::TreeRef::new(body, &names);
    assert!(flat.same_as(&tree) && flat.len() == tree.len());
    for (name, id) in &tree {
        assert_eq!(flat.get(name), Some(*id));
    }
    let canon = git::tree_body(&tree);
    assert_eq!(git::parse_tree(oid, &canon).expect("a written tree parses"), tree);
    assert_eq!(canon.len(), body.len());
    if !body.windows(6).any(|w| w == b"100755") {
        assert_eq!(canon, body, "a canonical tree did not write back byte for byte");
    }
}

fn commit(body: &[u8]) {
    let oid = some_id();
    let Ok(c) = git::parse_commit(oid, body) else { return };
    let again = git::commit_body(c.tree, &c.parents, c.time, &c.message);
    assert_eq!(git::parse_commit(oid, &again).expect("a written commit parses"), c);
}

fn delta(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else { return };
    let (a, b) = rest.split_at(usize::from(split).min(rest.len()));
    for (base, other) in [(a, b), (b, a)] {
        if git::index_tree(some_id(), base).is_err() {
            continue;
        }
        let base_id = Oid::hash_object(ObjectType::Tree, base).unwrap();
        // Any bytes as a delta (after a base id): an error, or a tree that parses.
        let raw = [base_id.as_bytes(), other].concat();
        let claimed = Oid::hash_object(ObjectType::Tree, other).unwrap();
        if let Ok(body) = git::delta::apply(claimed, base, &[(claimed, &raw)]) {
            git::index_tree(claimed, &body).expect("a rebuilt tree parses");
        }
        if git::index_tree(some_id(), other).is_ok() {
            let d = git::delta::diff(base_id, base, other);
            let got = git::delta::apply(claimed, base, &[(claimed, &d)]).expect("a diff applies");
            assert_eq!(&got[..], other, "a diff applied to its base gave another tree");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 6 {
        0 => {
            for (kind, _) in KINDS {
                let _ = git::decode(some_id(), rest, kind);
            }
            let _ = git::peek_size(some_id(), rest);
        }
        1 => decode_raw(rest),
        2 => encode_decode(rest),
        3 => tree(rest),
        4 => commit(rest),
        _ => delta(rest),
    }
});
