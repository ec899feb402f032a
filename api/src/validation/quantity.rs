//! Resource quantities (`500m`, `1Gi`, `1e3`): enough of apimachinery's
//! `resource.Quantity` to compare requests with limits and to print a value
//! in its canonical form, as the messages do (`must be less than or equal
//! to cpu limit of 500m`).

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

/// A parsed quantity, in units of 10^-9, rounded up as Kubernetes rounds
/// values finer than nano.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// ParseQuantity; `None` for a string Kubernetes would not decode.
    pub(crate) fn parse(s: &str) -> Option<Quantity> {
        let s = s.trim();
        let (neg, rest) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let (format, base2, exp10): (Format, u32, i32) = match suffix {
            "" => (Format::DecimalSI, 0, 0),
            "n" => (Format::DecimalSI, 0, -9),
            "u" => (Format::DecimalSI, 0, -6),
            "m" => (Format::DecimalSI, 0, -3),
            "k" => (Format::DecimalSI, 0, 3),
            "M" => (Format::DecimalSI, 0, 6),
            "G" => (Format::DecimalSI, 0, 9),
            "T" => (Format::DecimalSI, 0, 12),
            "P" => (Format::DecimalSI, 0, 15),
            "E" => (Format::DecimalSI, 0, 18),
            "Ki" => (Format::BinarySI, 10, 0),
            "Mi" => (Format::BinarySI, 20, 0),
            "Gi" => (Format::BinarySI, 30, 0),
            "Ti" => (Format::BinarySI, 40, 0),
            "Pi" => (Format::BinarySI, 50, 0),
            "Ei" => (Format::BinarySI, 60, 0),
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().ok()?;
                (Format::DecimalExponent, 0, e)
            }
            _ => return None,
        };
        // mantissa × 10^(exp10 - frac digits) × 2^base2, in nanos
        let mut mantissa: i128 = 0;
        for c in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa.checked_mul(10)?.checked_add(i128::from(c - b'0'))?;
        }
        let scale = exp10 - frac_part.len() as i32 + 9;
        let mut v = mantissa.checked_mul(1i128.checked_shl(base2)?)?;
        if scale >= 0 {
            v = v.checked_mul(10i128.checked_pow(scale as u32)?)?;
        } else {
            let d = 10i128.checked_pow((-scale) as u32).unwrap_or(i128::MAX);
            v = (v + d - 1) / d;
        }
        Some(Quantity { nanos: if neg { -v } else { v }, format })
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    pub(crate) fn cmp(&self, other: &Quantity) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }

    /// Quantity.String: the canonical form.
    pub(crate) fn canonical(&self) -> String {
        if self.nanos == 0 {
            return "0".to_string();
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.abs();
        let mut format = self.format;
        if format == Format::BinarySI && (abs < 1024 * NANO || abs % NANO != 0) {
            format = Format::DecimalSI;
        }
        if format == Format::BinarySI {
            let mut n = abs / NANO;
            let mut e = 0;
            while e < 6 && n % 1024 == 0 {
                n /= 1024;
                e += 1;
            }
            let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e];
            return format!("{sign}{n}{suffix}");
        }
        let mut n = abs;
        let mut exp = -9i32;
        while n % 10 == 0 {
            n /= 10;
            exp += 1;
        }
        let extra = exp.rem_euclid(3);
        n *= 10i128.pow(extra as u32);
        exp -= extra;
        let suffix = match (format, exp) {
            (Format::DecimalExponent, 0) => String::new(),
            (Format::DecimalExponent, e) => format!("e{e}"),
            (_, -9) => "n".into(),
            (_, -6) => "u".into(),
            (_, -3) => "m".into(),
            (_, 0) => String::new(),
            (_, 3) => "k".into(),
            (_, 6) => "M".into(),
            (_, 9) => "G".into(),
            (_, 12) => "T".into(),
            (_, 15) => "P".into(),
            (_, 18) => "E".into(),
            (_, e) => format!("e{e}"),
        };
        format!("{sign}{n}{suffix}")
    }
}

/// A quantity as JSON holds it: a string, or a bare number.
pub(crate) fn from_json(v: &serde_json::Value) -> Option<Quantity> {
    match v {
        serde_json::Value::String(s) => Quantity::parse(s),
        serde_json::Value::Number(n) => Quantity::parse(&n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Quantity::parse(s).map(|q| q.canonical()).unwrap_or_else(|| "<invalid>".into())
    }

    #[test]
    fn canonical_forms_match_quantity_string() {
        assert_eq!(canon("500m"), "500m");
        assert_eq!(canon("0.5"), "500m");
        assert_eq!(canon("1000m"), "1");
        assert_eq!(canon("1500m"), "1500m");
        assert_eq!(canon("1000"), "1k");
        assert_eq!(canon("1Gi"), "1Gi");
        assert_eq!(canon("1024Mi"), "1Gi");
        assert_eq!(canon("1.5Gi"), "1536Mi");
        assert_eq!(canon("512"), "512");
        assert_eq!(canon("100Ki"), "100Ki");
        assert_eq!(canon("1e3"), "1e3");
        assert_eq!(canon("-1"), "-1");
        assert_eq!(canon("0"), "0");
        assert_eq!(canon("abc"), "<invalid>");
    }

    #[test]
    fn comparisons_are_exact() {
        let a = Quantity::parse("1").unwrap();
        let b = Quantity::parse("1000m").unwrap();
        assert_eq!(a.cmp(&b), Ordering::Equal);
        let c = Quantity::parse("1Gi").unwrap();
        let d = Quantity::parse("1G").unwrap();
        assert_eq!(c.cmp(&d), Ordering::Greater);
    }
}
