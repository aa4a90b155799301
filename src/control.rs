//! Commands on a node as data: executed in-process by the CLI, or sent to the mount daemon
//! over its control socket when the node is mounted. One [`execute`] serves both, so a command
//! means the same thing either way.
//!
//! Wire format (private to one build; client and daemon ship together): each message is a
//! `u32` little-endian length, then an opcode byte, then fields, each a `u32` length and bytes.

use crate::error::{Error, Result};
use crate::name::{Name, NameKind};
use crate::node::{Access, LogEntry, Node};
use crate::secret::{Passphrase, SecretBytes};
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

/// Largest request the daemon accepts: a `put` of the largest secret
/// ([`crate::git::MAX_OBJECT_BYTES`], the limit `polykey put` and the mount enforce) with its
/// two names and framing, with room to spare. Bigger imports are sent in several requests.
pub const MAX_REQUEST_BYTES: usize = crate::git::MAX_OBJECT_BYTES + (64 << 10);

/// Largest answer a client accepts (an export): from our own daemon, so only a sanity bound.
pub const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// A command on a node.
#[derive(Debug)]
pub enum Request {
    /// List repositories, or the secrets of one.
    Ls(Option<Name>),
    /// List tags, or the entries of one.
    Tags(Option<Name>),
    /// Store a secret.
    Put(Name, Name, SecretBytes),
    /// Read a secret.
    Get(Name, Name),
    /// Remove a secret.
    Rm(Name, Name),
    /// Remove a repository.
    RmRepo(Name),
    /// Rename a secret within its repository.
    Mv(Name, Name, Name),
    /// Tag a secret: tag, entry, repository, secret.
    Tag(Name, Name, Name, Name),
    /// Remove a tag entry.
    Untag(Name, Name),
    /// History of a repository (or of one secret).
    Log(Name, Option<Name>),
    /// The decrypted tar archive.
    Export,
    /// Change the passphrase: the current one (checked), the new one.
    Passwd(Passphrase, Passphrase),
    /// Store many secrets: one commit per repository (bulk import).
    Import(Vec<(Name, Name, SecretBytes)>),
    /// (Daemon only) where this node is mounted and by whom.
    Status,
    /// (Daemon only) write everything out and unmount.
    Unmount,
    /// Sync with another node file: its path (absolute), its passphrase, the repositories
    /// (every one when empty), and whether only the other node changes (a backup into it).
    Sync {
        /// The other node's file.
        other: std::path::PathBuf,
        /// Its passphrase.
        pass: Passphrase,
        /// Only these repositories (all when empty).
        repos: Vec<Name>,
        /// One way: only the other node changes.
        one_way: bool,
    },
    /// A backup into `dest` (absolute): created under a new passphrase with these Argon2
    /// settings (memory KiB, time cost) when `create` is given, else an existing node synced
    /// into one way; `only` selects repositories (`REPO` or `tag:TAG`; all when empty), and a
    /// created backup with a selection is a sub-node.
    Backup {
        /// The backup node's file.
        dest: std::path::PathBuf,
        /// Its passphrase (new when creating).
        pass: Passphrase,
        /// Create it with these Argon2 settings.
        create: Option<(u32, u32)>,
        /// `REPO` or `tag:TAG` selectors.
        only: Vec<String>,
    },
    /// Unresolved conflict files, of one repository or of all.
    Conflicts(Option<Name>),
    /// A repository's settings: shown, or its merge mode set.
    Config(Name, Option<crate::merge::MergeMode>),
    /// A secret as of a revision (see [`crate::history`]).
    GetAt(Name, Name, String),
    /// One commit restoring a secret (or the whole repository) as of a revision.
    Revert(Name, Option<Name>, String),
    /// The node's public identity (made on first use): the `pk1…` token, the `age1…`
    /// recipient, or the OpenSSH line.
    Id(IdForm),
}

