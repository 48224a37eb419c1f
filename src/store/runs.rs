//! Run history: one row per processor run, written when the run starts (so a
//! run that died shows as unfinished) and completed when it ends.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{Db, Row};
use super::{parse_timestamp, sql_int, timestamp};
use crate::args;
use crate::processor::Spend;
use crate::report::Report;

/// Records that a run started, and which process it is (so that `state`
/// can tell a run still going from one that died), and at the first run of
/// an hour forgets the runs beyond the last [`KEPT_RUNS`] (see [`prune`]):
/// in one commit, at the start, which a run makes beside its walk, rather
/// than at the end every run waits for (and which a run that dies never
/// reaches). A database that cannot prune cannot record the run either: it
/// does not begin.
pub fn start(db: &dyn Db, processor: &str, started_at: DateTime<Utc>) -> Result<i64> {
    let tx = db.transaction()?;
    let started_at = timestamp(started_at);
    let id = tx.one(
        "INSERT INTO runs (processor_name, started_at, pid, source) VALUES (?1, ?2, ?3, ?4)
         RETURNING id",
        args![processor, started_at, std::process::id(), tx.source()],
    )?;
    prune(&*tx, processor, id, &started_at)?;
    tx.commit()?;
    Ok(id)
}

/// The per-session errors kept of one run, at most: a run where everything
/// fails still writes a bounded history.
const KEPT_ERRORS: usize = 1000;

/// Records a run's figures and its errors, in one commit: an end that
/// cannot be recorded whole leaves the run unfinished, as if it had died.
pub fn finish(db: &dyn Db, id: i64, report: &Report, finished_at: DateTime<Utc>) -> Result<()> {
    let spend = report.spend.as_ref();
    let tx = db.transaction()?;
    tx.execute(
        "UPDATE runs SET finished_at = ?2, duration_ms = ?3, scanned = ?4, candidates = ?5,
             processed = ?6, skipped = ?7, capped = ?8, errors = ?9, quarantined = ?10,
             items_extracted = ?11, exit_code = ?12, llm_calls = ?13, llm_input_tokens = ?14,
             llm_output_tokens = ?15, llm_cache_creation_tokens = ?16,
             llm_cache_read_tokens = ?17, llm_cost_usd = ?18, llm_unpriced_calls = ?19
         WHERE id = ?1",
        args![
            id,
            timestamp(finished_at),
            sql_int(report.duration_ms),
            sql_int(report.scanned),
            sql_int(report.candidates),
            sql_int(report.processed),
            sql_int(report.skipped),
            sql_int(report.capped),
            sql_int(report.errors),
            sql_int(report.quarantined),
            sql_int(report.items_extracted),
            report.exit_code,
            spend.map(|s| sql_int(s.calls)),
            spend.map(|s| sql_int(s.input_tokens)),
            spend.map(|s| sql_int(s.output_tokens)),
            spend.map(|s| sql_int(s.cache_creation_tokens)),
            spend.map(|s| sql_int(s.cache_read_tokens)),
            spend.map(|s| s.cost_usd),
            spend.map(|s| sql_int(s.unpriced_calls)),
        ],
    )?;
    if !report.errors_detail.is_empty() {
        let mut insert =
            tx.prepare("INSERT INTO run_errors (run_id, session_file, error) VALUES (?1, ?2, ?3)")?;
        for e in report.errors_detail.iter().take(KEPT_ERRORS) {
            insert.execute(args![id, e.session, e.error])?;
        }
    }
    tx.commit()
}

/// Runs kept per processor: a run a minute for a week.
const KEPT_RUNS: i64 = 10_080;

/// When the processor's run before run `?2` started.
const PREVIOUS_START: &str = "SELECT started_at FROM runs
     WHERE source = ?3 AND processor_name = ?1 AND id < ?2 ORDER BY id DESC LIMIT 1";

/// The id of the oldest run kept (`?2` newer ones before it): read from the
/// ids of an index, not from a week of runs.
const OLDEST_KEPT: &str = "SELECT id FROM runs WHERE source = ?3 AND processor_name = ?1
     ORDER BY id DESC LIMIT 1 OFFSET ?2";

/// The errors of the runs before the oldest kept, then those runs.
const FORGET: [&str; 2] = [
    "DELETE FROM run_errors WHERE run_id IN
         (SELECT id FROM runs WHERE source = ?3 AND processor_name = ?1 AND id < ?2)",
    "DELETE FROM runs WHERE source = ?3 AND processor_name = ?1 AND id < ?2",
];

