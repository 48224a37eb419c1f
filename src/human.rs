//! Numbers and times as an operator reads them at a glance: `1.2s`,
//! `4m10s`, `3m ago`, `1 session` / `2 sessions`. Only for human output;
//! `--json` keeps exact values.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `7ms`, `1.2s`, `4m10s`, `2h5m`, `3d4h`: the two largest units.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        // Tenths, rounded down, so 59.99s never reads as 60.0s.
        return format!("{}.{}s", ms / 1_000, ms % 1_000 / 100);
    }
    let secs = d.as_secs();
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let Some(first) = units.iter().position(|(_, size)| secs >= *size) else {
        return "0s".to_owned();
    };
    let (unit, size) = units[first];
    let mut out = format!("{}{unit}", secs / size);
    if let Some((next, next_size)) = units.get(first + 1) {
        let rest = secs % size / next_size;
        if rest > 0 {
            out.push_str(&format!("{rest}{next}"));
        }
    }
    out
}

/// A moment relative to `now`: `3m ago`, `in 2h` (a clock ahead), `just now`.
pub fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let delta = now.signed_duration_since(t);
    match delta.to_std() {
        Ok(d) if d < Duration::from_secs(1) => "just now".to_owned(),
        Ok(d) => format!("{} ago", duration(d)),
        Err(_) => format!(
            "in {}",
            duration((-delta).to_std().unwrap_or(Duration::MAX))
        ),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Dollars to the cent, with thousands separators: `$1,234.57`.
pub fn dollars(usd: f64) -> String {
    let cents = (usd * 100.0).round();
    if !cents.is_finite() || cents < 0.0 || cents >= u64::MAX as f64 {
        return format!("${usd:.2}");
    }
    let cents = cents as u64;
    format!("${}.{:02}", thousands(cents / 100), cents % 100)
}

/// `1 session`, `2 sessions`: the count with its noun.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        let ms = |n| duration(Duration::from_millis(n));
        assert_eq!(ms(0), "0s");
        assert_eq!(ms(7), "7ms");
        assert_eq!(ms(1_234), "1.2s");
        assert_eq!(ms(59_999), "59.9s");
        assert_eq!(ms(250_000), "4m10s");
        assert_eq!(ms(3_600_000), "1h");
        assert_eq!(ms(7_500_000), "2h5m");
        assert_eq!(ms(273_600_000), "3d4h");
        assert!(duration(Duration::MAX).ends_with('h'));
    }

    #[test]
    fn moments_relative_to_now() {
        let now = DateTime::from_timestamp(2_000_000_000, 0).unwrap();
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - chrono::Duration::seconds(190), now), "3m10s ago");
        assert_eq!(ago(now + chrono::Duration::hours(2), now), "in 2h");
    }

    #[test]
    fn plurals() {
        assert_eq!(count(1, "session"), "1 session");
        assert_eq!(count(0, "error"), "0 errors");
        assert_eq!(count(2, "file"), "2 files");
    }
}
