//! A node: one encrypted file of repositories and tags, opened into memory.
//!
//! Every change is expressed as journal records, applied to the in-memory [`State`] and
//! queued; [`Node::save`] appends the queue as one transaction (one fsync). A failed save
//! keeps the queue, so the caller can retry without losing the change.

use crate::crypto::kdf::KdfParams;
use crate::error::{Error, Result};
use crate::format::header::{Header, HeaderError, FEATURE_NODES, FEATURE_TREE_DELTAS};
use crate::format::journal::{self, Record};
use crate::format::log::{self, Position};
use crate::git::{self, ObjectError};
use crate::name::Name;
use crate::secret::{Key, Passphrase, SecretBytes};
use crate::state::{State, Stored};
use crate::storage::{FileStorage, Placement, Storage};
use git2::{ObjectType, Oid};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Trees of at least this many bytes are saved as a delta against their parent's tree (when
/// the delta is at most half their size): smaller ones cost one tar member either way, and a
/// node of small repositories keeps the version 1 format without feature bits.
const DELTA_MIN_TREE_BYTES: usize = 4096;
/// Compaction is considered once the log holds this much more than the live state.
const COMPACT_MIN_GARBAGE_BYTES: u64 = 1 << 20;
/// How long a command waits for another process's lock on the node before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// How a node is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Shared lock; no writes.
    Read,
    /// Exclusive lock; writes allowed.
    Write,
}

/// One entry of a repository's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The commit id.
    pub id: Oid,
    /// Commit time, seconds since the Unix epoch.
    pub time: i64,
    /// The commit message (first line, lossily decoded).
    pub message: String,
}

/// Counters of what the last save did, for benchmarks and diagnostics.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveStats {
    /// Bytes appended to the node file.
    pub bytes_written: u64,
    /// Whether the save compacted the log.
    pub compacted: bool,
}

/// An open node.
pub struct Node {
    path: PathBuf,
    storage: Box<dyn Storage>,
    header: Header,
    key: Key,
    /// The key-encryption key the data key is wrapped under: setting a required feature bit
    /// wraps it again (the bits are bound into the wrap), and the passphrase is long gone.
    kek: Key,
    pos: Position,
    state: State,
    pending: journal::Writer,
    /// Log length at which compaction is next considered.
    compact_at: u64,
    access: Access,
    /// Whether only one header slot is intact (repaired at the next header write).
    header_degraded: bool,
    /// A save cut short or damaged at the end of the log, ignored when opening.
    discarded: Option<log::Damage>,
    /// A header write failed part-way (compaction, passphrase change): a slot on disk may
    /// name a checkpoint this node no longer counts on. Settled before the next write.
    header_unsure: bool,
    /// The bytes after the log are not what a crash leaves ([`log::Replayed::keep_tail`]):
    /// no write cuts them off until the user says so ([`Node::allow_cutting_tail`]).
    keep_tail: bool,
    /// Required feature bits the queued records need (set in the header before they are
    /// written, so that an older polykey refuses the node rather than calling it damaged).
    pending_features: u32,
    /// Why the file written so far is no longer where the user finds it (replaced, removed,
    /// its device gone): nothing more is written into it, and what it held must be written
    /// again (reopened by path once verified, else to a rescue file).
    lost: Option<String>,
    /// The last bytes of the log as written (up to [`TAIL_BYTES`]): a file reopened by path
    /// must end its log with them at the same place to be this node as it was.
    tail: Vec<u8>,
    /// Failed saves whose changes still wait to be written.
    waiting: u64,
    /// Length of the queue at the last failed save (a retry of the same changes is no new one).
    failed_len: usize,
    /// The rescue file written instead of the node's path, while it is not moved there.
    rescued: Option<PathBuf>,
    /// Since when saves fail, and the last error.
    failing: Option<(std::time::SystemTime, String)>,
}

/// A commit id as `polykey` shows it in messages: its first 12 hex digits.
fn short(oid: Oid) -> String {
    oid.to_string()[..12].to_owned()
}

/// How much of the log's end a reopened file must match (the last frame's tag and more).
const TAIL_BYTES: u64 = 64;

fn lock_file(file: &File, path: &Path, access: Access) -> Result<()> {
    let start = Instant::now();
    loop {
        let r = match access {
            Access::Read => file.try_lock_shared(),
            Access::Write => file.try_lock(),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => std::thread::sleep(Duration::from_millis(20)),
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Busy { node: path.to_owned(), pid: 0 }),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock node", path, e)),
        }
    }
}

