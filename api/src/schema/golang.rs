//! The parts of decoding that Kubernetes' Go types do themselves, with the
//! messages Go gives: quantities (`resource.ParseQuantity`), times
//! (`time.Parse` with RFC 3339 layouts, as `metav1.Time` and
//! `metav1.MicroTime` use it) and base64 (`encoding/base64` for `[]byte`).

/// `resource.ErrFormatWrong`.
pub(super) const QUANTITY_FORMAT: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
/// `resource.ErrSuffix`.
pub(super) const QUANTITY_SUFFIX: &str = "unable to parse quantity's suffix";

/// Checks a quantity the way `resource.ParseQuantity` does (after
/// `Quantity.UnmarshalJSON` stripped the quotes and spaces).
pub(super) fn parse_quantity(s: &str) -> Result<(), &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QUANTITY_FORMAT);
    }
    if s == "0" {
        return Ok(());
    }
    let suffix = quantity_suffix(s.as_bytes()).ok_or(QUANTITY_FORMAT)?;
    if suffix_known(suffix) {
        Ok(())
    } else {
        Err(QUANTITY_SUFFIX)
    }
}

/// Splits off the suffix as `parseQuantityString` does; `None` when the
/// string is not of the quantity form.
fn quantity_suffix(b: &[u8]) -> Option<&str> {
    let end = b.len();
    let mut pos = 0;
    if matches!(b.first(), Some(b'-' | b'+')) {
        pos += 1;
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos == end {
        return Some("");
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos == end {
        return Some("");
    }
    if b[pos] == b'.' {
        pos += 1;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == end {
            return Some("");
        }
    }
    let start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && matches!(b[pos], b'-' | b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return None;
    }
    std::str::from_utf8(&b[start..]).ok()
}

/// `suffixHandler.interpret`: decimal and binary SI suffixes, or an
/// exponent (`e3`, `E-2`).
fn suffix_known(suffix: &str) -> bool {
    const KNOWN: &[&str] = &["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if KNOWN.contains(&suffix) {
        return true;
    }
    match suffix.strip_prefix(['e', 'E']) {
        Some(exp) if !exp.is_empty() => exp.parse::<i64>().is_ok(),
        _ => false,
    }
}

/// Go's `time.RFC3339` and `metav1.RFC3339Micro` layouts.
pub(super) const RFC3339: &str = "2006-01-02T15:04:05Z07:00";
pub(super) const RFC3339_MICRO: &str = "2006-01-02T15:04:05.000000Z07:00";

/// One element of an RFC 3339 layout, in the order `time.Parse` meets
/// them: the literal that comes before it, and what it is.
#[derive(Clone, Copy)]
enum Elem {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Exactly six fractional digits (`.000000`).
    Micros,
    Zone,
}

/// Parses `value` with one of the two layouts above and returns Go's
/// `time.ParseError` message when it does not fit.
pub(super) fn parse_time(value: &str, layout: &str) -> Result<(), String> {
    let micro = layout == RFC3339_MICRO;
    let mut elems: Vec<(&str, Elem, &str)> = vec![
        ("", Elem::Year, "2006"),
        ("-", Elem::Month, "01"),
        ("-", Elem::Day, "02"),
        ("T", Elem::Hour, "15"),
        (":", Elem::Minute, "04"),
        (":", Elem::Second, "05"),
    ];
    if micro {
        elems.push(("", Elem::Micros, ".000000"));
    }
    elems.push(("", Elem::Zone, "Z07:00"));

    let err = |value_elem: &str, layout_elem: &str| {
        format!(
            "parsing time {} as {}: cannot parse {} as {}",
            go_quote(value),
            go_quote(layout),
            go_quote(value_elem),
            go_quote(layout_elem)
        )
    };
    let range = |what: &str| format!("parsing time {}: {what} out of range", go_quote(value));

    let (mut year, mut month, mut day) = (0i64, 0i64, 0i64);
    let mut rest = value;
    for (prefix, elem, layout_elem) in elems {
        rest = match rest.strip_prefix(prefix) {
            Some(r) => r,
            None => return Err(err(rest, prefix)),
        };
        let hold = rest;
        let b = rest.as_bytes();
        let parsed: Option<&str> = match elem {
            Elem::Year => {
                if b.len() < 4 || !b[0].is_ascii_digit() {
                    None
                } else {
                    rest.get(..4).and_then(|y| y.parse::<i64>().ok()).map(|y| {
                        year = y;
                        &rest[4..]
                    })
                }
            }
            Elem::Month | Elem::Day | Elem::Hour | Elem::Minute | Elem::Second => {
                let fixed = !matches!(elem, Elem::Hour);
                match getnum(rest, fixed) {
                    None => None,
                    Some((n, r)) => {
                        let bad = match elem {
                            Elem::Month if !(1..=12).contains(&n) => Some("month"),
                            Elem::Hour if n >= 24 => Some("hour"),
                            Elem::Minute if n >= 60 => Some("minute"),
                            Elem::Second if n >= 60 => Some("second"),
                            _ => None,
                        };
                        if let Some(what) = bad {
                            return Err(range(what));
                        }
                        match elem {
                            Elem::Month => month = n,
                            Elem::Day => day = n,
                            _ => {}
                        }
                        if matches!(elem, Elem::Second) && !micro {
                            Some(skip_fraction(r))
                        } else {
                            Some(r)
                        }
                    }
                }
            }
            Elem::Micros => {
                if b.len() < 7 || !matches!(b[0], b'.' | b',') || go_atoi(&rest[1..7]).is_none() {
                    None
                } else {
                    Some(&rest[7..])
                }
            }
            Elem::Zone => parse_zone(rest).map_err(range)?,
        };
        match parsed {
            Some(r) => rest = r,
            None => return Err(err(hold, layout_elem)),
        }
    }
    if !rest.is_empty() {
        return Err(format!("parsing time {}: extra text: {}", go_quote(value), go_quote(rest)));
    }
    if day < 1 || day > days_in(month, year) {
        return Err(format!("parsing time {}: day out of range", go_quote(value)));
    }
    Ok(())
}

/// Go's `getnum`: one or two digits (exactly two when `fixed`).
fn getnum(s: &str, fixed: bool) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if !b.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    if !b.get(1).is_some_and(u8::is_ascii_digit) {
        if fixed {
            return None;
        }
        return Some((i64::from(b[0] - b'0'), &s[1..]));
    }
    Some((i64::from(b[0] - b'0') * 10 + i64::from(b[1] - b'0'), &s[2..]))
}

/// A fractional second that the layout does not mention is accepted
/// after the seconds (`05.123`).
fn skip_fraction(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && matches!(b[0], b'.' | b',') && b[1].is_ascii_digit() {
        let n = 2 + b[2..].iter().take_while(|c| c.is_ascii_digit()).count();
        &s[n..]
    } else {
        s
    }
}

/// `Z07:00`: `Z`, or `±hh:mm`. `Ok(None)` when it does not parse; `Err`
/// names the part out of range.
fn parse_zone(s: &str) -> Result<Option<&str>, &'static str> {
    if let Some(r) = s.strip_prefix('Z') {
        return Ok(Some(r));
    }
    let b = s.as_bytes();
    if b.len() < 6 || b[3] != b':' {
        return Ok(None);
    }
    let (Some((hh, _)), Some((mm, _))) = (getnum(&s[1..3], true), getnum(&s[4..6], true)) else {
        return Ok(None);
    };
    if hh > 24 {
        return Err("time zone offset hour");
    }
    if mm > 60 {
        return Err("time zone offset minute");
    }
    if !matches!(b[0], b'+' | b'-') {
        return Ok(None);
    }
    Ok(Some(&s[6..]))
}

