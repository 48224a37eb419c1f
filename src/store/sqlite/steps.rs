//! The SQLite schema's steps: step N takes a database from version N-1 to
//! N. A released step is never edited or reordered (its MD5 is pinned in
//! the migration tests); a change is a new step at the end. Steps from 14
//! on keep their SQL in `steps/NN-what.sql`.

/// Each entry is one released schema step.
pub const STEPS: &[(&str, &str)] = &[
    (
        "processor state and run history",
        "
    CREATE TABLE processor_state (
        processor_name    TEXT NOT NULL,
        session_file      TEXT NOT NULL,
        username          TEXT NOT NULL,
        processed_at      TEXT,
        items_extracted   INTEGER NOT NULL DEFAULT 0,
        file_hash         TEXT,
        bytes_processed   INTEGER NOT NULL DEFAULT 0,
        processor_version INTEGER NOT NULL DEFAULT 0,
        file_size         INTEGER,
        mtime_ns          INTEGER,
        ctime_ns          INTEGER,
        inode             INTEGER,
        read_racy         INTEGER NOT NULL DEFAULT 0,
        status            TEXT NOT NULL DEFAULT 'pending',
        attempts          INTEGER NOT NULL DEFAULT 0,
        attempt_hash      TEXT,
        last_error        TEXT,
        next_attempt_at   TEXT,
        PRIMARY KEY (processor_name, session_file)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id              INTEGER PRIMARY KEY,
        processor_name  TEXT NOT NULL,
        started_at      TEXT NOT NULL,
        finished_at     TEXT,
        duration_ms     INTEGER,
        scanned         INTEGER,
        candidates      INTEGER,
        processed       INTEGER,
        skipped         INTEGER,
        capped          INTEGER,
        errors          INTEGER,
        quarantined     INTEGER,
        items_extracted INTEGER,
        exit_code       INTEGER
    );
    CREATE INDEX runs_by_processor ON runs (processor_name, started_at);
    ",
    ),
    (
        "usage events and session summaries",
        "
    CREATE TABLE usage_events (
        id                TEXT NOT NULL,
        session_id        TEXT NOT NULL,
        session_file      TEXT NOT NULL,
        username          TEXT NOT NULL,
        event_uuid        TEXT,
        parent_uuid       TEXT,
        event_type        TEXT NOT NULL,
        tool_name         TEXT,
        skill_name        TEXT,
        subagent_type     TEXT,
        command_name      TEXT,
        is_error          INTEGER NOT NULL,
        model             TEXT,
        cwd               TEXT,
        is_sidechain      INTEGER NOT NULL,
        occurred_at       TEXT,
        processor_version INTEGER NOT NULL,
        PRIMARY KEY (session_file, id)
    ) WITHOUT ROWID;
    CREATE INDEX usage_events_user_time ON usage_events (username, occurred_at);
    CREATE INDEX usage_events_tool ON usage_events (tool_name);
    CREATE INDEX usage_events_skill ON usage_events (skill_name);
    CREATE TABLE usage_session_summary (
        session_file          TEXT PRIMARY KEY,
        session_id            TEXT NOT NULL,
        username              TEXT NOT NULL,
        started_at            TEXT,
        ended_at              TEXT,
        wall_seconds          REAL NOT NULL,
        active_seconds        REAL NOT NULL,
        user_prompts          INTEGER NOT NULL,
        assistant_messages    INTEGER NOT NULL,
        tool_calls            INTEGER NOT NULL,
        tool_errors           INTEGER NOT NULL,
        skill_invocations     INTEGER NOT NULL,
        subagent_dispatches   INTEGER NOT NULL,
        mcp_calls             INTEGER NOT NULL,
        slash_commands        INTEGER NOT NULL,
        distinct_tools        INTEGER NOT NULL,
        distinct_skills       INTEGER NOT NULL,
        primary_model         TEXT,
        models                TEXT NOT NULL,
        input_tokens          INTEGER NOT NULL,
        output_tokens         INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cache_read_tokens     INTEGER NOT NULL,
        malformed_lines       INTEGER NOT NULL,
        processor_version     INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    ),
    (
        "knowledge items, evidence and similar items",
        "
    CREATE TABLE knowledge_items (
        id             TEXT PRIMARY KEY,
        title          TEXT NOT NULL,
        content        TEXT NOT NULL,
        domain         TEXT NOT NULL,
        entities       TEXT NOT NULL,
        detection_type TEXT NOT NULL,
        confidence     REAL NOT NULL,
        status         TEXT NOT NULL DEFAULT 'pending',
        source_user    TEXT NOT NULL,
        source_ref     TEXT NOT NULL,
        created_at     TEXT NOT NULL
    );
    CREATE INDEX knowledge_items_domain ON knowledge_items (domain);
    CREATE TABLE verification_evidence (
        item_id        TEXT NOT NULL REFERENCES knowledge_items (id),
        source_user    TEXT NOT NULL,
        source_ref     TEXT NOT NULL,
        detection_type TEXT NOT NULL,
        user_quote     TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        UNIQUE (item_id, source_user, source_ref)
    );
    CREATE TABLE knowledge_similar (
        item_id    TEXT NOT NULL REFERENCES knowledge_items (id),
        similar_id TEXT NOT NULL REFERENCES knowledge_items (id),
        score      REAL NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (item_id, similar_id)
    ) WITHOUT ROWID;
    CREATE TABLE verification_sessions (
        session_file        TEXT PRIMARY KEY,
        username            TEXT NOT NULL,
        items               INTEGER NOT NULL,
        dropped_invalid     INTEGER NOT NULL,
        dropped_unsupported INTEGER NOT NULL,
        model               TEXT NOT NULL,
        processed_at        TEXT NOT NULL
    ) WITHOUT ROWID;
    ",
    ),
    (
        "when each file was first seen, the pid of each run, each run's session errors, \
         the settings outputs were written with",
        "
    ALTER TABLE processor_state ADD COLUMN first_seen_at TEXT;
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    CREATE TABLE run_errors (
        run_id       INTEGER NOT NULL REFERENCES runs (id),
        session_file TEXT NOT NULL,
        error        TEXT NOT NULL
    );
    CREATE INDEX run_errors_by_run ON run_errors (run_id);
    -- Files processed without their final line: read again once settled,
    -- when that line may count (see `fragment_settle`).
    UPDATE processor_state SET read_racy = read_racy | 2
        WHERE file_size IS NOT NULL AND bytes_processed < file_size;
    CREATE TABLE processor_settings (
        processor_name TEXT NOT NULL,
        key            TEXT NOT NULL,
        value          TEXT NOT NULL,
        PRIMARY KEY (processor_name, key)
    ) WITHOUT ROWID;
    ",
    ),
    (
        "the state table takes the name of the schema sessionpipe replaces, \
         session_processor_state",
        "
    ALTER TABLE processor_state RENAME TO session_processor_state;
    ",
    ),
    (
        "one row per API request (tokens by model and time), and each session's project, \
         Claude Code version and git branch",
        "
    CREATE TABLE usage_requests (
        session_file             TEXT NOT NULL,
        line                     INTEGER NOT NULL,
        session_id               TEXT NOT NULL,
        username                 TEXT NOT NULL,
        model                    TEXT,
        occurred_at              TEXT,
        input_tokens             INTEGER NOT NULL,
        output_tokens            INTEGER NOT NULL,
        cache_creation_tokens    INTEGER NOT NULL,
        cache_creation_5m_tokens INTEGER NOT NULL,
        cache_creation_1h_tokens INTEGER NOT NULL,
        cache_read_tokens        INTEGER NOT NULL,
        is_sidechain             INTEGER NOT NULL,
        is_fast                  INTEGER NOT NULL,
        processor_version        INTEGER NOT NULL,
        PRIMARY KEY (session_file, line)
    ) WITHOUT ROWID;
    CREATE INDEX usage_requests_time ON usage_requests (occurred_at);
    ALTER TABLE usage_session_summary ADD COLUMN project TEXT;
    ALTER TABLE usage_session_summary ADD COLUMN claude_version TEXT;
    ALTER TABLE usage_session_summary ADD COLUMN git_branch TEXT;
    ",
    ),
    (
        "the price each model resolves to, and the cost of each request",
        "
    CREATE TABLE usage_model_prices (
        model                     TEXT PRIMARY KEY,
        price_key                 TEXT NOT NULL,
        source                    TEXT NOT NULL,
        input                     REAL NOT NULL,
        output                    REAL NOT NULL,
        cache_write_5m            REAL NOT NULL,
        cache_write_1h            REAL NOT NULL,
        cache_read                REAL NOT NULL,
        input_above_200k          REAL,
        output_above_200k         REAL,
        cache_write_5m_above_200k REAL,
        cache_write_1h_above_200k REAL,
        cache_read_above_200k     REAL,
        fast_multiplier           REAL NOT NULL
    ) WITHOUT ROWID;
    -- Each kind of token past 200,000 in one request at the long-context
    -- rate, where the model has one; NULL for a model without a price.
    CREATE VIEW usage_request_costs AS
    SELECT r.*, p.price_key,
        (min(r.input_tokens, 200000) * p.input
           + max(r.input_tokens - 200000, 0) * coalesce(p.input_above_200k, p.input)
         + min(r.output_tokens, 200000) * p.output
           + max(r.output_tokens - 200000, 0) * coalesce(p.output_above_200k, p.output)
         + min(r.cache_creation_5m_tokens, 200000) * p.cache_write_5m
           + max(r.cache_creation_5m_tokens - 200000, 0)
             * coalesce(p.cache_write_5m_above_200k, p.cache_write_5m)
         + min(r.cache_creation_1h_tokens, 200000) * p.cache_write_1h
           + max(r.cache_creation_1h_tokens - 200000, 0)
             * coalesce(p.cache_write_1h_above_200k, p.cache_write_1h)
         + min(r.cache_read_tokens, 200000) * p.cache_read
           + max(r.cache_read_tokens - 200000, 0)
             * coalesce(p.cache_read_above_200k, p.cache_read))
        * CASE WHEN r.is_fast THEN p.fast_multiplier ELSE 1.0 END AS cost_usd
    FROM usage_requests AS r LEFT JOIN usage_model_prices AS p ON p.model = r.model;
    ",
    ),
    (
        "the agent of each event and request read from a subagent transcript",
        "
    ALTER TABLE usage_events ADD COLUMN agent_id TEXT;
    ALTER TABLE usage_requests ADD COLUMN agent_id TEXT;
    ",
    ),
    (
        "one summary per file, main transcript or subagent's; a session's summary counts all \
         of its files",
        "
    CREATE TABLE usage_file_summary (
        session_file          TEXT PRIMARY KEY,
        session               TEXT NOT NULL,
        session_id            TEXT NOT NULL,
        username              TEXT NOT NULL,
        started_at            TEXT,
        ended_at              TEXT,
        wall_seconds          REAL NOT NULL,
        active_seconds        REAL NOT NULL,
        user_prompts          INTEGER NOT NULL,
        assistant_messages    INTEGER NOT NULL,
        tool_calls            INTEGER NOT NULL,
        tool_errors           INTEGER NOT NULL,
        skill_invocations     INTEGER NOT NULL,
        subagent_dispatches   INTEGER NOT NULL,
        mcp_calls             INTEGER NOT NULL,
        slash_commands        INTEGER NOT NULL,
        distinct_tools        INTEGER NOT NULL,
        distinct_skills       INTEGER NOT NULL,
        primary_model         TEXT,
        models                TEXT NOT NULL,
        input_tokens          INTEGER NOT NULL,
        output_tokens         INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cache_read_tokens     INTEGER NOT NULL,
        malformed_lines       INTEGER NOT NULL,
        processor_version     INTEGER NOT NULL,
        project               TEXT,
        claude_version        TEXT,
        git_branch            TEXT
    ) WITHOUT ROWID;
    CREATE INDEX usage_file_summary_by_session ON usage_file_summary (session);
    -- Every summary so far is a session's own file's.
    INSERT INTO usage_file_summary (session, session_file, session_id, username, started_at, ended_at, wall_seconds, active_seconds,
        user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations,
        subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills,
        primary_model, models, input_tokens, output_tokens, cache_creation_tokens,
        cache_read_tokens, malformed_lines, processor_version, project, claude_version,
        git_branch)
        SELECT session_file, session_file, session_id, username, started_at, ended_at, wall_seconds, active_seconds,
        user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations,
        subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills,
        primary_model, models, input_tokens, output_tokens, cache_creation_tokens,
        cache_read_tokens, malformed_lines, processor_version, project, claude_version,
        git_branch FROM usage_session_summary;
    ",
    ),
    (
        "a request copied into another file of its session counts once",
        "
    ALTER TABLE usage_requests ADD COLUMN request_key TEXT;
    -- 0 for a copy of a request another file of the session counts.
    ALTER TABLE usage_requests ADD COLUMN counted INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX usage_requests_uncounted ON usage_requests (session_file) WHERE NOT counted;
    DROP VIEW usage_request_costs;
    CREATE VIEW usage_request_costs AS
    SELECT r.*, p.price_key,
        (min(r.input_tokens, 200000) * p.input
           + max(r.input_tokens - 200000, 0) * coalesce(p.input_above_200k, p.input)
         + min(r.output_tokens, 200000) * p.output
           + max(r.output_tokens - 200000, 0) * coalesce(p.output_above_200k, p.output)
         + min(r.cache_creation_5m_tokens, 200000) * p.cache_write_5m
           + max(r.cache_creation_5m_tokens - 200000, 0)
             * coalesce(p.cache_write_5m_above_200k, p.cache_write_5m)
         + min(r.cache_creation_1h_tokens, 200000) * p.cache_write_1h
           + max(r.cache_creation_1h_tokens - 200000, 0)
             * coalesce(p.cache_write_1h_above_200k, p.cache_write_1h)
         + min(r.cache_read_tokens, 200000) * p.cache_read
           + max(r.cache_read_tokens - 200000, 0)
             * coalesce(p.cache_read_above_200k, p.cache_read))
        * CASE WHEN r.is_fast THEN p.fast_multiplier ELSE 1.0 END AS cost_usd
    FROM usage_requests AS r LEFT JOIN usage_model_prices AS p ON p.model = r.model
    WHERE r.counted;
    ",
    ),
    (
        "when a settling file's wait began, and what the LLM calls of verification cost, \
         per session and per run",
        "
    -- Set while a file waits to settle (see `[verification] settle`).
    ALTER TABLE session_processor_state ADD COLUMN waiting_since TEXT;
    ALTER TABLE verification_sessions ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE verification_sessions ADD COLUMN llm_input_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE verification_sessions ADD COLUMN llm_output_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE verification_sessions
        ADD COLUMN llm_cache_creation_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE verification_sessions ADD COLUMN llm_cache_read_tokens INTEGER NOT NULL DEFAULT 0;
    -- The calls whose model has a price, and the number of those without.
    ALTER TABLE verification_sessions ADD COLUMN llm_cost_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE verification_sessions ADD COLUMN llm_unpriced_calls INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN llm_calls INTEGER;
    ALTER TABLE runs ADD COLUMN llm_input_tokens INTEGER;
    ALTER TABLE runs ADD COLUMN llm_output_tokens INTEGER;
    ALTER TABLE runs ADD COLUMN llm_cache_creation_tokens INTEGER;
    ALTER TABLE runs ADD COLUMN llm_cache_read_tokens INTEGER;
    ALTER TABLE runs ADD COLUMN llm_cost_usd REAL;
    ALTER TABLE runs ADD COLUMN llm_unpriced_calls INTEGER;
    ",
    ),
    (
        "leaner usage events: ids of 128 bits, rows in the order they are written, and only \
         the indexes the documented queries use",
        "
    CREATE TABLE usage_events_lean (
        id                TEXT NOT NULL,
        session_id        TEXT NOT NULL,
        session_file      TEXT NOT NULL,
        username          TEXT NOT NULL,
        event_uuid        TEXT,
        parent_uuid       TEXT,
        event_type        TEXT NOT NULL,
        tool_name         TEXT,
        skill_name        TEXT,
        subagent_type     TEXT,
        command_name      TEXT,
        is_error          INTEGER NOT NULL,
        model             TEXT,
        cwd               TEXT,
        is_sidechain      INTEGER NOT NULL,
        occurred_at       TEXT,
        processor_version INTEGER NOT NULL,
        agent_id          TEXT
    );
    -- The same events, their ids cut to the first 32 hex digits as new ones are.
    INSERT INTO usage_events_lean SELECT substr(id, 1, 32), session_id, session_file, username,
        event_uuid, parent_uuid, event_type, tool_name, skill_name, subagent_type, command_name,
        is_error, model, cwd, is_sidechain, occurred_at, processor_version, agent_id
        FROM usage_events ORDER BY session_file;
    DROP TABLE usage_events;
    ALTER TABLE usage_events_lean RENAME TO usage_events;
    CREATE INDEX usage_events_by_file ON usage_events (session_file);
    CREATE INDEX usage_events_skill ON usage_events (skill_name) WHERE skill_name IS NOT NULL;
    ",
    ),
    (
        "requests without an index by time",
        "
    -- Requests are summed by scanning them: an index by time costs every
    -- write and serves no documented query.
    DROP INDEX usage_requests_time;
    ",
    ),
    (
        "the source of every row (state, runs, outputs), in every key",
        include_str!("steps/14-source.sql"),
    ),
    (
        "the run history indexed by processor and source",
        include_str!("steps/15-run-history-index.sql"),
    ),
];
