//! Editor scratch names: files that live in memory only and never enter history.

/// Most scratch files (and links) one mount holds at once: editors make a few per open file.
pub const MAX_FILES: usize = 1024;
/// Most bytes all scratch files of one mount hold together, in the daemon's memory: room for
/// an editor's swap file and backup of the largest secret (2 × 64 MiB), twice over. Counted by
/// content length (a growing buffer's capacity may be up to twice that). Beyond either cap,
/// creating or growing a scratch file fails with ENOSPC.
pub const MAX_TOTAL_BYTES: u64 = 256 << 20;

/// Whether `name` looks like an editor's scratch file: a name starting with `.`, ending in
/// `~`, of the form `#…#`, ending in `.swp` or `.swx`, or vim's probe file `4913`.
pub fn is_scratch_name(name: &[u8]) -> bool {
    name.starts_with(b".")
        || name.ends_with(b"~")
        || (name.len() >= 2 && name.starts_with(b"#") && name.ends_with(b"#"))
        || name.ends_with(b".swp")
        || name.ends_with(b".swx")
        || name == b"4913"
}

#[cfg(test)]
mod tests {
    use super::is_scratch_name;

    #[test]
    fn classifies_editor_files() {
        for s in [&b".f.swp"[..], b"f~", b"#f#", b"f.swx", b"4913", b".#f", b".hidden"] {
            assert!(is_scratch_name(s), "{s:?}");
        }
        for s in [&b"key"[..], b"#f", b"f#", b"swp", b"49134", b"sedAbC123", b"tmpx1y2z3"] {
            assert!(!is_scratch_name(s), "{s:?}");
        }
    }
}