/// Which public form of the node's identity [`Request::Id`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdForm {
    /// `pk1…`: both public keys.
    Token,
    /// `age1…`: the X25519 recipient.
    Age,
    /// `ssh-ed25519 …`: the Ed25519 key.
    Ssh,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub enum Response {
    /// Done, nothing to show.
    Done,
    /// A list of names.
    Names(NameList),
    /// Tag entries: (entry, repository, secret).
    Entries(Vec<(Name, Name, Name)>),
    /// Bytes (a secret, or an export).
    Data(SecretBytes),
    /// History, newest first.
    Log(Vec<LogEntry>),
    /// How many things changed.
    Count(u64),
    /// A mount: daemon pid, node path, mountpoint.
    Mounted(u32, Vec<u8>, Vec<u8>),
    /// The command failed: its message, and whether it is a usage error.
    Failed(String, bool),
    /// How a mount is doing (the answer to [`Request::Status`]).
    Health(Health),
    /// What a command did, a line each, for the user.
    Report(Vec<String>),
    /// Secrets: (repository, secret).
    Paths(Vec<(Name, Name)>),
}

/// How a mount daemon is doing: whether it can write its node, and where its log is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// The daemon's log file.
    pub log: std::path::PathBuf,
    /// Since when saving fails (Unix seconds), if it does.
    pub failing_since: Option<u64>,
    /// Why saving fails (empty when it works).
    pub error: String,
    /// How many saves wait to be written.
    pub waiting: u64,
    /// The rescue file written instead of the node's path (which leads to another file).
    pub rescued: Option<std::path::PathBuf>,
}

impl Health {
    /// Whether the mount can write its node now.
    pub fn ok(&self) -> bool {
        self.failing_since.is_none()
    }
}

impl Request {
    /// Whether the command changes the node.
    pub fn access(&self) -> Access {
        match self {
            Request::Ls(_)
            | Request::Tags(_)
            | Request::Get(..)
            | Request::Log(..)
            | Request::Export
            | Request::Status
            | Request::Backup { .. }
            | Request::Conflicts(_)
            | Request::Config(_, None)
            | Request::GetAt(..) => Access::Read,
            Request::Sync { one_way: true, .. } => Access::Read,
            _ => Access::Write,
        }
    }
}

fn not_found(what: String) -> Error {
    Error::NotFound { what }
}

/// Opens (or, for a backup, creates) the other node a request works with, if any: done before
/// [`execute_with`], so that the mount daemon runs Argon2 and reads the other file without
/// holding its filesystem.
pub fn open_peer(req: &Request) -> Result<Option<Node>> {
    match req {
        Request::Sync { other, pass, .. } => crate::sync::open_peer(other, pass).map(Some),
        Request::Backup { dest, pass, create: Some((memory_kib, time_cost)), .. } => {
            let params = crate::KdfParams { memory_kib: *memory_kib, time_cost: *time_cost, ..Default::default() };
            Node::create(dest, pass, params).map(Some)
        }
        Request::Backup { dest, pass, create: None, .. } => crate::sync::open_peer(dest, pass).map(Some),
        _ => Ok(None),
    }
}

/// Executes `req` on `node` (without saving: the caller saves after a write).
pub fn execute(node: &mut Node, req: Request) -> Result<Response> {
    let peer = open_peer(&req)?;
    execute_with(node, req, peer)
}

/// Executes `req` on `node` with the other node [`open_peer`] opened for it (saved here:
/// before `node`, which the caller saves).
pub fn execute_with(node: &mut Node, req: Request, peer: Option<Node>) -> Result<Response> {
    Ok(match (req, peer) {
        (Request::Sync { repos, one_way, .. }, Some(mut other)) => {
            let report = crate::sync::sync(node, &mut other, &crate::sync::Options { repos, one_way })?;
            other.save()?;
            crate::rollback::record(&other);
            Response::Report(report.lines)
        }
        (Request::Backup { only, create, dest: path, .. }, Some(mut dest)) => {
            let selected = match crate::sync::select(node, &only) {
                Ok(selected) => selected,
                Err(e) => {
                    if create.is_some() {
                        // Made for this backup a moment ago, still empty: not left behind.
                        drop(dest);
                        let _ = std::fs::remove_file(&path);
                    }
                    return Err(e);
                }
            };
            let report = if create.is_some() {
                crate::sync::fill_backup(node, &mut dest, (!only.is_empty()).then_some(&selected[..]))?
            } else {
                crate::sync::sync(node, &mut dest, &crate::sync::Options { repos: selected, one_way: true })?
            };
            dest.save()?;
            crate::rollback::record(&dest);
            Response::Report(report.lines)
        }
        (Request::Conflicts(r), _) => Response::Paths(crate::sync::conflicts(node, r.as_ref())?),
        (req, _) => execute_plain(node, req)?,
    })
}