/// Forgets the runs (and their errors) beyond the last [`KEPT_RUNS`], the
/// one just started (`newest`, at `started_at`) among them, unless the
/// processor's run before it started earlier in the same hour (UTC): to
/// find the oldest run kept, a prune steps through a week of index entries,
/// as much as the rest of an unchanged run's start, which a one-minute job
/// then pays once an hour. The history holds the last [`KEPT_RUNS`] runs and
/// the others started since the hour began. A clock that stands still or
/// goes back, and a start that is no time (a hand edit), prune at every run.
fn prune(db: &dyn Db, processor: &str, newest: i64, started_at: &str) -> Result<()> {
    let earlier_this_hour = db.row(PREVIOUS_START, args![processor, newest, db.source()], |r| {
        Ok(r.text(0).ok().flatten().is_some_and(|previous| {
            previous < started_at && hour(previous).is_some_and(|h| hour(started_at) == Some(h))
        }))
    })?;
    if earlier_this_hour == Some(true) {
        return Ok(());
    }
    let oldest_kept: Option<i64> =
        db.one(OLDEST_KEPT, args![processor, KEPT_RUNS - 1, db.source()])?;
    if let Some(id) = oldest_kept {
        for sql in FORGET {
            db.execute(sql, args![processor, id, db.source()])?;
        }
    }
    Ok(())
}

/// `YYYY-MM-DDTHH`, the hour of a stored time.
fn hour(at: &str) -> Option<&str> {
    at.get(..13)
}

/// The last finished run of `?1`, in source `?2`.
const LAST_FINISHED: &str = "SELECT id FROM runs WHERE source = ?2 AND processor_name = ?1
     AND finished_at IS NOT NULL ORDER BY started_at DESC LIMIT 1";

