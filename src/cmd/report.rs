//! `sessionpipe report`: tokens and cost per period, user, model and
//! project, for people (a table), scripts (`--json`) and spreadsheets
//! (`--csv`). It only reads, so it runs while a run is writing.

use anyhow::Result;
use serde_json::{Map, Value, json};

use crate::cli::{GroupBy, Period, ReportArgs};
use crate::config::Config;
use crate::printer::Printer;
use crate::spend::{self, Key, Query, Spend, Sums};
use crate::store::{Need, Store};

pub fn report(args: &ReportArgs, config: &Config, printer: &Printer) -> Result<i32> {
    if let Some(user) = &args.user
        && (user.is_empty() || user.contains('/'))
    {
        return Err(crate::exit::fail(
            crate::exit::USAGE,
            format!("--user takes a user folder's name, not {user:?}"),
        ));
    }
    let store = if config.db.exists() {
        Store::for_config(config, Need::Current)?
    } else {
        printer.warn(format_args!(
            "no database at {}: no run has used it yet",
            config.db
        ));
        Store::in_memory()?
    };
    let query = Query {
        period: args.period,
        by: args.by.iter().copied().collect(),
        since: args.since,
        until: args.until,
        tz: args.tz.clone(),
        user: args.user.clone(),
    };
    let spend = spend::spend(store.db(), &query)?;
    if args.json {
        let rows: Vec<Value> = spend
            .rows
            .iter()
            .map(|(k, s)| object(&query, k, s))
            .collect();
        printer.out(Value::Array(rows))?;
    } else if args.csv {
        for line in csv(&query, &spend) {
            printer.out(line)?;
        }
    } else {
        for line in table(&query, &spend).to_string().lines() {
            printer.out(line.trim_end())?;
        }
        for note in notes(&spend) {
            printer.out(note)?;
        }
    }
    Ok(crate::exit::SUCCESS)
}

/// The name of the period column in JSON and CSV.
fn period_field(period: Period) -> &'static str {
    match period {
        Period::Daily => "date",
        Period::Weekly => "week",
        Period::Monthly => "month",
        Period::Session => "session_file",
    }
}

/// Each key asked for, as (JSON field, table header, value).
fn keys<'k>(q: &Query, k: &'k Key) -> Vec<(&'static str, &'static str, &'k str)> {
    let header = match q.period {
        Period::Daily => "Date",
        Period::Weekly => "Week",
        Period::Monthly => "Month",
        Period::Session => "Session",
    };
    let mut out = vec![(period_field(q.period), header, k.period.as_str())];
    for (by, field, header, value) in [
        (GroupBy::User, "username", "User", &k.user),
        (GroupBy::Model, "model", "Model", &k.model),
        (GroupBy::Project, "project", "Project", &k.project),
    ] {
        if q.by.contains(&by) {
            out.push((field, header, value.as_deref().unwrap_or("")));
        }
    }
    out
}

fn numbers(s: &Sums) -> [(&'static str, u64); 5] {
    [
        ("input_tokens", s.input_tokens),
        ("output_tokens", s.output_tokens),
        ("cache_creation_tokens", s.cache_creation_tokens),
        ("cache_read_tokens", s.cache_read_tokens),
        ("total_tokens", s.total_tokens()),
    ]
}

fn object(q: &Query, k: &Key, s: &Sums) -> Value {
    let mut o = Map::new();
    for (field, _, value) in keys(q, k) {
        o.insert(field.into(), value.into());
    }
    for (field, n) in numbers(s) {
        o.insert(field.into(), n.into());
    }
    o.insert("cost_usd".into(), json!(s.cost_usd));
    Value::Object(o)
}

fn csv(q: &Query, spend: &Spend) -> Vec<String> {
    let quote = |v: &str| {
        if v.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", v.replace('"', "\"\""))
        } else {
            v.to_owned()
        }
    };
    let probe = Key::default();
    let mut header: Vec<&str> = keys(q, &probe).iter().map(|(f, _, _)| *f).collect();
    header.extend(numbers(&Sums::default()).map(|(f, _)| f));
    header.push("cost_usd");
    let mut lines = vec![header.join(",")];
    for (k, s) in &spend.rows {
        let mut cells: Vec<String> = keys(q, k).iter().map(|(_, _, v)| quote(v)).collect();
        cells.extend(numbers(s).map(|(_, n)| n.to_string()));
        cells.push(s.cost_usd.map(|c| format!("{c:.6}")).unwrap_or_default());
        lines.push(cells.join(","));
    }
    lines
}

fn table(q: &Query, spend: &Spend) -> comfy_table::Table {
    use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100);
    let probe = Key::default();
    let key_columns = keys(q, &probe).len();
    let mut header: Vec<&str> = keys(q, &probe).iter().map(|(_, h, _)| *h).collect();
    // Total tokens stay in --json and --csv: the table keeps room for names.
    header.extend(["Input", "Output", "Cache write", "Cache read", "Cost"]);
    t.set_header(header);
    let row = |labels: Vec<String>, s: &Sums| {
        let mut cells = labels;
        cells.extend(
            numbers(s)[..4]
                .iter()
                .map(|(_, n)| crate::human::thousands(*n)),
        );
        cells.push(s.cost_usd.map_or("n/a".into(), crate::human::dollars));
        cells
    };
    for (k, s) in &spend.rows {
        t.add_row(row(
            keys(q, k).iter().map(|(_, _, v)| v.to_string()).collect(),
            s,
        ));
    }
    let mut total = vec!["Total".to_owned()];
    total.resize(key_columns, String::new());
    t.add_row(row(total, &spend.total));
    // Two spaces between columns, none around the table: 100 columns hold
    // a date, a user, a dated model name and every figure. Periods and
    // figures are never broken; names and folders wrap when they must.
    let last = key_columns + 4;
    for i in 0..=last {
        if let Some(c) = t.column_mut(i) {
            c.set_padding((0, if i == last { 0 } else { 2 }));
            if i == 0 || i >= key_columns {
                c.set_constraint(ColumnConstraint::ContentWidth);
            }
            if i >= key_columns {
                c.set_cell_alignment(CellAlignment::Right);
            }
        }
    }
    t
}

fn notes(spend: &Spend) -> Vec<String> {
    let mut notes = Vec::new();
    if !spend.unpriced.is_empty() {
        let models: Vec<&str> = spend.unpriced.iter().map(String::as_str).collect();
        notes.push(format!(
            "n/a: no price for {} (add a [prices.\"MODEL\"] section to the config)",
            models.join(", ")
        ));
    }
    if spend.undated > 0 {
        notes.push(format!(
            "{} left out: no timestamp",
            crate::human::count(spend.undated, "request")
        ));
    }
    notes
}
