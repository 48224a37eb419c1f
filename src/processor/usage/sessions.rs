//! A session's summary from its files: the main transcript and the
//! transcripts of its subagents each have a `usage_file_summary` row, and
//! the session's `usage_session_summary` row, named after the main file
//! (whether or not it exists), is rebuilt from them in the same transaction
//! whenever one of them is written or forgotten. A change to one subagent
//! file therefore reprocesses that file alone and leaves the session exact.
//!
//! Counts, replies and tokens add up; start and end are the earliest and
//! latest of any file; prompts, active time, project, version and branch
//! are the main transcript's (active time the longest subagent's when the
//! main file is missing) (a subagent's prompts come from the model, and
//! it works while the session waits); distinct tools and skills count the
//! events of every file. A session of one file keeps that file's row as is.
//!
//! A request found in more than one of a session's files (the same
//! `message.id` and `requestId`) counts once, as ccusage counts it: the copy
//! that is not a sidechain's, else the one with the most tokens. The others
//! keep their rows with `counted = 0`, and the session's tokens and the
//! `usage_request_costs` view leave them out.

use std::sync::OnceLock;

use anyhow::Result;

use crate::args;
use crate::store::sql::{Db, Dialect};

/// A sum of integer counts over a session's files, as the engine writes
/// one that saturates (SQLite casts a real past the largest integer to it)
/// instead of failing on overflow.
fn sum(d: Dialect, expr: &str) -> String {
    match d {
        Dialect::Sqlite => format!("CAST(total({expr}) AS INTEGER)"),
        Dialect::Postgres => {
            format!(
                "CAST(LEAST(coalesce(sum({expr}), 0), {}) AS BIGINT)",
                i64::MAX
            )
        }
    }
}

/// A count summed over the files: a file's own for a session of one file.
fn total(d: Dialect, col: &str) -> String {
    format!(
        "CASE WHEN count(*) = 1 THEN max(f.{col}) ELSE {} END",
        sum(d, &format!("f.{col}"))
    )
}

/// A token sum: a file's own for a session of one file, else that of the
/// requests the session counts.
fn counted(d: Dialect, col: &str) -> String {
    format!(
        "CASE WHEN count(*) = 1 THEN max(f.{col}) ELSE
             (SELECT {} FROM usage_requests
              WHERE counted AND source = ?2 AND session_file IN
                  (SELECT session_file FROM usage_file_summary
                   WHERE source = ?2 AND session = ?1)) END",
        sum(d, col)
    )
}

/// Marks the copy of each request that the session counts.
const MARK: &str = "
    UPDATE usage_requests SET counted = (w.rank = 1)
    FROM (SELECT session_file AS file, line,
              row_number() OVER (
                  PARTITION BY coalesce(request_key, session_file || ' ' || line)
                  ORDER BY is_sidechain,
                      input_tokens + output_tokens + cache_creation_tokens
                          + cache_read_tokens DESC,
                      session_file, line) AS rank
          FROM usage_requests
          WHERE source = ?2 AND session_file IN
              (SELECT session_file FROM usage_file_summary WHERE source = ?2 AND session = ?1))
        AS w
    WHERE usage_requests.source = ?2
      AND usage_requests.session_file = w.file AND usage_requests.line = w.line
      AND usage_requests.counted != (w.rank = 1)";

/// A session of one file counts every request of it.
const COUNT_ALL: &str = "
    UPDATE usage_requests SET counted = TRUE
    WHERE NOT counted AND source = ?2
      AND session_file IN
          (SELECT session_file FROM usage_file_summary WHERE source = ?2 AND session = ?1)";

/// The session's wall time from its files' first start and last end.
fn wall(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "(julianday(max(f.ended_at)) - julianday(min(f.started_at))) * 86400.0",
        // Only times PostgreSQL can hold (years 1 to 9999 as written): a
        // transcript's year 0 must not fail the transaction.
        Dialect::Postgres => {
            "EXTRACT(EPOCH FROM
                 CASE WHEN max(f.ended_at) BETWEEN '0001' AND '9999~'
                      AND min(f.started_at) BETWEEN '0001' AND '9999~'
                 THEN CAST(max(f.ended_at) AS timestamptz)
                      - CAST(min(f.started_at) AS timestamptz) END)::float8"
        }
    }
}

