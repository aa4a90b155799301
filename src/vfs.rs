//! The platform-neutral filesystem a mount presents: every decision about what the tree shows
//! and what each operation means. The FUSE and WinFSP adapters only translate to and from it.
//!
//! The tree is `repos/<repo>/<secret>` and `tags/<tag>/<entry>`, where a tag entry is the same
//! inode as the secret it names. Besides these *bound* entries (backed by the node), each
//! repository or tag folder holds *local* files that live in memory only:
//!
//! - scratch files (editor names: see [`scratch::is_scratch_name`]) never enter history;
//! - a new file with an ordinary name becomes a secret when it is renamed to a secret's name,
//!   or [`GRACE`] after its last close (so `sed -i`'s and Python's temporary files, renamed
//!   over a secret right after they are written, never appear in history).
//!
//! Renaming a bound entry to a scratch name (vim's and emacs's backup step), or unlinking it
//! (what `mv` does when it moves a file in from another filesystem), *detaches* it: the secret
//! stays in the node, hidden (after an unlink its tag entries are hidden too), so that a new
//! file created at the same name within [`GRACE`] replaces its content in one commit and keeps
//! its tag entries. If nothing takes its place, the secret is removed (or the tag entry
//! dropped) when the grace period ends, or at once when a CLI command or unmount needs the
//! node to be current.
//!
//! Each logical save (one open of a file, from open to last release) is one commit: changes are
//! committed and saved (fsync'd) at every `close` by the opening process (so a failure reaches
//! `close` as EIO; see [`Vfs::flush_by`]), at `fsync`, and [`GRACE`] after the last write of a
//! file left open (or of a truncation with no open handle); while the file stays open,
//! each commit replaces the previous one of the same open (shells dup and close descriptors of
//! one open file, so `echo x > f` closes twice). Replaced commits become unreachable and are
//! dropped at the next compaction.

pub mod scratch;

use crate::error::Error as CoreError;
use crate::name::{Name, NameKind};
use crate::node::Node;
use crate::secret::SecretBytes;
use git2::Oid;
use scratch::is_scratch_name;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// An inode number.
pub type Ino = u64;
/// An open file handle.
pub type Fh = u64;
/// The mount's root folder.
pub const ROOT_INO: Ino = 1;
const REPOS_INO: Ino = 2;
const TAGS_INO: Ino = 3;
/// How long a detached secret waits for a replacement, a closed new file for a rename, and an
/// open dirty file for its close before it is committed anyway.
pub const GRACE: Duration = Duration::from_secs(1);
/// `rename` flag: fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: swap the two entries (not supported).
pub const RENAME_EXCHANGE: u32 = 2;

/// What a filesystem operation can fail with; each adapter maps these to its own codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    /// No such entry (ENOENT).
    #[error("no such file or folder")]
    NotFound,
    /// The target exists (EEXIST).
    #[error("already exists")]
    Exists,
    /// A folder that must be empty is not (ENOTEMPTY).
    #[error("folder not empty")]
    NotEmpty,
    /// A folder was expected (ENOTDIR).
    #[error("not a folder")]
    NotDir,
    /// A file was expected (EISDIR).
    #[error("is a folder")]
    IsDir,
    /// The name breaks the naming rules (EINVAL).
    #[error("invalid name")]
    InvalidName,
    /// The name is longer than 255 bytes (ENAMETOOLONG).
    #[error("name too long")]
    NameTooLong,
    /// The operation has no meaning here, e.g. a folder inside a repository (EPERM).
    #[error("operation not permitted here")]
    NotPermitted,
    /// Moving between a repository and a tag, or between repositories (EXDEV).
    #[error("cannot move between these folders")]
    CrossDevice,
    /// Unsupported flag or operation (EINVAL / ENOSYS).
    #[error("unsupported")]
    Unsupported,
    /// The secret is too large (EFBIG).
    #[error("file too large")]
    TooLarge,
    /// The mount's scratch files are at their cap in number or total size (ENOSPC): see
    /// [`scratch::MAX_FILES`] and [`scratch::MAX_TOTAL_BYTES`].
    #[error("no room for more scratch files")]
    NoSpace,
    /// The node could not be written or read (EIO); the change is kept and retried.
    #[error("I/O error: {0}")]
    Io(String),
}

/// A file's content for reading (see [`Vfs::content`]).
enum Content<'a> {
    /// The inode's working copy.
    Working(&'a [u8]),
    /// The node's bytes of the bound secret, decrypted for this read.
    Node(SecretBytes),
}

impl Content<'_> {
    /// The content as an owned buffer that is wiped when dropped.
    fn into_secret(self) -> SecretBytes {
        match self {
            Content::Working(w) => Zeroizing::new(w.to_vec()),
            Content::Node(d) => d,
        }
    }
}

impl std::ops::Deref for Content<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Content::Working(w) => w,
            Content::Node(d) => d,
        }
    }
}

/// The three kinds of inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A folder.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (scratch only: emacs's lock files).
    Symlink,
}

/// Attributes of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
    /// Number of names.
    pub nlink: u32,
    /// Permission bits (0700 folders, 0600 files).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Change time.
    pub ctime: SystemTime,
}

/// A kernel cache entry to drop because the core changed what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The content and attributes of an inode.
    Inode(Ino),
    /// The name `name` in folder `parent`.
    Entry(Ino, Vec<u8>),
}

/// Attribute changes asked by `setattr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    /// New size (truncate or extend with zeros).
    pub size: Option<u64>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
    /// New mode (accepted and ignored: files stay 0600, folders 0700).
    pub mode: Option<u32>,
    /// New owner (only the mounting user is accepted).
    pub uid: Option<u32>,
    /// New group (only the mounting user's group is accepted).
    pub gid: Option<u32>,
}

/// Filesystem statistics.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    /// Total blocks of 4 KiB.
    pub blocks: u64,
    /// Free blocks.
    pub bfree: u64,
    /// Number of inodes in use.
    pub files: u64,
    /// Free inodes.
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DirKind {
    Root,
    Repos,
    Tags,
    Repo(Name),
    Tag(Name),
}

struct Detached {
    /// The local inode that holds the detached secret under a scratch name (a rename), or
    /// none (an unlink: the secret and its tag entries are hidden until the grace ends).
    holder: Option<Ino>,
    deadline: Instant,
}

struct Dir {
    kind: DirKind,
    local: BTreeMap<Name, Ino>,
    detached: BTreeMap<Name, Detached>,
    mtime: SystemTime,
    /// Hash of the listing last reported with `mtime`: the kernel caches a folder's listing
    /// for as long as its mtime stays the same, so `getattr` moves the mtime whenever the
    /// listing changed, whatever changed it.
    listed: u64,
    /// When `listed` was last computed: `getattr` recomputes it at most every
    /// [`RELIST_EVERY`] (a GETATTR follows every change the kernel makes in a folder, and
    /// hashing `repos/` on each would make `cp -r` quadratic).
    listed_at: Option<Instant>,
}

/// How often `getattr` may recompute a folder's listing hash. The kernel drops its cached
/// listing at once for changes it makes itself, and control-socket commands force the
/// recompute; this bounds only how late a change made through another folder shows: this
/// plus the attribute lifetime.
const RELIST_EVERY: Duration = Duration::from_millis(250);

struct File {
    /// The secret this inode currently is, if any.
    bound: Option<(Name, Name)>,
    /// Working copy; `None` means the node's content of the bound secret.
    data: Option<SecretBytes>,
    /// The secret's blob the working copy was taken from (or last committed as): when the
    /// secret has another blob at a commit (a `put`, `sync` or `revert` through the control
    /// socket changed it meanwhile), the working copy is merged with it, never written over it.
    base: Option<Oid>,
    dirty: bool,
    opens: u32,
    /// For a local file: its folder and name.
    home: Option<(Ino, Name)>,
    /// When a local new file was last closed (it becomes a secret after [`GRACE`]).
    closed_at: Option<Instant>,
    last_write: Instant,
    mtime: SystemTime,
    ctime: SystemTime,
}

enum Inode {
    Dir(Dir),
    File(File),
    Symlink { target: Vec<u8>, home: Option<(Ino, Name)>, mtime: SystemTime },
}

/// The inodes by number, each in its own allocation: the table then holds 16 bytes per inode
/// instead of ~190 (the largest variant), which matters when it doubles (100,000 secrets
/// looked up made a 12 MiB table for a few MiB of inodes).
#[derive(Default)]
struct Inodes(HashMap<Ino, Box<Inode>>);

impl Inodes {
    fn get(&self, ino: &Ino) -> Option<&Inode> {
        self.0.get(ino).map(|b| &**b)
    }

    fn get_mut(&mut self, ino: &Ino) -> Option<&mut Inode> {
        self.0.get_mut(ino).map(|b| &mut **b)
    }

    fn insert(&mut self, ino: Ino, inode: Inode) {
        self.0.insert(ino, Box::new(inode));
    }

    fn remove(&mut self, ino: &Ino) {
        self.0.remove(ino);
    }

    fn clear(&mut self) {
        self.0.clear();
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&Ino, &Inode)> {
        self.0.iter().map(|(i, b)| (i, &**b))
    }
}

/// Every repository, every tag, and every tag entry with its target (repository, secret).
type Names = (Vec<Name>, Vec<Name>, HashMap<(Name, Name), (Name, Name)>);

