//! The three-way merge of flat repositories: what a sync (and, later, a pull from a remote)
//! does when both sides changed a repository since their common history.
//!
//! Pure functions over trees, blobs and one repository's commits: no I/O. The rules (the user
//! contract, docs/CLI.md "Nodes working together"): a secret changed on one side takes that
//! change; changed on both, text whose changes touch different lines merges line by line
//! (unless the repository says `merge never`); otherwise ours stays and theirs goes beside it
//! as `SECRET.conflict-<peer>`. A change beats a removal. Never conflict markers inside a
//! secret, never a loss.

use crate::git::{self, ObjectError, Tree};
use crate::name::{Name, NameKind};
use crate::state::Repo;
use git2::{ObjectType, Oid};
use std::collections::{BTreeSet, BinaryHeap, HashSet};
use zeroize::Zeroizing;

/// How a repository's secrets changed on both sides are merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MergeMode {
    /// Text whose changes touch different lines merges line by line.
    #[default]
    Lines,
    /// Never line by line: any secret changed on both sides is a conflict.
    Never,
}

/// The bytes of a repository's settings record for `mode` (see FORMAT.md).
pub fn config_bytes(mode: MergeMode) -> Vec<u8> {
    match mode {
        MergeMode::Lines => b"merge = lines\n".to_vec(),
        MergeMode::Never => b"merge = never\n".to_vec(),
    }
}

/// What [`merge_trees`] made.
#[derive(Debug, Default)]
pub struct Merged {
    /// The merged tree.
    pub tree: Tree,
    /// Blobs made by line merges (id, loose encoding): the caller records them.
    pub blobs: Vec<(Oid, Vec<u8>)>,
    /// Conflict files made (their version beside ours).
    pub conflicts: Vec<Name>,
    /// Other things worth telling the user (a change kept over a removal).
    pub notes: Vec<String>,
}

/// A short label safe in a file name: `[A-Za-z0-9._-]` only (others become `_`), at most 32
/// bytes, never empty, never `.` or `..`.
pub fn peer_label(raw: &str) -> String {
    let mut out: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).take(32).collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = "peer".to_owned();
    }
    out
}

/// The line merge of a secret changed on both sides, if it is clean: every input text (no NUL
/// byte), a common base, and changes that touch different lines. Identical changes are clean.
pub fn merge_blob(base: Option<&[u8]>, ours: &[u8], theirs: &[u8], mode: MergeMode) -> Option<Zeroizing<Vec<u8>>> {
    if ours == theirs {
        return Some(Zeroizing::new(ours.to_vec()));
    }
    let base = base?;
    if mode == MergeMode::Never || [base, ours, theirs].iter().any(|b| b.contains(&0)) {
        return None;
    }
    // diffy works on its own copies of the lines (not wiped: docs/SECURITY.md says so).
    diffy::merge_bytes(base, ours, theirs).ok().map(Zeroizing::new)
}

/// The name theirs goes to when `name` conflicts: `NAME.conflict-PEER`, then `-2`, `-3`…, the
/// first not taken in `tree` (or taken by this very content: a conflict met again); shortened
/// at a character boundary to fit 255 bytes, the suffix always kept.
pub fn conflict_name(tree: &Tree, name: &Name, peer: &str, blob: Oid) -> Name {
    (1u32..)
        .find_map(|i| {
            let suffix = if i == 1 { format!(".conflict-{peer}") } else { format!(".conflict-{peer}-{i}") };
            let n = suffixed(name, NameKind::Secret, &suffix)?;
            match tree.get(&n) {
                None => Some(n),
                Some(b) if *b == blob => Some(n),
                Some(_) => None,
            }
        })
        .expect("some suffix is free")
}

