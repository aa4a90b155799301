//! The core's error type: every failure a user can meet, each naming what and where.
//!
//! No variant ever carries secret material (passphrases, keys, secret contents); names of
//! repositories, secrets and tags are metadata and may appear.

use std::io;
use std::path::PathBuf;

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The passphrase did not unwrap the node's data key.
    #[error("wrong passphrase for node {}", node.display())]
    WrongPassphrase {
        /// The node file.
        node: PathBuf,
    },
    /// The node file fails a checksum, an authentication tag or a structural rule.
    #[error("node {} is damaged at byte {offset}: {what}", node.display())]
    Damaged {
        /// The node file.
        node: PathBuf,
        /// Byte offset in the node file where the damage was found.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// The node was written by a newer Polykey, or uses a feature this build lacks.
    #[error("node {} {what}; upgrade polykey to open it", node.display())]
    Unsupported {
        /// The node file.
        node: PathBuf,
        /// The version or feature that is not supported.
        what: String,
    },
    /// The node's path names something other than a regular file (a FIFO, a device, a
    /// folder): refused before anything could block on it.
    #[error("node {} is not a regular file but {kind}; refusing to open it", node.display())]
    NotAFile {
        /// The node's path.
        node: PathBuf,
        /// What it is ("a FIFO", ...).
        kind: &'static str,
    },
    /// An object inside the node is missing or malformed (found when it was first read).
    #[error("node {} is damaged: {what}", node.display())]
    Corrupt {
        /// The node file.
        node: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot read node", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// `init` was asked to create a node where a file already exists.
    #[error("{} already exists; refusing to overwrite it", path.display())]
    NodeExists {
        /// The existing file.
        path: PathBuf,
    },
    /// There is no node file at the path.
    #[error("no node at {}; create one with `polykey init`", path.display())]
    NoNode {
        /// The missing node file.
        path: PathBuf,
    },
    /// A name (repository, secret or tag) breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// Which kind of name.
        kind: &'static str,
        /// The name, lossily decoded for display.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A path argument is not of the form the command wants.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The argument, lossily decoded.
        path: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A repository, secret, tag or tag entry does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, e.g. `secret aws/key`.
        what: String,
    },
    /// Creating something that already exists, where that would lose data.
    #[error("{what} already exists")]
    Exists {
        /// What exists already.
        what: String,
    },
    /// A repository or tag that must be empty is not.
    #[error("{what} is not empty")]
    NotEmpty {
        /// The non-empty repository or tag.
        what: String,
    },
    /// A secret or node would exceed a size limit.
    #[error("{what} is too large: {size} bytes (limit {limit})")]
    TooLarge {
        /// What is too large.
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// An empty passphrase was given.
    #[error("the passphrase is empty; refusing it")]
    EmptyPassphrase,
    /// No passphrase source is available (no file, command, variable or terminal).
    #[error("no passphrase: use --password-file, --password-command, $POLYKEY_PASSWORD_FILE or a terminal")]
    NoPassphraseSource,
    /// A passphrase source failed (unreadable file, failing command, mismatch on the prompt).
    #[error("{0}")]
    Passphrase(String),
    /// The node is older than a state of it seen here before (replaced by an old copy?).
    #[error("node {} {}; to use it as it is, pass --accept-rollback", node.display(), rollback_cause(*found, *seen, *damaged_at))]
    Rollback {
        /// The node file.
        node: PathBuf,
        /// The newest position (epoch, sequence) seen before.
        seen: (u32, u64),
        /// The position found now.
        found: (u32, u64),
        /// Where the log was found damaged or cut short, if it was (the likelier cause then).
        damaged_at: Option<u64>,
    },
    /// A change was made in the mount but could not be written to the node file yet.
    #[error("{reason}; the change is kept by the mount and will be written as soon as the node file can be (retried every second)")]
    Pending {
        /// Why the write failed.
        reason: String,
    },
    /// Another process holds the node.
    #[error("node {} is in use by another polykey process; try again when it has finished", node.display())]
    Busy {
        /// The node file.
        node: PathBuf,
        /// The process holding it, if known (0 if not).
        pid: u32,
    },
    /// A command was asked something it cannot do (exit status 2).
    #[error("{0}")]
    Usage(String),
}

fn rollback_cause(found: (u32, u64), seen: (u32, u64), damaged_at: Option<u64>) -> String {
    match damaged_at {
        Some(at) => {
            format!("has lost saves made here before: the log is damaged or cut short at byte {at} (state {found:?}, last seen {seen:?})")
        }
        None => format!("is older than when it was last used here (state {found:?} < {seen:?}): it may have been replaced by an old copy"),
    }
}

impl Error {
    /// Wraps an I/O error with what was being done and to which file.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { action, path: path.into(), source }
    }

    /// Is this a usage-class error (exit status 2 in the CLI)?
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::NoPassphraseSource | Error::InvalidName { .. } | Error::InvalidPath { .. } | Error::Usage(_))
    }
}