/// Executes a request that involves no other node.
fn execute_plain(node: &mut Node, req: Request) -> Result<Response> {
    Ok(match req {
        Request::Ls(None) => Response::Names(node.state().repos.keys().collect()),
        Request::Ls(Some(r)) => Response::Names(node.secrets(&r)?.iter().collect()),
        Request::Tags(None) => Response::Names(node.state().tags.keys().collect()),
        Request::Tags(Some(t)) => {
            let entries = node.state().tags.get(&t).ok_or_else(|| not_found(format!("tag {t}")))?;
            Response::Entries(entries.iter().map(|(e, (r, s))| (e.clone(), r.clone(), s.clone())).collect())
        }
        Request::Put(r, s, data) => {
            node.put(&r, &s, &data)?;
            Response::Done
        }
        Request::Get(r, s) => Response::Data(node.get(&r, &s)?),
        Request::Rm(r, s) => {
            node.remove(&r, &s)?;
            Response::Done
        }
        Request::RmRepo(r) => {
            node.remove_repo(&r)?;
            Response::Done
        }
        Request::Mv(r, a, b) => {
            node.rename(&r, &a, &b, false)?;
            Response::Done
        }
        Request::Tag(t, e, r, s) => {
            node.tag(&t, &e, &r, &s)?;
            Response::Done
        }
        Request::Untag(t, e) => {
            node.untag(&t, &e, true)?;
            Response::Done
        }
        Request::Log(r, s) => Response::Log(node.log(&r, s.as_ref())?),
        Request::Export => {
            let out = crate::export::export(node.state(), Vec::new())
                .map_err(|e| Error::Corrupt { node: node.path().to_owned(), what: e.to_string() })?;
            Response::Data(Zeroizing::new(out))
        }
        Request::Passwd(current, new) => {
            // Whoever can reach the socket can read the mount, but must not lock its owner out.
            if !node.verify_passphrase(&current) {
                return Err(Error::WrongPassphrase { node: node.path().to_owned() });
            }
            node.change_passphrase(&new, crate::KdfParams::default())?;
            Response::Done
        }
        Request::Import(items) => {
            let mut by_repo: std::collections::BTreeMap<&Name, Vec<(Name, &[u8])>> = std::collections::BTreeMap::new();
            for (r, s, d) in &items {
                by_repo.entry(r).or_default().push((s.clone(), &d[..]));
            }
            let mut changed = 0;
            for (r, secrets) in by_repo {
                changed += node.put_many(r, &secrets)?;
            }
            Response::Count(changed as u64)
        }
        Request::Status | Request::Unmount => return Err(Error::Passphrase("this command needs the mount daemon".into())),
        Request::Sync { .. } | Request::Backup { .. } | Request::Conflicts(_) => unreachable!("handled by execute_with"),
        Request::Config(r, Some(mode)) => {
            node.set_merge_mode(&r, mode)?;
            Response::Done
        }
        Request::GetAt(r, s, rev) => {
            let at = crate::history::resolve(node, &r, Some(&s), &rev)?;
            Response::Data(node.get_at(&r, &s, at)?)
        }
        Request::Revert(r, s, rev) => {
            let at = crate::history::resolve(node, &r, s.as_ref(), &rev)?;
            let what = s.as_ref().map_or_else(|| r.to_string(), |s| format!("{r}/{s}"));
            if node.revert(&r, s.as_ref(), at)? {
                Response::Report(vec![format!("{what} reverted to {rev}")])
            } else {
                Response::Report(vec![format!("{what} is already as it was at {rev}: nothing to do")])
            }
        }
        Request::Id(form) => {
            let id = node.identity_or_create()?;
            let line = match form {
                IdForm::Token => id.token(),
                IdForm::Age => id.age_recipient(),
                IdForm::Ssh => id.ssh_line(),
            };
            Response::Data(Zeroizing::new(format!("{line}\n").into_bytes()))
        }
        Request::Config(r, None) => Response::Data(Zeroizing::new(crate::merge::config_bytes(node.repo(&r)?.merge_mode()))),
    })
}

