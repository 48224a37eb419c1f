//! The decision table: one row per situation a state row and a file can be
//! in, with every answer the run and `state` get for it.

use super::*;
use AfterHash::{Attempt, FreeSkip, GiveUp};
use Plan::{HashFirst, HashWhileProcessing};

const VERSION: u32 = 3;
const MAX: u32 = 5;
const SETTLE: Duration = Duration::from_secs(600);

fn stat() -> Stat {
    Stat {
        size: 10,
        mtime_ns: 1_000_000_000_000,
        ctime_ns: 1_000_000_000_000,
        inode: 7,
    }
}

fn changed() -> Stat {
    Stat { size: 12, ..stat() }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(2_000_000_000, 0).unwrap_or_default()
}

fn ok() -> Row {
    Row {
        status: Status::Ok,
        processor_version: VERSION,
        file_hash: Some("h1".into()),
        bytes: 10,
        stat: Some(stat()),
        racy: false,
        settling: false,
        attempts: 0,
        attempt_hash: None,
        next_attempt_at: None,
        first_seen_at: None,
        waiting_since: None,
    }
}

fn failing(status: Status, attempts: u32, hash: Option<&str>) -> Row {
    Row {
        status,
        attempts,
        attempt_hash: hash.map(str::to_owned),
        ..ok()
    }
}

fn later() -> Option<DateTime<Utc>> {
    Some(now() + chrono::Duration::minutes(1))
}

fn earlier() -> Option<DateTime<Utc>> {
    Some(now() - chrono::Duration::seconds(1))
}

/// A situation and the answers: (what, row, stat now, hash now,
/// must_read, plan, after_hash, is_waiting).
type Case = (
    &'static str,
    Option<Row>,
    Stat,
    &'static str,
    bool,
    Plan,
    AfterHash,
    bool,
);