/// Where a name in a folder leads.
enum Entry {
    Local(Ino),
    /// A bound entry: the secret it names.
    Bound(Name, Name),
}

/// The mounted filesystem over one node.
pub struct Vfs {
    node: Node,
    /// Per secret, the blob last read through the mount (or written by it): a save that
    /// replaces a secret changed since through the daemon is merged against it (see
    /// [`Vfs::commit_merged`]): an editor's buffer holds what was read, not what is now.
    served: std::cell::RefCell<HashMap<(Name, Name), Oid>>,
    inodes: Inodes,
    repo_dirs: HashMap<Name, Ino>,
    tag_dirs: HashMap<Name, Ino>,
    secrets: HashMap<(Name, Name), Ino>,
    next_ino: Ino,
    uid: u32,
    gid: u32,
    /// Open file handles (one per open(2), shared by dup'd descriptors): the commit each has
    /// made so far, which its later commits replace (one logical save, one commit).
    handles: HashMap<Fh, Option<Oid>>,
    /// The process that opened each handle, where the adapter knows it.
    owners: HashMap<Fh, u32>,
    next_fh: Fh,
    /// The node has changes that could not be saved yet.
    unsaved: bool,
    invalidations: Vec<Invalidation>,
    started: SystemTime,
    /// Blob sizes by blob id (content-addressed, so never stale): every LOOKUP and GETATTR of
    /// a secret needs its size, which otherwise costs an inflater set-up per request.
    sizes: HashMap<Oid, u64>,
    /// Inode numbers promised to secrets that a folder listing showed but nothing has looked
    /// up yet, by a hash of (repository, secret): the inode itself is made at the first
    /// lookup, with this number. A listing of 100,000 secrets then costs 16 bytes each, not a
    /// whole inode (~700 bytes with the table's slack). A hash collision or a stale entry only
    /// costs a listed number that differs from the one `stat` shows.
    reserved: HashMap<u64, Ino>,
    names: std::collections::hash_map::RandomState,
}

/// Bound on [`Vfs::sizes`]: cleared when reached (ids of old contents pile up otherwise).
const MAX_CACHED_SIZES: usize = 1 << 20;

fn name_of(kind: NameKind, raw: &[u8]) -> Result<Name, FsError> {
    if raw.len() > crate::name::MAX_NAME_BYTES {
        return Err(FsError::NameTooLong);
    }
    Name::new(kind, raw).map_err(|_| FsError::InvalidName)
}

fn core_err(e: CoreError) -> FsError {
    match e {
        CoreError::NotFound { .. } | CoreError::NoNode { .. } => FsError::NotFound,
        CoreError::Exists { .. } => FsError::Exists,
        CoreError::NotEmpty { .. } => FsError::NotEmpty,
        CoreError::InvalidName { .. } | CoreError::InvalidPath { .. } => FsError::InvalidName,
        CoreError::TooLarge { .. } => FsError::TooLarge,
        other => FsError::Io(other.to_string()),
    }
}

