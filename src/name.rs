//! Names of repositories, secrets, tags and tag entries, and the rules they obey.

use crate::error::{Error, Result};
use std::fmt;

/// Longest name in bytes (a common filesystem limit).
pub const MAX_NAME_BYTES: usize = 255;

/// A validated name: 1–255 bytes, no `/`, no NUL, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Vec<u8>);

/// Which kind of thing a name names; secrets have one extra rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A repository.
    Repo,
    /// A secret inside a repository.
    Secret,
    /// A tag.
    Tag,
    /// An entry inside a tag.
    TagEntry,
}

impl NameKind {
    fn label(self) -> &'static str {
        match self {
            NameKind::Repo => "repository",
            NameKind::Secret => "secret",
            NameKind::Tag => "tag",
            NameKind::TagEntry => "tag entry",
        }
    }
}

impl Name {
    /// Validates `bytes` as a name of `kind`.
    pub fn new(kind: NameKind, bytes: &[u8]) -> Result<Self> {
        Self::check(kind, bytes).map(|()| Name(bytes.to_vec()))
    }

    /// Whether `bytes` is a valid name of `kind`, without making one.
    pub fn check(kind: NameKind, bytes: &[u8]) -> Result<()> {
        let reason = if bytes.is_empty() {
            Some("names must not be empty")
        } else if bytes.len() > MAX_NAME_BYTES {
            Some("names are at most 255 bytes")
        } else if let Some(&b) = bytes.iter().find(|&&b| b == b'/' || b == 0) {
            // One pass for both: names are short, and a client checks 25,000 of them per `ls`.
            Some(if b == b'/' { "names must not contain '/'" } else { "names must not contain NUL" })
        } else if bytes == b"." || bytes == b".." {
            Some("'.' and '..' are reserved")
        } else if kind == NameKind::Secret && bytes.eq_ignore_ascii_case(b".git") {
            // A secret called .git would collide with the repository's own git directory.
            Some("'.git' is the repository's own git directory")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName { kind: kind.label(), name: String::from_utf8_lossy(bytes).into_owned(), reason }),
            None => Ok(()),
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name for display (lossy for non-UTF-8 bytes).
    pub fn display(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.display())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Splits `REPO/SECRET` into its two validated names.
pub fn parse_secret_path(path: &[u8]) -> Result<(Name, Name)> {
    let bad = |reason| Error::InvalidPath { path: String::from_utf8_lossy(path).into_owned(), reason };
    let slash = path.iter().position(|&b| b == b'/').ok_or_else(|| bad("expected REPO/SECRET"))?;
    let (repo, secret) = (&path[..slash], &path[slash + 1..]);
    if secret.contains(&b'/') {
        return Err(bad("secrets live directly in a repository: expected REPO/SECRET"));
    }
    Ok((Name::new(NameKind::Repo, repo)?, Name::new(NameKind::Secret, secret)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_edge_names() {
        assert!(Name::new(NameKind::Repo, &[b'a'; 255]).is_ok());
        assert!(Name::new(NameKind::Secret, "clé ✓".as_bytes()).is_ok());
        assert!(Name::new(NameKind::Secret, b"...").is_ok());
        assert!(Name::new(NameKind::Repo, b".git").is_ok());
        assert!(Name::new(NameKind::Secret, &[0xff, 0xfe]).is_ok());
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b", &[b'x'; 256]] {
            assert!(Name::new(NameKind::Tag, bad).is_err(), "{bad:?}");
        }
        assert!(Name::new(NameKind::Secret, b".GIT").is_err());
    }

    #[test]
    fn splits_secret_paths() {
        let (r, s) = parse_secret_path(b"aws/key").unwrap();
        assert_eq!((r.as_bytes(), s.as_bytes()), (&b"aws"[..], &b"key"[..]));
        assert!(parse_secret_path(b"aws").is_err());
        assert!(parse_secret_path(b"a/b/c").is_err());
        assert!(parse_secret_path(b"/b").is_err());
        assert!(parse_secret_path(b"a/").is_err());
    }
}
