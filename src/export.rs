//! `polykey export`: the node's decrypted content as one canonical tar stream.
//!
//! Extracted, each `repos/<repo>/` is an ordinary git repository with its secrets checked
//! out and an index, so `git log`, `git fsck` and `git status` work and show it clean;
//! `tags/<tag>/<entry>` are hard links to the checked-out secrets.

use crate::format::journal::{add_dir, add_file, add_link, object_path, path_of};
use crate::git::Tree;
use crate::name::Name;
use crate::state::{Repo, State};
use git2::{ObjectType, Oid};
use std::io::{self, Write};

/// What export can fail on: writing the output, or an object that does not read back.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The output could not be written.
    #[error("cannot write the archive: {0}")]
    Io(#[from] io::Error),
    /// A repository's objects are damaged.
    #[error("repository {repo}: {source}")]
    Object {
        /// The repository.
        repo: String,
        /// What is wrong.
        source: crate::git::ObjectError,
    },
}

const GIT_CONFIG: &[u8] = b"[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n";

/// Writes the canonical tar of `state` to `out`.
pub fn export<W: Write>(state: &State, out: W) -> Result<W, ExportError> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    add_dir(&mut tar, b"repos", 0)?;
    for (name, repo) in &state.repos {
        export_repo(&mut tar, name, repo)?;
    }
    add_dir(&mut tar, b"tags", 0)?;
    for (tag, entries) in &state.tags {
        add_dir(&mut tar, &path_of(&[b"tags", tag.as_bytes()]), 0)?;
        for (entry, (repo, secret)) in entries {
            let exists = state.repos.get(repo).and_then(|r| r.tree().ok()).is_some_and(|t| t.contains_key(secret));
            if exists {
                add_link(
                    &mut tar,
                    &path_of(&[b"tags", tag.as_bytes(), entry.as_bytes()]),
                    &path_of(&[b"repos", repo.as_bytes(), secret.as_bytes()]),
                    0,
                )?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

fn export_repo<W: Write>(tar: &mut tar::Builder<W>, name: &Name, repo: &Repo) -> Result<(), ExportError> {
    let obj_err = |source| ExportError::Object { repo: name.to_string(), source };
    let base = path_of(&[b"repos", name.as_bytes()]);
    let git = |rest: &[u8]| path_of(&[&base, b".git", rest]);
    let (tree, time) = match repo.head() {
        Some(h) => (repo.tree().map_err(obj_err)?.to_tree(), repo.commit(h).map_err(obj_err)?.time.max(0) as u64),
        None => (Tree::new(), 0),
    };
    add_dir(tar, &base, time)?;
    add_dir(tar, &git(b""), time)?;
    add_file(tar, &git(b"HEAD"), 0o600, time, b"ref: refs/heads/main\n")?;
    add_file(tar, &git(b"config"), 0o600, time, GIT_CONFIG)?;
    for d in [&b"refs"[..], b"refs/heads", b"refs/tags", b"objects"] {
        add_dir(tar, &git(d), time)?;
    }
    if let Some(h) = repo.head() {
        add_file(tar, &git(b"refs/heads/main"), 0o600, time, format!("{h}\n").as_bytes())?;
    }
    let mut objects: Vec<_> = repo.objects().collect();
    objects.sort_by_key(|(oid, _)| **oid);
    let mut last_dir = String::new();
    for (oid, _) in objects {
        let hex = oid.to_string();
        if hex[..2] != last_dir {
            last_dir = hex[..2].to_owned();
            add_dir(tar, &git(format!("objects/{last_dir}").as_bytes()), time)?;
        }
        // A tree held as a delta is exported whole, as git reads it.
        add_file(tar, &object_path(name, *oid), 0o400, time, &repo.loose(*oid).map_err(obj_err)?)?;
    }
    let mut entries = Vec::with_capacity(tree.len());
    for (secret, oid) in &tree {
        let data = repo.read(*oid, ObjectType::Blob).map_err(obj_err)?;
        add_file(tar, &path_of(&[&base, secret.as_bytes()]), 0o600, time, &data)?;
        entries.push((secret.as_bytes(), *oid, data.len() as u32));
    }
    if repo.head().is_some() {
        add_file(tar, &git(b"index"), 0o600, time, &index(&entries))?;
    }
    Ok(())
}

/// A git index (version 2) for a flat checkout. Stat fields are zero, so git re-hashes the
/// files once and then sees them clean. The index format is big-endian by git's definition.
#[allow(clippy::big_endian_bytes)]
fn index(entries: &[(&[u8], Oid, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + entries.len() * 72 + 20);
    out.extend_from_slice(b"DIRC");
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (name, oid, size) in entries {
        let start = out.len();
        out.extend_from_slice(&[0u8; 24]); // ctime, mtime, dev, ino
        out.extend_from_slice(&0o100644u32.to_be_bytes());
        out.extend_from_slice(&[0u8; 8]); // uid, gid
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(oid.as_bytes());
        out.extend_from_slice(&(name.len().min(0xfff) as u16).to_be_bytes());
        out.extend_from_slice(name);
        // NUL-terminate and pad the entry to a multiple of 8 bytes.
        let len = out.len() - start;
        out.resize(start + (len + 8) / 8 * 8, 0);
    }
    let sum = sha1_smol::Sha1::from(&out).digest().bytes();
    out.extend_from_slice(&sum);
    out
}
