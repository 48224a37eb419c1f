
    -- The source a row came from (`source` in the config; '' for none), in
    -- every key, so that hosts with data dirs of their own share a database.
    DROP VIEW usage_request_costs;
    CREATE TABLE new_session_processor_state (
        processor_name TEXT NOT NULL,
        session_file TEXT NOT NULL,
        username TEXT NOT NULL,
        processed_at TEXT,
        items_extracted INTEGER NOT NULL DEFAULT 0,
        file_hash TEXT,
        bytes_processed INTEGER NOT NULL DEFAULT 0,
        processor_version INTEGER NOT NULL DEFAULT 0,
        file_size INTEGER,
        mtime_ns INTEGER,
        ctime_ns INTEGER,
        inode INTEGER,
        read_racy INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        attempt_hash TEXT,
        last_error TEXT,
        next_attempt_at TEXT,
        first_seen_at TEXT,
        waiting_since TEXT,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (processor_name, session_file, source)
    ) WITHOUT ROWID;
    INSERT INTO new_session_processor_state (processor_name, session_file, username, processed_at, items_extracted, file_hash, bytes_processed, processor_version, file_size, mtime_ns, ctime_ns, inode, read_racy, status, attempts, attempt_hash, last_error, next_attempt_at, first_seen_at, waiting_since)
        SELECT processor_name, session_file, username, processed_at, items_extracted, file_hash, bytes_processed, processor_version, file_size, mtime_ns, ctime_ns, inode, read_racy, status, attempts, attempt_hash, last_error, next_attempt_at, first_seen_at, waiting_since FROM session_processor_state;
    DROP TABLE session_processor_state;
    ALTER TABLE new_session_processor_state RENAME TO session_processor_state;
    CREATE TABLE new_processor_settings (
        processor_name TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (processor_name, key, source)
    ) WITHOUT ROWID;
    INSERT INTO new_processor_settings (processor_name, key, value)
        SELECT processor_name, key, value FROM processor_settings;
    DROP TABLE processor_settings;
    ALTER TABLE new_processor_settings RENAME TO processor_settings;
    CREATE TABLE new_usage_requests (
        session_file TEXT NOT NULL,
        line INTEGER NOT NULL,
        session_id TEXT NOT NULL,
        username TEXT NOT NULL,
        model TEXT,
        occurred_at TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cache_creation_5m_tokens INTEGER NOT NULL,
        cache_creation_1h_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        is_sidechain INTEGER NOT NULL,
        is_fast INTEGER NOT NULL,
        processor_version INTEGER NOT NULL,
        agent_id TEXT,
        request_key TEXT,
        counted INTEGER NOT NULL DEFAULT 1,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_file, line, source)
    ) WITHOUT ROWID;
    INSERT INTO new_usage_requests (session_file, line, session_id, username, model, occurred_at, input_tokens, output_tokens, cache_creation_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, is_sidechain, is_fast, processor_version, agent_id, request_key, counted)
        SELECT session_file, line, session_id, username, model, occurred_at, input_tokens, output_tokens, cache_creation_tokens, cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens, is_sidechain, is_fast, processor_version, agent_id, request_key, counted FROM usage_requests;
    DROP TABLE usage_requests;
    ALTER TABLE new_usage_requests RENAME TO usage_requests;
    CREATE INDEX usage_requests_uncounted ON usage_requests (session_file, source) WHERE NOT counted;
    CREATE TABLE new_usage_file_summary (
        session_file TEXT NOT NULL,
        session TEXT NOT NULL,
        session_id TEXT NOT NULL,
        username TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        wall_seconds REAL NOT NULL,
        active_seconds REAL NOT NULL,
        user_prompts INTEGER NOT NULL,
        assistant_messages INTEGER NOT NULL,
        tool_calls INTEGER NOT NULL,
        tool_errors INTEGER NOT NULL,
        skill_invocations INTEGER NOT NULL,
        subagent_dispatches INTEGER NOT NULL,
        mcp_calls INTEGER NOT NULL,
        slash_commands INTEGER NOT NULL,
        distinct_tools INTEGER NOT NULL,
        distinct_skills INTEGER NOT NULL,
        primary_model TEXT,
        models TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        malformed_lines INTEGER NOT NULL,
        processor_version INTEGER NOT NULL,
        project TEXT,
        claude_version TEXT,
        git_branch TEXT,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_file, source)
    ) WITHOUT ROWID;
    INSERT INTO new_usage_file_summary (session_file, session, session_id, username, started_at, ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project, claude_version, git_branch)
        SELECT session_file, session, session_id, username, started_at, ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project, claude_version, git_branch FROM usage_file_summary;
    DROP TABLE usage_file_summary;
    ALTER TABLE new_usage_file_summary RENAME TO usage_file_summary;
    CREATE INDEX usage_file_summary_by_session ON usage_file_summary (session, source);
    CREATE TABLE new_usage_session_summary (
        session_file TEXT NOT NULL,
        session_id TEXT NOT NULL,
        username TEXT NOT NULL,
        started_at TEXT,
        ended_at TEXT,
        wall_seconds REAL NOT NULL,
        active_seconds REAL NOT NULL,
        user_prompts INTEGER NOT NULL,
        assistant_messages INTEGER NOT NULL,
        tool_calls INTEGER NOT NULL,
        tool_errors INTEGER NOT NULL,
        skill_invocations INTEGER NOT NULL,
        subagent_dispatches INTEGER NOT NULL,
        mcp_calls INTEGER NOT NULL,
        slash_commands INTEGER NOT NULL,
        distinct_tools INTEGER NOT NULL,
        distinct_skills INTEGER NOT NULL,
        primary_model TEXT,
        models TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_creation_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        malformed_lines INTEGER NOT NULL,
        processor_version INTEGER NOT NULL,
        project TEXT,
        claude_version TEXT,
        git_branch TEXT,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_file, source)
    ) WITHOUT ROWID;
    INSERT INTO new_usage_session_summary (session_file, session_id, username, started_at, ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project, claude_version, git_branch)
        SELECT session_file, session_id, username, started_at, ended_at, wall_seconds, active_seconds, user_prompts, assistant_messages, tool_calls, tool_errors, skill_invocations, subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills, primary_model, models, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines, processor_version, project, claude_version, git_branch FROM usage_session_summary;
    DROP TABLE usage_session_summary;
    ALTER TABLE new_usage_session_summary RENAME TO usage_session_summary;
    CREATE TABLE new_verification_sessions (
        session_file TEXT NOT NULL,
        username TEXT NOT NULL,
        items INTEGER NOT NULL,
        dropped_invalid INTEGER NOT NULL,
        dropped_unsupported INTEGER NOT NULL,
        model TEXT NOT NULL,
        processed_at TEXT NOT NULL,
        llm_calls INTEGER NOT NULL DEFAULT 0,
        llm_input_tokens INTEGER NOT NULL DEFAULT 0,
        llm_output_tokens INTEGER NOT NULL DEFAULT 0,
        llm_cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
        llm_cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        llm_cost_usd REAL NOT NULL DEFAULT 0,
        llm_unpriced_calls INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (session_file, source)
    ) WITHOUT ROWID;
    INSERT INTO new_verification_sessions (session_file, username, items, dropped_invalid, dropped_unsupported, model, processed_at, llm_calls, llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens, llm_cache_read_tokens, llm_cost_usd, llm_unpriced_calls)
        SELECT session_file, username, items, dropped_invalid, dropped_unsupported, model, processed_at, llm_calls, llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens, llm_cache_read_tokens, llm_cost_usd, llm_unpriced_calls FROM verification_sessions;
    DROP TABLE verification_sessions;
    ALTER TABLE new_verification_sessions RENAME TO verification_sessions;
    CREATE TABLE new_verification_evidence (
        item_id TEXT NOT NULL REFERENCES knowledge_items (id),
        source_user TEXT NOT NULL,
        source_ref TEXT NOT NULL,
        detection_type TEXT NOT NULL,
        user_quote TEXT NOT NULL,
        created_at TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        UNIQUE (item_id, source_user, source_ref, source)
    );
    INSERT INTO new_verification_evidence (item_id, source_user, source_ref, detection_type, user_quote, created_at)
        SELECT item_id, source_user, source_ref, detection_type, user_quote, created_at FROM verification_evidence;
    DROP TABLE verification_evidence;
    ALTER TABLE new_verification_evidence RENAME TO verification_evidence;
    ALTER TABLE usage_events ADD COLUMN source TEXT NOT NULL DEFAULT '';
    DROP INDEX usage_events_by_file;
    CREATE INDEX usage_events_by_file ON usage_events (session_file, source);
    ALTER TABLE runs ADD COLUMN source TEXT NOT NULL DEFAULT '';
    ALTER TABLE knowledge_items ADD COLUMN source TEXT NOT NULL DEFAULT '';
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
    