/// A list of names as the protocol carries them: one buffer of length-prefixed names, so that
/// listing 25,000 repositories takes one allocation on each side instead of 25,000 (and the
/// client checks each name in place, printing straight from the message).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NameList(Vec<u8>);

impl NameList {
    /// Appends `name`.
    pub fn push(&mut self, name: &[u8]) {
        put_field(&mut self.0, name);
    }

    /// The names' bytes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut d = Dec(&self.0);
        // Well-formed by construction (pushed, or checked when decoded).
        std::iter::from_fn(move || if d.0.is_empty() { None } else { d.field().ok() })
    }
}

impl<'a> FromIterator<&'a Name> for NameList {
    fn from_iter<I: IntoIterator<Item = &'a Name>>(names: I) -> Self {
        let names = names.into_iter();
        let mut list = NameList(Vec::with_capacity(names.size_hint().0 * 16));
        for n in names {
            list.push(n.as_bytes());
        }
        list
    }
}

impl std::fmt::Debug for NameList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter().map(String::from_utf8_lossy)).finish()
    }
}

/// Appends one field: its length (`u32`, little-endian), then its bytes.
fn put_field(buf: &mut Vec<u8>, b: &[u8]) {
    buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
    buf.extend_from_slice(b);
}

/// Encodes messages.
struct Enc(Zeroizing<Vec<u8>>);

impl Enc {
    fn new(op: u8) -> Enc {
        let mut v = Zeroizing::new(Vec::new());
        v.extend_from_slice(&[0, 0, 0, 0, op]);
        Enc(v)
    }
    fn field(mut self, b: &[u8]) -> Enc {
        // Grown by `reserve`, which wipes the outgrown buffer: an import or a passphrase change
        // carries several secrets, and `Vec`'s own growth would free copies of the earlier ones.
        crate::secret::reserve(&mut self.0, 4 + b.len(), usize::MAX);
        put_field(&mut self.0, b);
        self
    }
    /// Bytes already encoded as fields.
    fn raw(mut self, fields: &[u8]) -> Enc {
        self.0.reserve_exact(fields.len());
        self.0.extend_from_slice(fields);
        self
    }
    fn name(self, n: &Name) -> Enc {
        self.field(n.as_bytes())
    }
    fn opt(self, n: &Option<Name>) -> Enc {
        self.field(n.as_ref().map_or(&[][..], |n| n.as_bytes()))
    }
    fn finish(mut self) -> Zeroizing<Vec<u8>> {
        let len = (self.0.len() - 4) as u32;
        self.0[..4].copy_from_slice(&len.to_le_bytes());
        self.0
    }
}

/// Decodes messages.
struct Dec<'a>(&'a [u8]);

fn bad() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed control message")
}

impl<'a> Dec<'a> {
    fn field(&mut self) -> io::Result<&'a [u8]> {
        let len = u32::from_le_bytes(self.0.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
        let (f, rest) = self.0.get(4..).ok_or_else(bad)?.split_at_checked(len).ok_or_else(bad)?;
        self.0 = rest;
        Ok(f)
    }
    fn name(&mut self, kind: NameKind) -> io::Result<Name> {
        Name::new(kind, self.field()?).map_err(|_| bad())
    }
    fn opt(&mut self, kind: NameKind) -> io::Result<Option<Name>> {
        let f = self.field()?;
        if f.is_empty() {
            return Ok(None);
        }
        Name::new(kind, f).map(Some).map_err(|_| bad())
    }
    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.field()?.try_into().map_err(|_| bad())?))
    }
}

use NameKind::{Repo, Secret, Tag, TagEntry};

/// A path sent over the socket: absolute (the daemon's working folder is not the caller's).
fn path_field(b: &[u8]) -> io::Result<std::path::PathBuf> {
    #[cfg(unix)]
    let p = std::path::PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b));
    #[cfg(not(unix))]
    let p = std::path::PathBuf::from(String::from_utf8_lossy(b).into_owned());
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(bad())
    }
}