impl Vfs {
    /// A filesystem over `node`, owned by `uid`/`gid`.
    pub fn new(node: Node, uid: u32, gid: u32) -> Vfs {
        let now = SystemTime::now();
        let dir =
            |kind| Inode::Dir(Dir { kind, local: BTreeMap::new(), detached: BTreeMap::new(), mtime: now, listed: 0, listed_at: None });
        let mut inodes = Inodes::default();
        for (ino, kind) in [(ROOT_INO, DirKind::Root), (REPOS_INO, DirKind::Repos), (TAGS_INO, DirKind::Tags)] {
            inodes.insert(ino, dir(kind));
        }
        Vfs {
            node,
            inodes,
            repo_dirs: HashMap::new(),
            tag_dirs: HashMap::new(),
            secrets: HashMap::new(),
            next_ino: 4,
            uid,
            gid,
            handles: HashMap::new(),
            served: Default::default(),
            owners: HashMap::new(),
            next_fh: 1,
            unsaved: false,
            invalidations: Vec::new(),
            started: now,
            sizes: HashMap::new(),
            reserved: HashMap::new(),
            names: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The node (read-only).
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Runs a read-only command on the node (the control socket's reads). What the mount has
    /// pending is committed first, so the command sees every completed operation (an `rm`
    /// still in its grace period, say); a failure to save that does not stop the read, so
    /// reads keep working while the node file cannot be written.
    pub fn read_node<T>(&mut self, f: impl FnOnce(&mut Node) -> crate::Result<T>) -> crate::Result<T> {
        let _ = self.sweep(None, false);
        f(&mut self.node)
    }

    /// Runs a changing command on the node (the control socket's writes): first what the
    /// mount has pending is committed, so the command sees it; then the change is saved and the
    /// filesystem view brought in line. If the save fails, the change stays in the mount and
    /// is retried like any other, and the error says so.
    pub fn with_node<T>(&mut self, f: impl FnOnce(&mut Node) -> crate::Result<T>) -> crate::Result<T> {
        // Files still open are mid-save: their commit comes at their own close. A failure here
        // is a save failure, retried below and by tick.
        let _ = self.sweep(None, false);
        let before = self.bound_state();
        let names_before = self.names();
        let heads_before: Vec<(Name, Option<Oid>)> = self.repo_dirs.keys().map(|r| (r.clone(), self.head(r))).collect();
        // Brought in line even when the command failed part-way (a sync whose other node
        // could not be written): what it changed here is in the node, and is saved with it.
        let out = f(&mut self.node);
        self.reconcile(&before);
        let mut changed: Vec<Ino> =
            heads_before.into_iter().filter(|(r, h)| self.head(r) != *h).filter_map(|(r, _)| self.repo_dirs.get(&r).copied()).collect();
        changed.extend(self.forget_names(names_before));
        // The kernel may hold these folders' listings: drop them, and move their mtimes.
        for dir in changed {
            let _ = self.note_listing(dir, true);
            self.invalidations.push(Invalidation::Inode(dir));
        }
        let out = out?;
        if let Err(e) = self.node.save() {
            self.unsaved = true;
            return Err(CoreError::Pending { reason: e.to_string() });
        }
        self.unsaved = false;
        Ok(out)
    }

    /// Every repository, tag and tag entry, with each entry's target.
    fn names(&self) -> Names {
        let st = self.node.state();
        let entries =
            st.tags.iter().flat_map(|(t, es)| es.iter().map(move |(e, target)| ((t.clone(), e.clone()), target.clone()))).collect();
        (st.repos.keys().cloned().collect(), st.tags.keys().cloned().collect(), entries)
    }

    fn head(&self, repo: &Name) -> Option<Oid> {
        self.node.state().repos.get(repo).and_then(|r| r.head())
    }

    /// Tells the kernel to forget the names that a command removed or pointed elsewhere;
    /// returns the folders whose listings changed (repos/, tags/ and tag folders).
    fn forget_names(&mut self, (repos, tags, entries): Names) -> Vec<Ino> {
        let (repos_now, tags_now, entries_now) = self.names();
        let mut changed = Vec::new();
        if repos != repos_now {
            changed.push(REPOS_INO);
        }
        if tags != tags_now {
            changed.push(TAGS_INO);
        }
        let mut tags_changed: Vec<&Name> = entries_now.keys().filter(|k| !entries.contains_key(*k)).map(|(t, _)| t).collect();
        tags_changed.extend(entries.iter().filter(|(k, v)| entries_now.get(*k) != Some(*v)).map(|((t, _), _)| t));
        changed.extend(tags_changed.into_iter().filter_map(|t| self.tag_dirs.get(t).copied()));
        for r in repos.iter().filter(|r| !repos_now.contains(r)) {
            self.invalidations.push(Invalidation::Entry(REPOS_INO, r.as_bytes().to_vec()));
        }
        for t in tags.iter().filter(|t| !tags_now.contains(t)) {
            self.invalidations.push(Invalidation::Entry(TAGS_INO, t.as_bytes().to_vec()));
        }
        for ((t, e), target) in entries {
            if entries_now.get(&(t.clone(), e.clone())) != Some(&target) {
                if let Some(d) = self.tag_dirs.get(&t) {
                    self.invalidations.push(Invalidation::Entry(*d, e.as_bytes().to_vec()));
                }
            }
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// The blob and the number of tag entries each bound inode has now.
    fn bound_state(&self) -> HashMap<Ino, (Option<Oid>, usize)> {
        let mut links: HashMap<(&Name, &Name), usize> = HashMap::new();
        for entries in self.node.state().tags.values() {
            for (r, s) in entries.values() {
                *links.entry((r, s)).or_default() += 1;
            }
        }
        self.inodes
            .iter()
            .filter_map(|(i, n)| match n {
                Inode::File(File { bound: Some((r, s)), .. }) => {
                    Some((*i, (self.node.blob_id(r, s), links.get(&(r, s)).copied().unwrap_or(0))))
                }
                _ => None,
            })
            .collect()
    }

    /// Drains the kernel cache invalidations the last operations made necessary.
    pub fn take_invalidations(&mut self) -> Vec<Invalidation> {
        std::mem::take(&mut self.invalidations)
    }

    /// Checks that the node's path still leads to the file the node is written to (see
    /// [`Node::check_placement`]); returns why not, if so. Call about every second.
    pub fn check_placement(&mut self) -> Option<String> {
        self.node.check_placement().map(str::to_owned)
    }

    /// Commits everything, then writes the whole node to a new rescue file in `dir` and writes
    /// there from now on (see [`Node::rescue_into`]); returns its path.
    pub fn rescue_into(&mut self, dir: &std::path::Path) -> crate::Result<std::path::PathBuf> {
        let _ = self.commit_all(); // Into the node's queue; its save is what fails.
        self.node.rescue_into(dir)
    }

    /// Whether changes are waiting to be written to the node file.
    pub fn has_unsaved(&self) -> bool {
        self.unsaved || self.node.is_dirty()
    }

    fn alloc(&mut self, inode: Inode) -> Ino {
        let ino = self.next_number();
        self.inodes.insert(ino, inode);
        ino
    }

    /// A fresh inode number (numbers are never reused).
    fn next_number(&mut self) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        ino
    }

    fn dir(&self, ino: Ino) -> Result<&Dir, FsError> {
        match self.inodes.get(&ino) {
            Some(Inode::Dir(d)) => Ok(d),
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Result<&mut Dir, FsError> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::Dir(d)) => Ok(d),
            Some(_) => Err(FsError::NotDir),
            None => Err(FsError::NotFound),
        }
    }

    fn file(&self, ino: Ino) -> Result<&File, FsError> {
        match self.inodes.get(&ino) {
            Some(Inode::File(f)) => Ok(f),
            Some(Inode::Dir(_)) => Err(FsError::IsDir),
            Some(Inode::Symlink { .. }) => Err(FsError::Unsupported),
            None => Err(FsError::NotFound),
        }
    }

    fn file_mut(&mut self, ino: Ino) -> Result<&mut File, FsError> {
        match self.inodes.get_mut(&ino) {
            Some(Inode::File(f)) => Ok(f),
            Some(Inode::Dir(_)) => Err(FsError::IsDir),
            Some(Inode::Symlink { .. }) => Err(FsError::Unsupported),
            None => Err(FsError::NotFound),
        }
    }

    fn repo_dir_ino(&mut self, repo: &Name) -> Ino {
        self.folder_ino(DirKind::Repo(repo.clone()))
    }

    fn tag_dir_ino(&mut self, tag: &Name) -> Ino {
        self.folder_ino(DirKind::Tag(tag.clone()))
    }

    /// The inode of a repository's or tag's folder, allocated on first use.
    fn folder_ino(&mut self, kind: DirKind) -> Ino {
        let (map, name) = match &kind {
            DirKind::Repo(r) => (&self.repo_dirs, r),
            DirKind::Tag(t) => (&self.tag_dirs, t),
            _ => unreachable!("only repositories and tags have folders of their own"),
        };
        if let Some(i) = map.get(name) {
            return *i;
        }
        let name = name.clone();
        let is_repo = matches!(kind, DirKind::Repo(_));
        let ino = self.alloc(Inode::Dir(Dir {
            kind,
            local: BTreeMap::new(),
            detached: BTreeMap::new(),
            mtime: self.started,
            listed: 0,
            listed_at: None,
        }));
        if is_repo {
            self.repo_dirs.insert(name, ino)
        } else {
            self.tag_dirs.insert(name, ino)
        };
        ino
    }

    fn new_file(bound: Option<(Name, Name)>, data: Option<SecretBytes>, home: Option<(Ino, Name)>) -> Inode {
        let now = SystemTime::now();
        Inode::File(File {
            bound,
            data,
            base: None,
            dirty: false,
            opens: 0,
            home,
            closed_at: None,
            last_write: Instant::now(),
            mtime: now,
            ctime: now,
        })
    }

    /// The inode of secret `repo/secret`, allocated on first use.
    fn secret_ino(&mut self, repo: &Name, secret: &Name) -> Ino {
        let key = (repo.clone(), secret.clone());
        if let Some(i) = self.secrets.get(&key) {
            return *i;
        }
        let file = Self::new_file(Some(key.clone()), None, None);
        let ino = match self.reserved.remove(&self.names.hash_one(&key)) {
            Some(i) => {
                self.inodes.insert(i, file);
                i
            }
            None => self.alloc(file),
        };
        self.secrets.insert(key, ino);
        ino
    }

    /// The inode number a listing shows for `repo/secret`: its inode's if it has one, else a
    /// number reserved for it (see [`Vfs::reserved`]).
    fn listed_ino(&mut self, repo: Name, secret: Name) -> Ino {
        let key = (repo, secret);
        if let Some(i) = self.secrets.get(&key) {
            return *i;
        }
        let h = self.names.hash_one(&key);
        if let Some(i) = self.reserved.get(&h) {
            return *i;
        }
        let ino = self.next_number();
        self.reserved.insert(h, ino);
        ino
    }

    /// Resolves `name` in folder `parent` to a local inode or a bound secret.
    fn entry(&self, parent: Ino, name: &[u8]) -> Result<Option<Entry>, FsError> {
        let dir = self.dir(parent)?;
        let Ok(n) = Name::new(NameKind::TagEntry, name) else { return Ok(None) };
        if let Some(i) = dir.local.get(&n) {
            return Ok(Some(Entry::Local(*i)));
        }
        if dir.detached.contains_key(&n) {
            return Ok(None);
        }
        Ok(match &dir.kind {
            DirKind::Repo(r) => {
                let exists = self.node.state().repos.get(r).and_then(|repo| repo.tree().ok()).is_some_and(|t| t.contains_key(&n));
                exists.then(|| Entry::Bound(r.clone(), n))
            }
            DirKind::Tag(t) => self
                .node
                .state()
                .tags
                .get(t)
                .and_then(|es| es.get(&n))
                .filter(|(r, s)| !self.removal_pending(r, s))
                .map(|(r, s)| Entry::Bound(r.clone(), s.clone())),
            _ => None,
        })
    }

    /// Whether `repo/secret` was unlinked and waits, hidden, for its grace period to end.
    fn removal_pending(&self, repo: &Name, secret: &Name) -> bool {
        self.repo_dirs
            .get(repo)
            .and_then(|d| self.dir(*d).ok())
            .and_then(|d| d.detached.get(secret))
            .is_some_and(|det| det.holder.is_none())
    }

    /// Resolves a name to an inode number (allocating inodes for folders and secrets).
    fn resolve(&mut self, parent: Ino, name: &[u8]) -> Result<Ino, FsError> {
        if name.len() > crate::name::MAX_NAME_BYTES {
            return Err(FsError::NameTooLong);
        }
        let kind = self.dir(parent)?.kind.clone();
        match kind {
            DirKind::Root => match name {
                b"repos" => Ok(REPOS_INO),
                b"tags" => Ok(TAGS_INO),
                _ => Err(FsError::NotFound),
            },
            DirKind::Repos => {
                let n = Name::new(NameKind::Repo, name).map_err(|_| FsError::NotFound)?;
                if !self.node.state().repos.contains_key(&n) {
                    return Err(FsError::NotFound);
                }
                Ok(self.repo_dir_ino(&n))
            }
            DirKind::Tags => {
                let n = Name::new(NameKind::Tag, name).map_err(|_| FsError::NotFound)?;
                if !self.node.state().tags.contains_key(&n) {
                    return Err(FsError::NotFound);
                }
                Ok(self.tag_dir_ino(&n))
            }
            DirKind::Repo(_) | DirKind::Tag(_) => match self.entry(parent, name)? {
                Some(Entry::Local(i)) => Ok(i),
                Some(Entry::Bound(r, s)) => Ok(self.secret_ino(&r, &s)),
                None => Err(FsError::NotFound),
            },
        }
    }

    /// Looks up `name` in `parent`.
    pub fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        let ino = self.resolve(parent, name)?;
        self.getattr(ino)
    }

    /// The content of a file: its working copy, or the node's decrypted into a buffer that is
    /// wiped when dropped (never a plain copy that would outlive the read in freed memory).
    fn content(&self, ino: Ino) -> Result<Content<'_>, FsError> {
        let f = self.file(ino)?;
        match (&f.data, &f.bound) {
            (Some(d), _) => Ok(Content::Working(&d[..])),
            (None, Some((r, s))) => Ok(Content::Node(self.node.get(r, s).map_err(core_err)?)),
            (None, None) => Ok(Content::Working(&[])),
        }
    }

    /// Makes sure `ino` has a working copy and returns it.
    fn materialize(&mut self, ino: Ino) -> Result<&mut SecretBytes, FsError> {
        if self.file(ino)?.data.is_none() {
            let data = self.content(ino)?.into_secret();
            let base = self.file(ino)?.bound.as_ref().and_then(|(r, s)| self.node.blob_id(r, s));
            let f = self.file_mut(ino)?;
            (f.data, f.base) = (Some(data), base);
        }
        Ok(self.file_mut(ino)?.data.as_mut().expect("just set"))
    }

    /// The scratch files of the mount now: how many, and the bytes their working copies hold
    /// (a detached secret held under a scratch name costs nothing: its bytes are the node's).
    /// Walks only the folders' local entries, which the caps keep few.
    fn scratch_usage(&self) -> (usize, u64) {
        let (mut files, mut bytes) = (0, 0);
        for dir in self.repo_dirs.values().chain(self.tag_dirs.values()) {
            let Ok(d) = self.dir(*dir) else { continue };
            for (name, ino) in &d.local {
                if is_scratch_name(name.as_bytes()) {
                    files += 1;
                    bytes += self.file(*ino).ok().and_then(|f| f.data.as_ref()).map_or(0, |d| d.len() as u64);
                }
            }
        }
        (files, bytes)
    }

    /// Whether `ino` is a scratch file (local, under a scratch name): the only files the
    /// scratch caps apply to.
    fn is_scratch(&self, ino: Ino) -> bool {
        self.file(ino).is_ok_and(|f| f.bound.is_none() && f.home.as_ref().is_some_and(|(_, n)| is_scratch_name(n.as_bytes())))
    }

    /// Checks that the scratch files may take `files` more files and `bytes` more bytes.
    fn scratch_room(&self, files: usize, bytes: u64) -> Result<(), FsError> {
        let (have_files, have_bytes) = self.scratch_usage();
        if have_files + files > scratch::MAX_FILES || have_bytes + bytes > scratch::MAX_TOTAL_BYTES {
            return Err(FsError::NoSpace);
        }
        Ok(())
    }

    /// Checks that scratch file `ino` (if it is one) may grow to `size` bytes.
    fn scratch_growth(&self, ino: Ino, size: u64) -> Result<(), FsError> {
        if !self.is_scratch(ino) {
            return Ok(());
        }
        let now = self.file(ino)?.data.as_ref().map_or(0, |d| d.len() as u64);
        if size > now {
            self.scratch_room(0, size - now)?;
        }
        Ok(())
    }

    /// Number of visible names of a bound secret's inode.
    fn secret_nlink(&self, ino: Ino, repo: &Name, secret: &Name) -> u32 {
        let mut n = 0;
        let repo_visible = self.repo_dirs.get(repo).and_then(|d| self.dir(*d).ok()).is_none_or(|d| !d.detached.contains_key(secret));
        let in_tree = self.node.state().repos.get(repo).and_then(|r| r.tree().ok()).is_some_and(|t| t.contains_key(secret));
        if repo_visible && in_tree {
            n += 1;
        }
        // An unlinked secret's tag entries are hidden with it (see `readdir`).
        let links = if self.removal_pending(repo, secret) { Vec::new() } else { self.node.state().links_to(repo, secret) };
        for (t, e) in links {
            let hidden = self
                .tag_dirs
                .get(&t)
                .and_then(|d| self.dir(*d).ok())
                .is_some_and(|d| d.detached.contains_key(&e) || d.local.contains_key(&e));
            if !hidden {
                n += 1;
            }
        }
        let held = self.file(ino).ok().and_then(|f| f.home.as_ref()).is_some();
        n + u32::from(held)
    }

    /// Attributes of `ino`.
    pub fn getattr(&mut self, ino: Ino) -> Result<Attr, FsError> {
        let (uid, gid) = (self.uid, self.gid);
        if matches!(self.inodes.get(&ino), Some(Inode::Dir(_))) {
            // A folder whose listing cannot be read (a damaged tree) still has attributes;
            // listing it reports the error.
            let _ = self.note_listing(ino, false);
        }
        match self.inodes.get(&ino).ok_or(FsError::NotFound)? {
            Inode::Dir(d) => {
                // POSIX: 2 + one per subfolder (its "..").
                let subfolders = match d.kind {
                    DirKind::Root => 2,
                    DirKind::Repos => self.node.state().repos.len(),
                    DirKind::Tags => self.node.state().tags.len(),
                    DirKind::Repo(_) | DirKind::Tag(_) => 0,
                };
                let nlink = u32::try_from(subfolders).unwrap_or(u32::MAX).saturating_add(2);
                Ok(Attr { ino, kind: Kind::Dir, size: 0, nlink, perm: 0o700, uid, gid, mtime: d.mtime, ctime: d.mtime })
            }
            Inode::Symlink { target, home, mtime } => Ok(Attr {
                ino,
                kind: Kind::Symlink,
                size: target.len() as u64,
                nlink: u32::from(home.is_some()),
                perm: 0o777,
                uid,
                gid,
                mtime: *mtime,
                ctime: *mtime,
            }),
            Inode::File(f) => {
                let (mtime, ctime, bound, home) = (f.mtime, f.ctime, f.bound.clone(), f.home.is_some());
                let working = f.data.as_ref().map(|d| d.len() as u64);
                let nlink = match &bound {
                    Some((r, s)) => self.secret_nlink(ino, r, s),
                    None => u32::from(home),
                };
                let size = match (working, &bound) {
                    (Some(n), _) => n,
                    (None, Some((r, s))) => self.secret_size(r, s)?,
                    (None, None) => 0,
                };
                Ok(Attr { ino, kind: Kind::File, size, nlink, perm: 0o600, uid, gid, mtime, ctime })
            }
        }
    }

    /// The size of a secret's committed content (cached by blob id).
    fn secret_size(&mut self, repo: &Name, secret: &Name) -> Result<u64, FsError> {
        let oid = self.node.blob_id(repo, secret);
        if let Some(size) = oid.and_then(|o| self.sizes.get(&o)) {
            return Ok(*size);
        }
        let size = self.node.secret_size(repo, secret).map_err(core_err)?;
        if let Some(oid) = oid {
            if self.sizes.len() >= MAX_CACHED_SIZES {
                self.sizes.clear();
            }
            self.sizes.insert(oid, size);
        }
        Ok(size)
    }

    /// Moves a folder's mtime forward if its listing changed since it was last reported (at
    /// most every [`RELIST_EVERY`], or at once with `now`). The kernel keeps a folder's listing
    /// cached (`FOPEN_CACHE_DIR`: see the FUSE adapter) until it sees a new mtime or changes
    /// the folder itself, so this is what ends a cached listing that changed behind its back (a
    /// tag's entries when their secret goes, a scratch file made a secret by the tick); the
    /// kernel asks again once the folder's attributes expire.
    fn note_listing(&mut self, ino: Ino, now: bool) -> Result<(), FsError> {
        use std::hash::{Hash, Hasher};
        let recent = |d: &Dir| d.listed_at.is_some_and(|t| t.elapsed() < RELIST_EVERY);
        if !now && matches!(self.inodes.get(&ino), Some(Inode::Dir(d)) if recent(d)) {
            return Ok(());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (i, kind, name) in self.readdir(ino)? {
            (i, kind as u8, name).hash(&mut h);
        }
        let listed = h.finish();
        if let Some(Inode::Dir(d)) = self.inodes.get_mut(&ino) {
            d.listed_at = Some(Instant::now());
            if d.listed != listed {
                d.listed = listed;
                d.mtime = SystemTime::now().max(d.mtime + std::time::Duration::from_nanos(1));
            }
        }
        Ok(())
    }

    /// Changes attributes; a size change on a file not open is committed at once.
    pub fn setattr(&mut self, ino: Ino, set: SetAttr) -> Result<Attr, FsError> {
        if set.uid.is_some_and(|u| u != self.uid) || set.gid.is_some_and(|g| g != self.gid) {
            return Err(FsError::NotPermitted);
        }
        if let Some(size) = set.size {
            if size > crate::git::MAX_OBJECT_BYTES as u64 {
                return Err(FsError::TooLarge);
            }
            self.scratch_growth(ino, size)?;
            let data = self.materialize(ino)?;
            if size as usize > data.len() {
                // Grown by `reserve`, which wipes the outgrown buffer (`resize` would free it as is).
                crate::secret::reserve(data, size as usize - data.len(), usize::MAX);
            }
            data.resize(size as usize, 0);
            let f = self.file_mut(ino)?;
            f.dirty = true;
            f.last_write = Instant::now();
            f.mtime = SystemTime::now();
            f.ctime = f.mtime;
            // Not committed here even without an open handle: the kernel sends an O_TRUNC
            // open's truncation as a SETATTR before the OPEN, and the save is the whole open.
            // The next close commits it, or the grace-period timer if no open follows
            // (truncate(2) by path).
        }
        if let Some(m) = set.mtime {
            match self.inodes.get_mut(&ino).ok_or(FsError::NotFound)? {
                Inode::File(f) => f.mtime = m,
                Inode::Dir(d) => d.mtime = m,
                Inode::Symlink { mtime, .. } => *mtime = m,
            }
        }
        self.getattr(ino)
    }

    /// Reads a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>, FsError> {
        match self.inodes.get(&ino) {
            Some(Inode::Symlink { target, .. }) => Ok(target.clone()),
            Some(_) => Err(FsError::Unsupported),
            None => Err(FsError::NotFound),
        }
    }

    /// Lists a folder: (inode, kind, name), without `.` and `..`.
    pub fn readdir(&mut self, ino: Ino) -> Result<Vec<(Ino, Kind, Vec<u8>)>, FsError> {
        let kind = self.dir(ino)?.kind.clone();
        let mut out = Vec::new();
        match kind {
            DirKind::Root => {
                out.push((REPOS_INO, Kind::Dir, b"repos".to_vec()));
                out.push((TAGS_INO, Kind::Dir, b"tags".to_vec()));
            }
            DirKind::Repos => {
                for r in self.node.repos() {
                    let i = self.repo_dir_ino(&r);
                    out.push((i, Kind::Dir, r.as_bytes().to_vec()));
                }
            }
            DirKind::Tags => {
                let tags: Vec<Name> = self.node.state().tags.keys().cloned().collect();
                for t in tags {
                    let i = self.tag_dir_ino(&t);
                    out.push((i, Kind::Dir, t.as_bytes().to_vec()));
                }
            }
            DirKind::Repo(_) | DirKind::Tag(_) => {
                let names: Vec<Name> = match &kind {
                    DirKind::Repo(r) => self.node.secrets(r).map_err(core_err)?,
                    DirKind::Tag(t) => self
                        .node
                        .state()
                        .tags
                        .get(t)
                        .map(|e| e.iter().filter(|(_, (r, s))| !self.removal_pending(r, s)).map(|(n, _)| n.clone()).collect())
                        .unwrap_or_default(),
                    _ => unreachable!(),
                };
                let dir = self.dir(ino)?;
                let locals: Vec<(Name, Ino)> = dir.local.iter().map(|(n, i)| (n.clone(), *i)).collect();
                let hidden: Vec<Name> = dir.detached.keys().cloned().collect();
                for n in names {
                    if hidden.contains(&n) || locals.iter().any(|(l, _)| *l == n) {
                        continue;
                    }
                    let i = match self.entry(ino, n.as_bytes())? {
                        Some(Entry::Bound(r, s)) => self.listed_ino(r, s),
                        Some(Entry::Local(i)) => i,
                        None => return Err(FsError::NotFound),
                    };
                    out.push((i, Kind::File, n.as_bytes().to_vec()));
                }
                for (n, i) in locals {
                    let k = if matches!(self.inodes.get(&i), Some(Inode::Symlink { .. })) { Kind::Symlink } else { Kind::File };
                    out.push((i, k, n.as_bytes().to_vec()));
                }
            }
        }
        Ok(out)
    }

    /// Saves the node; a failure is remembered, retried by [`Vfs::tick`], and reported.
    fn save(&mut self) -> Result<(), FsError> {
        match self.node.save() {
            Ok(_) => {
                self.unsaved = false;
                Ok(())
            }
            Err(e) => {
                self.unsaved = true;
                Err(FsError::Io(e.to_string()))
            }
        }
    }

    /// Commits a bound file's working copy (if dirty) and saves. While the file stays open,
    /// each commit replaces the previous one of the same open: one logical save, one commit.
    fn commit_file(&mut self, ino: Ino, fh: Option<Fh>) -> Result<(), FsError> {
        let f = self.file(ino)?;
        if f.dirty {
            if let (Some((r, s)), Some(data)) = (f.bound.clone(), f.data.as_ref()) {
                let data = Zeroizing::new(data.to_vec());
                let current = self.node.blob_id(&r, &s);
                // What the writer started from: the working copy's own base, unless it was taken
                // after a change through the daemon that nothing read through the mount since
                // (an editor writing back its buffer: it holds what was read before).
                let seen = self.served.borrow().get(&(r.clone(), s.clone())).copied();
                let base = match (f.base, seen) {
                    (Some(b), Some(seen)) if Some(b) == current && seen != b => Some(seen),
                    (None, Some(seen)) => Some(seen),
                    (b, _) => b,
                };
                let made = match (base, current) {
                    (Some(base), Some(now)) if base != now => self.commit_merged(ino, &r, &s, &data, base)?,
                    _ => {
                        let replaces = fh.and_then(|h| self.handles.get(&h).copied().flatten());
                        let made = self.node.put_amending(&r, &s, &data, replaces).map_err(core_err)?;
                        let f = self.file_mut(ino)?;
                        f.dirty = false;
                        f.base = Some(git2::Oid::hash_object(git2::ObjectType::Blob, &data).expect("hashing memory"));
                        made
                    }
                };
                if let Some(session) = fh.and_then(|h| self.handles.get_mut(&h)) {
                    *session = made;
                }
                // The writer knows what it wrote (or what its save was merged into).
                match self.node.blob_id(&r, &s) {
                    Some(now) => self.served.borrow_mut().insert((r, s), now),
                    None => self.served.borrow_mut().remove(&(r, s)),
                };
            }
        }
        if self.has_unsaved() {
            self.save()?;
        }
        Ok(())
    }

    /// Commits a working copy taken from blob `base` of `r/s` when the secret has changed since
    /// (through the control socket): merged line by line when the repository allows it and
    /// the changes touch different lines; otherwise the secret keeps its new content and the
    /// working copy is saved beside it as `SECRET.conflict-mount`. Nothing is written over.
    /// Returns no commit to amend: the next save of this open is a commit of its own.
    fn commit_merged(&mut self, ino: Ino, r: &Name, s: &Name, ours: &[u8], base: Oid) -> Result<Option<Oid>, FsError> {
        let repo = self.node.repo(r).map_err(core_err)?;
        let mode = repo.merge_mode();
        let old = repo.read(base, git2::ObjectType::Blob).ok();
        let theirs = self.node.get(r, s).map_err(core_err)?;
        match crate::merge::merge_blob(old.as_deref().map(|v| &v[..]), ours, &theirs, mode) {
            Some(merged) => {
                self.node.put(r, s, &merged).map_err(core_err)?;
                let f = self.file_mut(ino)?;
                f.base = Some(git2::Oid::hash_object(git2::ObjectType::Blob, &merged).expect("hashing memory"));
                f.data = Some(merged);
            }
            None => {
                let blob = git2::Oid::hash_object(git2::ObjectType::Blob, ours).expect("hashing memory");
                let tree = self.node.repo(r).map_err(core_err)?.tree().map_err(|e| FsError::Io(e.to_string()))?.to_tree();
                let beside = crate::merge::conflict_name(&tree, s, "mount", blob);
                self.node.put(r, &beside, ours).map_err(core_err)?;
                let f = self.file_mut(ino)?;
                (f.data, f.base) = (None, None); // Reads show the secret's content again.
            }
        }
        let f = self.file_mut(ino)?;
        f.dirty = false;
        // The kernel may cache what this open wrote: a new mtime makes it read again.
        (f.mtime, f.ctime) = (SystemTime::now(), SystemTime::now());
        Ok(None)
    }

    /// Turns a bound inode into an unbound one holding a snapshot of its content, so open
    /// handles keep seeing what they saw after the secret moves on to another inode.
    fn unbind(&mut self, ino: Ino) -> Result<(), FsError> {
        if self.file(ino)?.bound.is_none() {
            return Ok(());
        }
        self.materialize(ino)?;
        let f = self.file_mut(ino)?;
        let key = f.bound.take().expect("checked");
        f.dirty = false;
        if self.secrets.get(&key) == Some(&ino) {
            self.secrets.remove(&key);
        }
        Ok(())
    }

    /// Makes `ino` the inode of secret `repo/secret`, replacing whatever inode it had.
    fn bind(&mut self, ino: Ino, repo: &Name, secret: &Name) -> Result<(), FsError> {
        let key = (repo.clone(), secret.clone());
        if let Some(old) = self.secrets.get(&key).copied() {
            if old != ino {
                self.unbind(old)?;
            }
        }
        self.file_mut(ino)?.bound = Some(key.clone());
        // Its tag entries now lead to this inode: file names have a zero entry lifetime in the
        // kernel, so every path finds it at its next lookup.
        self.secrets.insert(key, ino);
        Ok(())
    }

    /// The secret a bound entry of folder `dir` names, and the repository for new secrets.
    fn folder(&self, dir: Ino) -> Result<DirKind, FsError> {
        Ok(self.dir(dir)?.kind.clone())
    }

    /// Stores the content of local file `ino` as secret `repo/secret` and binds it.
    fn adopt(&mut self, ino: Ino, repo: &Name, secret: &Name) -> Result<(), FsError> {
        let data = self.content(ino)?.into_secret();
        // Keep whatever inode the secret had showing the old content.
        if let Some(old) = self.secrets.get(&(repo.clone(), secret.clone())).copied() {
            if old != ino {
                self.unbind(old)?;
            }
        }
        self.node.put(repo, secret, &data).map_err(core_err)?;
        self.detach_home(ino)?;
        self.bind(ino, repo, secret)?;
        let f = self.file_mut(ino)?;
        f.dirty = false;
        f.closed_at = None;
        Ok(())
    }

    /// Removes a local inode from its folder (it keeps existing while open).
    fn detach_home(&mut self, ino: Ino) -> Result<(), FsError> {
        let home = match self.inodes.get_mut(&ino) {
            Some(Inode::File(f)) => f.home.take(),
            Some(Inode::Symlink { home, .. }) => home.take(),
            _ => None,
        };
        if let Some((d, n)) = home {
            self.dir_mut(d)?.local.remove(&n);
        }
        Ok(())
    }

    /// Where a new secret named in folder `dir` goes: (repository, secret, tag entry).
    fn new_secret_target(&self, dir: Ino, name: &Name) -> Result<(Name, Name, Option<Name>), FsError> {
        match self.folder(dir)? {
            DirKind::Repo(r) => Ok((r, name_of(NameKind::Secret, name.as_bytes())?, None)),
            // A new file in a tag folder becomes a secret of the repository named like the tag.
            DirKind::Tag(t) => Ok((name_of(NameKind::Repo, t.as_bytes())?, name_of(NameKind::Secret, name.as_bytes())?, Some(t))),
            _ => Err(FsError::NotPermitted),
        }
    }

    /// Turns the closed new file `ino` (named `name` in `dir`) into a secret.
    fn promote(&mut self, ino: Ino, dir: Ino, name: &Name) -> Result<(), FsError> {
        self.promote_unsaved(ino, dir, name)?;
        self.save()
    }

    /// [`Vfs::promote`] without the save: `sweep` names every due file, then saves once (one
    /// fsync for a whole `cp -r` worth of files, not one each).
    fn promote_unsaved(&mut self, ino: Ino, dir: Ino, name: &Name) -> Result<(), FsError> {
        let (repo, secret, tag) = self.new_secret_target(dir, name)?;
        self.adopt(ino, &repo, &secret)?;
        if let Some(t) = tag {
            self.node.tag(&t, name, &repo, &secret).map_err(core_err)?;
        }
        Ok(())
    }

    /// Removes what a bound entry named: the secret (in a repository) or the tag entry.
    fn remove_bound(&mut self, dir: Ino, name: &Name, repo: &Name, secret: &Name) -> Result<(), FsError> {
        match self.folder(dir)? {
            DirKind::Repo(_) => {
                if let Some(ino) = self.secrets.get(&(repo.clone(), secret.clone())).copied() {
                    self.unbind(ino)?;
                }
                self.node.remove(repo, secret).map_err(core_err)
            }
            DirKind::Tag(t) => self.node.untag(&t, name, false).map_err(core_err),
            _ => Err(FsError::NotPermitted),
        }
    }

    /// Ends every detachment in folder `dir` now.
    fn finalize_all_detached(&mut self, dir: Ino) -> Result<(), FsError> {
        let names: Vec<Name> = self.dir(dir)?.detached.keys().cloned().collect();
        for n in names {
            self.finalize_detached(dir, &n)?;
        }
        Ok(())
    }

    /// Ends a detachment: the hidden bound entry is removed for good.
    fn finalize_detached(&mut self, dir: Ino, name: &Name) -> Result<(), FsError> {
        let Some(d) = self.dir_mut(dir)?.detached.remove(name) else { return Ok(()) };
        let target = match self.folder(dir)? {
            DirKind::Repo(r) => Some((r, name.clone())),
            DirKind::Tag(t) => self.node.state().tags.get(&t).and_then(|e| e.get(name)).cloned(),
            _ => None,
        };
        if let Some((r, s)) = target {
            let still = d.holder.and_then(|h| self.file(h).ok()).and_then(|f| f.bound.clone()) == Some((r.clone(), s.clone()));
            if still && matches!(self.folder(dir)?, DirKind::Repo(_)) {
                self.unbind(d.holder.expect("still bound"))?;
            }
            let exists = match self.folder(dir)? {
                DirKind::Repo(_) => self.node.blob_id(&r, &s).is_some(),
                _ => true,
            };
            if exists {
                self.remove_bound(dir, name, &r, &s)?;
            }
        }
        self.save()
    }

    /// Creates and opens a file; returns its attributes and the open handle.
    pub fn create(&mut self, parent: Ino, name: &[u8]) -> Result<(Attr, Fh), FsError> {
        let n = name_of(NameKind::TagEntry, name)?;
        let kind = self.folder(parent)?;
        if !matches!(kind, DirKind::Repo(_) | DirKind::Tag(_)) {
            return Err(FsError::NotPermitted);
        }
        if self.entry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let ino;
        if self.dir(parent)?.detached.contains_key(&n) {
            // A replacement for a detached secret: it takes the secret's place (and its tags).
            let d = self.dir_mut(parent)?.detached.remove(&n).expect("checked");
            let target = match &kind {
                DirKind::Repo(r) => Some((r.clone(), n.clone())),
                DirKind::Tag(t) => self.node.state().tags.get(t).and_then(|e| e.get(&n)).cloned(),
                _ => None,
            };
            ino = self.alloc(Self::new_file(None, Some(Zeroizing::new(Vec::new())), None));
            match target {
                Some((r, s)) if self.node.blob_id(&r, &s).is_some() => {
                    if let Some(h) = d.holder {
                        if self.file(h).ok().and_then(|f| f.bound.clone()) == Some((r.clone(), s.clone())) {
                            self.unbind(h)?;
                        }
                    }
                    self.bind(ino, &r, &s)?;
                    let f = self.file_mut(ino)?;
                    f.dirty = true;
                }
                _ => {
                    let f = self.file_mut(ino)?;
                    f.home = Some((parent, n.clone()));
                    self.dir_mut(parent)?.local.insert(n, ino);
                }
            }
        } else if is_scratch_name(name) || matches!(kind, DirKind::Repo(_) | DirKind::Tag(_)) {
            if is_scratch_name(name) {
                self.scratch_room(1, 0)?;
            }
            ino = self.alloc(Self::new_file(None, Some(Zeroizing::new(Vec::new())), Some((parent, n.clone()))));
            self.dir_mut(parent)?.local.insert(n, ino);
        } else {
            return Err(FsError::NotPermitted);
        }
        self.touch_dir(parent);
        let fh = self.open(ino, false)?;
        Ok((self.getattr(ino)?, fh))
    }

    /// Creates a symbolic link; only scratch names may be links (emacs's lock files).
    pub fn symlink(&mut self, parent: Ino, name: &[u8], target: &[u8]) -> Result<Attr, FsError> {
        let n = name_of(NameKind::TagEntry, name)?;
        if !matches!(self.folder(parent)?, DirKind::Repo(_) | DirKind::Tag(_)) || !is_scratch_name(name) {
            return Err(FsError::NotPermitted);
        }
        if self.entry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        self.scratch_room(1, 0)?;
        let ino = self.alloc(Inode::Symlink { target: target.to_vec(), home: Some((parent, n.clone())), mtime: SystemTime::now() });
        self.dir_mut(parent)?.local.insert(n, ino);
        self.getattr(ino)
    }

    fn touch_dir(&mut self, dir: Ino) {
        if let Ok(d) = self.dir_mut(dir) {
            d.mtime = SystemTime::now();
        }
    }

    /// Opens a file. `truncate` empties it (O_TRUNC). Returns the open handle.
    pub fn open(&mut self, ino: Ino, truncate: bool) -> Result<Fh, FsError> {
        self.file_mut(ino)?.opens += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, None);
        if truncate {
            self.setattr(ino, SetAttr { size: Some(0), ..SetAttr::default() })?;
        }
        Ok(fh)
    }

