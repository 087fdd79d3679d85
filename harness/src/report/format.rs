//! Number formatting shared by the Markdown and HTML renderings, so both say the same thing.
//! A value the manifest does not hold is rendered as an empty string by the callers, never as
//! a made-up number.

/// Percent points with 2 decimals (`81.23`).
pub fn pct(v: f64) -> String {
    fixed(v, 2)
}

/// A signed difference in percent points with 2 decimals (`+1.20`, `-0.35`, `+0.00`).
pub fn delta(v: f64) -> String {
    let s = fixed(v, 2);
    if s.starts_with('-') {
        s
    } else {
        format!("+{s}")
    }
}

/// `v` with `decimals` decimals, without a negative zero (`-0.00` becomes `0.00`).
pub fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_string()
    } else {
        s
    }
}

/// A count with thousands separators (`1,234,567`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An axis tick label: at most 4 decimals with trailing zeros dropped (`10`, `7.5`), or
/// scientific with a trimmed mantissa for very small or large magnitudes (`8e-4`, `1.25e6`).
pub fn axis(v: f64) -> String {
    fn trim(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-2..1e6).contains(&a) {
        let s = format!("{v:.3e}");
        match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim(m)),
            None => s,
        }
    } else {
        trim(&fixed(v, 4)).to_string()
    }
}

/// Seconds as `1234.5 s (0.34 h)`.
pub fn seconds(s: f64) -> String {
    format!("{} s ({} h)", fixed(s, 1), fixed(s / 3600.0, 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(pct(81.234), "81.23");
        assert_eq!(delta(-0.001), "+0.00");
        assert_eq!(delta(-1.236), "-1.24");
        assert_eq!(delta(2.0), "+2.00");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(seconds(90.0), "90.0 s (0.025 h)");
        assert_eq!(axis(10.0), "10");
        assert_eq!(axis(7.5), "7.5");
        assert_eq!(axis(0.0), "0");
        assert_eq!(axis(8e-4), "8e-4");
        assert_eq!(axis(1.25e6), "1.25e6");
        assert_eq!(axis(-0.00001), "-1e-5");
    }
}
