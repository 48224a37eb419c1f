//! The PostgreSQL store against real servers the tests start: the same
//! tables and output as SQLite after the same commands (`parity`), locks,
//! shards and addresses between hosts (`hosts`), and crashes (`crash`).

mod crash;
mod hosts;
mod parity;

use std::path::Path;
use std::time::Duration;

use sessionpipe::store::sql::Value;
use sessionpipe::store::{Location, Need, Store};

use crate::util::Env;

/// A value as compared across engines: reals to within rounding (SQLite's
/// julian days and PostgreSQL's epochs differ in the last bits).
#[derive(Debug)]
pub(super) enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Real(a), Cell::Real(b)) => (a - b).abs() <= 1e-3_f64.max(1e-9 * a.abs()),
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }
}

/// Every row `sql` selects, through the store interface of either engine.
pub(super) fn rows(at: &Location, sql: &str) -> Vec<Vec<Cell>> {
    let store = Store::open(at, Need::Current, Duration::from_secs(5)).unwrap();
    store
        .db()
        .rows(sql, &[], |r| {
            (0..r.len())
                .map(|i| {
                    Ok(match r.value(i)? {
                        Value::Null => Cell::Null,
                        Value::Int(n) => Cell::Int(n),
                        Value::Real(x) => Cell::Real(x),
                        Value::Text(t) => Cell::Text(t.to_owned()),
                    })
                })
                .collect()
        })
        .unwrap()
}

/// What the usage processor and the state rows hold, table by table.
pub(super) const COMPARED: &[&str] = &[
    "SELECT * FROM usage_events ORDER BY session_file, id, event_type, occurred_at",
    "SELECT * FROM usage_requests ORDER BY session_file, line",
    "SELECT * FROM usage_file_summary ORDER BY session_file",
    "SELECT * FROM usage_session_summary ORDER BY session_file",
    "SELECT * FROM usage_model_prices ORDER BY model",
    "SELECT session_file, line, cost_usd, price_key FROM usage_request_costs
     ORDER BY session_file, line",
    "SELECT * FROM processor_settings ORDER BY processor_name, key",
    "SELECT processor_name, session_file, username, items_extracted, file_hash,
         bytes_processed, processor_version, file_size, mtime_ns, ctime_ns, inode, read_racy,
         status, attempts, attempt_hash, last_error
     FROM session_processor_state ORDER BY processor_name, session_file",
    "SELECT processor_name, scanned, candidates, processed, skipped, capped, errors,
         quarantined, items_extracted, exit_code
     FROM runs ORDER BY id",
];

/// A command's JSON without what differs from run to run (times,
/// durations, the order workers finished in).
pub(super) fn scrub(mut v: serde_json::Value) -> serde_json::Value {
    const VOLATILE: &[&str] = &[
        "started_at",
        "finished_at",
        "last_processed_at",
        "last_finished_at",
        "next_attempt_at",
        "duration_ms",
        "lag_seconds",
        "oldest_unprocessed_seconds",
    ];
    match &mut v {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !VOLATILE.contains(&k.as_str()));
            // Workers finish in no set order.
            if let Some(serde_json::Value::Array(errors)) = map.get_mut("errors_detail") {
                errors.sort_by_key(|e| e.to_string());
            }
            for value in map.values_mut() {
                *value = scrub(value.take());
            }
        }
        serde_json::Value::Array(items) => {
            for value in items.iter_mut() {
                *value = scrub(value.take());
            }
        }
        _ => {}
    }
    v
}

pub(super) fn on(env: &Env, address: &str) -> assert_cmd::Command {
    assert_cmd::Command::from_std(env.std_cmd_on(Path::new(address)))
}

/// `migrate --from sqlite:FILE` into the server.
pub(super) fn migrate_from(env: &Env, address: &str, file: &Path) -> assert_cmd::Command {
    let mut cmd = on(env, address);
    cmd.arg("migrate")
        .arg("--from")
        .arg(format!("sqlite:{}", file.display()));
    cmd
}

/// `run ARGS --json` on the server: its one report, after exit 0.
pub(super) fn run_on(env: &Env, address: &str, args: &[&str]) -> serde_json::Value {
    let out = on(env, address)
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