    /// Reads up to `size` bytes at `offset`, into a buffer wiped when dropped.
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<SecretBytes, FsError> {
        if let Ok(File { bound: Some((r, s)), data: None, .. }) = self.file(ino) {
            if let Some(blob) = self.node.blob_id(r, s) {
                let mut served = self.served.borrow_mut();
                if served.get(&(r.clone(), s.clone())) != Some(&blob) {
                    served.insert((r.clone(), s.clone()), blob);
                }
            }
        }
        let content = self.content(ino)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
        let end = start.saturating_add(size as usize).min(content.len());
        Ok(Zeroizing::new(content[start..end].to_vec()))
    }

    /// Writes `data` at `offset`; returns the bytes written.
    pub fn write(&mut self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let end = offset.checked_add(data.len() as u64).ok_or(FsError::TooLarge)?;
        if end > crate::git::MAX_OBJECT_BYTES as u64 {
            return Err(FsError::TooLarge);
        }
        self.scratch_growth(ino, end)?;
        let buf = self.materialize(ino)?;
        if buf.len() < end as usize {
            crate::secret::reserve(buf, end as usize - buf.len(), usize::MAX);
            buf.resize(end as usize, 0);
        }
        buf[offset as usize..end as usize].copy_from_slice(data);
        let f = self.file_mut(ino)?;
        f.dirty = f.bound.is_some();
        f.last_write = Instant::now();
        f.mtime = SystemTime::now();
        f.ctime = f.mtime;
        Ok(data.len() as u32)
    }

