//! What was spent: the `usage_requests` rows, priced by the
//! `usage_request_costs` view, grouped by day, ISO week, month or session
//! file, and further by user, model and project, in any time zone.
//!
//! A session counts its subagents' requests: `session` rows are per session,
//! the main transcript and its `subagents/` files together.
//!
//! Groups are exact sums of requests: a request falls in the period its own
//! timestamp does, in the zone asked for, so a session that crosses midnight
//! counts on both days. A group with a request of a model without a price,
//! and tokens to price, has no cost (`None`), never a partial one.

use std::collections::{BTreeMap, BTreeSet};

use crate::args;
use crate::store::sql::Db;
use chrono::{DateTime, Datelike, NaiveDate};
use jiff::tz::TimeZone;

use crate::cli::{GroupBy, Period};

/// What is asked for.
#[derive(Debug, Clone)]
pub struct Query {
    pub period: Period,
    pub by: BTreeSet<GroupBy>,
    pub since: Option<NaiveDate>,
    pub until: Option<NaiveDate>,
    pub tz: TimeZone,
    /// A user folder key.
    pub user: Option<String>,
}

/// A group's keys: the period (or session file), then user, model and
/// project where asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub period: String,
    pub user: Option<String>,
    pub model: Option<String>,
    pub project: Option<String>,
}

/// A group's sums.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sums {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    /// `None` when a request in the group has no price.
    pub cost_usd: Option<f64>,
}

/// The groups, in key order, their total, and what could not be priced.
#[derive(Debug, Default)]
pub struct Spend {
    pub rows: BTreeMap<Key, Sums>,
    pub total: Sums,
    /// Models with tokens and no price.
    pub unpriced: BTreeSet<String>,
    /// Requests left out for want of a timestamp: of a period report, or of
    /// a session report limited to dates.
    pub undated: u64,
}

impl Sums {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_creation_tokens)
            .saturating_add(self.cache_read_tokens)
    }

    fn add(&mut self, other: &Sums) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(other.cache_creation_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cost_usd = self.cost_usd.zip(other.cost_usd).map(|(a, b)| a + b);
    }
}

impl Spend {
    fn empty() -> Spend {
        Spend {
            total: Sums {
                cost_usd: Some(0.0),
                ..Sums::default()
            },
            ..Spend::default()
        }
    }
}