impl Request {
    /// `items` as import requests of at most [`MAX_REQUEST_BYTES`] each (one, unless the
    /// import is larger than the largest secret).
    pub fn imports(items: Vec<(Name, Name, SecretBytes)>) -> Vec<Request> {
        let mut batches = vec![Vec::new()];
        let mut size = 5; // Length and opcode.
        for item in items {
            let item_size = 12 + item.0.as_bytes().len() + item.1.as_bytes().len() + item.2.len();
            if size + item_size > MAX_REQUEST_BYTES && batches.last().is_some_and(|b| !b.is_empty()) {
                batches.push(Vec::new());
                size = 5;
            }
            size += item_size;
            batches.last_mut().expect("never empty").push(item);
        }
        batches.into_iter().map(Request::Import).collect()
    }

    /// The request as one message.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Request::Ls(r) => Enc::new(1).opt(r),
            Request::Tags(t) => Enc::new(2).opt(t),
            Request::Put(r, s, d) => Enc::new(3).name(r).name(s).field(d),
            Request::Get(r, s) => Enc::new(4).name(r).name(s),
            Request::Rm(r, s) => Enc::new(5).name(r).name(s),
            Request::RmRepo(r) => Enc::new(6).name(r),
            Request::Mv(r, a, b) => Enc::new(7).name(r).name(a).name(b),
            Request::Tag(t, e, r, s) => Enc::new(8).name(t).name(e).name(r).name(s),
            Request::Untag(t, e) => Enc::new(9).name(t).name(e),
            Request::Log(r, s) => Enc::new(10).name(r).opt(s),
            Request::Export => Enc::new(11),
            Request::Passwd(c, n) => Enc::new(12).field(c.expose()).field(n.expose()),
            Request::Status => Enc::new(13),
            Request::Unmount => Enc::new(14),
            Request::Import(items) => items.iter().fold(Enc::new(15), |e, (r, s, d)| e.name(r).name(s).field(d)),
            Request::Sync { other, pass, repos, one_way } => repos.iter().fold(
                Enc::new(16).field(other.as_os_str().as_encoded_bytes()).field(pass.expose()).field(&[u8::from(*one_way)]),
                |e, r| e.name(r),
            ),
            Request::Backup { dest, pass, create, only } => {
                let kdf = create.map_or(Vec::new(), |(m, t)| [m.to_le_bytes(), t.to_le_bytes()].concat());
                let e = Enc::new(17).field(dest.as_os_str().as_encoded_bytes()).field(pass.expose()).field(&kdf);
                only.iter().fold(e, |e, o| e.field(o.as_bytes()))
            }
            Request::Conflicts(r) => Enc::new(18).opt(r),
            Request::GetAt(r, s, rev) => Enc::new(20).name(r).name(s).field(rev.as_bytes()),
            Request::Revert(r, s, rev) => Enc::new(21).name(r).opt(s).field(rev.as_bytes()),
            Request::Id(form) => Enc::new(22).field(&[*form as u8]),
            Request::Config(r, mode) => Enc::new(19).name(r).field(match mode {
                None => b"",
                Some(crate::merge::MergeMode::Lines) => b"lines",
                Some(crate::merge::MergeMode::Never) => b"never",
            }),
        }
        .finish()
    }

    /// Parses a message body (after the length).
    pub fn decode(body: &[u8]) -> io::Result<Request> {
        let (&op, rest) = body.split_first().ok_or_else(bad)?;
        let mut d = Dec(rest);
        Ok(match op {
            1 => Request::Ls(d.opt(Repo)?),
            2 => Request::Tags(d.opt(Tag)?),
            3 => Request::Put(d.name(Repo)?, d.name(Secret)?, Zeroizing::new(d.field()?.to_vec())),
            4 => Request::Get(d.name(Repo)?, d.name(Secret)?),
            5 => Request::Rm(d.name(Repo)?, d.name(Secret)?),
            6 => Request::RmRepo(d.name(Repo)?),
            7 => Request::Mv(d.name(Repo)?, d.name(Secret)?, d.name(Secret)?),
            8 => Request::Tag(d.name(Tag)?, d.name(TagEntry)?, d.name(Repo)?, d.name(Secret)?),
            9 => Request::Untag(d.name(Tag)?, d.name(TagEntry)?),
            10 => Request::Log(d.name(Repo)?, d.opt(Secret)?),
            11 => Request::Export,
            12 => Request::Passwd(Passphrase::new(d.field()?.to_vec()), Passphrase::new(d.field()?.to_vec())),
            13 => Request::Status,
            14 => Request::Unmount,
            15 => {
                let mut items = Vec::new();
                while !d.0.is_empty() {
                    items.push((d.name(Repo)?, d.name(Secret)?, Zeroizing::new(d.field()?.to_vec())));
                }
                Request::Import(items)
            }
            16 => {
                let other = path_field(d.field()?)?;
                let pass = Passphrase::new(d.field()?.to_vec());
                let one_way = d.field()? == [1];
                let mut repos = Vec::new();
                while !d.0.is_empty() {
                    repos.push(d.name(Repo)?);
                }
                Request::Sync { other, pass, repos, one_way }
            }
            17 => {
                let dest = path_field(d.field()?)?;
                let pass = Passphrase::new(d.field()?.to_vec());
                let create = match d.field()? {
                    [] => None,
                    kdf if kdf.len() == 8 => {
                        Some((u32::from_le_bytes(kdf[..4].try_into().unwrap()), u32::from_le_bytes(kdf[4..].try_into().unwrap())))
                    }
                    _ => return Err(bad()),
                };
                let mut only = Vec::new();
                while !d.0.is_empty() {
                    only.push(String::from_utf8(d.field()?.to_vec()).map_err(|_| bad())?);
                }
                Request::Backup { dest, pass, create, only }
            }
            18 => Request::Conflicts(d.opt(Repo)?),
            20 => Request::GetAt(d.name(Repo)?, d.name(Secret)?, String::from_utf8(d.field()?.to_vec()).map_err(|_| bad())?),
            21 => Request::Revert(d.name(Repo)?, d.opt(Secret)?, String::from_utf8(d.field()?.to_vec()).map_err(|_| bad())?),
            22 => Request::Id(match d.field()? {
                [0] => IdForm::Token,
                [1] => IdForm::Age,
                [2] => IdForm::Ssh,
                _ => return Err(bad()),
            }),
            19 => Request::Config(
                d.name(Repo)?,
                match d.field()? {
                    b"" => None,
                    b"lines" => Some(crate::merge::MergeMode::Lines),
                    b"never" => Some(crate::merge::MergeMode::Never),
                    _ => return Err(bad()),
                },
            ),
            _ => return Err(bad()),
        })
    }
}