    /// A descriptor is being closed: its changes are committed and saved, so `close` reports
    /// a failure to write them. Later commits of the same open replace this one.
    pub fn flush(&mut self, ino: Ino, fh: Fh) -> Result<(), FsError> {
        match self.inodes.get(&ino) {
            Some(Inode::File(_)) => self.commit_file(ino, Some(fh)),
            _ => Ok(()),
        }
    }

    /// Records which process opened `fh` (see [`Vfs::flush_by`]).
    pub fn set_owner(&mut self, fh: Fh, pid: u32) {
        self.owners.insert(fh, pid);
    }

    /// A descriptor is being closed by process `pid`. Only a close by the process that opened
    /// the file ends a save: a child that inherited the descriptor and closes it (every
    /// fork+exec closes its close-on-exec copies) is not saving anything.
    pub fn flush_by(&mut self, ino: Ino, fh: Fh, pid: u32) -> Result<(), FsError> {
        match self.owners.get(&fh) {
            Some(owner) if *owner != pid => {
                if self.unsaved {
                    self.save()?;
                }
                Ok(())
            }
            _ => self.flush(ino, fh),
        }
    }

    /// The last descriptor of an open is gone: the handle ends.
    pub fn release(&mut self, ino: Ino, fh: Fh) -> Result<(), FsError> {
        let r = self.commit_file(ino, Some(fh));
        self.handles.remove(&fh);
        self.owners.remove(&fh);
        if let Ok(f) = self.file_mut(ino) {
            f.opens = f.opens.saturating_sub(1);
            if f.opens == 0 {
                if f.bound.is_some() && !f.dirty {
                    f.data = None; // The node has it; do not keep a second plaintext copy.
                } else if f.home.is_some() {
                    f.closed_at = Some(Instant::now());
                }
            }
        }
        r
    }

