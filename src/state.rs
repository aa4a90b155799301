//! The node's decrypted state: repositories and tags, changed only through [`State::apply`].
//!
//! Replay and live operations both go through `apply`, so a node rebuilt from its log is
//! exactly the node that wrote it.

use crate::format::journal::Record;
use crate::git::{self, delta, FlatTree, ObjectError, Tree, TreeRef};
use crate::name::Name;
use crate::secret::SecretBytes;
use git2::{ObjectType, Oid};
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// A repository's loose objects and tree deltas, one after another in one wiped buffer,
/// indexed by id: one allocation per repository rather than one per object, and 28 bytes of
/// index per object rather than 48 (a node of 100,000 secrets holds some 150,000 objects).
#[derive(Default)]
struct Objects {
    /// Offset and length of each object's bytes in `bytes`; [`DELTA`] set in the length for
    /// a tree delta.
    index: HashMap<Oid, (u32, u32)>,
    bytes: SecretBytes,
}

/// The flag of a tree delta in [`Objects::index`] (an object is at most 64 MiB and change).
const DELTA: u32 = 1 << 31;

/// How an object is held.
#[derive(Clone, Copy)]
pub enum Stored<'a> {
    /// Loose (zlib bytes, as git keeps it).
    Loose(&'a [u8]),
    /// A tree as a delta (see [`git::delta`]).
    Delta(&'a [u8]),
}

impl Objects {
    /// The object's bytes, and whether they are a tree delta.
    fn entry(&self, oid: &Oid) -> Option<(bool, &[u8])> {
        self.index.get(oid).map(|&(at, len)| (len & DELTA != 0, &self.bytes[at as usize..at as usize + (len & !DELTA) as usize]))
    }

    fn stored(&self, oid: &Oid) -> Option<Stored<'_>> {
        self.entry(oid).map(|(d, bytes)| if d { Stored::Delta(bytes) } else { Stored::Loose(bytes) })
    }

    /// Makes room for `objects` more objects of `bytes` bytes in all.
    fn reserve(&mut self, objects: usize, bytes: usize) {
        self.index.reserve(objects);
        crate::secret::reserve(&mut self.bytes, bytes, u32::MAX as usize);
    }

    /// Adds an object; the caller's buffer is wiped. An id recorded again takes the later
    /// bytes, as FORMAT.md's replay says (the earlier ones stay in the buffer, unused: a log
    /// written by Polykey records an object twice only to repair a damaged copy).
    fn insert(&mut self, oid: Oid, z: Vec<u8>, is_delta: bool) -> Result<(), String> {
        let z = Zeroizing::new(z);
        let at = u32::try_from(self.bytes.len()).ok();
        let Some((at, len)) = at.zip(u32::try_from(z.len()).ok()).filter(|(at, len)| at.checked_add(*len).is_some() && *len < DELTA) else {
            return Err("repository holds more than 4 GiB of objects".to_owned());
        };
        self.reserve(1, z.len());
        self.bytes.extend_from_slice(&z);
        self.index.insert(oid, (at, if is_delta { len | DELTA } else { len }));
        Ok(())
    }
}

/// A repository's head tree, checked once (hash and grammar).
enum HeadTree {
    /// Its body lies in the objects as it is (a stored-block object, what Polykey writes up
    /// to 64 KiB): read there, no copy. With the names' offsets if it is large.
    InPlace { at: u32, len: u32, names: Vec<u32> },
    /// Inflated from a compressed object.
    Inflated(FlatTree),
}

/// A flat git repository held in memory: loose objects by id, and the branch head.
#[derive(Default)]
pub struct Repo {
    objects: Objects,
    head: Option<Oid>,
    /// The head commit's tree (its id and entries), checked on first use (objects are
    /// inflated lazily).
    tree: OnceLock<Result<(Oid, HeadTree), ObjectError>>,
    /// The head tree before the head last moved: the base the new head's tree delta is
    /// usually expressed against, so that it is not rebuilt from the whole delta chain.
    prev_tree: Option<(Oid, HeadTree)>,
    /// `merge = never`: a sync never merges this repository's secrets line by line.
    merge_never: bool,
}

