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

use rusqlite::Connection;

/// A sum of integer counts: a file's own for a session of one file, else a
/// total that saturates (SQLite casts a real past the largest integer to
/// it) instead of failing on overflow.
macro_rules! total {
    ($col:literal) => {
        concat!(
            "CASE WHEN count(*) = 1 THEN max(f.",
            $col,
            ") ELSE CAST(total(f.",
            $col,
            ") AS INTEGER) END"
        )
    };
}

/// A token sum: a file's own for a session of one file, else that of the
/// requests the session counts.
macro_rules! counted {
    ($col:literal) => {
        concat!(
            "CASE WHEN count(*) = 1 THEN max(f.",
            $col,
            ") ELSE
                 (SELECT CAST(total(",
            $col,
            ") AS INTEGER) FROM usage_requests
                  WHERE counted AND session_file IN
                      (SELECT session_file FROM usage_file_summary WHERE session = ?1)) END"
        )
    };
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
          WHERE session_file IN (SELECT session_file FROM usage_file_summary WHERE session = ?1))
        AS w
    WHERE usage_requests.session_file = w.file AND usage_requests.line = w.line
      AND usage_requests.counted != (w.rank = 1)";

/// A session of one file counts every request of it.
const COUNT_ALL: &str = "
    UPDATE usage_requests SET counted = 1
    WHERE NOT counted
      AND session_file IN (SELECT session_file FROM usage_file_summary WHERE session = ?1)";

const REBUILD: &str = concat!(
    "INSERT INTO usage_session_summary (session_file, session_id, username, started_at,
         ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls,
         tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands,
         distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens,
         cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project,
         claude_version, git_branch)
     SELECT ?1, coalesce(m.session_id, min(f.session_id)), coalesce(m.username, min(f.username)),
         min(f.started_at), max(f.ended_at),
         CASE WHEN count(*) = 1 THEN max(f.wall_seconds)
              ELSE coalesce((julianday(max(f.ended_at)) - julianday(min(f.started_at)))
                            * 86400.0, 0.0) END,
         coalesce(m.active_seconds, max(f.active_seconds)),
         coalesce(m.user_prompts, 0), ",
    total!("assistant_messages"),
    ", ",
    total!("tool_calls"),
    ", ",
    total!("tool_errors"),
    ", ",
    total!("skill_invocations"),
    ", ",
    total!("subagent_dispatches"),
    ", ",
    total!("mcp_calls"),
    ", ",
    total!("slash_commands"),
    ",
         CASE WHEN count(*) = 1 THEN max(f.distinct_tools) ELSE
             (SELECT count(DISTINCT tool_name) FROM usage_events
              WHERE session_file IN (SELECT session_file FROM usage_file_summary
                                     WHERE session = ?1)) END,
         CASE WHEN count(*) = 1 THEN max(f.distinct_skills) ELSE
             (SELECT count(DISTINCT skill_name) FROM usage_events
              WHERE session_file IN (SELECT session_file FROM usage_file_summary
                                     WHERE session = ?1)) END,
         CASE WHEN count(*) = 1 THEN max(f.primary_model) ELSE
             (SELECT model FROM usage_requests
              WHERE counted AND session_file IN (SELECT session_file FROM usage_file_summary
                                                 WHERE session = ?1)
                AND model IS NOT NULL AND model != '<synthetic>'
              GROUP BY model ORDER BY count(*) DESC, model LIMIT 1) END,
         CASE WHEN count(*) = 1 THEN max(f.models) ELSE
             (SELECT json_group_array(model) FROM
                 (SELECT DISTINCT j.value AS model
                  FROM usage_file_summary AS g, json_each(g.models) AS j
                  WHERE g.session = ?1 ORDER BY 1)) END, ",
    counted!("input_tokens"),
    ", ",
    counted!("output_tokens"),
    ", ",
    counted!("cache_creation_tokens"),
    ", ",
    counted!("cache_read_tokens"),
    ", ",
    total!("malformed_lines"),
    ",
         max(f.processor_version), m.project, m.claude_version, m.git_branch
     FROM usage_file_summary AS f
     LEFT JOIN usage_file_summary AS m ON m.session_file = ?1
     WHERE f.session = ?1
     HAVING count(*) > 0"
);

/// The summary of a session whose only file is its main transcript: that
/// file's row as is (what [`REBUILD`] makes of it, at a fraction of the cost,
/// for the common case of a session without subagents).
const COPY: &str = "
    INSERT OR REPLACE INTO usage_session_summary (session_file, session_id, username,
         started_at, ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages,
         tool_calls, tool_errors, skill_invocations, subagent_dispatches, mcp_calls,
         slash_commands, distinct_tools, distinct_skills, primary_model, models, input_tokens,
         output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines,
         processor_version, project, claude_version, git_branch)
     SELECT session_file, session_id, username, started_at, ended_at, wall_seconds,
         active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors,
         skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools,
         distinct_skills, primary_model, models, input_tokens, output_tokens,
         cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project,
         claude_version, git_branch
     FROM usage_file_summary WHERE session_file = ?1 AND session = ?1";

/// Rebuilds the summary of `session` (a main file's name) from its files';
/// none left, no summary.
pub(super) fn rebuild(db: &Connection, session: &str) -> rusqlite::Result<()> {
    let (files, main): (i64, bool) = db
        .prepare_cached(
            "SELECT count(*), count(*) FILTER (WHERE session_file = ?1) > 0
             FROM usage_file_summary WHERE session = ?1",
        )?
        .query_row([session], |r| Ok((r.get(0)?, r.get(1)?)))?;
    db.prepare_cached(if files > 1 { MARK } else { COUNT_ALL })?
        .execute([session])?;
    if files == 1 && main {
        db.prepare_cached(COPY)?.execute([session])?;
        return Ok(());
    }
    db.prepare_cached("DELETE FROM usage_session_summary WHERE session_file = ?1")?
        .execute([session])?;
    db.prepare_cached(REBUILD)?.execute([session])?;
    Ok(())
}