fn table() -> Vec<Case> {
    let failed_due = Row {
        next_attempt_at: earlier(),
        ..failing(Status::Failed, 2, Some("h1"))
    };
    let failed_waiting = Row {
        next_attempt_at: later(),
        ..failing(Status::Failed, 2, Some("h1"))
    };
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("new file", None, stat(), "h1",
            true, HashWhileProcessing, Attempt { attempts: 1 }, true),
        ("unchanged", Some(ok()), stat(), "h1",
            false, HashFirst, FreeSkip, false),
        ("version bump", Some(Row { processor_version: VERSION - 1, ..ok() }), stat(), "h1",
            true, HashWhileProcessing, Attempt { attempts: 1 }, true),
        ("touched, same content", Some(ok()), changed(), "h1",
            true, HashFirst, FreeSkip, true),
        ("grown", Some(ok()), changed(), "h2",
            true, HashFirst, Attempt { attempts: 1 }, true),
        ("racy read, same stat", Some(Row { racy: true, ..ok() }), stat(), "h1",
            true, HashFirst, FreeSkip, false),
        ("racy read, content grew unseen", Some(Row { racy: true, ..ok() }), stat(), "h2",
            true, HashFirst, Attempt { attempts: 1 }, false),
        ("failing, backoff pending", Some(failed_waiting.clone()), stat(), "h1",
            false, HashFirst, FreeSkip, false),
        ("failing, backoff pending, content changed", Some(failed_waiting), changed(), "h2",
            true, HashFirst, Attempt { attempts: 1 }, false),
        ("failing, retry due", Some(failed_due.clone()), stat(), "h1",
            true, HashFirst, Attempt { attempts: 3 }, false),
        ("failing, retry further off than any backoff (the clock was ahead)",
            Some(Row { next_attempt_at: Some(now() + chrono::Duration::days(30)),
                ..failing(Status::Failed, 2, Some("h1")) }), stat(), "h1",
            true, HashFirst, Attempt { attempts: 3 }, false),
        ("failing, no retry time", Some(failing(Status::Failed, 1, Some("h1"))), stat(), "h1",
            true, HashFirst, Attempt { attempts: 2 }, false),
        ("quarantined", Some(failing(Status::Quarantined, MAX, Some("h1"))), stat(), "h1",
            false, HashFirst, FreeSkip, false),
        ("quarantined, touched only", Some(failing(Status::Quarantined, MAX, Some("h1"))),
            changed(), "h1", true, HashFirst, FreeSkip, false),
        ("quarantined then changed", Some(failing(Status::Quarantined, MAX, Some("h1"))),
            changed(), "h2", true, HashFirst, Attempt { attempts: 1 }, false),
        ("quarantined while hashing, same stat", Some(failing(Status::Quarantined, MAX, None)),
            stat(), "h1", false, HashFirst, FreeSkip, false),
        ("run died on it", Some(failing(Status::Processing, 2, Some("h1"))), stat(), "h1",
            true, HashFirst, Attempt { attempts: 3 }, true),
        ("run died on it as often as allowed", Some(failing(Status::Processing, MAX, Some("h1"))),
            stat(), "h1", true, HashFirst, GiveUp { attempts: MAX }, true),
        ("run died while hashing, same stat", Some(failing(Status::Processing, 1, None)),
            stat(), "h1", true, HashFirst, Attempt { attempts: 2 }, true),
        ("run died while hashing, racy", Some(Row { racy: true,
            ..failing(Status::Processing, 1, None) }), stat(), "h1",
            true, HashFirst, Attempt { attempts: 1 }, true),
        ("run died, then the file changed", Some(failing(Status::Processing, 4, None)),
            changed(), "h2", true, HashFirst, Attempt { attempts: 1 }, true),
        ("beside a run's death", Some(failing(Status::Suspect, 1, Some("h1"))), stat(), "h1",
            true, HashFirst, Attempt { attempts: 2 }, true),
        ("beside a run's death, then changed", Some(failing(Status::Suspect, 1, Some("h1"))),
            changed(), "h2", true, HashFirst, Attempt { attempts: 1 }, true),
        ("gone, then back unchanged", Some(Row { status: Status::Gone, ..ok() }), stat(), "h1",
            true, HashFirst, FreeSkip, true),
        ("gone, then back changed", Some(Row { status: Status::Gone, ..ok() }), changed(), "h2",
            true, HashFirst, Attempt { attempts: 1 }, true),
        ("seen, never attempted", Some(Row { status: Status::Pending, file_hash: None,
            stat: None, ..ok() }), stat(), "h1",
            true, HashWhileProcessing, Attempt { attempts: 1 }, true),
        ("requeued", Some(failing(Status::Pending, 0, None)), stat(), "h1",
            true, HashFirst, Attempt { attempts: 1 }, true),
        ("attempts at the top of u32", Some(failing(Status::Processing, u32::MAX, Some("h1"))),
            stat(), "h1", true, HashFirst, GiveUp { attempts: u32::MAX }, true),
    ];
    cases
}

#[test]
fn decision_table() {
    for (what, row, stat, hash, read, plan_, after, waiting) in table() {
        let row = row.as_ref();
        assert_eq!(
            must_read(row, &stat, VERSION, now(), SETTLE),
            read,
            "must_read: {what}"
        );
        assert_eq!(plan(row, VERSION, false), plan_, "plan: {what}");
        assert_eq!(
            plan(row, VERSION, true),
            HashFirst,
            "plan, digest first: {what}"
        );
        assert_eq!(
            after_hash(row, &stat, hash, VERSION, MAX, now()),
            after,
            "after_hash: {what}"
        );
        assert_eq!(
            is_waiting(row, &stat, VERSION),
            waiting,
            "is_waiting: {what}"
        );
    }
}

#[test]
fn a_dead_run_charges_only_a_session_it_ran_alone() {
    assert_eq!(recovered(3, 1), (Status::Processing, 3));
    assert_eq!(recovered(3, 4), (Status::Suspect, 2));
    assert_eq!(recovered(1, 2), (Status::Suspect, 0));
    for (status, isolated) in [
        (Status::Processing, true),
        (Status::Suspect, true),
        (Status::Failed, false),
        (Status::Ok, false),
        (Status::Pending, false),
    ] {
        let row = Row { status, ..ok() };
        assert_eq!(is_isolated(Some(&row)), isolated, "{status:?}");
    }
    assert!(!is_isolated(None));
    assert_eq!(Status::parse("suspect"), Status::Suspect);
}

