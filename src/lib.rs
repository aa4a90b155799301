//! Polykey: a secret manager whose node is one encrypted file of flat git repositories.
//!
//! # Layout
//!
//! ```text
//! node      open/create a node, every operation on it, save = one appended transaction
//!  ├─ state     repositories (in-memory git objects) and tags; the single apply() mutator
//!  │   └─ git       loose objects, flat trees, commits (hashed by git2)
//!  ├─ format    header slots, frame log, tar journal: the only code that knows byte layout
//!  │   └─ crypto    Argon2id (bounded) and XChaCha20-Poly1305
//!  ├─ storage   the seam every byte of the node file goes through
//!  └─ export    the canonical tar (git repositories checked out, tags as hard links)
//! password  passphrase sources and their precedence (used by the CLI and the daemon)
//! ```
//!
//! ```
//! # fn main() -> polykey::Result<()> {
//! use polykey::{Access, KdfParams, Name, NameKind, Node, Passphrase};
//! let dir = std::env::temp_dir().join(format!("pk-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("me.node");
//! let pass = Passphrase::new(b"correct horse".to_vec());
//! let fast = KdfParams { memory_kib: 8, time_cost: 1, parallelism: 1 };
//! let mut node = Node::create(&path, &pass, fast)?;
//! let (repo, secret) = (Name::new(NameKind::Repo, b"aws")?, Name::new(NameKind::Secret, b"key")?);
//! node.put(&repo, &secret, b"AKIA...")?;
//! node.save()?;
//! drop(node);
//! let node = Node::open(&path, &pass, Access::Read)?;
//! assert_eq!(&node.get(&repo, &secret)?[..], b"AKIA...");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(()) }
//! ```

#![deny(rustdoc::broken_intra_doc_links)]

pub mod control;
pub mod crypto;
pub mod duration;
pub mod error;
pub mod export;
pub mod format;
pub mod git;
pub mod history;
pub mod identity;
pub mod merge;
#[cfg(unix)]
pub mod mounts;
pub mod name;
pub mod node;
pub mod password;
#[cfg(unix)]
pub mod process;
pub mod rollback;
#[cfg(unix)]
pub mod runtime;
pub mod secret;
pub mod state;
pub mod storage;
pub mod sync;
pub mod vfs;

pub use crypto::kdf::KdfParams;
pub use error::{Error, Result};
pub use name::{Name, NameKind};
pub use node::{Access, LogEntry, Node};
pub use secret::{Key, Passphrase};
