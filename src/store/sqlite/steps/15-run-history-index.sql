    -- Step 15 of both engines (PostgreSQL's includes this file).
    -- Every query of the run history names a processor and a source; the
    -- index by processor and start time alone made each run's prune read
    -- and sort a week of runs (10,080 rows) to find the oldest kept.
    DROP INDEX runs_by_processor;
    CREATE INDEX runs_by_processor ON runs (processor_name, source, started_at);
    CREATE INDEX runs_by_processor_id ON runs (processor_name, source, id);
    CREATE INDEX runs_by_processor_finished ON runs (processor_name, source, finished_at);