#[test]
fn an_empty_tree_with_tracked_files_is_a_missing_mount() {
    assert_eq!(vanished(10, 10, 0), Vanished::Refuse);
    assert_eq!(vanished(1, 1, 0), Vanished::Refuse);
    assert_eq!(
        vanished(10, 10, 1),
        Vanished::MarkGone,
        "new files: the tree is there"
    );
    assert_eq!(vanished(10, 3, 7), Vanished::MarkGone);
    assert_eq!(vanished(0, 0, 0), Vanished::MarkGone);
}

#[test]
fn a_fragment_left_before_settling_is_read_again_once_settled_and_only_then() {
    let at = |secs_ago: i64| Stat {
        mtime_ns: (now() - chrono::Duration::seconds(secs_ago))
            .timestamp_nanos_opt()
            .unwrap(),
        ..stat()
    };
    let row = |s: Stat| Row {
        stat: Some(s),
        settling: true,
        ..ok()
    };
    let young = at(300);
    assert!(
        !must_read(Some(&row(young)), &young, VERSION, now(), SETTLE),
        "not yet"
    );
    let old = at(900);
    assert!(
        must_read(Some(&row(old)), &old, VERSION, now(), SETTLE),
        "settled now"
    );
    let ahead = at(-86_400);
    assert!(
        settled(&ahead, now(), SETTLE),
        "a future mtime never settles: it has"
    );
    let seen = after_read(super::seen(young, now()), &young, 5, false);
    assert!(seen.settling);
    let seen = after_read(super::seen(young, now()), &young, young.size, false);
    assert!(!seen.settling, "no fragment");
}

#[test]
fn a_backfill_that_keeps_going_is_not_stalled() {
    let hour = Duration::from_secs(3600);
    let seen = Some(now() - chrono::Duration::hours(2));
    assert!(
        stalled(seen, hour, 0, now()),
        "waiting two hours, nothing done"
    );
    assert!(
        !stalled(seen, hour, 50, now()),
        "waiting, but the runs progress"
    );
    assert!(!stalled(Some(now()), hour, 0, now()));
    assert!(!stalled(None, hour, 0, now()));
}

#[test]
fn unreadable_files_count_until_quarantined_and_then_stay() {
    assert_eq!(unreadable(None), Unreadable::Fail { attempts: 1 });
    let failed = failing(Status::Failed, 2, None);
    assert_eq!(unreadable(Some(&failed)), Unreadable::Fail { attempts: 3 });
    let quarantined = failing(Status::Quarantined, MAX, None);
    assert_eq!(unreadable(Some(&quarantined)), Unreadable::Skip);
    // Failures on readable content are another matter: the count restarts.
    let other = failing(Status::Failed, 2, Some("h1"));
    assert_eq!(unreadable(Some(&other)), Unreadable::Fail { attempts: 1 });
}

#[test]
fn failures_back_off_then_quarantine() {
    let first = after_failure(1, MAX, now());
    assert!(!first.quarantined);
    assert_eq!(
        first.next_attempt_at,
        Some(now() + chrono::Duration::minutes(1))
    );
    let last = after_failure(MAX, MAX, now());
    assert_eq!(
        last,
        Retry {
            quarantined: true,
            next_attempt_at: None
        }
    );
    assert_eq!(uncharged(3), 2);
    assert_eq!(uncharged(0), 0);
}

#[test]
fn backoff_doubles_from_a_minute_to_six_hours() {
    assert_eq!(backoff(0), Duration::from_secs(60));
    assert_eq!(backoff(1), Duration::from_secs(60));
    assert_eq!(backoff(2), Duration::from_secs(120));
    assert_eq!(backoff(4), Duration::from_secs(480));
    assert_eq!(backoff(9), Duration::from_secs(256 * 60));
    assert_eq!(backoff(10), Duration::from_secs(6 * 3600));
    assert_eq!(backoff(u32::MAX), Duration::from_secs(6 * 3600));
}