impl Response {
    /// The response as one message.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        match self {
            Response::Done => Enc::new(1),
            Response::Names(ns) => Enc::new(2).raw(&ns.0),
            Response::Entries(es) => es.iter().fold(Enc::new(3), |e, (a, b, c)| e.name(a).name(b).name(c)),
            Response::Data(d) => Enc::new(4).field(d),
            Response::Log(ls) => {
                ls.iter().fold(Enc::new(5), |e, l| e.field(l.id.as_bytes()).field(&l.time.to_le_bytes()).field(l.message.as_bytes()))
            }
            Response::Mounted(pid, node, mnt) => Enc::new(6).field(&pid.to_le_bytes()).field(node).field(mnt),
            Response::Failed(m, usage) => Enc::new(7).field(m.as_bytes()).field(&[u8::from(*usage)]),
            Response::Count(n) => Enc::new(8).field(&n.to_le_bytes()),
            Response::Health(h) => Enc::new(9)
                .field(h.log.as_os_str().as_encoded_bytes())
                .field(&h.failing_since.map_or(Vec::new(), |t| t.to_le_bytes().to_vec()))
                .field(h.error.as_bytes())
                .field(&h.waiting.to_le_bytes())
                .field(h.rescued.as_ref().map_or(&[][..], |r| r.as_os_str().as_encoded_bytes())),
            Response::Report(lines) => lines.iter().fold(Enc::new(10), |e, l| e.field(l.as_bytes())),
            Response::Paths(ps) => ps.iter().fold(Enc::new(11), |e, (r, s)| e.name(r).name(s)),
        }
        .finish()
    }

    /// Parses a message body (after the length).
    pub fn decode(body: &[u8]) -> io::Result<Response> {
        let (&op, rest) = body.split_first().ok_or_else(bad)?;
        let mut d = Dec(rest);
        Ok(match op {
            1 => Response::Done,
            2 => {
                let all = d.0;
                while !d.0.is_empty() {
                    Name::check(TagEntry, d.field()?).map_err(|_| bad())?;
                }
                Response::Names(NameList(all.to_vec()))
            }
            3 => {
                let mut es = Vec::new();
                while !d.0.is_empty() {
                    es.push((d.name(TagEntry)?, d.name(Repo)?, d.name(Secret)?));
                }
                Response::Entries(es)
            }
            4 => Response::Data(Zeroizing::new(d.field()?.to_vec())),
            5 => {
                let mut ls = Vec::new();
                while !d.0.is_empty() {
                    let id = git2::Oid::from_bytes(d.field()?).map_err(|_| bad())?;
                    let time = i64::from_le_bytes(d.field()?.try_into().map_err(|_| bad())?);
                    let message = String::from_utf8_lossy(d.field()?).into_owned();
                    ls.push(LogEntry { id, time, message });
                }
                Response::Log(ls)
            }
            6 => Response::Mounted(d.u32()?, d.field()?.to_vec(), d.field()?.to_vec()),
            7 => Response::Failed(String::from_utf8_lossy(d.field()?).into_owned(), d.field()? == [1]),
            8 => Response::Count(u64::from_le_bytes(d.field()?.try_into().map_err(|_| bad())?)),
            9 => {
                // Shown to the user only: a path that is not UTF-8 is shown lossily.
                let path = |b: &[u8]| std::path::PathBuf::from(String::from_utf8_lossy(b).into_owned());
                let log = path(d.field()?);
                let since = d.field()?;
                let failing_since = if since.is_empty() { None } else { Some(u64::from_le_bytes(since.try_into().map_err(|_| bad())?)) };
                let error = String::from_utf8_lossy(d.field()?).into_owned();
                let waiting = u64::from_le_bytes(d.field()?.try_into().map_err(|_| bad())?);
                let rescued = Some(d.field()?).filter(|r| !r.is_empty()).map(path);
                Response::Health(Health { log, failing_since, error, waiting, rescued })
            }
            10 => {
                let mut lines = Vec::new();
                while !d.0.is_empty() {
                    lines.push(String::from_utf8_lossy(d.field()?).into_owned());
                }
                Response::Report(lines)
            }
            11 => {
                let mut ps = Vec::new();
                while !d.0.is_empty() {
                    ps.push((d.name(Repo)?, d.name(Secret)?));
                }
                Response::Paths(ps)
            }
            _ => return Err(bad()),
        })
    }
}