/// Go's `atoi` as `time` uses it: an optional sign and digits only.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in(month: i64, year: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `time.quote`: double quotes, with `"` and `\` escaped and bytes that
/// are not printable ASCII written as `\x..`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// Decodes standard, padded base64 as Go's `base64.StdEncoding.Decode`
/// does (newlines ignored) and returns its error message, `illegal base64
/// data at input byte N`, when the input is not valid.
pub(super) fn base64_error(s: &str) -> Option<String> {
    let src = s.as_bytes();
    let corrupt = |at: usize| Some(format!("illegal base64 data at input byte {at}"));
    let valid = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let newline = |c: u8| c == b'\n' || c == b'\r';
    let mut si = 0;
    loop {
        // One quantum of up to four characters.
        let mut j = 0;
        while j < 4 {
            if si == src.len() {
                return match j {
                    0 => None,
                    _ => corrupt(si - j),
                };
            }
            let c = src[si];
            si += 1;
            if valid(c) {
                j += 1;
                continue;
            }
            if newline(c) {
                continue;
            }
            if c != b'=' {
                return corrupt(si - 1);
            }
            // Padding: only after two or three characters.
            match j {
                0 | 1 => return corrupt(si - 1),
                2 => {
                    while si < src.len() && newline(src[si]) {
                        si += 1;
                    }
                    if si == src.len() {
                        return corrupt(src.len());
                    }
                    if src[si] != b'=' {
                        return corrupt(si - 1);
                    }
                    si += 1;
                }
                _ => {}
            }
            while si < src.len() && newline(src[si]) {
                si += 1;
            }
            return if si < src.len() { corrupt(si) } else { None };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_as_kubernetes_parses_them() {
        for ok in ["1", "0", "100m", "1.5Gi", "2e3", "1E+3", "0.5", "128Mi", "+1", "-1k", ".", " 10Mi "] {
            assert_eq!(parse_quantity(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("", QUANTITY_FORMAT),
            ("8080s", QUANTITY_FORMAT),
            ("abc", QUANTITY_FORMAT),
            ("1Gb", QUANTITY_FORMAT),
            ("true", QUANTITY_FORMAT),
            ("1iG", QUANTITY_SUFFIX),
            ("1e", QUANTITY_SUFFIX),
            ("1ki", QUANTITY_SUFFIX),
        ] {
            assert_eq!(parse_quantity(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn times_follow_go_time_parse() {
        assert_eq!(parse_time("2024-02-29T23:59:59Z", RFC3339), Ok(()));
        assert_eq!(parse_time("2024-02-29T23:59:59.123+02:00", RFC3339), Ok(()));
        assert_eq!(parse_time("2024-01-01T00:00:00.123456Z", RFC3339_MICRO), Ok(()));
        assert_eq!(
            parse_time("yesterday", RFC3339).expect_err("does not parse"),
            r#"parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday" as "2006""#
        );
        assert_eq!(
            parse_time("2024-01-01", RFC3339).expect_err("does not parse"),
            r#"parsing time "2024-01-01" as "2006-01-02T15:04:05Z07:00": cannot parse "" as "T""#
        );
        assert_eq!(
            parse_time("2024-13-01T00:00:00Z", RFC3339).expect_err("does not parse"),
            r#"parsing time "2024-13-01T00:00:00Z": month out of range"#
        );
        assert_eq!(
            parse_time("2023-02-29T00:00:00Z", RFC3339).expect_err("does not parse"),
            r#"parsing time "2023-02-29T00:00:00Z": day out of range"#
        );
        assert_eq!(
            parse_time("2024-01-01T00:00:00Zabc", RFC3339).expect_err("does not parse"),
            r#"parsing time "2024-01-01T00:00:00Zabc": extra text: "abc""#
        );
        assert_eq!(
            parse_time("2024-01-01T00:00:00Z", RFC3339_MICRO).expect_err("does not parse"),
            r#"parsing time "2024-01-01T00:00:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#
        );
    }

    #[test]
    fn base64_errors_name_the_byte_go_names() {
        assert_eq!(base64_error("aGVsbG8="), None);
        assert_eq!(base64_error("aGVs\nbG8="), None);
        assert_eq!(base64_error(""), None);
        assert_eq!(base64_error("hello!").as_deref(), Some("illegal base64 data at input byte 5"));
        assert_eq!(base64_error("aGVsbG8").as_deref(), Some("illegal base64 data at input byte 4"));
        assert_eq!(base64_error("a===").as_deref(), Some("illegal base64 data at input byte 1"));
        assert_eq!(base64_error("aGVsbG8=x").as_deref(), Some("illegal base64 data at input byte 8"));
    }
}