impl Node {
    /// Creates a new, empty node at `path`; refuses to overwrite any existing file.
    pub fn create(path: &Path, pass: &Passphrase, params: KdfParams) -> Result<Node> {
        if pass.expose().is_empty() {
            return Err(Error::EmptyPassphrase);
        }
        params.check().map_err(|what| Error::Passphrase(format!("refusing Argon2 parameters: {what}")))?;
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::NodeExists { path: path.to_owned() },
            _ => Error::io("cannot create node", path, e),
        })?;
        lock_file(&file, path, Access::Write)?;
        let (mut header, key, kek) = Header::create(pass, params).map_err(|e| Error::io("cannot create node", path, e))?;
        let mut storage = FileStorage::new(file);
        let written = log::write_header(&mut storage, &mut header, &key).and_then(|()| {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            crate::storage::sync_dir(dir)
        });
        if let Err(e) = written {
            // Leave no half-written node behind.
            let _ = std::fs::remove_file(path);
            return Err(Error::io("cannot write node", path, e));
        }
        let pos = Position { epoch: header.epoch, next_seq: 0, end: header.log_start };
        Ok(Node {
            path: path.to_owned(),
            storage: Box::new(storage),
            header,
            key,
            kek,
            pos,
            state: State::default(),
            pending: journal::Writer::new(),
            compact_at: COMPACT_MIN_GARBAGE_BYTES,
            access: Access::Write,
            header_degraded: false,
            discarded: None,
            header_unsure: false,
            keep_tail: false,
            pending_features: 0,
            lost: None,
            tail: Vec::new(),
            waiting: 0,
            failed_len: 0,
            rescued: None,
            failing: None,
        })
    }

    /// Opens the node at `path` with `pass`.
    pub fn open(path: &Path, pass: &Passphrase, access: Access) -> Result<Node> {
        let file = crate::storage::open_regular(path, access == Access::Write)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NoNode { path: path.to_owned() },
                _ => Error::io("cannot open node", path, e),
            })?
            .map_err(|kind| Error::NotAFile { node: path.to_owned(), kind })?;
        lock_file(&file, path, access)?;
        Self::open_storage(path, Box::new(FileStorage::at(file, path)), pass, access)
    }

    /// Opens a node from any storage (tests use in-memory or failing storage). The log is
    /// read, decrypted and applied a frame at a time: the file is never in memory whole.
    pub fn open_storage(path: &Path, storage: Box<dyn Storage>, pass: &Passphrase, access: Access) -> Result<Node> {
        let read_error = |e| Error::io("cannot read node", path, e);
        let (_, head) = header_region(storage.as_ref()).map_err(read_error)?;
        let (header, key, kek, both) = Header::open_keys(&head, pass).map_err(|e| header_error(path, e))?;
        let mut state = State::default();
        let mut replay = Replay { state: &mut state, parser: journal::Parser::new(), reset: false, staged: None };
        let replayed = log::replay_storage(storage.as_ref(), &header, &key, &mut replay).map_err(|e| match e {
            log::ReplayError::Damaged(d) => Error::Damaged { node: path.to_owned(), offset: d.offset, what: d.what },
            log::ReplayError::Io(e) => read_error(e),
        })?;
        // The live size needs a walk of every history, too dear for an open: the first check
        // comes once the log has grown by an eighth (at least 1 MiB), so that a node left
        // full of replaced saves (by an older polykey, or a session that ended early) is
        // compacted by a later session that writes, while a command's single save costs
        // no walk.
        let end = replayed.position.end;
        let tail = read_tail(storage.as_ref(), &header, end).map_err(read_error)?;
        Ok(Node {
            path: path.to_owned(),
            storage,
            header,
            key,
            kek,
            pos: replayed.position,
            state,
            pending: journal::Writer::new(),
            compact_at: end + (end / 8).max(COMPACT_MIN_GARBAGE_BYTES),
            access,
            header_degraded: !both,
            discarded: replayed.discarded,
            header_unsure: false,
            keep_tail: replayed.keep_tail,
            pending_features: 0,
            lost: None,
            tail,
            waiting: 0,
            failed_len: 0,
            rescued: None,
            failing: None,
        })
    }

    /// The node file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decrypted state (read-only).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The node's random identity.
    pub fn node_id(&self) -> [u8; 16] {
        self.header.node_id
    }

    /// The log's position (epoch, frames committed): it only grows as the node is saved.
    pub fn position(&self) -> (u32, u64) {
        (self.pos.epoch, self.pos.next_seq)
    }

    /// Length of the node file's committed content in bytes.
    pub fn file_len(&self) -> u64 {
        self.pos.end
    }

    /// Whether changes are queued and not yet saved (or saved into a file that was lost).
    pub fn is_dirty(&self) -> bool {
        !self.pending.is_empty() || self.lost.is_some()
    }

    /// How many saves wait to be written (failed, or written into a file that was lost).
    pub fn waiting(&self) -> u64 {
        self.waiting.max(u64::from(self.lost.is_some()))
    }

    /// Why the file written so far is no longer where the user finds it, if it is not.
    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// Since when saving fails, and why (the last error), if it does.
    pub fn failing(&self) -> Option<(std::time::SystemTime, &str)> {
        self.failing.as_ref().map(|(t, e)| (*t, e.as_str()))
    }

    fn fail(&mut self, why: String) {
        self.failing.get_or_insert_with(|| (std::time::SystemTime::now(), String::new())).1 = why;
    }

    /// The rescue file this node is written to, while the node's path leads to another file.
    pub fn rescued(&self) -> Option<&Path> {
        self.rescued.as_deref()
    }

    /// Checks that the node's path still leads to the file written (about every second while
    /// mounted): once it does not, nothing more is written into that file, and the next save
    /// writes everything again where the user finds it. Returns why, if so.
    pub fn check_placement(&mut self) -> Option<&str> {
        if self.lost.is_none() && self.access == Access::Write {
            self.note_placement();
        }
        self.lost.as_deref()
    }

    fn note_placement(&mut self) {
        match self.storage.placement() {
            Placement::Home => self.rescued = None, // A rescue file moved to the node's path is the node again.
            Placement::Rescue(_) => {}
            Placement::Gone(why) => {
                // Nothing more goes into it; letting go lets a detached filesystem finish.
                self.storage.release();
                self.fail(why.clone());
                self.lost = Some(why);
            }
            Placement::Replaced(why) => {
                self.fail(why.clone());
                self.lost = Some(why);
            }
        }
    }

    pub(crate) fn corrupt(&self, e: ObjectError) -> Error {
        Error::Corrupt { node: self.path.clone(), what: e.to_string() }
    }

    pub(crate) fn record(&mut self, record: Record) -> Result<()> {
        assert_eq!(self.access, Access::Write, "write on a node opened read-only");
        if matches!(record, Record::Delta(..) | Record::Save { .. }) {
            self.pending_features |= FEATURE_TREE_DELTAS;
        }
        if record.needs_nodes_feature() {
            self.pending_features |= FEATURE_NODES;
        }
        self.pending.push(&record);
        self.state.apply(record).map_err(|what| Error::Corrupt { node: self.path.clone(), what })
    }

    pub(crate) fn repo(&self, repo: &Name) -> Result<&crate::state::Repo> {
        self.state.repos.get(repo).map(|r| &**r).ok_or_else(|| Error::NotFound { what: format!("repository {repo}") })
    }

    /// Names of all repositories, sorted.
    pub fn repos(&self) -> Vec<Name> {
        self.state.repos.keys().cloned().collect()
    }

    /// Names of the secrets in `repo`, sorted by bytes.
    pub fn secrets(&self, repo: &Name) -> Result<Vec<Name>> {
        Ok(self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.names().collect())
    }

    /// The content of `repo/secret`.
    pub fn get(&self, repo: &Name, secret: &Name) -> Result<SecretBytes> {
        let r = self.repo(repo)?;
        let tree = r.tree().map_err(|e| self.corrupt(e))?;
        let oid = tree.get(secret).ok_or_else(|| Error::NotFound { what: format!("secret {repo}/{secret}") })?;
        r.read(oid, ObjectType::Blob).map_err(|e| self.corrupt(e))
    }

    /// The size of `repo/secret` in bytes, without decompressing it.
    pub fn secret_size(&self, repo: &Name, secret: &Name) -> Result<u64> {
        let r = self.repo(repo)?;
        let oid = r
            .tree()
            .map_err(|e| self.corrupt(e))?
            .get(secret)
            .ok_or_else(|| Error::NotFound { what: format!("secret {repo}/{secret}") })?;
        r.blob_size(oid).map_err(|e| self.corrupt(e))
    }

    /// Commits `tree` as the new head of `repo` with `message` (queued).
    fn commit(&mut self, repo: &Name, tree: &git::Tree, message: &[u8], extra: Vec<(Oid, Vec<u8>)>) -> Result<Oid> {
        let parent = self.repo(repo)?.head();
        self.commit_on(repo, tree, message, extra, parent.as_slice())
    }

    /// Commits `tree` with `parents` (first parent first) as the new head of `repo` (queued).
    pub(crate) fn commit_on(
        &mut self,
        repo: &Name,
        tree: &git::Tree,
        message: &[u8],
        extra: Vec<(Oid, Vec<u8>)>,
        parents: &[Oid],
    ) -> Result<Oid> {
        let parent = parents.first().copied();
        let tree_body = git::tree_body(tree);
        let tree_oid = Oid::hash_object(ObjectType::Tree, &tree_body).expect("hashing an in-memory buffer cannot fail");
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let body = git::commit_body(tree_oid, parents, time, message);
        let (commit_oid, commit_z) = git::encode(ObjectType::Commit, &body);
        for (oid, z) in extra {
            self.record_object(repo, oid, z)?;
        }
        match self.tree_delta(repo, parent, tree_oid, &tree_body)? {
            // The commit, its tree and the head in one member (a big repository's save).
            Some(delta) => {
                self.record(Record::Save { repo: repo.clone(), commit: commit_oid, commit_z, tree: tree_oid, delta })?;
            }
            None => {
                self.record_object(repo, tree_oid, git::encode(ObjectType::Tree, &tree_body).1)?;
                self.record_object(repo, commit_oid, commit_z)?;
                self.record(Record::Head(repo.clone(), commit_oid))?;
            }
        }
        Ok(commit_oid)
    }

    /// The delta to record tree `oid` (body `body`) as, against the tree of `parent`: `None`
    /// to record it whole (a small tree, no parent, a delta not much smaller, or a tree the
    /// repository already holds intact).
    fn tree_delta(&self, repo: &Name, parent: Option<Oid>, oid: Oid, body: &[u8]) -> Result<Option<Vec<u8>>> {
        let r = self.repo(repo)?;
        let Some(parent) = parent.filter(|_| body.len() >= DELTA_MIN_TREE_BYTES && !(r.has(oid) && r.read(oid, ObjectType::Tree).is_ok()))
        else {
            return Ok(None);
        };
        let base = r.commit(parent).map_err(|e| self.corrupt(e))?.tree;
        // The parent is the head but for a replaced save (`put_amending`): its tree is at hand.
        let delta = if r.tree_id().map_err(|e| self.corrupt(e))? == Some(base) {
            git::delta::diff(base, r.tree().map_err(|e| self.corrupt(e))?.body(), body)
        } else {
            let whole = r.read(base, ObjectType::Tree).map_err(|e| self.corrupt(e))?;
            git::index_tree(base, &whole).map_err(|e| self.corrupt(e))?;
            git::delta::diff(base, &whole, body)
        };
        Ok((delta.len() * 2 <= body.len()).then_some(delta))
    }

    /// Records object `oid` (good bytes `z`) in `repo` unless an intact copy is there already:
    /// writing it repairs a damaged copy or one recorded under the wrong id.
    pub(crate) fn record_object(&mut self, repo: &Name, oid: Oid, mut z: Vec<u8>) -> Result<()> {
        if self.repo(repo)?.holds(oid, &z) {
            zeroize::Zeroize::zeroize(&mut z); // A stored block holds a secret verbatim.
            return Ok(());
        }
        self.record(Record::Object(repo.clone(), oid, z))
    }

    /// Creates an empty repository; fails if it exists.
    pub fn create_repo(&mut self, repo: &Name) -> Result<()> {
        if self.state.repos.contains_key(repo) {
            return Err(Error::Exists { what: format!("repository {repo}") });
        }
        self.record(Record::Repo(repo.clone()))
    }

    /// Stores `data` as `repo/secret`, creating the repository if needed. Returns whether a
    /// commit was made (storing identical bytes again makes none).
    pub fn put(&mut self, repo: &Name, secret: &Name, data: &[u8]) -> Result<bool> {
        check_size(repo, secret, data)?;
        if !self.state.repos.contains_key(repo) {
            self.record(Record::Repo(repo.clone()))?;
        }
        let (blob, blob_z) = git::encode(ObjectType::Blob, data);
        let blob_z = zeroize::Zeroizing::new(blob_z);
        let mut tree = self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.to_tree();
        let verb = match tree.insert(secret.clone(), blob) {
            Some(old) if old == blob => {
                // Unchanged, but a damaged copy of the blob is repaired by the good one.
                self.record_object(repo, blob, blob_z.to_vec())?;
                return Ok(false);
            }
            Some(_) => "Update",
            None => "Add",
        };
        let message = [verb.as_bytes(), b" ", secret.as_bytes(), b"\n"].concat();
        self.commit(repo, &tree, &message, vec![(blob, blob_z.to_vec())])?;
        Ok(true)
    }

    /// Like [`Node::put`], but if `replaces` is the head commit (made earlier in the same
    /// logical save, e.g. by an earlier close of a descriptor of the same open file), the new
    /// commit replaces it: its parent is the replaced commit's parent, so history shows one
    /// commit for the whole save. Returns the commit made, if any (none when nothing changed,
    /// or when the save turned out to restore the parent's content).
    pub fn put_amending(&mut self, repo: &Name, secret: &Name, data: &[u8], replaces: Option<Oid>) -> Result<Option<Oid>> {
        let head = self.state.repos.get(repo).and_then(|r| r.head());
        let Some(replaced) = replaces.filter(|c| Some(*c) == head) else {
            return Ok(if self.put(repo, secret, data)? { self.repo(repo)?.head() } else { None });
        };
        check_size(repo, secret, data)?;
        let r = self.repo(repo)?;
        let c = r.commit(replaced).map_err(|e| self.corrupt(e))?;
        let parent = c.parents.first().copied();
        let base = match parent {
            Some(p) => r.read_tree(r.commit(p).map_err(|e| self.corrupt(e))?.tree).map_err(|e| self.corrupt(e))?,
            None => git::Tree::new(),
        };
        let mut tree = r.tree().map_err(|e| self.corrupt(e))?.to_tree();
        let (blob, blob_z) = git::encode(ObjectType::Blob, data);
        let blob_z = zeroize::Zeroizing::new(blob_z);
        tree.insert(secret.clone(), blob);
        if tree == base {
            if let Some(p) = parent {
                self.record(Record::Head(repo.clone(), p))?; // Back where the save started.
                return Ok(None);
            }
        }
        if r.tree().map_err(|e| self.corrupt(e))?.same_as(&tree) {
            return Ok(Some(replaced)); // Same content as the commit being replaced.
        }
        let verb = if base.contains_key(secret) { "Update" } else { "Add" };
        let message = [verb.as_bytes(), b" ", secret.as_bytes(), b"\n"].concat();
        Ok(Some(self.commit_on(repo, &tree, &message, vec![(blob, blob_z.to_vec())], parent.as_slice())?))
    }

    /// Stores many secrets in `repo` in one commit (bulk import), creating the repository if
    /// needed. Secrets whose bytes are unchanged are skipped; returns how many changed.
    pub fn put_many(&mut self, repo: &Name, items: &[(Name, &[u8])]) -> Result<usize> {
        for (secret, data) in items {
            check_size(repo, secret, data)?;
        }
        if !self.state.repos.contains_key(repo) {
            self.record(Record::Repo(repo.clone()))?;
        }
        let mut tree = self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.to_tree();
        let mut blobs = Vec::new();
        for (secret, data) in items {
            let (blob, z) = git::encode(ObjectType::Blob, data);
            if tree.insert(secret.clone(), blob) == Some(blob) {
                self.record_object(repo, blob, z)?; // Unchanged; repairs a damaged copy, as `put`.
            } else {
                blobs.push((blob, z));
            }
        }
        let changed = blobs.len();
        if changed > 0 {
            let message = format!("Import {changed} secret{}\n", if changed == 1 { "" } else { "s" });
            self.commit(repo, &tree, message.as_bytes(), blobs)?;
        }
        Ok(changed)
    }

    /// Removes `repo/secret` and every tag entry pointing at it.
    pub fn remove(&mut self, repo: &Name, secret: &Name) -> Result<()> {
        let mut tree = self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.to_tree();
        if tree.remove(secret).is_none() {
            return Err(Error::NotFound { what: format!("secret {repo}/{secret}") });
        }
        for (t, e) in self.state.links_to(repo, secret) {
            self.record(Record::RemoveLink(t, e))?;
        }
        self.commit(repo, &tree, &[b"Remove ", secret.as_bytes(), b"\n"].concat(), Vec::new())?;
        Ok(())
    }

    /// Removes a whole repository and every tag entry pointing into it.
    pub fn remove_repo(&mut self, repo: &Name) -> Result<()> {
        let r = self.repo(repo)?;
        // Remembered (by the repository's identity, its first commit), so that a sync with a
        // node that still holds it removes it there rather than bringing it back.
        let removed = match r.head() {
            Some(head) => Some((r.root().map_err(|e| self.corrupt(e))?.expect("a repository with a head has a root"), head)),
            None => None,
        };
        if let Some((root, head)) = removed {
            self.record(Record::Removed { root, head })?;
        }
        self.record(Record::RemoveRepo(repo.clone()))
    }

    /// Renames `repo/from` to `repo/to` in one commit; tag entries of `from` follow. With
    /// `replace`, an existing `to` is overwritten (its own tag entries stay, now showing the
    /// renamed content); without, an existing `to` is refused.
    pub fn rename(&mut self, repo: &Name, from: &Name, to: &Name, replace: bool) -> Result<()> {
        let mut tree = self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.to_tree();
        if !tree.contains_key(from) {
            return Err(Error::NotFound { what: format!("secret {repo}/{from}") });
        }
        if from == to {
            return Ok(());
        }
        let replacing = tree.contains_key(to);
        if replacing && !replace {
            return Err(Error::Exists { what: format!("secret {repo}/{to}") });
        }
        let oid = tree.remove(from).expect("checked above");
        tree.insert(to.clone(), oid);
        for (t, e) in self.state.links_to(repo, from) {
            self.record(Record::Link { tag: t, entry: e, repo: repo.clone(), secret: to.clone() })?;
        }
        let verb: &[u8] = if replacing { b" replacing it" } else { b"" };
        let message = [b"Rename ", from.as_bytes(), b" to ", to.as_bytes(), verb, b"\n"].concat();
        self.commit(repo, &tree, &message, Vec::new())?;
        Ok(())
    }

    /// Renames a repository (its history moves with it; tag entries follow). The cost is the
    /// size of the repository: its objects are recorded again under the new name.
    pub fn rename_repo(&mut self, from: &Name, to: &Name) -> Result<()> {
        if from == to {
            return Ok(());
        }
        if self.state.repos.contains_key(to) {
            return Err(Error::Exists { what: format!("repository {to}") });
        }
        let r = self.repo(from)?;
        let objects: Vec<Record> = r
            .objects()
            .map(|(o, stored)| match stored {
                Stored::Loose(z) => Record::Object(to.clone(), *o, z.to_vec()),
                Stored::Delta(d) => Record::Delta(to.clone(), *o, d.to_vec()),
            })
            .collect();
        let head = r.head();
        let links: Vec<(Name, Name, Name)> = self
            .state
            .tags
            .iter()
            .flat_map(|(t, es)| es.iter().filter(|(_, (rr, _))| rr == from).map(|(e, (_, s))| (t.clone(), e.clone(), s.clone())))
            .collect();
        self.record(Record::Repo(to.clone()))?;
        for object in objects {
            self.record(object)?;
        }
        if let Some(h) = head {
            self.record(Record::Head(to.clone(), h))?;
        }
        for (tag, entry, secret) in links {
            self.record(Record::Link { tag, entry, repo: to.clone(), secret })?;
        }
        self.record(Record::RemoveRepo(from.clone()))
    }

    /// Renames a tag, entries and all.
    pub fn rename_tag(&mut self, from: &Name, to: &Name) -> Result<()> {
        if from == to {
            return Ok(());
        }
        if self.state.tags.contains_key(to) {
            return Err(Error::Exists { what: format!("tag {to}") });
        }
        let entries = self.state.tags.get(from).ok_or_else(|| Error::NotFound { what: format!("tag {from}") })?.clone();
        self.record(Record::Tag(to.clone()))?;
        for (entry, (repo, secret)) in entries {
            self.record(Record::Link { tag: to.clone(), entry, repo, secret })?;
        }
        self.record(Record::RemoveTag(from.clone()))
    }

    /// The blob id of `repo/secret` at the head, if it exists.
    pub fn blob_id(&self, repo: &Name, secret: &Name) -> Option<Oid> {
        self.state.repos.get(repo)?.tree().ok()?.get(secret)
    }

    /// Adds tag entry `tag/entry` → `repo/secret`, creating the tag if needed.
    pub fn tag(&mut self, tag: &Name, entry: &Name, repo: &Name, secret: &Name) -> Result<()> {
        if !self.repo(repo)?.tree().map_err(|e| self.corrupt(e))?.contains_key(secret) {
            return Err(Error::NotFound { what: format!("secret {repo}/{secret}") });
        }
        match self.state.tags.get(tag).and_then(|t| t.get(entry)) {
            Some((r, s)) if r == repo && s == secret => return Ok(()),
            Some((r, s)) => return Err(Error::Exists { what: format!("tag entry {tag}/{entry} (-> {r}/{s})") }),
            None => {}
        }
        if !self.state.tags.contains_key(tag) {
            self.record(Record::Tag(tag.clone()))?;
        }
        self.record(Record::Link { tag: tag.clone(), entry: entry.clone(), repo: repo.clone(), secret: secret.clone() })
    }

    /// Creates an empty tag; fails if it exists.
    pub fn create_tag(&mut self, tag: &Name) -> Result<()> {
        if self.state.tags.contains_key(tag) {
            return Err(Error::Exists { what: format!("tag {tag}") });
        }
        self.record(Record::Tag(tag.clone()))
    }

    /// Removes tag entry `tag/entry`; with `drop_empty`, removes the tag too if it is left empty.
    pub fn untag(&mut self, tag: &Name, entry: &Name, drop_empty: bool) -> Result<()> {
        let t = self.state.tags.get(tag).ok_or_else(|| Error::NotFound { what: format!("tag {tag}") })?;
        if !t.contains_key(entry) {
            return Err(Error::NotFound { what: format!("tag entry {tag}/{entry}") });
        }
        let last = t.len() == 1;
        self.record(Record::RemoveLink(tag.clone(), entry.clone()))?;
        if drop_empty && last {
            self.record(Record::RemoveTag(tag.clone()))?;
        }
        Ok(())
    }

    /// The node's identity, made (once, from the OS generator) and recorded on first use.
    pub fn identity_or_create(&mut self) -> Result<crate::identity::Identity> {
        if let Some(id) = self.identity() {
            return Ok(id);
        }
        let id = crate::identity::Identity::generate()
            .map_err(|e| Error::io("cannot read the OS random generator", "getrandom", std::io::Error::other(e.to_string())))?;
        self.record(Record::Identity(id.to_bytes()))?;
        Ok(id)
    }

    /// The node's identity, if it has one.
    pub fn identity(&self) -> Option<crate::identity::Identity> {
        self.state.identity.as_ref().and_then(|k| crate::identity::Identity::from_bytes(k))
    }

    /// The content of `repo/secret` as of commit `at`.
    pub fn get_at(&self, repo: &Name, secret: &Name, at: Oid) -> Result<SecretBytes> {
        let r = self.repo(repo)?;
        let tree = r.read_tree(r.commit(at).map_err(|e| self.corrupt(e))?.tree).map_err(|e| self.corrupt(e))?;
        let oid = tree.get(secret).ok_or_else(|| Error::NotFound { what: format!("secret {repo}/{secret} at {}", short(at)) })?;
        r.read(*oid, ObjectType::Blob).map_err(|e| self.corrupt(e))
    }

    /// Makes one commit restoring `repo/secret` (or, without `secret`, the whole repository) as
    /// it was at commit `at`: a secret absent then is removed (with its tag entries, as
    /// [`Node::remove`] does). History is not rewritten. Returns whether anything changed.
    pub fn revert(&mut self, repo: &Name, secret: Option<&Name>, at: Oid) -> Result<bool> {
        let r = self.repo(repo)?;
        let then = r.read_tree(r.commit(at).map_err(|e| self.corrupt(e))?.tree).map_err(|e| self.corrupt(e))?;
        let now = r.tree().map_err(|e| self.corrupt(e))?.to_tree();
        let (tree, message) = match secret {
            Some(s) => {
                let mut tree = now.clone();
                match then.get(s) {
                    Some(blob) => tree.insert(s.clone(), *blob),
                    None => tree.remove(s),
                };
                (tree, [b"Revert ", s.as_bytes(), b" to ", short(at).as_bytes(), b"\n"].concat())
            }
            None => (then, format!("Revert to {}\n", short(at)).into_bytes()),
        };
        if tree == now {
            return Ok(false);
        }
        for gone in now.keys().filter(|k| !tree.contains_key(*k)) {
            for (t, e) in self.state.links_to(repo, gone) {
                self.record(Record::RemoveLink(t, e))?;
            }
        }
        self.commit(repo, &tree, &message, Vec::new())?;
        Ok(true)
    }

    /// Sets how a sync merges `repo`'s secrets changed on both sides (a record only when it
    /// changes).
    pub fn set_merge_mode(&mut self, repo: &Name, mode: crate::merge::MergeMode) -> Result<()> {
        if self.repo(repo)?.merge_mode() != mode {
            self.record(Record::RepoConfig(repo.clone(), crate::merge::config_bytes(mode)))?;
        }
        Ok(())
    }

    /// Removes an empty tag.
    pub fn remove_tag(&mut self, tag: &Name) -> Result<()> {
        let t = self.state.tags.get(tag).ok_or_else(|| Error::NotFound { what: format!("tag {tag}") })?;
        if !t.is_empty() {
            return Err(Error::NotEmpty { what: format!("tag {tag}") });
        }
        self.record(Record::RemoveTag(tag.clone()))
    }

    /// History of `repo`, newest first; with `secret`, only commits that changed it.
    pub fn log(&self, repo: &Name, secret: Option<&Name>) -> Result<Vec<LogEntry>> {
        let r = self.repo(repo)?;
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut queue: std::collections::BinaryHeap<(i64, Oid)> = std::collections::BinaryHeap::new();
        if let Some(h) = r.head() {
            let c = r.commit(h).map_err(|e| self.corrupt(e))?;
            queue.push((c.time, h));
        }
        while let Some((_, oid)) = queue.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let c = r.commit(oid).map_err(|e| self.corrupt(e))?;
            let changed = match secret {
                None => true,
                Some(s) => {
                    let parent = match c.parents.first() {
                        Some(p) => Some(r.commit(*p).map_err(|e| self.corrupt(e))?.tree),
                        None => None,
                    };
                    // A tree saved as a delta against its parent's names what changed.
                    match parent.and_then(|p| r.delta_touches(c.tree, p, s)) {
                        Some(touched) => touched.map_err(|e| self.corrupt(e))?,
                        None => {
                            let mine = r.read_tree(c.tree).map_err(|e| self.corrupt(e))?.get(s).copied();
                            let theirs = match parent {
                                Some(p) => r.read_tree(p).map_err(|e| self.corrupt(e))?.get(s).copied(),
                                None => None,
                            };
                            mine != theirs
                        }
                    }
                }
            };
            if changed {
                let first = c.message.split(|&b| b == b'\n').next().unwrap_or_default();
                out.push(LogEntry { id: oid, time: c.time, message: String::from_utf8_lossy(first).into_owned() });
            }
            for p in &c.parents {
                let pc = r.commit(*p).map_err(|e| self.corrupt(e))?;
                queue.push((pc.time, *p));
            }
        }
        Ok(out)
    }

    /// Writes queued changes as one transaction (one fsync), compacting when the log holds
    /// mostly superseded data. On failure nothing is lost: the changes stay queued. Never
    /// writes into a file the node's path no longer leads to, and checks the path again before
    /// reporting success: a save reported is one the user finds at the node's path (or in the
    /// rescue file it names).
    pub fn save(&mut self) -> Result<SaveStats> {
        let mut stats = SaveStats::default();
        if !self.pending.is_empty() || self.lost.is_some() {
            self.writable()?;
            let txn = std::mem::take(&mut self.pending).into_bytes();
            match self.write_out(&txn) {
                Ok(n) => {
                    stats.bytes_written = n;
                    (self.waiting, self.failed_len, self.failing) = (0, 0, None);
                }
                Err(e) => {
                    self.fail(e.to_string());
                    if txn.len() > self.failed_len || self.waiting == 0 {
                        self.waiting += 1;
                    }
                    self.failed_len = txn.len();
                    // Put the change back so a retry writes it.
                    let mut w = journal::Writer::new();
                    w.append_raw(&txn);
                    self.pending = w;
                    return Err(Error::io("cannot write node", &self.path, e));
                }
            }
        }
        if self.pos.end >= self.compact_at {
            let live = self.state.checkpoint_bytes();
            if self.pos.end > 2 * live + COMPACT_MIN_GARBAGE_BYTES {
                self.compact()?;
                stats.compacted = true;
            }
            self.compact_at = self.pos.end.max(2 * live + COMPACT_MIN_GARBAGE_BYTES);
        }
        Ok(stats)
    }

    /// Appends `txn` where the user finds the node; see [`Node::save`].
    fn write_out(&mut self, txn: &[u8]) -> std::io::Result<u64> {
        if self.lost.is_none() {
            self.note_placement();
        }
        if self.lost.is_some() {
            return self.recover(Some(txn));
        }
        let written = self.append(txn);
        // Any error may be a device that went away; a success may have landed in a file
        // replaced meanwhile. Either way the path decides.
        self.note_placement();
        match written {
            Ok(_) if self.lost.is_some() => self.recover(None),
            Err(e) if self.lost.is_none() => Err(e),
            Err(_) => self.recover(Some(txn)),
            ok => ok,
        }
    }

    fn append(&mut self, txn: &[u8]) -> std::io::Result<u64> {
        self.settle_features()?;
        self.settle_header()?;
        let n = log::append(self.storage.as_mut(), &self.header, &self.key, &mut self.pos, txn, false)?;
        self.note_tail();
        Ok(n)
    }

    /// The file written so far is lost ([`Node::lost`]): writes everything where the user
    /// finds it. The file now at the node's path is taken back if it is this node as written
    /// (a stick put back, a filesystem mounted again), and `txn` (if not yet written) appended
    /// there; else, when the path's folder can be written, everything this node holds goes to
    /// a new rescue file beside it (the file at the path is never touched); else (the device
    /// is still away) nothing is written and the caller retries.
    fn recover(&mut self, txn: Option<&[u8]>) -> std::io::Result<u64> {
        let why = self.lost.clone().unwrap_or_default();
        let placement = self.storage.placement();
        let back = match placement {
            Placement::Home | Placement::Rescue(_) => Ok(()),
            _ => {
                let (header, key, end, tail) = (&self.header, &self.key, self.pos.end, &self.tail);
                self.storage.reopen(&|candidate| same_node(candidate, header, key, end, tail))
            }
        };
        match back {
            Ok(()) => {
                self.lost = None;
                // Still writing the rescue file, or back at the node's path.
                self.rescued = match placement {
                    Placement::Rescue(r) => Some(r),
                    _ => None,
                };
                txn.filter(|t| !t.is_empty()).map_or(Ok(0), |t| self.append(t))
            }
            Err(e) if e.kind() != std::io::ErrorKind::InvalidData && matches!(placement, Placement::Gone(_)) => {
                let also = if why.contains(&e.to_string()) { String::new() } else { format!(" ({e})") };
                Err(std::io::Error::new(e.kind(), format!("{why}; waiting for it to come back{also}")))
            }
            Err(e) => {
                let rescued = self
                    .rescue(None)
                    .map_err(|r| std::io::Error::new(r.kind(), format!("{why} ({e}); cannot write a rescue file: {r}")))?;
                self.rescued = Some(rescued);
                self.lost = None;
                Ok(self.pos.end)
            }
        }
    }

    /// Writes everything this node holds, queued changes included, as a new node file in
    /// `dir` (same passphrase, same node id) and writes there from now on; returns its path.
    /// For a daemon told to stop while its node cannot be written: nothing is dropped.
    pub fn rescue_into(&mut self, dir: &Path) -> Result<PathBuf> {
        let rescued = self.rescue(Some(dir)).map_err(|e| Error::io("cannot write a rescue file of", &self.path, e))?;
        // The queue's records are in the state, which the rescue file holds whole.
        self.pending = journal::Writer::new();
        (self.lost, self.waiting, self.failed_len, self.failing) = (None, 0, 0, None);
        self.rescued = Some(rescued.clone());
        Ok(rescued)
    }

    /// Writes everything this node holds as a new node file beside the node's path (or in
    /// `dir`; same passphrase, same node id) and writes there from now on; returns its path.
    fn rescue(&mut self, dir: Option<&Path>) -> std::io::Result<PathBuf> {
        let path = self.storage.start_rescue(dir)?;
        let (header, pos) = (self.header.clone(), self.pos);
        let mut h = header.clone();
        h.log_start = crate::format::header::LOG_OFFSET;
        h.base_end = h.log_start;
        self.pos = Position { epoch: h.epoch, next_seq: 0, end: h.log_start };
        let written = log::write_header(self.storage.as_mut(), &mut h, &self.key).and_then(|()| {
            self.header = h;
            self.header_unsure = false;
            self.checkpoint()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            (self.header, self.pos) = (header, pos);
            return Err(e);
        }
        // The file itself is synced; its name too, as far as the folder allows.
        let _ = crate::storage::sync_dir(path.parent().unwrap_or(Path::new(".")));
        Ok(path)
    }

    /// After a failed header write, writes the header this node holds to both slots, with a
    /// generation above any the failed write may have left, before anything else is written:
    /// otherwise a slot could keep naming a checkpoint that the next save overwrites.
    fn settle_header(&mut self) -> std::io::Result<()> {
        if self.header_unsure {
            let mut h = self.header.clone();
            h.generation += 2;
            log::write_header(self.storage.as_mut(), &mut h, &self.key)?;
            self.header = h;
            self.header_unsure = false;
        }
        Ok(())
    }

    /// Sets in the header the required feature bits the queued records need, before they are
    /// written: an older polykey then refuses the node as needing a newer version.
    fn settle_features(&mut self) -> std::io::Result<()> {
        let want = self.header.required_features | self.pending_features;
        if want != self.header.required_features {
            self.settle_header()?;
            let mut h = self.header.clone();
            h.require(want, &self.kek, &self.key)?;
            h.generation += 1;
            log::write_header(self.storage.as_mut(), &mut h, &self.key).inspect_err(|_| self.header_unsure = true)?;
            self.header = h;
        }
        self.pending_features = 0;
        Ok(())
    }

    /// Rewrites the node as a single checkpoint of the live state.
    pub fn compact(&mut self) -> Result<()> {
        assert!(self.pending.is_empty(), "save before compacting");
        self.writable()?;
        self.settle_header().map_err(|e| Error::io("cannot compact node", &self.path, e))?;
        self.checkpoint().map_err(|e| Error::io("cannot compact node", &self.path, e))?;
        self.header_degraded = false;
        // The checkpoint left out what no head reaches; so does memory from now on.
        self.state.prune().map_err(|what| Error::Corrupt { node: self.path.clone(), what })?;
        Ok(())
    }

    /// Writes the live state as one checkpoint (compaction, or a rescue file's content).
    fn checkpoint(&mut self) -> std::io::Result<()> {
        // The checkpoint is encoded as it is written, a frame's worth at a time.
        let state = &self.state;
        let mut produce = |out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>| {
            let mut w = journal::Writer::new();
            for mut r in state.records() {
                w.push(&r);
                journal::wipe_record(&mut r);
                if w.len() >= log::MAX_FRAME_PLAINTEXT {
                    out(&w.take())?;
                }
            }
            out(&w.into_bytes())
        };
        log::compact(self.storage.as_mut(), &mut self.header, &self.key, &mut self.pos, &mut produce).inspect_err(|_| {
            self.header_unsure = true;
        })?;
        self.header_degraded = false;
        self.note_tail();
        Ok(())
    }

    /// Remembers how the log ends now, for [`same_node`]. The write is done: a read that fails
    /// here (the device just went away) must not report it failed, or a retry would write it
    /// twice; the check then rests on the header and the length alone.
    fn note_tail(&mut self) {
        self.tail = read_tail(self.storage.as_ref(), &self.header, self.pos.end).unwrap_or_default();
    }

    /// Whether `pass` is this node's passphrase (costs one key derivation).
    pub fn verify_passphrase(&self, pass: &Passphrase) -> bool {
        self.header.unwrap_key(pass).is_ok()
    }

    /// Changes the passphrase by re-wrapping the data key; the log is untouched.
    pub fn change_passphrase(&mut self, new: &Passphrase, params: KdfParams) -> Result<()> {
        if new.expose().is_empty() {
            return Err(Error::EmptyPassphrase);
        }
        params.check().map_err(|what| Error::Passphrase(format!("refusing Argon2 parameters: {what}")))?;
        // Everything where the user finds it first: never a header into a lost file.
        self.save()?;
        self.settle_header().map_err(|e| Error::io("cannot write node", &self.path, e))?;
        let mut h = self.header.clone();
        // Re-wrapping is when a version 1 node can take the authenticated end marker (the
        // features are bound into the wrap), unless it ends in a version 1 marker's remains,
        // which the feature would refuse.
        if self.storage.len().is_ok_and(|len| len == self.pos.end) {
            h.required_features |= crate::format::header::FEATURE_AUTHENTICATED_END;
        }
        let kek = h.wrap(new, params, &self.key).map_err(|e| Error::io("cannot change passphrase of", &self.path, e))?;
        h.generation += 1;
        log::write_header(self.storage.as_mut(), &mut h, &self.key).map_err(|e| {
            self.header_unsure = true;
            Error::io("cannot write node", &self.path, e)
        })?;
        self.header = h;
        self.kek = kek;
        self.header_degraded = false;
        Ok(())
    }

    /// Drops the decrypted state and queued changes (zeroized as they drop). The node shows
    /// as empty afterwards and must not be saved.
    pub fn wipe(&mut self) {
        self.state = State::default();
        self.pending = journal::Writer::new();
        self.access = Access::Read;
    }

    /// The save that was cut short or damaged at the end of the log and ignored at open, if
    /// any: its offset and what was wrong. The node is at its last complete state.
    pub fn discarded_tail(&self) -> Option<(u64, &str)> {
        self.discarded.as_ref().map(|d| (d.offset, d.what.as_str()))
    }

    /// Whether the bytes after the log, ignored when opening, must be kept: they are not what a
    /// crash leaves, so they may hide saves, and the node refuses writes (which would cut them
    /// off) until [`Node::allow_cutting_tail`].
    pub fn kept_tail(&self) -> bool {
        self.keep_tail
    }

    /// Lets writes cut off the bytes after the log (the user accepted losing them).
    pub fn allow_cutting_tail(&mut self) {
        self.keep_tail = false;
    }

    /// Fails while the bytes after the log must be kept: a write would cut them off.
    pub fn writable(&self) -> Result<()> {
        match (&self.discarded, self.keep_tail) {
            (Some(d), true) => Err(Error::Damaged {
                node: self.path.clone(),
                offset: d.offset,
                what: format!(
                    "{}; refusing to write over it: copy the node file to keep what follows, then pass --accept-rollback to drop it",
                    d.what
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Whether one of the two header copies was damaged when the node was opened.
    pub fn header_degraded(&self) -> bool {
        self.header_degraded
    }
}

/// Applies the log's transactions to the state as replay decrypts them: each frame's journal
/// members are parsed as it arrives, and a transaction's records are applied at its COMMIT.
/// A checkpoint (RESET) is built into a state of its own as its frames arrive, so that its
/// records are never all held at once; that state replaces the old one at its COMMIT.
struct Replay<'a> {
    state: &'a mut State,
    parser: journal::Parser,
    /// The pending transaction's RESET flag.
    reset: bool,
    /// A pending checkpoint's state so far, and the first of its records that did not apply
    /// (reported at its COMMIT: a checkpoint cut short is not damage).
    staged: Option<(State, Result<(), String>)>,
}

impl log::Sink for Replay<'_> {
    fn frame(&mut self, _offset: u64, first: bool, reset: bool, plaintext: &[u8]) {
        if first {
            self.parser = journal::Parser::new();
            self.reset = reset;
            self.staged = reset.then(|| (State::default(), Ok(())));
        }
        self.parser.feed(plaintext);
        if let Some((staged, applied)) = &mut self.staged {
            let mut records = self.parser.take_records();
            if applied.is_ok() {
                *applied = staged.apply_all(records);
            } else {
                journal::wipe_records(&mut records);
            }
        }
    }

    fn commit(&mut self, whole: &mut dyn FnMut() -> std::io::Result<zeroize::Zeroizing<Vec<u8>>>) -> Result<(), log::ApplyError> {
        let staged = self.staged.take();
        match (std::mem::take(&mut self.parser).finish(), staged) {
            (Some(records), Some((mut staged, applied))) => {
                applied?;
                staged.apply_all(records)?;
                *self.state = staged;
            }
            (Some(records), None) => self.state.apply_all(records)?,
            // Something the fast parser does not read: the tar reader decides, on the whole.
            (None, staged) => {
                drop(staged);
                let records = journal::parse(&whole().map_err(log::ApplyError::Io)?).map_err(|e| e.to_string())?;
                if self.reset {
                    *self.state = State::default();
                }
                self.state.apply_all(records)?;
            }
        }
        Ok(())
    }
}

/// The file's length and its header region (ciphertext: nothing here needs wiping).
fn header_region(storage: &dyn Storage) -> std::io::Result<(u64, Vec<u8>)> {
    let len = storage.len()?;
    let mut head = vec![0u8; len.min(crate::format::header::LOG_OFFSET) as usize];
    storage.read_exact_at(0, &mut head)?;
    Ok((len, head))
}

/// Refuses a secret larger than a git object may be.
fn check_size(repo: &Name, secret: &Name, data: &[u8]) -> Result<()> {
    if data.len() > git::MAX_OBJECT_BYTES {
        return Err(Error::TooLarge {
            what: format!("secret {repo}/{secret}"),
            size: data.len() as u64,
            limit: git::MAX_OBJECT_BYTES as u64,
        });
    }
    Ok(())
}

/// The last bytes of the log up to `end` (at most [`TAIL_BYTES`]).
fn read_tail(storage: &dyn Storage, header: &Header, end: u64) -> std::io::Result<Vec<u8>> {
    let start = end.saturating_sub(TAIL_BYTES).max(header.log_start.min(end));
    let mut tail = vec![0u8; (end - start) as usize];
    storage.read_exact_at(start, &mut tail)?;
    Ok(tail)
}

/// Whether `candidate` (the file now at the node's path) is this node as it was written: a
/// header copy that verifies with this node's data key (not public bytes alone: anyone can
/// write a header naming this node's id), the same node id and log, at least as long, and
/// ending the log as written (`tail` before `end`). `InvalidData` if it is another file.
fn same_node(candidate: &dyn Storage, header: &Header, key: &Key, end: u64, tail: &[u8]) -> std::io::Result<()> {
    let other = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("the file now at the node's path {what}"));
    let (len, head) = header_region(candidate)?;
    let (found, _) = Header::decode(&head).map_err(|_| other("has no readable header"))?;
    let verified = found.iter().any(|h| {
        h.node_id == header.node_id
            && h.verify_seal(key)
            && (h.epoch, h.log_start, h.base_end) == (header.epoch, header.log_start, header.base_end)
    });
    if !verified {
        return Err(other("is not this node (its header does not verify with this node's key)"));
    }
    if len < end {
        return Err(other("is an older copy of this node"));
    }
    let mut found_tail = vec![0u8; tail.len()];
    candidate.read_exact_at(end - tail.len() as u64, &mut found_tail)?;
    if found_tail != tail {
        return Err(other("is another copy of this node, written elsewhere"));
    }
    Ok(())
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    match e {
        HeaderError::WrongPassphrase => Error::WrongPassphrase { node: path.to_owned() },
        HeaderError::Damaged(what) => Error::Damaged { node: path.to_owned(), offset: 0, what },
        HeaderError::Unsupported(what) => Error::Unsupported { node: path.to_owned(), what },
    }
}