/// Reads one message body of at most `max` bytes from `r`; `Ok(None)` at a clean end of stream.
pub fn read_message(r: &mut impl Read, max: usize) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    match read_length(r, max)? {
        Some(len) => read_body(r, len).map(Some),
        None => Ok(None),
    }
}

/// Reads a message's length and checks it against `max`; `Ok(None)` at a clean end of stream.
/// A length over `max` is an `InvalidData` error that says so (the daemon answers with it).
pub fn read_length(r: &mut impl Read, max: usize) -> io::Result<Option<usize>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len == 0 {
        return Err(bad());
    }
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a control message of {len} bytes is larger than the {max}-byte limit"),
        ));
    }
    Ok(Some(len))
}

/// Reads a message body of `len` bytes (from [`read_length`]).
pub fn read_body(r: &mut impl Read, len: usize) -> io::Result<Zeroizing<Vec<u8>>> {
    // Grown as bytes arrive, not allocated at the declared length: a peer that declares
    // 64 MiB and sends nothing costs 64 KiB. Each outgrown buffer is wiped as it is dropped.
    let mut body = Zeroizing::new(Vec::with_capacity(len.min(64 * 1024)));
    while body.len() < len {
        crate::secret::reserve(&mut body, 1, len);
        let start = body.len();
        let end = body.capacity().min(len);
        body.resize(end, 0);
        match r.read(&mut body[start..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "message cut short")),
            Ok(n) => body.truncate(start + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => body.truncate(start),
            Err(e) => return Err(e),
        }
    }
    Ok(body)
}

