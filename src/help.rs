//! The long help after the options, for `--help` and the man pages (which
//! are generated from it, one section per `HEADING:` block): the exit
//! codes from [`crate::exit`], the environment, the files, the whole
//! configuration file, examples, and where to look next.

/// `sessionpipe --help` and sessionpipe(1).
pub fn main() -> String {
    format!(
        "{}\n{ENVIRONMENT}\n{CONFIGURATION}\n{MAIN_EXAMPLES}\n{}",
        crate::exit::help_section(),
        see_also(&["run", "list", "state", "migrate"])
    )
}

/// `sessionpipe run --help` and sessionpipe-run(1).
pub fn run() -> String {
    page(RUN_EXAMPLES, &["state", "list"])
}

pub fn list() -> String {
    page(LIST_EXAMPLES, &["run"])
}

pub fn state() -> String {
    page(STATE_EXAMPLES, &["run"])
}

pub fn migrate() -> String {
    page(MIGRATE_EXAMPLES, &["state"])
}

pub fn report() -> String {
    page(REPORT_EXAMPLES, &["run", "state"])
}

/// A subcommand's page: its exit codes, its examples, its neighbours.
fn page(examples: &str, see: &[&str]) -> String {
    format!(
        "{}\n{examples}\n{}",
        crate::exit::help_section(),
        see_also(see)
    )
}

fn see_also(pages: &[&str]) -> String {
    let mut names: Vec<String> = std::iter::once("sessionpipe(1)".to_owned())
        .chain(pages.iter().map(|p| format!("sessionpipe-{p}(1)")))
        .collect();
    names.push("crontab(5)".to_owned());
    format!("SEE ALSO:\n  {}\n", names.join(", "))
}

const ENVIRONMENT: &str = "\
ENVIRONMENT:
  SESSION_DATA_DIR     data dir, as --data-dir
  SESSIONPIPE_DB       state database, as --db
  SESSIONPIPE_CONFIG   config file, as --config
  SESSIONPIPE_LLM_PROVIDER, SESSIONPIPE_LLM_BASE_URL, SESSIONPIPE_LLM_MODEL
                       override [llm] provider, base_url and model
  SESSIONPIPE_LLM_API_KEY
                       the LLM key for `verification` (else ANTHROPIC_API_KEY
                       or OPENAI_API_KEY, as the provider needs)
  External-command processors read the session file on stdin (also their
  last argument, /dev/stdin) and receive SESSIONPIPE_PROCESSOR,
  SESSIONPIPE_SESSION_FILE, SESSIONPIPE_SESSION_KEY, SESSIONPIPE_SESSION_PATH,
  SESSIONPIPE_FILE_HASH and SESSIONPIPE_BYTES; the LLM's credentials are
  removed from their environment.

FILES:
  /etc/sessionpipe/config.toml          config file, read when present
  /data/user_sessions/<key>/*.jsonl     default data dir layout; usage also
                                        reads <key>/<session>/subagents/agent-*.jsonl
  /var/lib/sessionpipe/state.db         default state database (SQLite, WAL)
  <db>.<processor>.lock                 per-processor lock and attempt journal,
                                        beside the resolved database file
";

const CONFIGURATION: &str = "\
CONFIGURATION:
  The config file is TOML (default /etc/sessionpipe/config.toml, when
  present). Flags win over environment variables, which win over the file,
  which wins over the defaults. Relative paths in the file are relative to
  its folder. It is refused unless owned by you or root and not writable by
  group or others; an unknown key or a bad value names itself (exit 78).
  Durations read 500ms, 90s, 10m, 6h, 1d or sums such as 1h30m.

  data_dir = \"/data/user_sessions\"    session files, <key>/*.jsonl
  db = \"/var/lib/sessionpipe/state.db\"
  busy_timeout = \"30s\"                wait for another database writer
  source = \"eu-1\"                     this data dir's name in a shared
                                      PostgreSQL database (default none)
  fragment_settle = \"10m\"             quiet this long, a last line without a
                                      newline counts (if it is whole JSON)
  [usage]
  enabled = true                      false: left out of --all and --due
  identities = \"users.csv\"            lines key,email; rows then name people
  [prices.\"MODEL\"]                    a price over the built-in table, in
                                      dollars per million tokens
  input = 3.0
  output = 15.0
  cache_write_5m = 3.75               else 1.25 x input
  cache_write_1h = 6.0                else 2 x input
  cache_read = 0.3                    else 0.1 x input
  [verification]
  enabled = true                      true: warn when it cannot run
  max_sessions = 50                   per run, unless --max-sessions
  time_budget = \"10m\"                 per run, unless --time-budget
  [llm]
  provider = \"anthropic\"              or \"openai\" (any compatible server)
  base_url = \"https://api.anthropic.com\"
  model = \"claude-haiku-4-5\"
  api_key_env = \"ANTHROPIC_API_KEY\"   the variable holding the key
  timeout = \"60s\"                     per call
  [processors.NAME]                   an external command, once per session
  command = [\"/usr/local/bin/x\"]      run without a shell; the session file
                                      on stdin and as /dev/stdin
  version = 1                         bump it: every session again
  cadence = \"30m\"                     for run --due and state --check
  timeout = \"10m\"                     then its process group is killed
  env = [\"TEAM_KEY\"]                  credential variables it may see
  enabled = true

  A failed session is retried after 1 minute, doubling up to 6 hours, and
  quarantined after --max-attempts failures on the same content, until the
  content changes or `state requeue`. A command exiting 75 is retried after
  a minute, uncharged.
";

const REPORT_EXAMPLES: &str = "\
EXAMPLES:
  What each of us spent per day this month, on which model:
    sessionpipe report daily --by user,model --since 2026-12-01
  Monthly cost per project, in Berlin's calendar, for a spreadsheet:
    sessionpipe report monthly --by project --tz Europe/Berlin --csv
  The most expensive sessions of one user, for a script:
    sessionpipe report session --user alice --json
";

const MAIN_EXAMPLES: &str = "\
EXAMPLES:
  Drive every processor at its own cadence from one crontab line:
    * * * * * sessionpipe run --due
  Or one line per processor (`sessionpipe list` prints them):
    */10 * * * * sessionpipe run usage
  Treat an overlapping run as success, cap the work of one tick:
    */10 * * * * sessionpipe run usage --busy-exit-code 0 --time-budget 8m
  Alert when a processor falls behind:
    */5 * * * * sessionpipe state --check || notify-ops
";

const RUN_EXAMPLES: &str = "\
EXAMPLES:
  Every processor at its cadence, silent when healthy:
    * * * * * sessionpipe run --due
  One processor by hand, with its report:
    sessionpipe run usage --json
  What a run would process, changing nothing:
    sessionpipe run verification --dry-run
";

const LIST_EXAMPLES: &str = "\
EXAMPLES:
  Crontab lines to paste, with this binary's path and the paths given:
    sessionpipe --config /etc/sessionpipe/config.toml list
";

const STATE_EXAMPLES: &str = "\
EXAMPLES:
  For a monitor: exit 1 with the reasons when something is wrong:
    */5 * * * * sessionpipe state --check || notify-ops
  What failed, and why:
    sessionpipe state usage --failed
  Release quarantined sessions; drop the outputs of deleted files:
    sessionpipe state requeue usage --quarantined
    sessionpipe state prune usage --gone --older-than 90d
";

const MIGRATE_EXAMPLES: &str = "\
EXAMPLES:
  What an upgrade would do, then do it:
    sessionpipe migrate --status
    sessionpipe migrate
";