impl Repo {
    /// The head commit, if the repository has any commit.
    pub fn head(&self) -> Option<Oid> {
        self.head
    }

    /// Moves the head to commit `oid`, which must be present.
    fn set_head(&mut self, name: &Name, oid: Oid) -> Result<(), String> {
        if !self.has(oid) {
            return Err(format!("head of {name:?} names absent commit {oid}"));
        }
        self.head = Some(oid);
        if let Some(Ok(tree)) = self.tree.take() {
            self.prev_tree = Some(tree);
        }
        Ok(())
    }

    /// How object `oid` is held, if present.
    pub fn stored(&self, oid: Oid) -> Option<Stored<'_>> {
        self.objects.stored(&oid)
    }

    /// How a sync merges this repository's secrets changed on both sides.
    pub fn merge_mode(&self) -> crate::merge::MergeMode {
        if self.merge_never {
            crate::merge::MergeMode::Never
        } else {
            crate::merge::MergeMode::Lines
        }
    }

    /// The repository's identity: its root commit, reached from the head by first parents
    /// (`None` while it has no commit). Copies, backups and syncs keep it; repositories made
    /// separately differ.
    pub fn root(&self) -> Result<Option<Oid>, ObjectError> {
        let Some(mut at) = self.head else { return Ok(None) };
        // Each step goes to an older commit: more steps than objects is a cycle.
        for _ in 0..=self.objects.index.len() {
            match self.commit(at)?.parents.first() {
                Some(&p) => at = p,
                None => return Ok(Some(at)),
            }
        }
        Err(ObjectError::BadBody(at, "commit"))
    }

    /// Whether the object is present.
    pub fn has(&self, oid: Oid) -> bool {
        self.objects.index.contains_key(&oid)
    }

    /// Whether the object is present and intact, `z` being a good encoding of it: its bytes
    /// are `z`, or decode to an object with this id (an older encoding). A damaged copy, or
    /// bytes recorded under the wrong id, does not count: recording `z` replaces it, since a
    /// repeated id takes the later bytes. Decodes only when the bytes differ.
    pub fn holds(&self, oid: Oid, z: &[u8]) -> bool {
        match self.objects.stored(&oid) {
            Some(Stored::Loose(have)) => have == z || git::decode_any(oid, have).is_ok(),
            Some(Stored::Delta(_)) => self.read(oid, ObjectType::Tree).is_ok(),
            None => false,
        }
    }

    /// All objects (id, how they are held), unordered.
    pub fn objects(&self) -> impl Iterator<Item = (&Oid, Stored<'_>)> {
        self.objects.index.keys().map(|oid| (oid, self.objects.stored(oid).expect("indexed")))
    }

    /// An object in git's loose encoding (a tree held as a delta is rebuilt and encoded).
    pub fn loose(&self, oid: Oid) -> Result<std::borrow::Cow<'_, [u8]>, ObjectError> {
        match self.objects.stored(&oid).ok_or(ObjectError::Missing(oid))? {
            Stored::Loose(z) => Ok(std::borrow::Cow::Borrowed(z)),
            Stored::Delta(_) => Ok(std::borrow::Cow::Owned(git::encode(ObjectType::Tree, &self.materialize(oid)?).1)),
        }
    }

    /// Inflates and verifies one object of the expected kind.
    pub fn read(&self, oid: Oid, kind: ObjectType) -> Result<Zeroizing<Vec<u8>>, ObjectError> {
        match self.objects.stored(&oid).ok_or(ObjectError::Missing(oid))? {
            Stored::Loose(z) => git::decode(oid, z, kind),
            Stored::Delta(_) if kind == ObjectType::Tree => self.materialize(oid),
            Stored::Delta(_) => Err(ObjectError::WrongKind(oid, if kind == ObjectType::Blob { "blob" } else { "commit" })),
        }
    }

    /// The body of a tree held as a delta: its chain followed back to a tree held whole (or
    /// to the previous head tree, usually its base), the deltas applied at once, the hash
    /// checked.
    fn materialize(&self, oid: Oid) -> Result<Zeroizing<Vec<u8>>, ObjectError> {
        let mut chain = Vec::new();
        let mut at = oid;
        let whole;
        let base: &[u8] = loop {
            if let Some((prev, tree)) = &self.prev_tree {
                if *prev == at {
                    break self.tree_ref(tree).body();
                }
            }
            match self.objects.stored(&at).ok_or(ObjectError::Missing(at))? {
                Stored::Loose(z) => {
                    whole = git::decode(at, z, ObjectType::Tree)?;
                    git::index_tree(at, &whole)?;
                    break &whole;
                }
                Stored::Delta(d) => {
                    // Each step names another object: a longer chain is a cycle.
                    if chain.len() >= self.objects.index.len() {
                        return Err(ObjectError::BadBody(oid, "tree delta chain"));
                    }
                    chain.push((at, d));
                    at = delta::base(at, d)?;
                }
            }
        };
        chain.reverse();
        delta::apply(oid, base, &chain)
    }

    /// The size of a blob, from its header only (the body stays compressed).
    pub fn blob_size(&self, oid: Oid) -> Result<u64, ObjectError> {
        match self.objects.stored(&oid).ok_or(ObjectError::Missing(oid))? {
            Stored::Loose(z) => git::peek_size(oid, z),
            Stored::Delta(_) => Err(ObjectError::WrongKind(oid, "blob")),
        }
    }

    /// Whether tree `oid` differs from tree `parent` at `secret`, read from the delta when
    /// `oid` is held as a delta against `parent` (no tree rebuilt); `None` otherwise.
    pub fn delta_touches(&self, oid: Oid, parent: Oid, secret: &Name) -> Option<Result<bool, ObjectError>> {
        match self.objects.stored(&oid)? {
            Stored::Delta(d) if delta::base(oid, d).ok() == Some(parent) => Some(delta::touches(oid, d, secret.as_bytes())),
            _ => None,
        }
    }

    /// Reads and parses a commit.
    pub fn commit(&self, oid: Oid) -> Result<git::Commit, ObjectError> {
        git::parse_commit(oid, &self.read(oid, ObjectType::Commit)?)
    }

    /// Reads and parses a tree.
    pub fn read_tree(&self, oid: Oid) -> Result<Tree, ObjectError> {
        git::parse_tree(oid, &self.read(oid, ObjectType::Tree)?)
    }

    /// The secrets at the head: name → blob id.
    pub fn tree(&self) -> Result<TreeRef<'_>, ObjectError> {
        let (_, tree) = self.tree.get_or_init(|| self.head_tree()).as_ref().map_err(Clone::clone)?;
        Ok(self.tree_ref(tree))
    }

    /// The id of the head commit's tree, if there is a head.
    pub fn tree_id(&self) -> Result<Option<Oid>, ObjectError> {
        let (oid, _) = self.tree.get_or_init(|| self.head_tree()).as_ref().map_err(Clone::clone)?;
        Ok(self.head.map(|_| *oid))
    }

    fn tree_ref<'a>(&'a self, tree: &'a HeadTree) -> TreeRef<'a> {
        match tree {
            HeadTree::InPlace { at, len, names } => TreeRef::new(&self.objects.bytes[*at as usize..(*at + *len) as usize], names),
            HeadTree::Inflated(tree) => tree.as_ref(),
        }
    }

    fn head_tree(&self) -> Result<(Oid, HeadTree), ObjectError> {
        let Some(head) = self.head else { return Ok((Oid::zero(), HeadTree::Inflated(FlatTree::default()))) };
        let oid = self.commit(head)?.tree;
        let body = self.read(oid, ObjectType::Tree)?; // Checks the hash.
        let (&(at, _), (is_delta, z)) = self.objects.index.get(&oid).zip(self.objects.entry(&oid)).ok_or(ObjectError::Missing(oid))?;
        match git::stored_body(z).filter(|_| !is_delta) {
            Some(place) => Ok((
                oid,
                HeadTree::InPlace { names: git::index_tree(oid, &z[place.clone()])?, at: at + place.start as u32, len: place.len() as u32 },
            )),
            None => FlatTree::parse(oid, body).map(|t| (oid, HeadTree::Inflated(t))),
        }
    }

    /// The objects reachable from the head (commits, their trees and blobs), or an error if
    /// any of them cannot be read.
    pub fn reachable(&self) -> Result<std::collections::HashSet<Oid>, ObjectError> {
        let mut seen = std::collections::HashSet::new();
        let mut commits: Vec<Oid> = self.head.into_iter().collect();
        while let Some(c) = commits.pop() {
            if !seen.insert(c) {
                continue;
            }
            let commit = self.commit(c)?;
            // A tree held as a delta reaches the blobs it sets and its base (which a
            // checkpoint must keep to rebuild it), and so on down the chain.
            let mut tree = commit.tree;
            while seen.insert(tree) {
                match self.objects.stored(&tree).ok_or(ObjectError::Missing(tree))? {
                    Stored::Delta(d) => {
                        seen.extend(delta::blobs(tree, d)?);
                        tree = delta::base(tree, d)?;
                    }
                    Stored::Loose(_) => {
                        seen.extend(self.read_tree(tree)?.values().copied());
                        break;
                    }
                }
            }
            commits.extend(commit.parents);
        }
        Ok(seen)
    }

    /// The commits the head reaches whose tree is held as a delta, each tree given to one
    /// commit: commit → tree (a checkpoint writes each pair as one save record).
    fn saves(&self) -> HashMap<Oid, Oid> {
        let mut out = HashMap::new();
        let mut trees = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        let mut commits: Vec<Oid> = self.head.into_iter().collect();
        while let Some(c) = commits.pop() {
            if !seen.insert(c) {
                continue;
            }
            let Ok(commit) = self.commit(c) else { continue };
            if matches!(self.objects.stored(&commit.tree), Some(Stored::Delta(_))) && trees.insert(commit.tree) {
                out.insert(c, commit.tree);
            }
            commits.extend(commit.parents);
        }
        out
    }

    /// Approximate bytes all the objects this repository holds would take in a checkpoint:
    /// an upper bound of [`Repo::live_bytes`] that costs no walk of the history.
    fn stored_bytes(&self) -> u64 {
        self.objects.index.values().map(|&(_, len)| member_bytes((len & !DELTA) as usize)).sum::<u64>() + 3 * 1024
    }

    /// Approximate bytes this repository takes in a checkpoint, which keeps only what the
    /// head reaches: the commits a save replaced (`Node::put_amending`) are not live.
    fn live_bytes(&self) -> u64 {
        match self.reachable() {
            Ok(keep) => {
                keep.iter()
                    .filter_map(|oid| self.objects.index.get(oid))
                    .map(|&(_, len)| member_bytes((len & !DELTA) as usize))
                    .sum::<u64>()
                    + 3 * 1024
            }
            Err(_) => self.stored_bytes(),
        }
    }

    /// Drops the objects the head does not reach (what a checkpoint leaves out), so that
    /// memory and [`Repo::stored_bytes`] follow the live state; keeps everything if the
    /// history cannot be walked.
    fn prune(&mut self) -> Result<(), String> {
        let Ok(keep) = self.reachable() else { return Ok(()) };
        if keep.len() == self.objects.index.len() {
            return Ok(());
        }
        let mut kept = Objects::default();
        let mut ids: Vec<Oid> = keep.into_iter().filter(|oid| self.objects.index.contains_key(oid)).collect();
        ids.sort_by_key(|oid| self.objects.index[oid].0);
        kept.reserve(ids.len(), ids.iter().map(|oid| (self.objects.index[oid].1 & !DELTA) as usize).sum());
        for oid in ids {
            let (is_delta, bytes) = self.objects.entry(&oid).expect("indexed");
            kept.insert(oid, bytes.to_vec(), is_delta)?;
        }
        self.objects = kept;
        self.tree = OnceLock::new();
        self.prev_tree = None;
        Ok(())
    }
}