/// Writes one encoded message to `w`.
pub fn write_message(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    w.write_all(msg)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_is_not_trusted_before_the_bytes_arrive() {
        // The largest request declared, 3 bytes sent: an error, without a 64 MiB allocation.
        let mut msg = u32::try_from(MAX_REQUEST_BYTES).unwrap().to_le_bytes().to_vec();
        msg.extend_from_slice(b"abc");
        let err = read_message(&mut &msg[..], MAX_REQUEST_BYTES).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // A long message arriving in small pieces is read whole.
        let body: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let mut msg = u32::try_from(body.len()).unwrap().to_le_bytes().to_vec();
        msg.extend_from_slice(&body);
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(&read_message(&mut Trickle(&msg), MAX_REQUEST_BYTES).unwrap().unwrap()[..], &body[..]);
        // One byte over the limit is refused from its length alone, saying so.
        let msg = u32::try_from(MAX_REQUEST_BYTES + 1).unwrap().to_le_bytes();
        let err = read_message(&mut &msg[..], MAX_REQUEST_BYTES).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("limit"), "{err}");
    }

    fn n(k: NameKind, s: &str) -> Name {
        Name::new(k, s.as_bytes()).unwrap()
    }

    #[test]
    fn a_large_import_is_split_into_requests_that_fit() {
        let big = || Zeroizing::new(vec![7u8; crate::git::MAX_OBJECT_BYTES / 2]);
        let items: Vec<_> = (0..5).map(|i| (n(Repo, "r"), n(Secret, &format!("s{i}")), big())).collect();
        let reqs = Request::imports(items);
        assert_eq!(reqs.len(), 3);
        let mut names = Vec::new();
        for r in &reqs {
            assert!(r.encode().len() <= MAX_REQUEST_BYTES);
            let Request::Import(items) = r else { panic!("{r:?}") };
            names.extend(items.iter().map(|(_, s, _)| s.display().to_string()));
        }
        assert_eq!(names, ["s0", "s1", "s2", "s3", "s4"]);
        assert_eq!(Request::imports(Vec::new()).len(), 1, "an empty import is one empty request");
    }

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Ls(None),
            Request::Ls(Some(n(Repo, "r"))),
            Request::Put(n(Repo, "r"), n(Secret, "s"), Zeroizing::new(b"\0bytes\n".to_vec())),
            Request::Tag(n(Tag, "t"), n(TagEntry, "e"), n(Repo, "r"), n(Secret, "s")),
            Request::Log(n(Repo, "r"), None),
            Request::Unmount,
        ];
        for r in reqs {
            let msg = r.encode();
            let back = Request::decode(&msg[4..]).unwrap();
            assert_eq!(format!("{back:?}"), format!("{r:?}"));
        }
    }

    #[test]
    fn responses_round_trip_and_garbage_is_refused() {
        let id = git2::Oid::hash_object(git2::ObjectType::Blob, b"x").unwrap();
        let resps = vec![
            Response::Names([n(Repo, "a"), n(Repo, "b")].iter().collect()),
            Response::Entries(vec![(n(TagEntry, "e"), n(Repo, "r"), n(Secret, "s"))]),
            Response::Log(vec![LogEntry { id, time: 5, message: "Add s".into() }]),
            Response::Mounted(7, b"/n".to_vec(), b"/m".to_vec()),
            Response::Failed("nope".into(), true),
            Response::Health(Health::default()),
            Response::Health(Health {
                log: "/run/l.log".into(),
                failing_since: Some(9),
                error: "gone".into(),
                waiting: 3,
                rescued: Some("/n.rescued".into()),
            }),
        ];
        for r in resps {
            let msg = r.encode();
            assert_eq!(format!("{:?}", Response::decode(&msg[4..]).unwrap()), format!("{r:?}"));
        }
        assert!(Request::decode(&[99]).is_err());
        assert!(Request::decode(&[3, 200, 0, 0, 0]).is_err());
        assert!(Response::decode(&[]).is_err());
    }
}
