//! Names: `Name::new` for every kind and `parse_secret_path`, against the rules written out
//! once more here (1–255 bytes, no `/`, no NUL, not `.` or `..`; a secret is not `.git` in
//! any case), and a path splits into exactly its two halves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use polykey::name::parse_secret_path;
use polykey::{Name, NameKind};

fn valid(kind: NameKind, b: &[u8]) -> bool {
    (1..=255).contains(&b.len())
        && !b.contains(&b'/')
        && !b.contains(&0)
        && b != b"."
        && b != b".."
        && !(kind == NameKind::Secret && b.eq_ignore_ascii_case(b".git"))
}

fuzz_target!(|data: &[u8]| {
    for kind in [NameKind::Repo, NameKind::Secret, NameKind::Tag, NameKind::TagEntry] {
        match Name::new(kind, data) {
            Ok(n) => {
                assert!(valid(kind, data), "{kind:?} {data:?} accepted");
                assert_eq!(n.as_bytes(), data);
                let _ = (n.to_string(), format!("{n:?}"));
            }
            Err(e) => {
                assert!(!valid(kind, data), "{kind:?} {data:?} refused: {e}");
                let _ = e.to_string();
            }
        }
    }
    match parse_secret_path(data) {
        Ok((r, s)) => assert_eq!([r.as_bytes(), b"/", s.as_bytes()].concat(), data),
        Err(_) => {
            let ok = data.iter().position(|&b| b == b'/').is_some_and(|i| {
                let (r, s) = (&data[..i], &data[i + 1..]);
                valid(NameKind::Repo, r) && valid(NameKind::Secret, s)
            });
            assert!(!ok, "{data:?} refused as a secret path");
        }
    }
});