    /// Makes a file's content durable in the node. Scratch and not-yet-named files live in
    /// memory only, so for them this succeeds without writing.
    pub fn fsync(&mut self, ino: Ino, fh: Option<Fh>) -> Result<(), FsError> {
        match self.inodes.get(&ino) {
            Some(Inode::File(_)) => self.commit_file(ino, fh),
            Some(_) => {
                if self.has_unsaved() {
                    self.save()?;
                }
                Ok(())
            }
            None => Err(FsError::NotFound),
        }
    }

    /// Creates a repository (in `repos/`) or a tag (in `tags/`).
    pub fn mkdir(&mut self, parent: Ino, name: &[u8]) -> Result<Attr, FsError> {
        match self.folder(parent)? {
            DirKind::Repos => {
                let n = name_of(NameKind::Repo, name)?;
                self.node.create_repo(&n).map_err(core_err)?;
            }
            DirKind::Tags => {
                let n = name_of(NameKind::Tag, name)?;
                self.node.create_tag(&n).map_err(core_err)?;
            }
            _ => return Err(FsError::NotPermitted),
        }
        self.save()?;
        self.touch_dir(parent);
        self.lookup(parent, name)
    }

    /// Removes an empty repository or tag.
    pub fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<(), FsError> {
        let ino = self.resolve(parent, name)?;
        self.finalize_all_detached(ino)?;
        let d = self.dir(ino)?;
        if !d.local.is_empty() || !d.detached.is_empty() {
            return Err(FsError::NotEmpty);
        }
        match d.kind.clone() {
            DirKind::Repo(r) => {
                if !self.node.secrets(&r).map_err(core_err)?.is_empty() {
                    return Err(FsError::NotEmpty);
                }
                self.node.remove_repo(&r).map_err(core_err)?;
                self.repo_dirs.remove(&r);
            }
            DirKind::Tag(t) => {
                self.node.remove_tag(&t).map_err(core_err)?;
                self.tag_dirs.remove(&t);
            }
            _ => return Err(FsError::NotPermitted),
        }
        self.inodes.remove(&ino);
        self.touch_dir(parent);
        self.save()
    }

