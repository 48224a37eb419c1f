//! `sessionpipe migrate`: create or upgrade the schema, import the legacy
//! table; `--status` only tells.

use anyhow::Result;

use crate::cli::MigrateArgs;
use crate::config::Config;
use crate::exit;
use crate::printer::Printer;
use crate::store::{Need, Store, migrations};

pub fn migrate(args: &MigrateArgs, config: &Config, printer: &Printer) -> Result<i32> {
    if let Some(from) = &args.from {
        return copy_from(from, config, printer);
    }
    let shown = &config.db;
    if args.status {
        if !config.db.exists() {
            printer.out(format_args!(
                "database {shown} does not exist; migrate creates it at version {}",
                migrations::target_version()
            ))?;
            return Ok(exit::SUCCESS);
        }
        let store = Store::for_config(config, Need::Any)?;
        let current = store.schema_version()?;
        let target = store.target_version();
        printer.out(format_args!(
            "database {shown}: schema version {current}, this sessionpipe: {target}"
        ))?;
        let pending = store.pending()?;
        if pending.is_empty() {
            printer.out(format_args!("nothing pending"))?;
        }
        for step in pending {
            printer.out(format_args!("pending: {step}"))?;
        }
        return Ok(exit::SUCCESS);
    }
    let mut store = Store::for_config(config, Need::Any)?;
    let done = store.migrate()?;
    let target = store.target_version();
    if done.is_empty() {
        printer.out(format_args!(
            "database {shown} is up to date (schema version {target})"
        ))?;
    }
    for step in done {
        printer.out(format_args!("applied: {step}"))?;
    }
    Ok(exit::SUCCESS)
}

/// `--from sqlite:PATH`: the SQLite database copied into the PostgreSQL one.
fn copy_from(from: &std::path::Path, config: &Config, printer: &Printer) -> Result<i32> {
    if config.db.file().is_some() {
        return Err(exit::fail(
            exit::USAGE,
            "--from copies a SQLite database into PostgreSQL: --db must be postgresql://…",
        ));
    }
    let source = crate::store::copy::open_source(from)?;
    let target = Store::for_config(config, Need::Current)?;
    for (table, rows) in crate::store::copy::copy(&source, &target, &config.db)? {
        printer.out(format_args!("copied {rows} rows of {table}"))?;
    }
    Ok(exit::SUCCESS)
}