/// `name` with `suffix` appended, shortened first (at a character boundary when it is text)
/// so that the whole fits a name's 255 bytes: the suffix is never cut.
pub fn suffixed(name: &Name, kind: NameKind, suffix: &str) -> Option<Name> {
    let mut base = name.as_bytes().to_vec();
    let keep = 255usize.saturating_sub(suffix.len());
    if base.len() > keep {
        let mut cut = keep;
        if std::str::from_utf8(&base).is_ok() {
            while std::str::from_utf8(&base[..cut]).is_err() {
                cut -= 1;
            }
        }
        base.truncate(cut);
    }
    base.extend_from_slice(suffix.as_bytes());
    Name::new(kind, &base).ok()
}

/// Merges `ours` and `theirs`, two trees with common ancestor tree `base` (empty when the
/// histories share none). `read` gives a blob's bytes; `peer` names theirs in conflict files
/// and notes. Deterministic: the same trees give the same result.
pub fn merge_trees(
    base: &Tree,
    ours: &Tree,
    theirs: &Tree,
    read: &dyn Fn(Oid) -> Result<Zeroizing<Vec<u8>>, ObjectError>,
    mode: MergeMode,
    peer: &str,
) -> Result<Merged, ObjectError> {
    let names: BTreeSet<&Name> = base.keys().chain(ours.keys()).chain(theirs.keys()).collect();
    let mut out = Merged::default();
    let mut conflicting = Vec::new();
    for name in names {
        let (b, o, t) = (base.get(name), ours.get(name), theirs.get(name));
        let keep = match (o, t) {
            _ if o == t || t == b => o,
            _ if o == b => t,
            (None, Some(_)) => {
                out.notes.push(format!("{name}: removed here, changed on {peer}: the change is kept"));
                t
            }
            (Some(_), None) => {
                out.notes.push(format!("{name}: changed here, removed on {peer}: the change is kept"));
                o
            }
            (Some(&o), Some(&t)) => {
                let merged = match b {
                    Some(&b) if mode == MergeMode::Lines => merge_blob(Some(&read(b)?), &read(o)?, &read(t)?, mode),
                    _ => None,
                };
                let id = match merged {
                    Some(bytes) => {
                        let (id, z) = git::encode(ObjectType::Blob, &bytes);
                        out.blobs.push((id, z));
                        id
                    }
                    None => {
                        conflicting.push((name.clone(), t));
                        o
                    }
                };
                out.tree.insert(name.clone(), id);
                continue;
            }
            (None, None) => None,
        };
        if let Some(&id) = keep {
            out.tree.insert(name.clone(), id);
        }
    }
    // Named once every plain name is placed, so a conflict file never takes a secret's name.
    for (name, theirs) in conflicting {
        let c = conflict_name(&out.tree, &name, peer, theirs);
        out.tree.insert(c.clone(), theirs);
        out.conflicts.push(c);
    }
    Ok(out)
}

/// Commits by time, newest first (ties by id), for walks that meet the likeliest answer early.
fn by_time(repo: &Repo, oid: Oid) -> Result<(i64, Oid), ObjectError> {
    Ok((repo.commit(oid)?.time, oid))
}

/// Whether commit `ancestor` is `of` or one of its ancestors.
pub fn is_ancestor(repo: &Repo, ancestor: Oid, of: Oid) -> Result<bool, ObjectError> {
    if ancestor == of {
        return Ok(true);
    }
    let floor = repo.commit(ancestor)?.time;
    let mut seen = HashSet::new();
    let mut queue = BinaryHeap::from([by_time(repo, of)?]);
    while let Some((time, c)) = queue.pop() {
        if c == ancestor {
            return Ok(true);
        }
        // Clocks can disagree between nodes: a commit older than the one sought is still
        // walked, but only so far back as a day beyond it.
        if time < floor - 86_400 || !seen.insert(c) {
            continue;
        }
        for p in repo.commit(c)?.parents {
            queue.push(by_time(repo, p)?);
        }
    }
    Ok(false)
}