/// The per-session errors of the last finished run.
pub fn last_errors(db: &dyn Db, processor: &str) -> Result<Vec<(String, String)>> {
    db.rows(
        &format!(
            "SELECT session_file, error FROM run_errors WHERE run_id = ({LAST_FINISHED})
             ORDER BY session_file, error"
        ),
        args![processor, db.source()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// The last run of a processor, as `state` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LastRun {
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub scanned: Option<i64>,
    pub processed: Option<i64>,
    pub skipped: Option<i64>,
    pub capped: Option<i64>,
    pub errors: Option<i64>,
    pub quarantined: Option<i64>,
    pub exit_code: Option<i32>,
    /// What its paid calls cost, for a processor that makes them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub spend: Option<Spend>,
    /// `finished`, or `unfinished`: running, or died (`state` tells which
    /// by the processor's lock).
    pub status: &'static str,
}

const LAST_RUN_COLUMNS: &str = "started_at, finished_at, duration_ms, scanned, processed, \
     skipped, capped, errors, quarantined, exit_code, llm_calls, llm_input_tokens, \
     llm_output_tokens, llm_cache_creation_tokens, llm_cache_read_tokens, llm_cost_usd, \
     llm_unpriced_calls";

fn last_run_from(r: &dyn Row) -> Result<LastRun> {
    Ok(LastRun {
        started_at: r.get(0)?,
        finished_at: r.get(1)?,
        duration_ms: r.get(2)?,
        scanned: r.get(3)?,
        processed: r.get(4)?,
        skipped: r.get(5)?,
        capped: r.get(6)?,
        errors: r.get(7)?,
        quarantined: r.get(8)?,
        exit_code: r.get(9)?,
        spend: Spend::from_columns(r, 10)?,
        status: match r.get::<Option<String>>(1)? {
            Some(_) => "finished",
            None => "unfinished",
        },
    })
}

/// The statement of [`last`].
fn last_sql() -> String {
    format!(
        "SELECT {LAST_RUN_COLUMNS} FROM runs WHERE source = ?2 AND processor_name = ?1
         ORDER BY id DESC LIMIT 1"
    )
}

/// The most recent run, finished or not.
pub fn last(db: &dyn Db, processor: &str) -> Result<Option<LastRun>> {
    db.row(&last_sql(), args![processor, db.source()], last_run_from)
}

/// What the runs of `?1` in source `?3` started since `?2` processed.
const PROCESSED_SINCE: &str = "SELECT CAST(coalesce(sum(processed), 0) AS BIGINT) FROM runs
     WHERE source = ?3 AND processor_name = ?1 AND started_at >= ?2";

/// Sessions processed by the runs started since `since`.
pub fn processed_since(db: &dyn Db, processor: &str, since: DateTime<Utc>) -> Result<u64> {
    let n: i64 = db.one(
        PROCESSED_SINCE,
        args![processor, timestamp(since), db.source()],
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// When the most recent finished run ended.
pub fn last_finished(db: &dyn Db, processor: &str) -> Result<Option<DateTime<Utc>>> {
    latest(db, processor, "finished_at")
}

/// When the most recent run started, finished or not (for `run --due`).
pub fn last_started(db: &dyn Db, processor: &str) -> Result<Option<DateTime<Utc>>> {
    latest(db, processor, "started_at")
}

/// The statement of [`latest`].
fn latest_sql(column: &str) -> String {
    format!("SELECT max({column}) FROM runs WHERE source = ?2 AND processor_name = ?1")
}

/// The latest time in one of the runs table's timestamp columns.
fn latest(db: &dyn Db, processor: &str, column: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = db.one(&latest_sql(column), args![processor, db.source()])?;
    Ok(text.as_deref().and_then(parse_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Report, SessionError};

    /// What a run, `run --due` and `state` ask of the history finds its rows
    /// through an index, constrained as far as the statement allows and in
    /// its order: after a week of one-minute ticks a scan or a sort would
    /// read 10,080 runs each time.
    #[test]
    fn the_history_is_read_through_its_indexes_without_a_sort() {
        let store = crate::store::Store::in_memory().unwrap();
        let db = store.db();
        let by_id = "runs_by_processor_id (processor_name=? AND source=?";
        // Each statement with the search it must make and its number of
        // parameters.
        let wanted = [
            (
                PREVIOUS_START.to_owned(),
                format!("INDEX {by_id} AND id<?)"),
                3,
            ),
            (
                OLDEST_KEPT.to_owned(),
                format!("COVERING INDEX {by_id})"),
                3,
            ),
            (
                FORGET[0].to_owned(),
                format!("COVERING INDEX {by_id} AND id<?)"),
                3,
            ),
            (
                FORGET[1].to_owned(),
                format!("COVERING INDEX {by_id} AND id<?)"),
                3,
            ),
            (last_sql(), format!("INDEX {by_id})"), 2),
            (
                latest_sql("started_at"),
                "COVERING INDEX runs_by_processor (processor_name=? AND source=?)".into(),
                2,
            ),
            (
                latest_sql("finished_at"),
                "COVERING INDEX runs_by_processor_finished (processor_name=? AND source=?)".into(),
                2,
            ),
            (
                PROCESSED_SINCE.to_owned(),
                "INDEX runs_by_processor (processor_name=? AND source=? AND started_at>?)".into(),
                3,
            ),
            (
                LAST_FINISHED.to_owned(),
                "INDEX runs_by_processor (processor_name=? AND source=?)".into(),
                2,
            ),
        ];
        for (sql, search, params) in wanted {
            let values = args!["usage", "", ""];
            let plan = db.plan(&sql, &values[..params]).unwrap();
            assert!(
                plan.contains(&format!("SEARCH runs USING {search}")),
                "{sql}\n{plan}"
            );
            assert!(
                !plan.contains("SCAN ") && !plan.contains("TEMP B-TREE"),
                "{sql}\n{plan}"
            );
        }
    }

    /// A usage run's report with one session's error.
    fn one_error() -> Report {
        Report {
            processor: "usage".into(),
            errors_detail: vec![SessionError {
                session: "u/a.jsonl".into(),
                error: "boom".into(),
            }],
            ..Report::default()
        }
    }

    /// A time of 1 June 2026 (UTC), as a run's start.
    fn at(time: &str) -> DateTime<Utc> {
        format!("2026-06-01T{time}Z").parse().unwrap()
    }

    /// `n` finished runs of `processor`, all started at `time` (see [`at`]).
    fn runs(conn: &dyn Db, processor: &str, n: i64, time: &str) {
        conn.batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             INSERT INTO runs (processor_name, started_at, finished_at)
             SELECT '{processor}', '2026-06-01T{time}.000Z', '2026-06-01T{time}.000Z' FROM n;"
        ))
        .unwrap();
    }

    #[test]
    fn history_keeps_the_last_runs_and_their_errors_only() {
        let store = crate::store::Store::in_memory().unwrap();
        let conn = store.db();
        let count = |sql: &str| -> i64 { conn.one(sql, &[]).unwrap() };
        let usage = "SELECT count(*) FROM runs WHERE processor_name = 'usage'";
        runs(conn, "usage", KEPT_RUNS, "11:10:00");
        conn.batch("INSERT INTO run_errors (run_id, session_file, error) VALUES (1, 'u/old.jsonl', 'old');")
            .unwrap();
        // The first run of the hour prunes, the next ones of the hour do not.
        start(conn, "usage", at("12:00:00")).unwrap();
        assert_eq!(count(usage), KEPT_RUNS);
        for minute in 1..=3 {
            start(conn, "usage", at(&format!("12:{minute:02}:00"))).unwrap();
        }
        assert_eq!(count(usage), KEPT_RUNS + 3, "the hour's runs gather");
        // Another processor's run earlier in the hour holds nothing off.
        runs(conn, "other", 1, "13:00:00");
        let id = start(conn, "usage", at("13:01:00")).unwrap();
        // Forgotten when the next run starts: a run that then dies has
        // pruned all the same. The newest run and the KEPT_RUNS - 1 before
        // it stay, the other processor's run between them not counted.
        assert_eq!(count(usage), KEPT_RUNS);
        assert_eq!(
            count("SELECT min(id) FROM runs WHERE processor_name = 'usage'"),
            6
        );
        assert_eq!(
            count("SELECT count(*) FROM run_errors WHERE error = 'old'"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM runs WHERE processor_name = 'other'"),
            1
        );
        finish(conn, id, &one_error(), at("13:01:01")).unwrap();
        assert_eq!(
            last_errors(conn, "usage").unwrap(),
            [("u/a.jsonl".to_owned(), "boom".to_owned())]
        );
    }

    /// A clock that stands still or went back cannot hold the prunes off,
    /// nor can a start that is no time, nor another source's run: only this
    /// source's run started earlier in the same hour does.
    #[test]
    fn only_a_run_earlier_in_the_hour_holds_the_prune_off() {
        let store = crate::store::Store::in_memory().unwrap();
        let conn = store.db();
        let count = |sql: &str| -> i64 { conn.one(sql, &[]).unwrap() };
        let usage = "SELECT count(*) FROM runs WHERE processor_name = 'usage' AND source = ''";
        runs(conn, "usage", KEPT_RUNS, "12:30:00");
        for time in ["12:30:00", "12:20:00", "12:20:00"] {
            start(conn, "usage", at(time)).unwrap();
            assert_eq!(count(usage), KEPT_RUNS, "{time}");
        }
        for previous in ["X'00'", "12", "'12:2'"] {
            conn.batch(&format!(
                "INSERT INTO runs (processor_name, started_at) VALUES ('usage', {previous});"
            ))
            .unwrap();
            start(conn, "usage", at("12:40:00")).unwrap();
            assert_eq!(count(usage), KEPT_RUNS, "after {previous}");
        }
        conn.batch(
            "INSERT INTO runs (processor_name, started_at, source)
             VALUES ('usage', '2026-06-01T13:05:00.000Z', 'elsewhere');",
        )
        .unwrap();
        start(conn, "usage", at("13:10:00")).unwrap();
        assert_eq!(count(usage), KEPT_RUNS, "after another source's run");
    }

    /// A start that cannot prune records no run, and an end that cannot
    /// keep its errors leaves the run unfinished: each is one commit.
    #[test]
    fn a_start_and_an_end_are_each_all_or_nothing() {
        let store = crate::store::Store::in_memory().unwrap();
        let conn = store.db();
        let count = |sql: &str| -> i64 { conn.one(sql, &[]).unwrap() };
        let now = at("01:00:00");
        runs(conn, "usage", KEPT_RUNS, "00:00:00");
        conn.batch(
            "CREATE TEMP TRIGGER no_prune BEFORE DELETE ON runs BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        assert!(start(conn, "usage", now).is_err());
        assert_eq!(count("SELECT count(*) FROM runs"), KEPT_RUNS);
        conn.batch(
            "DROP TRIGGER no_prune;
             CREATE TEMP TRIGGER no_errors BEFORE INSERT ON run_errors
                 BEGIN SELECT RAISE(ABORT, 'no'); END;",
        )
        .unwrap();
        let id = start(conn, "usage", now).unwrap();
        assert!(finish(conn, id, &one_error(), now).is_err());
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM runs WHERE id = {id} AND finished_at IS NULL"
            )),
            1
        );
    }
}