/// The distinct models of a session's files, as the JSON array text one
/// file's summary holds (sorted, no spaces).
fn models(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => {
            "(SELECT json_group_array(model) FROM
                 (SELECT DISTINCT j.value AS model
                  FROM usage_file_summary AS g, json_each(g.models) AS j
                  WHERE g.source = ?2 AND g.session = ?1 ORDER BY 1))"
        }
        Dialect::Postgres => {
            "(SELECT '[' || coalesce(string_agg(to_json(model)::text, ',' ORDER BY model), '')
                     || ']' FROM
                 (SELECT DISTINCT j AS model
                  FROM usage_file_summary AS g, json_array_elements_text(g.models::json) AS j
                  WHERE g.source = ?2 AND g.session = ?1) AS m)"
        }
    }
}

/// The rebuild of a session's summary from its files' rows.
fn rebuild_sql(d: Dialect) -> String {
    let t = |col| total(d, col);
    let c = |col| counted(d, col);
    format!(
        "INSERT INTO usage_session_summary (session_file, session_id, username, started_at,
             ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls,
             tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands,
             distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens,
             cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version,
             project, claude_version, git_branch, source)
         SELECT ?1, coalesce(m.session_id, min(f.session_id)),
             coalesce(m.username, min(f.username)), min(f.started_at), max(f.ended_at),
             CASE WHEN count(*) = 1 THEN max(f.wall_seconds)
                  ELSE coalesce({wall}, 0.0) END,
             coalesce(m.active_seconds, max(f.active_seconds)),
             coalesce(m.user_prompts, 0), {}, {}, {}, {}, {}, {}, {},
             CASE WHEN count(*) = 1 THEN max(f.distinct_tools) ELSE
                 (SELECT count(DISTINCT tool_name) FROM usage_events
                  WHERE source = ?2 AND session_file IN
                      (SELECT session_file FROM usage_file_summary
                       WHERE source = ?2 AND session = ?1)) END,
             CASE WHEN count(*) = 1 THEN max(f.distinct_skills) ELSE
                 (SELECT count(DISTINCT skill_name) FROM usage_events
                  WHERE source = ?2 AND session_file IN
                      (SELECT session_file FROM usage_file_summary
                       WHERE source = ?2 AND session = ?1)) END,
             CASE WHEN count(*) = 1 THEN max(f.primary_model) ELSE
                 (SELECT model FROM usage_requests
                  WHERE counted AND source = ?2 AND session_file IN
                      (SELECT session_file FROM usage_file_summary
                       WHERE source = ?2 AND session = ?1)
                    AND model IS NOT NULL AND model != '<synthetic>'
                  GROUP BY model ORDER BY count(*) DESC, model LIMIT 1) END,
             CASE WHEN count(*) = 1 THEN max(f.models) ELSE {models} END,
             {}, {}, {}, {}, {},
             max(f.processor_version), m.project, m.claude_version, m.git_branch, ?2
         FROM usage_file_summary AS f
         LEFT JOIN usage_file_summary AS m ON m.source = ?2 AND m.session_file = ?1
         WHERE f.source = ?2 AND f.session = ?1
         GROUP BY m.session_id, m.username, m.active_seconds, m.user_prompts, m.project,
             m.claude_version, m.git_branch
         HAVING count(*) > 0",
        t("assistant_messages"),
        t("tool_calls"),
        t("tool_errors"),
        t("skill_invocations"),
        t("subagent_dispatches"),
        t("mcp_calls"),
        t("slash_commands"),
        c("input_tokens"),
        c("output_tokens"),
        c("cache_creation_tokens"),
        c("cache_read_tokens"),
        t("malformed_lines"),
        wall = wall(d),
        models = models(d),
    )
}

/// [`rebuild_sql`] for each engine, built once.
fn rebuild_for(d: Dialect) -> &'static str {
    static SQLITE: OnceLock<String> = OnceLock::new();
    static POSTGRES: OnceLock<String> = OnceLock::new();
    let cell = match d {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    };
    cell.get_or_init(|| rebuild_sql(d))
}