/// Every ancestor of `tip`, itself included.
fn ancestors(repo: &Repo, tip: Oid) -> Result<HashSet<Oid>, ObjectError> {
    let mut seen = HashSet::new();
    let mut stack = vec![tip];
    while let Some(c) = stack.pop() {
        if seen.insert(c) {
            stack.extend(repo.commit(c)?.parents);
        }
    }
    Ok(seen)
}

/// The best common ancestor of commits `a` and `b`: a common ancestor that no other common
/// ancestor descends from (with several, as after criss-cross merges, the newest, then the
/// greatest id: deterministic; at worst an extra conflict file, never a loss). `None` when
/// the histories share nothing.
pub fn merge_base(repo: &Repo, a: Oid, b: Oid) -> Result<Option<Oid>, ObjectError> {
    let of_a = ancestors(repo, a)?;
    let common: HashSet<Oid> = ancestors(repo, b)?.into_iter().filter(|c| of_a.contains(c)).collect();
    // A common ancestor reached from another one's parents is not the best.
    let mut below = HashSet::new();
    let mut stack = Vec::new();
    for c in &common {
        stack.extend(repo.commit(*c)?.parents);
    }
    while let Some(c) = stack.pop() {
        if below.insert(c) {
            stack.extend(repo.commit(c)?.parents);
        }
    }
    let mut best = None;
    for c in common.into_iter().filter(|c| !below.contains(c)) {
        best = best.max(Some(by_time(repo, c)?));
    }
    Ok(best.map(|(_, c)| c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn n(s: &str) -> Name {
        Name::new(NameKind::Secret, s.as_bytes()).unwrap()
    }

    /// Trees over an in-memory blob store.
    struct Blobs(std::cell::RefCell<HashMap<Oid, Vec<u8>>>);

    impl Blobs {
        fn new() -> Self {
            Blobs(Default::default())
        }
        fn tree(&self, items: &[(&str, &[u8])]) -> Tree {
            items.iter().map(|(k, v)| (n(k), self.put(v))).collect()
        }
        fn put(&self, v: &[u8]) -> Oid {
            let id = Oid::hash_object(ObjectType::Blob, v).unwrap();
            self.0.borrow_mut().insert(id, v.to_vec());
            id
        }
        fn get(&self, id: Oid) -> Vec<u8> {
            self.0.borrow()[&id].clone()
        }
        fn merge(&self, b: &Tree, o: &Tree, t: &Tree, mode: MergeMode) -> Merged {
            let read = |id: Oid| Ok(Zeroizing::new(self.get(id)));
            let m = merge_trees(b, o, t, &read, mode, "peer").unwrap();
            for (id, z) in &m.blobs {
                let body = git::decode(*id, z, ObjectType::Blob).unwrap();
                self.0.borrow_mut().insert(*id, body.to_vec());
            }
            m
        }
    }

    #[test]
    fn the_contract_rules() {
        let s = Blobs::new();
        let env = b"A=1\nB=2\nC=3\nD=4\n";
        let base = s.tree(&[("env", env), ("bin", b"\0x"), ("gone", b"g"), ("kept", b"k"), ("same", b"s")]);
        let ours = s.tree(&[("env", b"A=9\nB=2\nC=3\nD=4\n"), ("bin", b"\0o"), ("kept", b"k2"), ("same", b"s"), ("new", b"n1")]);
        let theirs = s.tree(&[("env", b"A=1\nB=2\nC=3\nD=8\n"), ("bin", b"\0t"), ("gone", b"g"), ("same", b"s"), ("new", b"n2")]);
        let m = s.merge(&base, &ours, &theirs, MergeMode::Lines);
        let got = |k: &str| m.tree.get(&n(k)).map(|id| s.get(*id));
        assert_eq!(got("env").unwrap(), b"A=9\nB=2\nC=3\nD=8\n");
        assert_eq!(got("bin").unwrap(), b"\0o");
        assert_eq!(got("bin.conflict-peer").unwrap(), b"\0t");
        assert_eq!(got("gone"), None, "removed here, unchanged there: removed");
        assert_eq!(got("kept").unwrap(), b"k2", "changed here, removed there: the change is kept");
        assert_eq!(got("new").unwrap(), b"n1");
        assert_eq!(got("new.conflict-peer").unwrap(), b"n2", "added on both sides: a conflict");
        assert_eq!(m.conflicts, [n("bin.conflict-peer"), n("new.conflict-peer")]);
        // merge never: the text conflicts too.
        let m = s.merge(&base, &ours, &theirs, MergeMode::Never);
        assert!(m.tree.contains_key(&n("env.conflict-peer")));
        // The same line: a conflict, and no markers anywhere.
        let ours = s.tree(&[("env", b"A=9\nB=2\nC=3\nD=4\n")]);
        let theirs = s.tree(&[("env", b"A=7\nB=2\nC=3\nD=4\n")]);
        let m = s.merge(&s.tree(&[("env", env)]), &ours, &theirs, MergeMode::Lines);
        assert_eq!(m.conflicts, [n("env.conflict-peer")]);
        assert!(m.tree.values().all(|id| !s.get(*id).windows(7).any(|w| w == b"<<<<<<<")));
    }

    #[test]
    fn conflict_names_skip_taken_names_and_fit_255_bytes() {
        let s = Blobs::new();
        let taken = s.tree(&[("x.conflict-peer", b"other")]);
        assert_eq!(conflict_name(&taken, &n("x"), "peer", s.put(b"new")), n("x.conflict-peer-2"));
        assert_eq!(conflict_name(&taken, &n("x"), "peer", s.put(b"other")), n("x.conflict-peer"), "met again");
        let long = "é".repeat(127);
        let c = conflict_name(&Tree::new(), &n(&long), "peer", s.put(b"v"));
        assert!(c.as_bytes().len() <= 255 && std::str::from_utf8(c.as_bytes()).unwrap().ends_with(".conflict-peer"));
        assert_eq!(peer_label("my stick/../x"), "my_stick_.._x");
        assert_eq!(peer_label(".."), "peer");
    }

    fn tree_strategy() -> impl Strategy<Value = Vec<(u8, Option<u8>)>> {
        proptest::collection::vec((0u8..6, proptest::option::of(0u8..4)), 0..6)
    }

    proptest! {
        /// No loss: every value either side changed is in the merged tree (under its name or
        /// a conflict name) unless a clean line merge took it in; merging is deterministic;
        /// merging a tree with itself changes nothing.
        #[test]
        fn merges_lose_nothing_and_are_deterministic(b in tree_strategy(), o in tree_strategy(), t in tree_strategy()) {
            let s = Blobs::new();
            let value = |k: u8, v: u8| format!("line0\nk{k}\nv{v}\nline3\n").into_bytes();
            let make = |items: &[(u8, Option<u8>)]| -> Tree {
                items.iter().filter_map(|(k, v)| v.map(|v| (n(&format!("s{k}")), s.put(&value(*k, v))))).collect()
            };
            let (base, ours, theirs) = (make(&b), make(&o), make(&t));
            let m = s.merge(&base, &ours, &theirs, MergeMode::Lines);
            let kept: HashSet<Oid> = m.tree.values().copied().collect();
            let line_merged: HashSet<Oid> = m.blobs.iter().map(|(id, _)| *id).collect();
            for side in [&ours, &theirs] {
                for (name, id) in side {
                    if base.get(name) != Some(id) {
                        let merged_in = m.tree.get(name).is_some_and(|m| line_merged.contains(m));
                        prop_assert!(kept.contains(id) || merged_in, "{name}: a changed value is lost");
                    }
                }
            }
            prop_assert!(!m.tree.values().any(|id| s.get(*id).windows(7).any(|w| w == b"<<<<<<<")));
            let again = s.merge(&base, &ours, &theirs, MergeMode::Lines);
            prop_assert_eq!(&again.tree, &m.tree);
            prop_assert_eq!(&s.merge(&base, &ours, &ours, MergeMode::Lines).tree, &ours);
        }
    }
}
