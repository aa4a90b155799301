//! Tree deltas: a flat tree stored as its differences from an earlier tree of the same
//! repository, so that a save in a repository of thousands of secrets writes the entries it
//! changed, not the whole tree (docs/FORMAT.md, "Tree deltas").
//!
//! A delta is `base id (20 bytes)` followed by operations in strictly increasing name order,
//! each `op (1 byte) || name length (1 byte) || name || [blob id (20 bytes), for a set]`.
//! The tree it stands for is the base's entries, the removed names taken out and the set
//! names put in (added or replaced); its git hash must be the delta's id.

use super::{ObjectError, MAX_OBJECT_BYTES};
use crate::name::{Name, NameKind};
use git2::{ObjectType, Oid};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Operation: remove the entry of this name.
const REMOVE: u8 = 1;
/// Operation: set the entry of this name to a blob of mode 100644.
const SET_FILE: u8 = 2;
/// Operation: set the entry of this name to a blob of mode 100755.
const SET_EXEC: u8 = 3;

const FILE_MODE: &[u8; 6] = b"100644";
const EXEC_MODE: &[u8; 6] = b"100755";

/// One operation of a delta: a name, and its new mode and blob, or `None` to remove it.
pub type Op<'a> = (&'a [u8], Option<(&'static [u8; 6], Oid)>);

/// The base a delta is expressed against (its first 20 bytes).
pub fn base(oid: Oid, delta: &[u8]) -> Result<Oid, ObjectError> {
    delta.get(..20).and_then(|b| Oid::from_bytes(b).ok()).ok_or(ObjectError::BadBody(oid, "tree delta"))
}

/// Parses a delta: its base and its operations, checked (known operations, valid secret names
/// in strictly increasing order, nothing cut short).
pub fn parse(oid: Oid, delta: &[u8]) -> Result<(Oid, Vec<Op<'_>>), ObjectError> {
    let bad = || ObjectError::BadBody(oid, "tree delta");
    let base = base(oid, delta)?;
    let mut ops: Vec<Op<'_>> = Vec::new();
    let mut at = 20;
    while at < delta.len() {
        let (&op, &len) = delta.get(at).zip(delta.get(at + 1)).ok_or_else(bad)?;
        let name = delta.get(at + 2..at + 2 + usize::from(len)).ok_or_else(bad)?;
        Name::new(NameKind::Secret, name).map_err(|_| bad())?;
        if ops.last().is_some_and(|(last, _)| *last >= name) {
            return Err(bad());
        }
        at += 2 + usize::from(len);
        let mode = match op {
            REMOVE => None,
            SET_FILE => Some(FILE_MODE),
            SET_EXEC => Some(EXEC_MODE),
            _ => return Err(bad()),
        };
        let set = match mode {
            None => None,
            Some(mode) => {
                let id = delta.get(at..at + 20).and_then(|b| Oid::from_bytes(b).ok()).ok_or_else(bad)?;
                at += 20;
                Some((mode, id))
            }
        };
        ops.push((name, set));
    }
    Ok((base, ops))
}

/// The entries of a checked tree body (see [`super::index_tree`]): mode, name, blob id.
fn entries(body: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], Oid)> {
    let mut at = 0;
    std::iter::from_fn(move || {
        (at < body.len()).then(|| {
            let name = at + 7;
            let nul = name + body[name..].iter().position(|&b| b == 0).expect("checked tree");
            let id = Oid::from_bytes(&body[nul + 1..nul + 21]).expect("checked tree");
            let entry = (&body[at..at + 6], &body[name..nul], id);
            at = nul + 21;
            entry
        })
    })
}

fn push_entry(out: &mut Vec<u8>, mode: &[u8], name: &[u8], id: Oid) {
    out.extend_from_slice(mode);
    out.push(b' ');
    out.extend_from_slice(name);
    out.push(0);
    out.extend_from_slice(id.as_bytes());
}

fn push_op(out: &mut Vec<u8>, name: &[u8], set: Option<(&[u8], Oid)>) {
    out.push(match set {
        None => REMOVE,
        Some((mode, _)) if mode == EXEC_MODE => SET_EXEC,
        Some(_) => SET_FILE,
    });
    out.push(name.len() as u8); // A secret name is at most 255 bytes.
    out.extend_from_slice(name);
    if let Some((_, id)) = set {
        out.extend_from_slice(id.as_bytes());
    }
}

/// The delta that turns the checked tree body `base` (whose id is `base_oid`) into the
/// checked tree body `new`.
pub fn diff(base_oid: Oid, base: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = base_oid.as_bytes().to_vec();
    let (mut old, mut new) = (entries(base).peekable(), entries(new).peekable());
    loop {
        match (old.peek().copied(), new.peek().copied()) {
            (None, None) => return out,
            (Some((_, name, _)), None) => {
                push_op(&mut out, name, None);
                old.next();
            }
            (None, Some((mode, name, id))) => {
                push_op(&mut out, name, Some((mode, id)));
                new.next();
            }
            (Some((omode, oname, oid)), Some((mode, name, id))) => match oname.cmp(name) {
                std::cmp::Ordering::Less => {
                    push_op(&mut out, oname, None);
                    old.next();
                }
                std::cmp::Ordering::Greater => {
                    push_op(&mut out, name, Some((mode, id)));
                    new.next();
                }
                std::cmp::Ordering::Equal => {
                    if (omode, oid) != (mode, id) {
                        push_op(&mut out, name, Some((mode, id)));
                    }
                    old.next();
                    new.next();
                }
            },
        }
    }
}