    /// Removes a name: a secret (and its tag entries), a tag entry, or a local file.
    pub fn unlink(&mut self, parent: Ino, name: &[u8]) -> Result<(), FsError> {
        let n = name_of(NameKind::TagEntry, name)?;
        match self.entry(parent, name)?.ok_or(FsError::NotFound)? {
            Entry::Local(ino) => {
                self.detach_home(ino)?;
                // Deleting the scratch copy of a detached secret deletes the secret.
                let dirs: Vec<(Ino, Name)> = self
                    .inodes
                    .iter()
                    .filter_map(|(i, node)| match node {
                        Inode::Dir(d) => d.detached.iter().find(|(_, det)| det.holder == Some(ino)).map(|(dn, _)| (*i, dn.clone())),
                        _ => None,
                    })
                    .collect();
                for (d, dn) in dirs {
                    self.finalize_detached(d, &dn)?;
                }
                if let Ok(f) = self.file_mut(ino) {
                    f.closed_at = None;
                }
            }
            Entry::Bound(..) => {
                // Hidden now, removed when the grace period ends, unless a new file takes its
                // place first (mv from another filesystem: unlink, then create).
                self.dir_mut(parent)?.detached.insert(n, Detached { holder: None, deadline: Instant::now() + GRACE });
            }
        }
        self.touch_dir(parent);
        Ok(())
    }

