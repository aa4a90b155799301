//! Durations as users type them (`90`, `90s`, `15m`, `1h30m`, `1d2h`): the one parser behind
//! every option that takes a DURATION.

/// Parses a duration into whole seconds: one or more `<number><unit>` parts, units `d`, `h`,
/// `m`, `s` each at most once and largest first (`1d2h`, `1h30m`, `2m30s`), or a bare number of
/// seconds. Zero, an overflow, an unknown unit and a number without a unit after a part are
/// refused (`None`).
pub fn parse(s: &str) -> Option<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().filter(|&n| n > 0);
    }
    const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
    let (mut total, mut rest, mut next_unit) = (0u64, s, 0);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let i = next_unit + UNITS[next_unit..].iter().position(|&(u, _)| u == unit)?;
        total = total.checked_add(n.checked_mul(UNITS[i].1)?)?;
        next_unit = i + 1;
        rest = &rest[digits + 1..];
    }
    Some(total).filter(|&t| t > 0)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn single_and_compound_durations() {
        for (s, want) in [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86_400), ("1d2h", 93_600), ("1h30m", 5400)] {
            assert_eq!(parse(s), Some(want), "{s}");
        }
        assert_eq!(parse("2m30s"), Some(150));
        assert_eq!(parse("1d0h5s"), Some(86_405));
        assert_eq!(parse(" 1h "), Some(3600));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for s in
            ["", "0", "0s", "0h0m", "5x", "h", "1h30", "30m1h", "1h1h", "1.5h", "-1h", "1 h", "99999999999999999999d", "213503982334602d"]
        {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }
}
