//! Going back in a repository's history: which commit a revision names (`polykey get --at`,
//! `polykey revert --to`).
//!
//! A revision is a commit id or a unique prefix of one (4 hex digits at least), `@{N}` (the
//! N-th entry of the history, newest first, of the secret, or of the repository: N saves
//! ago), or a time, in UTC as `polykey log` prints it (`2026-12-05`, `2026-12-05 10:30`,
//! `2026-12-05T10:30:00Z`, or with an offset `+01:00`): the newest commit at or before it.

use crate::error::{Error, Result};
use crate::name::Name;
use crate::node::Node;
use git2::Oid;

/// The commit of `repo` that `rev` names; `secret` narrows `@{N}` to the saves that changed it.
pub fn resolve(node: &Node, repo: &Name, secret: Option<&Name>, rev: &str) -> Result<Oid> {
    let bad = |why: String| Error::Usage(format!("revision {rev:?}: {why}"));
    if let Some(n) = rev.strip_prefix("@{").and_then(|r| r.strip_suffix('}')) {
        let n: usize = n.parse().map_err(|_| bad("expected @{N}, N a number of saves ago".into()))?;
        let log = node.log(repo, secret)?;
        let what = secret.map_or_else(|| format!("repository {repo}"), |s| format!("{repo}/{s}"));
        return log
            .get(n)
            .map(|e| e.id)
            .ok_or_else(|| Error::NotFound { what: format!("save @{{{n}}} of {what} (it has {} saves)", log.len()) });
    }
    if let Some(t) = parse_time(rev) {
        let log = node.log(repo, None)?;
        // Newest first: the first at or before the time (commits of one second stay in order).
        return log
            .iter()
            .find(|e| e.time <= t)
            .map(|e| e.id)
            .ok_or_else(|| Error::NotFound { what: format!("a commit of {repo} at or before {rev}") });
    }
    if rev.len() >= 4 && rev.len() <= 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        let want = rev.to_ascii_lowercase();
        let matches: Vec<Oid> = node.log(repo, None)?.into_iter().map(|e| e.id).filter(|id| id.to_string().starts_with(&want)).collect();
        return match matches.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::NotFound { what: format!("commit {rev} in {repo}") }),
            more => Err(bad(format!("ambiguous: {} commits of {repo} start with it; give more digits", more.len()))),
        };
    }
    Err(bad("expected a commit id (4 hex digits or more), @{N}, or a date such as 2026-12-05 or 2026-12-05 10:30".into()))
}

/// Seconds since the Unix epoch of a date or time (see the module's documentation).
pub fn parse_time(s: &str) -> Option<i64> {
    let num = |s: &str, len: usize| (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse::<i64>().ok()).flatten();
    let (date, rest) = s.split_at(s.len().min(10));
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let (mut secs, mut offset) = (0, 0);
    if !rest.is_empty() {
        let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
        let (clock, zone) = match rest.find(['Z', '+', '-']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let mut c = clock.split(':');
        let (h, min) = (num(c.next()?, 2)?, num(c.next()?, 2)?);
        let sec = c.next().map_or(Some(0), |x| num(x, 2))?;
        if c.next().is_some() || h > 23 || min > 59 || sec > 60 {
            return None;
        }
        secs = h * 3600 + min * 60 + sec;
        if let Some(z) = zone.strip_prefix(['+', '-']) {
            let (oh, om) = z.split_once(':')?;
            offset = (num(oh, 2)? * 3600 + num(om, 2)? * 60) * if zone.starts_with('-') { -1 } else { 1 };
        } else if !zone.is_empty() && zone != "Z" {
            return None;
        }
    }
    Some(days_from_civil(y, m, day) * 86_400 + secs - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_log_prints_them() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14 22:13:20"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14 22:13"), Some(1_700_000_000 - 20));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Some(1_700_000_000));
        assert_eq!(parse_time("2000-02-29"), Some(951_782_400));
        for bad in ["2023-13-01", "2023-1-01", "20231114", "2023-11-14 25:00", "2023-11-14X", "2023-11-14 10:00 UTC", "abcd"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(crate::runtime::iso8601(parse_time("2026-12-05T10:30:00Z").unwrap()), "2026-12-05T10:30:00Z");
    }
}