/// Reads and groups the requests `q` asks for. They are read in key
/// order, so that dollars are added up in the same order, to the same last
/// bit, on either engine.
pub fn spend(db: &dyn Db, q: &Query) -> anyhow::Result<Spend> {
    let mut out = Spend::empty();
    db.query(
        "SELECT r.session_file, r.username, r.model, r.occurred_at, r.input_tokens,
                r.output_tokens, r.cache_creation_tokens, r.cache_read_tokens, r.cost_usd,
                s.project
         FROM usage_request_costs AS r
         LEFT JOIN usage_file_summary AS s USING (source, session_file)
         WHERE CAST(?1 AS TEXT) IS NULL
            OR (r.session_file >= CAST(?1 AS TEXT) || '/'
                AND r.session_file < CAST(?1 AS TEXT) || '0')
         ORDER BY r.session_file, r.line",
        args![q.user.as_deref()],
        &mut |r| {
            let n = |i| r.get::<i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
            let model: Option<String> = r.get(2)?;
            let sums = Sums {
                input_tokens: n(4)?,
                output_tokens: n(5)?,
                cache_creation_tokens: n(6)?,
                cache_read_tokens: n(7)?,
                cost_usd: r.get(8)?,
            };
            let day = day_of(r.text(3)?, &q.tz);
            let dated = q.since.is_some() || q.until.is_some() || q.period != Period::Session;
            let period = match (day, q.period) {
                (_, Period::Session) if !dated => {
                    crate::scan::session_of(&r.get::<String>(0)?).into_owned()
                }
                (None, _) => {
                    out.undated += 1;
                    return Ok(());
                }
                (Some(day), _) if !in_range(day, q) => return Ok(()),
                (Some(day), period) => match period {
                    Period::Session => crate::scan::session_of(&r.get::<String>(0)?).into_owned(),
                    Period::Daily => day.to_string(),
                    Period::Weekly => {
                        let w = day.iso_week();
                        format!("{}-W{:02}", w.year(), w.week())
                    }
                    Period::Monthly => day.format("%Y-%m").to_string(),
                },
            };
            // A request with nothing to price costs nothing, priced or not.
            let sums = Sums {
                cost_usd: sums.cost_usd.or((sums.total_tokens() == 0).then_some(0.0)),
                ..sums
            };
            if sums.cost_usd.is_none() {
                out.unpriced
                    .insert(model.clone().unwrap_or_else(|| "(no model)".into()));
            }
            let key = Key {
                period,
                user: q
                    .by
                    .contains(&GroupBy::User)
                    .then(|| r.get(1))
                    .transpose()?,
                model: model.filter(|_| q.by.contains(&GroupBy::Model)),
                project: match q.by.contains(&GroupBy::Project) {
                    true => Some(r.get::<Option<String>>(9)?.unwrap_or_default()),
                    false => None,
                },
            };
            out.total.add(&sums);
            out.rows
                .entry(key)
                .or_insert(Sums {
                    cost_usd: Some(0.0),
                    ..Sums::default()
                })
                .add(&sums);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The day of a stored timestamp in `tz` (`None` past what jiff counts, the
/// year 9999). Zones are whole seconds off UTC: the second decides the day
/// (a leap second's, :60, is the one before it).
fn day_of(at: Option<&str>, tz: &TimeZone) -> Option<NaiveDate> {
    let at = DateTime::parse_from_rfc3339(at?).ok()?;
    let day = tz
        .to_datetime(jiff::Timestamp::from_second(at.timestamp()).ok()?)
        .date();
    NaiveDate::from_ymd_opt(
        i32::from(day.year()),
        u32::try_from(day.month()).ok()?,
        u32::try_from(day.day()).ok()?,
    )
}

fn in_range(day: NaiveDate, q: &Query) -> bool {
    q.since.is_none_or(|s| day >= s) && q.until.is_none_or(|u| day <= u)
}

/// The models requests name, with tokens, that have no price.
pub fn unpriced_models(db: &dyn Db) -> anyhow::Result<Vec<String>> {
    db.rows(
        "SELECT DISTINCT model FROM usage_requests
         WHERE model IS NOT NULL
           AND input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens > 0
           AND model NOT IN (SELECT model FROM usage_model_prices)
         ORDER BY model",
        &[],
        |r| r.get(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_the_zones_own_across_its_clock_changes() {
        // Days as `TZ=Europe/Paris date -d <time> +%F` gives them (Paris
        // moves to summer time on 2026-03-29 and back on 2026-10-25).
        let paris = crate::cli::zone("Europe/Paris").unwrap();
        for (at, day) in [
            ("2026-03-28T23:30:00Z", "2026-03-29"),
            ("2026-03-29T22:30:00Z", "2026-03-30"),
            ("2026-10-24T22:30:00Z", "2026-10-25"),
            ("2026-10-25T22:30:00Z", "2026-10-25"),
            ("2016-12-31T23:59:60Z", "2017-01-01"),
        ] {
            assert_eq!(day_of(Some(at), &paris).unwrap().to_string(), day, "{at}");
        }
        assert_eq!(day_of(Some("yesterday"), &paris), None);
        assert_eq!(day_of(None, &paris), None);
        for refused in ["Mars/Olympus", "Etc/Unknown", "Factory", "factory", ""] {
            assert!(crate::cli::zone(refused).is_err(), "{refused}");
        }
        assert!(crate::cli::zone("europe/paris").is_ok());
    }
}