/// The columns a session's summary shares with its main file's.
macro_rules! summary_columns {
    () => {
        "session_file, session_id, username, started_at, ended_at, wall_seconds, \
         active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors, \
         skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools, \
         distinct_skills, primary_model, models, input_tokens, output_tokens, \
         cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, \
         project, claude_version, git_branch"
    };
}

/// [`summary_columns`] as a value.
pub(super) const SUMMARY_COLUMNS: &str = summary_columns!();

/// The summary of a session whose only file is its main transcript: that
/// file's row as is (what [`rebuild_sql`] makes of it, at a fraction of the
/// cost, for the common case of a session without subagents).
const COPY: &str = concat!(
    "INSERT INTO usage_session_summary (",
    summary_columns!(),
    ", source) SELECT ",
    summary_columns!(),
    ", source FROM usage_file_summary WHERE source = ?2 AND session_file = ?1 AND session = ?1"
);

/// The summary of a session whose only file is `session_file`, its main
/// transcript, just written: that file's row as is, in place of the old
/// one, in one statement (its requests were written counted). Returns
/// whether it applied; a session of other files needs [`rebuild`].
pub(super) fn copy_if_alone(db: &dyn Db, session_file: &str) -> Result<bool> {
    Ok(db.execute(copy_if_alone_sql(), args![session_file, db.source()])? == 1)
}

/// [`copy_if_alone`]'s statement, built once.
fn copy_if_alone_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "{COPY}
               AND NOT EXISTS (SELECT 1 FROM usage_file_summary AS o
                               WHERE o.source = ?2 AND o.session = ?1 AND o.session_file != ?1)
             ON CONFLICT (session_file, source) DO UPDATE SET {}",
            super::rows::replace_all(Dialect::Sqlite, SUMMARY_COLUMNS)
        )
    })
}

/// How many files session `?1` has, and whether its main file is one.
const FILES: &str = "SELECT count(*), count(*) FILTER (WHERE session_file = ?1) > 0
     FROM usage_file_summary WHERE source = ?2 AND session = ?1";

/// Rebuilds the summary of `session` (a main file's name) from its files';
/// none left, no summary.
pub(super) fn rebuild(db: &dyn Db, session: &str) -> Result<()> {
    let (files, main): (i64, bool) = db
        .row(FILES, args![session, db.source()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .unwrap_or((0, false));
    db.execute(
        if files > 1 { MARK } else { COUNT_ALL },
        args![session, db.source()],
    )?;
    db.execute(
        "DELETE FROM usage_session_summary WHERE source = ?2 AND session_file = ?1",
        args![session, db.source()],
    )?;
    if files == 1 && main {
        db.execute(COPY, args![session, db.source()])?;
        return Ok(());
    }
    db.execute(rebuild_for(db.dialect()), args![session, db.source()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::usage::rows::{CLEARED, clear_sql};

    /// What a write runs for every session finds the session's rows through
    /// an index: a scan would cost a pass over the table per session.
    #[test]
    fn the_statements_of_every_write_search_an_index() {
        let store = crate::store::Store::in_memory().unwrap();
        let db = store.db();
        let mut wanted = vec![
            (FILES.to_owned(), "usage_file_summary_by_session"),
            (COUNT_ALL.to_owned(), "PRIMARY KEY (session_file=?)"),
            (MARK.to_owned(), "usage_file_summary_by_session"),
            (
                copy_if_alone_sql().to_owned(),
                "usage_file_summary_by_session",
            ),
        ];
        let by_table = [
            "INDEX usage_events_by_file",
            "PRIMARY KEY (session_file=?)",
            "PRIMARY KEY (session_file=? AND source=?)",
        ];
        wanted.extend(CLEARED.iter().map(|t| clear_sql(t)).zip(by_table));
        for (sql, index) in wanted {
            let plan = db.plan(&sql, args!["u/s.jsonl", ""]).unwrap();
            assert!(plan.contains(index), "{sql}\n{plan}");
            assert!(!plan.contains("SCAN usage_"), "{sql}\n{plan}");
        }
    }
}
