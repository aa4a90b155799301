//! The system's mount table (`/proc/self/mountinfo`): what is mounted at a path. `polykey
//! mount` refuses a mount point that already has a mount on it, `unmount` checks that the mount
//! it asked to go really went, and the daemon and its watcher detach only their own mount.
//!
//! Where there is no mountinfo (not Linux), nothing is known: [`top`] answers `None`.

use std::path::{Path, PathBuf};

/// One mount, as its mountinfo line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Its device number, `major:minor`: what tells two mounts at one path apart.
    pub dev: String,
    /// Its filesystem type, as `mount` shows it (`fuse.polykey`, `tmpfs`, …).
    pub fstype: String,
    /// Its source (`polykey`, a device, `host:` …).
    pub source: String,
}

impl Mount {
    /// Whether it is a Polykey mount: type `fuse.polykey`, or plain `fuse` with source
    /// `polykey#polykey` where fusermount3 had to mount without a subtype.
    pub fn is_polykey(&self) -> bool {
        self.fstype == "fuse.polykey" || (self.fstype == "fuse" && self.source == "polykey#polykey")
    }
}

impl std::fmt::Display for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} filesystem from {}", self.fstype, self.source)
    }
}

/// The topmost mount at `path` (an absolute path, already canonical), if any.
pub fn top(path: &Path) -> Option<Mount> {
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_encoded_bytes();
    // Later lines are mounted later: the last one at a path is the one on top.
    info.split(|&b| b == b'\n').rev().find_map(|line| parse(line, want))
}

/// `path` made absolute and canonical without touching `path` itself where it cannot be
/// reached (a dead FUSE mount answers ENOTCONN, another user's EACCES): its parent
/// canonicalized, its name joined. `None` when neither works.
pub fn canonical(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Some(p);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(std::fs::canonicalize(parent).ok()?.join(name))
}

/// The mount of a mountinfo line if it is at `want`: fields are `id parent major:minor root
/// mountpoint options [optional…] - fstype source superoptions`, with spaces, tabs, newlines
/// and backslashes in paths written as octal escapes.
fn parse(line: &[u8], want: &[u8]) -> Option<Mount> {
    let text = std::str::from_utf8(line).ok()?;
    let (fields, rest) = text.split_once(" - ")?;
    let mut fields = fields.split(' ');
    let dev = fields.nth(2)?;
    let at = fields.nth(1)?;
    if unescape(at) != want {
        return None;
    }
    let mut rest = rest.split(' ');
    let fstype = rest.next()?;
    let source = rest.next().unwrap_or("");
    Some(Mount { dev: dev.to_owned(), fstype: fstype.to_owned(), source: String::from_utf8_lossy(&unescape(source)).into_owned() })
}

fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polykey_dev(line: &[u8], want: &[u8]) -> Option<String> {
        parse(line, want).filter(Mount::is_polykey).map(|m| m.dev)
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let line = b"812 29 0:77 / /tmp/a\\040b\\134c rw,nosuid,nodev - fuse.polykey polykey rw,user_id=0";
        assert_eq!(polykey_dev(line, b"/tmp/a b\\c").as_deref(), Some("0:77"));
        assert_eq!(polykey_dev(line, b"/tmp/a b"), None);
        let shared = b"812 29 0:77 / /m rw shared:5 master:1 - fuse.polykey polykey rw";
        assert_eq!(polykey_dev(shared, b"/m").as_deref(), Some("0:77"));
        let other = b"812 29 0:78 / /m rw - fuse.sshfs host: rw";
        assert_eq!(polykey_dev(other, b"/m"), None);
        assert_eq!(parse(other, b"/m").map(|m| m.to_string()).as_deref(), Some("a fuse.sshfs filesystem from host:"));
        let no_subtype = b"812 29 0:79 / /m rw - fuse polykey#polykey rw";
        assert_eq!(polykey_dev(no_subtype, b"/m").as_deref(), Some("0:79"));
        let other_plain = b"812 29 0:80 / /m rw - fuse sshfs#host: rw";
        assert_eq!(polykey_dev(other_plain, b"/m"), None);
    }
}
