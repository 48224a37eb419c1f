//! Values and statements crossing into PostgreSQL: the four kinds of
//! [`Value`] to and from the column types the schema uses, and the shared
//! SQL of the store interface into PostgreSQL's.
//!
//! A conversion that would change a value is an error, never a silent
//! change: an integer past an `integer` column's range, text into a number.

use std::error::Error;

use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::store::sql::Value;

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::FLOAT8 => (n as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => n.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be stored as {ty}").into()),
            },
            Value::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                Type::FLOAT4 => (x as f32).to_sql(ty, out),
                _ => Err(format!("a real cannot be stored as {ty}").into()),
            },
            Value::Text(t) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    storable(t).to_sql(ty, out)
                }
                _ => Err(format!("text cannot be stored as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Value<'a>, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::NUMERIC => numeric(raw)?,
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON => {
                Value::Text(<&str>::from_sql(ty, raw)?)
            }
            _ => return Err(format!("a column of type {ty} cannot be read").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Value<'a>, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` in its binary form (digits in base 10,000 with a weight):
/// an integer when it has no fraction and fits, a real otherwise.
fn numeric(raw: &[u8]) -> Result<Value<'static>, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        let b = raw
            .get(i * 2..i * 2 + 2)
            .ok_or("a numeric value cut short")?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    };
    let (ndigits, weight, sign) = (word(0)?, word(1)?, word(2)? as u16);
    match sign {
        0xC000 => return Ok(Value::Real(f64::NAN)),
        0xD000 => return Ok(Value::Real(f64::INFINITY)),
        0xF000 => return Ok(Value::Real(f64::NEG_INFINITY)),
        _ => {}
    }
    let digits: Vec<i16> = (0..usize::try_from(ndigits)?)
        .map(|i| word(4 + i))
        .collect::<Result<_, _>>()?;
    let negative = sign == 0x4000;
    let mut int: Option<i64> = Some(0);
    let mut real = 0f64;
    for (i, &d) in digits.iter().enumerate() {
        let power = i32::from(weight) - i32::try_from(i)?;
        real += f64::from(d) * 10_000f64.powi(power);
        int = match (int, u32::try_from(power)) {
            (Some(n), Ok(p)) => 10_000i64
                .checked_pow(p)
                .and_then(|scale| i64::from(d).checked_mul(scale))
                .and_then(|v| n.checked_add(v)),
            // A fraction digit: an integer only if it is zero.
            (Some(n), Err(_)) if d == 0 => Some(n),
            _ => None,
        };
    }
    Ok(match int {
        // i64::MIN's magnitude is one past i64::MAX: it is read as such.
        None if negative && real == 9_223_372_036_854_775_808.0 => Value::Int(i64::MIN),
        Some(n) if negative => n.checked_neg().map_or(Value::Real(-real), Value::Int),
        Some(n) => Value::Int(n),
        None if negative => Value::Real(-real),
        None => Value::Real(real),
    })
}

/// Text as PostgreSQL can hold it: its `text` has no NUL character (a
/// transcript may), so one is stored as U+FFFD, the replacement character,
/// rather than failing the session's transaction.
pub fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

/// The store interface's SQL as PostgreSQL reads it: `?N` parameters
/// become `$N` and `INSERT OR IGNORE` becomes `ON CONFLICT DO NOTHING`.
/// Quoted text is left alone.
pub fn translate(sql: &str) -> String {
    let mut sql = sql.to_owned();
    let ignore = sql.trim_start().starts_with("INSERT OR IGNORE");
    if ignore {
        sql = sql.replacen("INSERT OR IGNORE", "INSERT", 1);
    }
    let mut out = String::with_capacity(sql.len() + 24);
    let mut quoted = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '?' if !quoted && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    if ignore {
        out.push_str(" ON CONFLICT DO NOTHING");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_renumbered_outside_quotes_and_ignores_become_conflicts() {
        assert_eq!(
            translate("SELECT ?1, '?2', ?10 FROM t WHERE a = ?2"),
            "SELECT $1, '?2', $10 FROM t WHERE a = $2"
        );
        assert_eq!(
            translate("INSERT OR IGNORE INTO t (a) VALUES (?1)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn numerics_read_as_integers_when_whole_and_reals_otherwise() {
        // 123456789 = [1, 2345, 6789] with weight 2.
        let mut raw = Vec::new();
        for w in [3i16, 2, 0, 0, 1, 2345, 6789] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), Value::Int(123_456_789));
        // -1.5 = [1, 5000] with weight 0, negative, one decimal digit.
        let mut raw = Vec::new();
        for w in [2i16, 0, 0x4000, 1, 1, 5000] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), Value::Real(-1.5));
        // Past i64: a real, not a wrapped integer.
        let mut raw = Vec::new();
        for w in [1i16, 5, 0, 0, 1] {
            raw.extend_from_slice(&w.to_be_bytes());
        }
        assert_eq!(numeric(&raw).unwrap(), Value::Real(1e20));
        assert!(numeric(&[0, 1]).is_err());
    }
}