/// The body of tree `oid`: the checked tree body `base` with `chain` applied, oldest delta
/// first (each delta's base being the tree before it). Checks the result's hash.
pub fn apply(oid: Oid, base: &[u8], chain: &[(Oid, &[u8])]) -> Result<Zeroizing<Vec<u8>>, ObjectError> {
    let mut folded: BTreeMap<&[u8], Option<(&'static [u8; 6], Oid)>> = BTreeMap::new();
    for &(id, delta) in chain {
        folded.extend(parse(id, delta)?.1);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(base.len() + folded.len() * 48));
    let mut ops = folded.into_iter().peekable();
    for (mode, name, id) in entries(base) {
        while let Some((op_name, set)) = ops.next_if(|(n, _)| *n < name) {
            if let Some((m, b)) = set {
                push_entry(&mut out, m, op_name, b);
            }
        }
        match ops.next_if(|(n, _)| *n == name) {
            Some((_, Some((m, b)))) => push_entry(&mut out, m, name, b),
            Some((_, None)) => {}
            None => push_entry(&mut out, mode, name, id),
        }
        if out.len() > MAX_OBJECT_BYTES {
            return Err(ObjectError::TooLarge(oid));
        }
    }
    for (op_name, set) in ops {
        if let Some((m, b)) = set {
            push_entry(&mut out, m, op_name, b);
        }
    }
    if out.len() > MAX_OBJECT_BYTES {
        return Err(ObjectError::TooLarge(oid));
    }
    if Oid::hash_object(ObjectType::Tree, &out).ok() != Some(oid) {
        return Err(ObjectError::HashMismatch(oid));
    }
    Ok(out)
}

/// The blobs a delta sets.
pub fn blobs(oid: Oid, delta: &[u8]) -> Result<Vec<Oid>, ObjectError> {
    Ok(parse(oid, delta)?.1.into_iter().filter_map(|(_, set)| set.map(|(_, id)| id)).collect())
}

/// Whether a delta changes (sets or removes) `name`.
pub fn touches(oid: Oid, delta: &[u8], name: &[u8]) -> Result<bool, ObjectError> {
    Ok(parse(oid, delta)?.1.iter().any(|(n, _)| *n == name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::{encode, tree_body, Tree};

    fn tree(entries: &[(&str, &[u8])]) -> (Oid, Vec<u8>) {
        let t: Tree =
            entries.iter().map(|(n, v)| (Name::new(NameKind::Secret, n.as_bytes()).unwrap(), encode(ObjectType::Blob, v).0)).collect();
        let body = tree_body(&t);
        (Oid::hash_object(ObjectType::Tree, &body).unwrap(), body)
    }

    #[test]
    fn a_diff_applied_to_its_base_gives_the_tree_back() {
        let (a, body_a) = tree(&[("a", b"1"), ("b", b"2"), ("d", b"4")]);
        let (b, body_b) = tree(&[("b", b"2"), ("c", b"3"), ("d", b"5"), ("e", b"6")]);
        let (c, body_c) = tree(&[("c", b"3")]);
        let ab = diff(a, &body_a, &body_b);
        let bc = diff(b, &body_b, &body_c);
        assert_eq!(base(b, &ab), Ok(a));
        assert_eq!(&apply(b, &body_a, &[(b, &ab)]).unwrap()[..], &body_b[..]);
        assert_eq!(&apply(c, &body_a, &[(b, &ab), (c, &bc)]).unwrap()[..], &body_c[..]);
        assert_eq!(&apply(a, &body_a, &[]).unwrap()[..], &body_a[..]);
        // remove a, set c, set d, set e: four operations, nothing for the unchanged b.
        assert_eq!(parse(b, &ab).unwrap().1.len(), 4);
        assert_eq!(apply(c, &body_a, &[(b, &ab)]), Err(ObjectError::HashMismatch(c)));
        assert!(touches(b, &ab, b"a").unwrap() && !touches(b, &ab, b"b").unwrap());
    }

    #[test]
    fn the_format_example_byte_for_byte() {
        // docs/FORMAT.md, "Tree deltas": a -> v1, b -> v2 becomes b -> v2, c -> v3.
        let (a, body_a) = tree(&[("a", b"v1"), ("b", b"v2")]);
        let (_, body_b) = tree(&[("b", b"v2"), ("c", b"v3")]);
        let v3 = encode(ObjectType::Blob, b"v3").0;
        let want = [a.as_bytes(), &[0x01, 0x01, b'a', 0x02, 0x01, b'c'], v3.as_bytes()].concat();
        assert_eq!(diff(a, &body_a, &body_b), want);
        assert_eq!(want.len(), 46);
    }

    #[test]
    fn malformed_deltas_are_refused() {
        let (a, body_a) = tree(&[("a", b"1")]);
        let (b, body_b) = tree(&[("b", b"2")]);
        let good = diff(a, &body_a, &body_b);
        let mut cases: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).filter(|d| d.len() != 20).collect();
        let mut unknown = good.clone();
        unknown[20] = 9;
        let mut unsorted = a.as_bytes().to_vec();
        unsorted.extend_from_slice(&[REMOVE, 1, b'b', REMOVE, 1, b'a']);
        let mut slash = a.as_bytes().to_vec();
        slash.extend_from_slice(&[REMOVE, 1, b'/']);
        cases.extend([unknown, unsorted, slash]);
        for d in cases {
            assert!(apply(b, &body_a, &[(b, &d)]).is_err(), "{d:?}");
        }
    }
}
