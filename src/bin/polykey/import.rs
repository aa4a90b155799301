//! `polykey import`: many secrets at once, from a folder tree or a tar on stdin.
//!
//! The layout is `<repo>/<secret>` (an export's `repos/` folder, or any folder of folders).
//! `.git` folders are skipped, so an extracted `polykey export` imports as it is.

use crate::{Failure, EXIT_FAILURE, EXIT_USAGE};
use polykey::{Name, NameKind};
use std::io::Read;
use std::path::Path;
use zeroize::Zeroizing;

type Items = Vec<(Name, Name, Zeroizing<Vec<u8>>)>;

fn fail(msg: String) -> Failure {
    Failure(msg, EXIT_FAILURE)
}

fn limit() -> u64 {
    polykey::git::MAX_OBJECT_BYTES as u64
}

#[cfg(unix)]
fn bytes(p: &std::ffi::OsStr) -> &[u8] {
    std::os::unix::ffi::OsStrExt::as_bytes(p)
}
#[cfg(not(unix))]
fn bytes(p: &std::ffi::OsStr) -> &[u8] {
    p.to_str().unwrap_or_default().as_bytes()
}

/// Reads the secrets to import from `source` (a folder, or `-` for a tar on stdin).
pub fn read(source: &Path) -> Result<Items, Failure> {
    if source == Path::new("-") {
        return from_tar(std::io::stdin().lock());
    }
    let root = if source.join("repos").is_dir() { source.join("repos") } else { source.to_owned() };
    let mut items = Vec::new();
    let entries = std::fs::read_dir(&root).map_err(|e| fail(format!("cannot read {}: {e}", root.display())))?;
    for repo_dir in entries {
        let repo_dir = repo_dir.map_err(|e| fail(format!("cannot read {}: {e}", root.display())))?;
        if !repo_dir.file_type().map_err(|e| fail(e.to_string()))?.is_dir() {
            return Err(Failure(
                format!("{}: expected folders of secrets (SOURCE/<repo>/<secret>)", repo_dir.path().display()),
                EXIT_USAGE,
            ));
        }
        let repo = Name::new(NameKind::Repo, bytes(&repo_dir.file_name()))?;
        for f in std::fs::read_dir(repo_dir.path()).map_err(|e| fail(format!("cannot read {}: {e}", repo_dir.path().display())))? {
            let f = f.map_err(|e| fail(e.to_string()))?;
            let kind = f.file_type().map_err(|e| fail(e.to_string()))?;
            if f.file_name() == ".git" {
                continue;
            }
            if !kind.is_file() {
                return Err(fail(format!("{}: only plain files can be secrets", f.path().display())));
            }
            let secret = Name::new(NameKind::Secret, bytes(&f.file_name()))?;
            let mut data = Zeroizing::new(Vec::new());
            std::fs::File::open(f.path())
                .and_then(|file| file.take(limit() + 1).read_to_end(&mut data))
                .map_err(|e| fail(format!("cannot read {}: {e}", f.path().display())))?;
            if data.len() as u64 > limit() {
                return Err(fail(format!("{} is larger than the {}-byte limit for a secret", f.path().display(), limit())));
            }
            items.push((repo.clone(), secret, data));
        }
    }
    Ok(items)
}

fn from_tar(input: impl Read) -> Result<Items, Failure> {
    let mut archive = tar::Archive::new(input);
    let mut items = Vec::new();
    for entry in archive.entries().map_err(|e| fail(format!("cannot read the tar on standard input: {e}")))? {
        let mut entry = entry.map_err(|e| fail(format!("cannot read the tar on standard input: {e}")))?;
        let path = entry.path_bytes().into_owned();
        let parts: Vec<&[u8]> = path.split(|&b| b == b'/').filter(|p| !p.is_empty() && *p != b".").collect();
        let parts = if parts.first() == Some(&&b"repos"[..]) { &parts[1..] } else { &parts[..] };
        if parts.iter().any(|p| *p == b".git") || entry.header().entry_type().is_dir() {
            continue;
        }
        let [repo, secret] = parts else {
            return Err(fail(format!("tar member {:?}: expected <repo>/<secret>", String::from_utf8_lossy(&path))));
        };
        if !entry.header().entry_type().is_file() {
            return Err(fail(format!("tar member {:?}: only plain files can be secrets", String::from_utf8_lossy(&path))));
        }
        if entry.size() > limit() {
            return Err(fail(format!(
                "tar member {:?} is larger than the {}-byte limit for a secret",
                String::from_utf8_lossy(&path),
                limit()
            )));
        }
        let (repo, secret) = (Name::new(NameKind::Repo, repo)?, Name::new(NameKind::Secret, secret)?);
        let mut data = Zeroizing::new(Vec::with_capacity(entry.size() as usize));
        entry.read_to_end(&mut data).map_err(|e| fail(format!("cannot read the tar on standard input: {e}")))?;
        items.push((repo, secret, data));
    }
    Ok(items)
}