/// Bytes a tar member of `len` data bytes takes, with a long-name header.
fn member_bytes(len: usize) -> u64 {
    1024 + (len as u64).div_ceil(512) * 512
}

/// Why a record names a repository the state does not have.
fn missing_repo(r: &Name) -> String {
    format!("record for unknown repository {r:?}")
}

/// A tag: entry name → (repository, secret).
pub type Tag = BTreeMap<Name, (Name, Name)>;

/// Repositories and tags.
#[derive(Default)]
pub struct State {
    /// Repositories by name, each in its own allocation: a B-tree node has room for eleven,
    /// and inline it would hold eleven whole repositories (~160 bytes each) however full.
    pub repos: BTreeMap<Name, Box<Repo>>,
    /// Tags by name.
    pub tags: BTreeMap<Name, Tag>,
    /// The node's identity keys (version, Ed25519 seed, X25519 secret), once made.
    pub identity: Option<SecretBytes>,
    /// Removed repositories: root commit → head when removed.
    pub removed: BTreeMap<Oid, Oid>,
    /// Whether the node is a sub-node (takes only the repositories it holds).
    pub partial: bool,
}

impl State {
    /// Applies one record. Fails (with a reason) on a record that contradicts the state,
    /// which in a replayed log means damage or tampering.
    pub fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Repo(r) => {
                self.repos.entry(r).or_default();
            }
            Record::Object(r, oid, z) => {
                let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
                repo.objects.insert(oid, z, false)?;
            }
            Record::Delta(r, oid, d) => {
                let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
                repo.objects.insert(oid, d, true)?;
            }
            Record::Save { repo: r, commit, commit_z, tree, delta } => {
                let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
                repo.objects.insert(commit, commit_z, false)?;
                repo.objects.insert(tree, delta, true)?;
                repo.set_head(&r, commit)?;
            }
            Record::Head(r, oid) => {
                let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
                repo.set_head(&r, oid)?;
            }
            Record::Tag(t) => {
                self.tags.entry(t).or_default();
            }
            Record::Link { tag, entry, repo, secret } => {
                if !self.repos.contains_key(&repo) {
                    return Err(missing_repo(&repo));
                }
                let t = self.tags.get_mut(&tag).ok_or_else(|| format!("link in unknown tag {tag:?}"))?;
                t.insert(entry, (repo, secret));
            }
            Record::RemoveRepo(r) => {
                self.repos.remove(&r).ok_or_else(|| missing_repo(&r))?;
                for t in self.tags.values_mut() {
                    t.retain(|_, (repo, _)| *repo != r);
                }
            }
            Record::RemoveTag(t) => {
                self.tags.remove(&t).ok_or_else(|| format!("removal of unknown tag {t:?}"))?;
            }
            Record::RemoveLink(t, e) => {
                let tag = self.tags.get_mut(&t).ok_or_else(|| format!("removal in unknown tag {t:?}"))?;
                tag.remove(&e).ok_or_else(|| format!("removal of unknown entry {e:?} in tag {t:?}"))?;
            }
            Record::Identity(k) => self.identity = Some(Zeroizing::new(k)),
            Record::RepoConfig(r, c) => {
                let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
                repo.merge_never = c == b"merge = never\n";
            }
            Record::Removed { root, head } => {
                self.removed.insert(root, head);
            }
            Record::Partial => self.partial = true,
        }
        Ok(())
    }

    /// Applies records in order, as [`State::apply`] one by one would, but looks a
    /// repository up once for a run of its objects and head (how transactions hold them),
    /// and makes room in its object map for the whole run at once.
    pub fn apply_all(&mut self, records: Vec<Record>) -> Result<(), String> {
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            let is_delta = matches!(record, Record::Delta(..));
            let (Record::Object(r, oid, z) | Record::Delta(r, oid, z)) = record else {
                self.apply(record)?;
                continue;
            };
            let repo = self.repos.get_mut(&r).ok_or_else(|| missing_repo(&r))?;
            let run = records
                .as_slice()
                .iter()
                .take_while(|next| matches!(next, Record::Object(n, ..) | Record::Delta(n, ..) | Record::Head(n, _) if *n == r))
                .count();
            let bytes: usize = records.as_slice()[..run]
                .iter()
                .map(|next| if let Record::Object(_, _, z) | Record::Delta(_, _, z) = next { z.len() } else { 0 })
                .sum();
            repo.objects.reserve(run + 1, z.len() + bytes);
            repo.objects.insert(oid, z, is_delta)?;
            for next in records.by_ref().take(run) {
                match next {
                    Record::Object(_, oid, z) => repo.objects.insert(oid, z, false)?,
                    Record::Delta(_, oid, d) => repo.objects.insert(oid, d, true)?,
                    Record::Head(_, oid) => repo.set_head(&r, oid)?,
                    _ => unreachable!("the run holds objects and heads only"),
                }
            }
        }
        Ok(())
    }

    /// The records that rebuild this state from nothing (a checkpoint), in replay order.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let repos = self.repos.iter().flat_map(|(name, repo)| {
            // Objects no commit reaches (saves replaced within one logical save) are dropped;
            // if the history cannot be walked, everything is kept.
            let keep = repo.reachable().ok();
            let mut objects: Vec<_> = repo.objects().filter(|(oid, _)| keep.as_ref().is_none_or(|k| k.contains(oid))).collect();
            objects.sort_by_key(|(oid, _)| **oid);
            // A commit and its tree delta go in one save record, as a save writes them.
            let saves = repo.saves();
            let bundled: std::collections::HashSet<Oid> = saves.values().copied().collect();
            std::iter::once(Record::Repo(name.clone()))
                .chain(repo.merge_never.then(|| Record::RepoConfig(name.clone(), b"merge = never\n".to_vec())))
                .chain(objects.into_iter().filter(move |(oid, _)| !bundled.contains(oid)).map(move |(oid, stored)| {
                    match (stored, saves.get(oid).and_then(|t| Some((*t, repo.objects.stored(t)?)))) {
                        (Stored::Loose(z), Some((tree, Stored::Delta(d)))) => {
                            Record::Save { repo: name.clone(), commit: *oid, commit_z: z.to_vec(), tree, delta: d.to_vec() }
                        }
                        (Stored::Loose(z), _) => Record::Object(name.clone(), *oid, z.to_vec()),
                        (Stored::Delta(d), _) => Record::Delta(name.clone(), *oid, d.to_vec()),
                    }
                }))
                .chain(repo.head.map(|h| Record::Head(name.clone(), h)))
        });
        let tags = self.tags.iter().flat_map(|(t, entries)| {
            std::iter::once(Record::Tag(t.clone())).chain(entries.iter().map(|(e, (r, s))| Record::Link {
                tag: t.clone(),
                entry: e.clone(),
                repo: r.clone(),
                secret: s.clone(),
            }))
        });
        let node = self
            .identity
            .iter()
            .map(|k| Record::Identity(k.to_vec()))
            .chain(self.partial.then_some(Record::Partial))
            .chain(self.removed.iter().map(|(root, head)| Record::Removed { root: *root, head: *head }));
        node.chain(repos).chain(tags)
    }

    /// Approximate size of a checkpoint of this state, in bytes. Walks every repository's
    /// history.
    pub fn checkpoint_bytes(&self) -> u64 {
        self.repos.values().map(|r| r.live_bytes()).sum::<u64>() + self.tag_bytes()
    }

    /// An upper bound of [`State::checkpoint_bytes`] without walking any history: it also
    /// counts objects the heads no longer reach.
    pub fn stored_bytes(&self) -> u64 {
        self.repos.values().map(|r| r.stored_bytes()).sum::<u64>() + self.tag_bytes()
    }

    fn tag_bytes(&self) -> u64 {
        self.tags.values().map(|t| 1024 + t.len() as u64 * 1536).sum()
    }

    /// Drops from memory the objects no head reaches (after a checkpoint left them out).
    pub fn prune(&mut self) -> Result<(), String> {
        self.repos.values_mut().try_for_each(|r| r.prune())
    }

    /// The tag entries that point at `repo/secret`.
    pub fn links_to(&self, repo: &Name, secret: &Name) -> Vec<(Name, Name)> {
        let mut out = Vec::new();
        for (t, entries) in &self.tags {
            for (e, (r, s)) in entries {
                if r == repo && s == secret {
                    out.push((t.clone(), e.clone()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::NameKind;

    fn name(kind: NameKind, s: &str) -> Name {
        Name::new(kind, s.as_bytes()).unwrap()
    }

    /// Records `tree` as the head of a new repository `r`; returns the state.
    fn with_head(tree: &Tree) -> (State, Name) {
        let r = name(NameKind::Repo, "r");
        let (tree_oid, tree_z) = git::encode(ObjectType::Tree, &git::tree_body(tree));
        let (commit_oid, commit_z) = git::encode(ObjectType::Commit, &git::commit_body(tree_oid, &[], 0, b"m\n"));
        let mut state = State::default();
        let records = vec![
            Record::Repo(r.clone()),
            Record::Object(r.clone(), tree_oid, tree_z),
            Record::Object(r.clone(), commit_oid, commit_z),
            Record::Head(r.clone(), commit_oid),
        ];
        state.apply_all(records).unwrap();
        (state, r)
    }

    #[test]
    fn head_trees_read_in_place_or_inflated_give_the_same_answers() {
        let (blob, _) = git::encode(ObjectType::Blob, b"v");
        // Scanned in place, bisected in place, and (a body over 64 KiB, so compressed) inflated.
        for n in [3usize, 40, 3000] {
            let tree: Tree = (0..n).map(|i| (name(NameKind::Secret, &format!("secret-{i:05}")), blob)).collect();
            let (state, r) = with_head(&tree);
            let head = state.repos[&r].tree().unwrap();
            assert!(head.same_as(&tree) && head.len() == n, "{n} entries");
            for (s, id) in &tree {
                assert_eq!(head.get(s), Some(*id));
            }
            assert_eq!(head.get(&name(NameKind::Secret, "secret-0000x")), None);
            let in_place = matches!(state.repos[&r].tree.get(), Some(Ok((_, HeadTree::InPlace { .. }))));
            assert_eq!(in_place, n < 1000, "{n} entries");
        }
    }

    #[test]
    fn an_object_recorded_again_takes_the_later_bytes() {
        let (state, r) = with_head(&Tree::new());
        let mut state = state;
        let (oid, z) = git::encode(ObjectType::Blob, b"same");
        let mut damaged = z.clone();
        *damaged.last_mut().unwrap() ^= 1;
        state.apply(Record::Object(r.clone(), oid, damaged)).unwrap();
        assert!(state.repos[&r].read(oid, ObjectType::Blob).is_err());
        state.apply(Record::Object(r.clone(), oid, z)).unwrap();
        assert_eq!(&state.repos[&r].read(oid, ObjectType::Blob).unwrap()[..], b"same");
        assert_eq!(state.repos[&r].objects().filter(|(o, _)| **o == oid).count(), 1);
    }
}
