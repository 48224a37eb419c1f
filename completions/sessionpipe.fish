# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_sessionpipe_global_optspecs
    string join \n config= data-dir= db= v/verbose q/quiet h/help V/version
end

function __fish_sessionpipe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_sessionpipe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_sessionpipe_using_subcommand
    set -l cmd (__fish_sessionpipe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -s V -l version -d 'Print version'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -f -a "run" -d 'Run processors over new and changed session files'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -f -a "list" -d 'List every processor, built-in and configured, with a crontab line'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -f -a "state" -d 'Show processor state; requeue or reset sessions'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -f -a "migrate" -d 'Create or upgrade the database schema; import the legacy table'
complete -c sessionpipe -n "__fish_sessionpipe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l wait -d 'Wait up to DUR for a busy lock instead of exiting at once' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l busy-exit-code -d 'Exit code when another run holds the lock (like `flock -E`), 0 to 255' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l max-attempts -d 'Failed attempts on the same content before a session is quarantined' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l max-sessions -d 'Process at most N sessions (free skips of unchanged files don\'t count)' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l time-budget -d 'Stop visiting new candidates once DUR has passed' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -s j -l jobs -d 'Sessions read and processed in parallel [default: available cores]' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l all -d 'Run every available processor'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l due -d 'Run each processor whose cadence has elapsed since its last run started'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l dry-run -d 'List what would be processed; change nothing'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -l json -d 'Print one JSON object per processor run on stdout'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -l json -d 'Print a JSON array on stdout'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l session -d 'Show the state row of one session file (<key>/<file>.jsonl)' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l max-age -d 'With --check: the longest time since a finished run (default 2x cadence)' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l failed -d 'List failing and quarantined sessions with attempts and last error'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l check -d 'For monitors: exit 1 with a one-line reason when a processor is unhealthy'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -l json -d 'Print JSON on stdout'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -a "requeue" -d 'Clear failures so the sessions are processed on the next run'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -a "reset" -d 'Forget every state row of a processor: the next runs reprocess all'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -a "prune" -d 'Remove the rows and outputs of sessions whose files are gone'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and not __fish_seen_subcommand_from requeue reset prune help" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -l failed -d 'Requeue every failing session (quarantined ones included)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -l quarantined -d 'Requeue every quarantined session'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from requeue" -s h -l help -d 'Print help'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from reset" -s h -l help -d 'Print help'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -l older-than -d 'Only those last processed more than DUR ago' -r
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -l gone -d 'Prune the sessions whose files are gone (what prune always prunes; kept for scripts that say so)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "requeue" -d 'Clear failures so the sessions are processed on the next run'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "reset" -d 'Forget every state row of a processor: the next runs reprocess all'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Remove the rows and outputs of sessions whose files are gone'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand state; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -l config -d 'Config file (TOML); default /etc/sessionpipe/config.toml when present [env: SESSIONPIPE_CONFIG]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -l data-dir -d 'Folder holding <key>/*.jsonl; default /data/user_sessions [env: SESSION_DATA_DIR]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -l db -d 'State database; default /var/lib/sessionpipe/state.db [env: SESSIONPIPE_DB]' -r -F
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -l status -d 'Print current and target schema version and pending steps; change nothing'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -s v -l verbose -d 'Log what happens to stderr (a progress bar too, when stderr is a terminal)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -s q -l quiet -d 'Print no warnings (errors are still printed)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand migrate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and not __fish_seen_subcommand_from run list state migrate help" -f -a "run" -d 'Run processors over new and changed session files'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and not __fish_seen_subcommand_from run list state migrate help" -f -a "list" -d 'List every processor, built-in and configured, with a crontab line'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and not __fish_seen_subcommand_from run list state migrate help" -f -a "state" -d 'Show processor state; requeue or reset sessions'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and not __fish_seen_subcommand_from run list state migrate help" -f -a "migrate" -d 'Create or upgrade the database schema; import the legacy table'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and not __fish_seen_subcommand_from run list state migrate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "requeue" -d 'Clear failures so the sessions are processed on the next run'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "reset" -d 'Forget every state row of a processor: the next runs reprocess all'
complete -c sessionpipe -n "__fish_sessionpipe_using_subcommand help; and __fish_seen_subcommand_from state" -f -a "prune" -d 'Remove the rows and outputs of sessions whose files are gone'
