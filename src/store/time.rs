//! How values are written into either store: counts as signed 64-bit
//! integers that saturate instead of wrapping, and times as RFC 3339 UTC
//! text with milliseconds, readable in any client and ordered as text.

use chrono::{DateTime, Utc};

/// A count as the stores' signed integer, saturating instead of wrapping.
pub fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Timestamps are stored as RFC 3339 UTC text with milliseconds: readable in
/// `sqlite3` and ordered as text.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// [`timestamp`] of a time given in epoch milliseconds, written without
/// chrono's formatting machinery (the writer formats one per event); the
/// empty text for a time outside what chrono can hold.
pub fn timestamp_ms(ms: i64) -> String {
    let mut out = String::with_capacity(24);
    write_timestamp_ms(ms, &mut out);
    out
}

/// Appends [`timestamp_ms`] to `out`.
pub fn write_timestamp_ms(ms: i64, out: &mut String) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Rare and odd: chrono's own form (a sign, more digits).
        if let Some(t) = DateTime::from_timestamp_millis(ms) {
            out.push_str(&timestamp(t));
        }
        return;
    }
    let fields = [
        (year, 4),
        (month, 2),
        (day, 2),
        (in_day / 3_600_000, 2),
        (in_day / 60_000 % 60, 2),
        (in_day / 1000 % 60, 2),
        (in_day % 1000, 3),
    ];
    for ((value, width), sep) in fields.into_iter().zip(["-", "-", "T", ":", ":", ".", "Z"]) {
        let mut digits = [b'0'; 4];
        let mut v = value;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend(digits[..width].iter().map(|&b| b as char));
        out.push_str(sep);
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe.saturating_add(era.saturating_mul(400)) + i64::from(month <= 2);
    (year, month, day)
}

pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    // What [`timestamp`] writes, read without the general parser: `state`
    // loads one per row of every processor.
    parse_own(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly, as [`timestamp`] writes it.
fn parse_own(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(num(0, 4)?).ok()?,
        u32::try_from(num(5, 7)?).ok()?,
        u32::try_from(num(8, 10)?).ok()?,
    )?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        u32::try_from(num(11, 13)?).ok()?,
        u32::try_from(num(14, 16)?).ok()?,
        u32::try_from(num(17, 19)?).ok()?,
        u32::try_from(num(20, 23)?).ok()?,
    )?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_written_as_chrono_writes_them() {
        let chrono_text = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .map(timestamp)
                .unwrap_or_default()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001,
            i64::MAX,
            i64::MIN,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within ±400,000 years of 1970, and the everyday range.
            cases.push((x % 25_000_000_000_000_000) as i64 - 12_500_000_000_000_000);
            cases.push((x % 4_000_000_000_000) as i64);
        }
        for ms in cases {
            let text = timestamp_ms(ms);
            assert_eq!(text, chrono_text(ms), "{ms}");
            if text.len() == 24 {
                assert_eq!(
                    parse_timestamp(&text).map(|t| t.timestamp_millis()),
                    Some(ms),
                    "{text}"
                );
            }
        }
        for other in ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.5+01:00"] {
            assert_eq!(
                parse_timestamp(other),
                DateTime::parse_from_rfc3339(other)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            );
        }
        for bad in [
            "2026-13-01T00:00:00.000Z",
            "2026-02-30T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "+026-01-01T00:00:00.000Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