    /// Adds a name for a secret: `ln repos/R/S tags/T/NAME` tags it.
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr, FsError> {
        let n = name_of(NameKind::TagEntry, newname)?;
        // A new file still in its grace period becomes a secret now: it is getting a tag.
        if let (None, Some((dir, name))) = (self.file(ino)?.bound.clone(), self.file(ino)?.home.clone()) {
            if !is_scratch_name(name.as_bytes()) {
                self.promote(ino, dir, &name)?;
            }
        }
        let (r, s) = self.file(ino)?.bound.clone().ok_or(FsError::NotPermitted)?;
        let DirKind::Tag(t) = self.folder(newparent)? else { return Err(FsError::NotPermitted) };
        if self.entry(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        self.node.tag(&t, &n, &r, &s).map_err(core_err)?;
        self.save()?;
        self.touch_dir(newparent);
        self.getattr(ino)
    }

    /// Renames `parent/name` to `newparent/newname` (see the module doc for the meanings).
    pub fn rename(&mut self, parent: Ino, name: &[u8], newparent: Ino, newname: &[u8], flags: u32) -> Result<(), FsError> {
        if flags & RENAME_EXCHANGE != 0 || flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 {
            return Err(FsError::Unsupported);
        }
        let noreplace = flags & RENAME_NOREPLACE != 0;
        let (pk, npk) = (self.folder(parent)?, self.folder(newparent)?);
        match (&pk, &npk) {
            (DirKind::Repos, DirKind::Repos) => return self.rename_folder(parent, name, newname, noreplace, true),
            (DirKind::Tags, DirKind::Tags) => return self.rename_folder(parent, name, newname, noreplace, false),
            (DirKind::Repo(_) | DirKind::Tag(_), DirKind::Repo(_) | DirKind::Tag(_)) => {}
            _ => return Err(FsError::NotPermitted),
        }
        let a = name_of(NameKind::TagEntry, name)?;
        let b = name_of(NameKind::TagEntry, newname)?;
        if parent == newparent && a == b {
            return Ok(());
        }
        let src = self.entry(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.entry(newparent, newname)?;
        if noreplace && (dst.is_some() || self.dir(newparent)?.detached.contains_key(&b)) {
            return Err(FsError::Exists);
        }
        // Two names of the same inode: POSIX says do nothing.
        if let (Entry::Bound(r1, s1), Some(Entry::Bound(r2, s2))) = (&src, &dst) {
            if r1 == r2 && s1 == s2 {
                return Ok(());
            }
        }
        let dst_scratch = is_scratch_name(newname) && !matches!(dst, Some(Entry::Bound(..)));
        let result = match src {
            Entry::Local(ino) => self.rename_local(ino, newparent, &b, dst, dst_scratch),
            Entry::Bound(r, s) => self.rename_bound(parent, &a, (r, s), newparent, &b, dst, dst_scratch),
        };
        self.touch_dir(parent);
        self.touch_dir(newparent);
        result
    }

    fn rename_folder(&mut self, parent: Ino, name: &[u8], newname: &[u8], noreplace: bool, repos: bool) -> Result<(), FsError> {
        let kind = if repos { NameKind::Repo } else { NameKind::Tag };
        let (a, b) = (name_of(kind, name)?, name_of(kind, newname)?);
        let ino = self.resolve(parent, name)?;
        if let Ok(existing) = self.resolve(parent, newname) {
            if noreplace {
                return Err(FsError::Exists);
            }
            if existing == ino {
                return Ok(());
            }
            self.rmdir(parent, newname)?; // Only an empty folder may be replaced.
        }
        // Hidden entries end now; local files move with the folder (it keeps its inode).
        self.finalize_all_detached(ino)?;
        if repos {
            self.node.rename_repo(&a, &b).map_err(core_err)?;
            let old = self.repo_dirs.remove(&a);
            // Secrets of the repository keep their inodes under the new name.
            let moved: Vec<((Name, Name), Ino)> = self.secrets.iter().filter(|((r, _), _)| *r == a).map(|(k, v)| (k.clone(), *v)).collect();
            for ((_, s), i) in moved {
                self.secrets.remove(&(a.clone(), s.clone()));
                self.secrets.insert((b.clone(), s.clone()), i);
                if let Ok(f) = self.file_mut(i) {
                    f.bound = Some((b.clone(), s));
                }
            }
            if let Some(i) = old {
                self.dir_mut(i)?.kind = DirKind::Repo(b.clone());
                self.repo_dirs.insert(b, i);
            }
        } else {
            self.node.rename_tag(&a, &b).map_err(core_err)?;
            if let Some(i) = self.tag_dirs.remove(&a) {
                self.dir_mut(i)?.kind = DirKind::Tag(b.clone());
                self.tag_dirs.insert(b, i);
            }
        }
        self.save()
    }

    fn rename_local(&mut self, ino: Ino, newparent: Ino, b: &Name, dst: Option<Entry>, dst_scratch: bool) -> Result<(), FsError> {
        let reattach = self.dir(newparent)?.detached.contains_key(b);
        if dst_scratch && !reattach {
            // To a scratch name: memory only, within the caps if it was not scratch before.
            if !self.is_scratch(ino) && matches!(self.inodes.get(&ino), Some(Inode::File(_))) {
                let size = self.file(ino)?.data.as_ref().map_or(0, |d| d.len() as u64);
                let replaced = matches!(dst, Some(Entry::Local(old)) if self.is_scratch(old));
                self.scratch_room(usize::from(!replaced), size)?;
            }
            if let Some(Entry::Local(old)) = dst {
                self.detach_home(old)?;
            }
            self.detach_home(ino)?;
            match self.inodes.get_mut(&ino) {
                Some(Inode::File(f)) => f.home = Some((newparent, b.clone())),
                Some(Inode::Symlink { home, .. }) => *home = Some((newparent, b.clone())),
                _ => return Err(FsError::NotFound),
            }
            self.dir_mut(newparent)?.local.insert(b.clone(), ino);
            return Ok(());
        }
        if matches!(self.inodes.get(&ino), Some(Inode::Symlink { .. })) {
            return Err(FsError::NotPermitted); // A link cannot become a secret.
        }
        // The content becomes the target secret's (the atomic-save pattern): one commit.
        let target = match dst {
            Some(Entry::Bound(r, s)) => Some((r, s)),
            Some(Entry::Local(old)) => {
                self.detach_home(old)?;
                None
            }
            None if reattach => {
                let det = self.dir_mut(newparent)?.detached.remove(b).expect("checked");
                let t = match self.folder(newparent)? {
                    DirKind::Repo(r) => Some((r, b.clone())),
                    DirKind::Tag(t) => self.node.state().tags.get(&t).and_then(|e| e.get(b)).cloned(),
                    _ => None,
                };
                if let (Some(h), Some((r, s))) = (det.holder.filter(|h| *h != ino), &t) {
                    if self.file(h).ok().and_then(|f| f.bound.clone()) == Some((r.clone(), s.clone())) {
                        self.unbind(h)?;
                    }
                }
                t.filter(|(r, s)| self.node.blob_id(r, s).is_some())
            }
            None => None,
        };
        match target {
            Some((r, s)) => {
                self.adopt(ino, &r, &s)?;
                self.save()
            }
            None => {
                self.detach_home(ino)?;
                self.promote(ino, newparent, b)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rename_bound(
        &mut self,
        parent: Ino,
        a: &Name,
        (r, s): (Name, Name),
        newparent: Ino,
        b: &Name,
        dst: Option<Entry>,
        dst_scratch: bool,
    ) -> Result<(), FsError> {
        let (pk, npk) = (self.folder(parent)?, self.folder(newparent)?);
        if dst_scratch {
            // Detach: hide the entry, keep the secret until the grace period decides.
            if parent != newparent {
                return Err(FsError::CrossDevice);
            }
            if let Some(Entry::Local(old)) = dst {
                self.detach_home(old)?;
            }
            let ino = self.secret_ino(&r, &s);
            self.materialize(ino)?;
            self.file_mut(ino)?.home = Some((parent, b.clone()));
            let d = self.dir_mut(parent)?;
            d.local.insert(b.clone(), ino);
            d.detached.insert(a.clone(), Detached { holder: Some(ino), deadline: Instant::now() + GRACE });
            return Ok(());
        }
        match (pk, npk) {
            (DirKind::Repo(r1), DirKind::Repo(r2)) if r1 == r2 => {
                if let Some(Entry::Local(old)) = dst {
                    self.detach_home(old)?;
                }
                let replaced = matches!(dst, Some(Entry::Bound(..)));
                if replaced {
                    if let Some(old) = self.secrets.get(&(r1.clone(), b.clone())).copied() {
                        self.unbind(old)?;
                    }
                }
                self.dir_mut(newparent)?.detached.remove(b);
                self.node.rename(&r1, a, b, true).map_err(core_err)?;
                if let Some(ino) = self.secrets.remove(&(r1.clone(), a.clone())) {
                    self.file_mut(ino)?.bound = Some((r1.clone(), b.clone()));
                    self.secrets.insert((r1.clone(), b.clone()), ino);
                }
                self.save()
            }
            (DirKind::Tag(t1), DirKind::Tag(t2)) => {
                match dst {
                    Some(Entry::Local(old)) => self.detach_home(old)?,
                    Some(Entry::Bound(..)) => self.node.untag(&t2, b, false).map_err(core_err)?,
                    None => {}
                }
                self.dir_mut(newparent)?.detached.remove(b);
                self.node.untag(&t1, a, false).map_err(core_err)?;
                self.node.tag(&t2, b, &r, &s).map_err(core_err)?;
                self.save()
            }
            _ => Err(FsError::CrossDevice),
        }
    }

    /// Drops `n` kernel references to `ino`; unreachable local inodes are freed.
    pub fn forget(&mut self, ino: Ino) {
        let free = match self.inodes.get(&ino) {
            Some(Inode::File(f)) => f.bound.is_none() && f.home.is_none() && f.opens == 0,
            Some(Inode::Symlink { home, .. }) => home.is_none(),
            _ => false,
        };
        if free {
            self.inodes.remove(&ino);
        }
    }

    /// Filesystem statistics.
    pub fn statfs(&self) -> StatFs {
        let files = self.inodes.len() as u64;
        let used = self.node.file_len().div_ceil(4096);
        StatFs { blocks: used + (1 << 20), bfree: 1 << 20, files, ffree: 1 << 20, bsize: 4096, namelen: crate::name::MAX_NAME_BYTES as u32 }
    }

    /// Periodic work: ends expired detachments, names closed new files, commits files left
    /// open and dirty, and retries failed saves. Call about every quarter second.
    pub fn tick(&mut self) -> Result<(), FsError> {
        self.sweep(Some(Instant::now()), true)
    }

    /// Commits and saves everything now (before unmounting).
    pub fn commit_all(&mut self) -> Result<(), FsError> {
        self.sweep(None, true)
    }

    /// Commits what is due (`now`) or everything (`None`); files still open are included only
    /// with `open_files`.
    fn sweep(&mut self, now: Option<Instant>, open_files: bool) -> Result<(), FsError> {
        let due = |t: Instant| now.is_none_or(|n| t <= n);
        let mut first_err = None;
        let mut note = |r: Result<(), FsError>| {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        };
        let mut detached = Vec::new();
        let mut promote = Vec::new();
        let mut commit = Vec::new();
        for (ino, inode) in self.inodes.iter() {
            match inode {
                Inode::Dir(d) => detached.extend(d.detached.iter().filter(|(_, det)| due(det.deadline)).map(|(n, _)| (*ino, n.clone()))),
                Inode::File(f) => {
                    if f.bound.is_some() && f.dirty && due(f.last_write + GRACE) && (open_files || f.opens == 0) {
                        commit.push(*ino);
                    }
                    if let (None, Some((dir, name))) = (&f.bound, &f.home) {
                        let closed = f.closed_at.is_some_and(|c| due(c + GRACE)) || (now.is_none() && open_files && f.opens > 0);
                        if closed && !is_scratch_name(name.as_bytes()) {
                            promote.push((*ino, *dir, name.clone()));
                        }
                    }
                }
                Inode::Symlink { .. } => {}
            }
        }
        for (dir, name) in detached {
            note(self.finalize_detached(dir, &name));
        }
        for (ino, dir, name) in promote {
            note(self.promote_unsaved(ino, dir, &name));
        }
        for ino in commit {
            note(self.commit_file(ino, None));
        }
        if self.has_unsaved() {
            note(self.save());
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Brings inodes in line with the node after changes made outside the filesystem: a
    /// secret that is gone leaves its inode unbound, one whose content changed drops its
    /// cached copy; the kernel is told about exactly those.
    fn reconcile(&mut self, before: &HashMap<Ino, (Option<Oid>, usize)>) {
        let after = self.bound_state();
        for (ino, old) in before {
            let Ok(File { bound: Some((r, s)), dirty, .. }) = self.file(*ino) else { continue };
            let (r, s, dirty) = (r.clone(), s.clone(), *dirty);
            let now = self.node.blob_id(&r, &s);
            if after.get(ino) == Some(old) {
                continue;
            }
            if now == old.0 {
                // Only its tag entries changed: the kernel's link count is stale.
                self.invalidations.push(Invalidation::Inode(*ino));
                continue;
            }
            if now.is_none() && !self.dir_has_detached(&r, &s) {
                let _ = self.unbind(*ino);
                for (t, e) in self.node.state().links_to(&r, &s) {
                    if let Some(d) = self.tag_dirs.get(&t) {
                        self.invalidations.push(Invalidation::Entry(*d, e.as_bytes().to_vec()));
                    }
                }
                if let Some(d) = self.repo_dirs.get(&r) {
                    self.invalidations.push(Invalidation::Entry(*d, s.as_bytes().to_vec()));
                }
            } else if !dirty {
                if let Ok(f) = self.file_mut(*ino) {
                    (f.data, f.base) = (None, None);
                }
                self.invalidations.push(Invalidation::Inode(*ino));
            }
        }
        self.repo_dirs.retain(|r, _| self.node.state().repos.contains_key(r));
        self.tag_dirs.retain(|t, _| self.node.state().tags.contains_key(t));
    }

    fn dir_has_detached(&self, repo: &Name, secret: &Name) -> bool {
        self.repo_dirs.get(repo).and_then(|d| self.dir(*d).ok()).is_some_and(|d| d.detached.contains_key(secret))
    }

    /// The blob id the node has for a bound inode (for tests and diagnostics).
    pub fn blob_of(&self, ino: Ino) -> Option<Oid> {
        let (r, s) = self.file(ino).ok()?.bound.clone()?;
        self.node.blob_id(&r, &s)
    }

    /// Consumes the filesystem, returning the node.
    pub fn into_node(self) -> Node {
        self.node
    }

    /// Drops every plaintext buffer and the node's decrypted state (zeroized as they drop).
    /// The filesystem is empty afterwards; call it only once the mount is gone.
    pub fn wipe(&mut self) {
        self.inodes.clear();
        self.secrets.clear();
        self.reserved.clear();
        self.node.wipe();
    }
}

#[cfg(test)]
mod tests;