#[test]
fn racy_within_two_seconds_of_the_mtime() {
    let s = stat();
    let at = |ns: i64| DateTime::from_timestamp_nanos(ns);
    assert!(is_racy(&s, at(s.mtime_ns + 1_999_999_999)));
    assert!(!is_racy(&s, at(s.mtime_ns + 2_000_000_001)));
    let ahead = |secs: i64| Stat {
        mtime_ns: now().timestamp_nanos_opt().unwrap() + secs * 1_000_000_000,
        ..s
    };
    assert!(
        is_racy(&ahead(1), now()),
        "a second ahead: the same tick, perhaps"
    );
    assert!(
        !is_racy(&ahead(3600), now()),
        "an hour ahead: read once, not every run"
    );
    assert!(!is_racy(
        &Stat {
            mtime_ns: i64::MAX,
            ..s
        },
        now()
    ));
}

#[test]
fn due_after_the_cadence_or_when_the_last_start_lies_in_the_future() {
    let ten = Duration::from_secs(600);
    let at = |mins: i64| Some(now() + chrono::Duration::minutes(mins));
    assert!(is_due(None, ten, now()));
    assert!(!is_due(at(-5), ten, now()));
    assert!(is_due(at(-10), ten, now()));
    assert!(
        is_due(
            at(-9).map(|t| t - chrono::Duration::seconds(56)),
            ten,
            now()
        ),
        "5 s slack"
    );
    assert!(
        is_due(at(90), ten, now()),
        "a start in the future: the clock was ahead"
    );
    assert!(!is_due(at(-1), Duration::MAX, now()));
}

#[test]
fn a_file_settles_once_quiet_or_once_it_has_waited_long_enough() {
    let settle = Settle {
        quiet: Duration::from_secs(1800),
        max_wait: Duration::from_secs(6 * 3600),
    };
    let written = |ago: i64| Stat {
        mtime_ns: (now() - chrono::Duration::seconds(ago))
            .timestamp_nanos_opt()
            .unwrap_or(0),
        ..stat()
    };
    let since = |ago_hours: i64| Some(now() - chrono::Duration::hours(ago_hours));
    assert!(
        is_settling(None, &written(60), now(), settle),
        "just written"
    );
    assert!(is_settling(since(5), &written(60), now(), settle));
    assert!(
        !is_settling(since(6), &written(60), now(), settle),
        "waited six hours"
    );
    assert!(
        !is_settling(None, &written(1800), now(), settle),
        "quiet for the settle time"
    );
    assert!(
        is_settling(None, &written(-7200), now(), settle),
        "dated two hours ahead: no telling it is quiet"
    );
    assert!(
        !is_settling(since(6), &written(-7200), now(), settle),
        "...so it waits no longer than the longest wait"
    );
    assert!(
        !is_settling(
            Some(now() + chrono::Duration::hours(3)),
            &written(60),
            now(),
            settle
        ),
        "a wait that began in the future is over"
    );
    let never_wait = Settle {
        max_wait: Duration::ZERO,
        ..settle
    };
    assert!(!is_settling(None, &written(60), now(), never_wait));
}

#[test]
fn what_was_processed_before_is_known_only_at_the_same_version_and_not_after_a_requeue() {
    assert_eq!(processed_before(Some(&ok()), VERSION), Some(("h1", 10)));
    let failed = failing(Status::Failed, 1, Some("h2"));
    assert_eq!(processed_before(Some(&failed), VERSION), Some(("h1", 10)));
    assert_eq!(processed_before(Some(&ok()), VERSION + 1), None);
    let requeued = Row {
        status: Status::Pending,
        ..ok()
    };
    assert_eq!(processed_before(Some(&requeued), VERSION), None);
    assert_eq!(processed_before(None, VERSION), None);
}
