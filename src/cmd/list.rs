//! `sessionpipe list`: every processor, whether it can run here, and a
//! crontab line for it.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::ListArgs;
use crate::config::Config;
use crate::duration;
use crate::exit;
use crate::printer::Printer;

#[derive(Serialize)]
struct Entry {
    name: String,
    kind: &'static str,
    version: u32,
    cadence: String,
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    crontab: String,
}

pub fn list(args: &ListArgs, config: &Config, printer: &Printer) -> Result<i32> {
    let command = invocation(config);
    let entries: Vec<Entry> = crate::processor::registry(config)
        .iter()
        .map(|p| {
            let reason = p.unavailable();
            Entry {
                name: p.name().to_owned(),
                kind: p.kind(),
                version: p.version(),
                cadence: duration::format(p.cadence()),
                available: reason.is_none(),
                crontab: crontab_line(&command, p.name(), p.cadence()),
                reason,
            }
        })
        .collect();
    if args.json {
        printer.out(format_args!("{}", serde_json::to_string_pretty(&entries)?))?;
        return Ok(exit::SUCCESS);
    }
    if entries.is_empty() {
        printer.out(format_args!("no processors"))?;
    }
    for e in &entries {
        let status = match &e.reason {
            None => "available".to_owned(),
            Some(why) => format!("unavailable: {why}"),
        };
        printer.out(format_args!(
            "{}\t{} v{}, every {}, {status}\n\t{}",
            e.name, e.kind, e.version, e.cadence, e.crontab
        ))?;
    }
    Ok(exit::SUCCESS)
}

/// The command a crontab line runs: this binary by its absolute path, with
/// the paths this invocation was given, quoted for the shell cron uses.
fn invocation(config: &Config) -> String {
    let binary = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "sessionpipe".to_owned());
    let mut words = vec![shell_quote(&binary)];
    for (flag, path) in &config.given {
        words.push((*flag).to_owned());
        words.push(shell_quote(&path.display().to_string()));
    }
    words.join(" ")
}

/// A word as `sh` reads it back: bare when safe, else in single quotes.
fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// A crontab line that runs the processor at its cadence, or the `--due`
/// line when the cadence has no exact cron schedule. `%` is special in a
/// crontab line: escaped.
pub fn crontab_line(command: &str, name: &str, cadence: Duration) -> String {
    let secs = cadence.as_secs();
    let schedule = match (secs % 60, secs / 60) {
        (0, 1) => Some("* * * * *".to_owned()),
        (0, m) if m > 0 && m < 60 && 60 % m == 0 => Some(format!("*/{m} * * * *")),
        (0, 60) => Some("0 * * * *".to_owned()),
        (0, m) if m % 60 == 0 && m < 1440 && 1440 % m == 0 => Some(format!("0 */{} * * *", m / 60)),
        (0, 1440) => Some("0 0 * * *".to_owned()),
        _ => None,
    };
    let command = command.replace('%', "\\%");
    match schedule {
        Some(s) => format!("{s} {command} run {name}"),
        None => format!("* * * * * {command} run --due"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_lines() {
        let line = |s| crontab_line("sessionpipe", "x", Duration::from_secs(s));
        assert_eq!(line(600), "*/10 * * * * sessionpipe run x");
        assert_eq!(line(60), "* * * * * sessionpipe run x");
        assert_eq!(line(3600), "0 * * * * sessionpipe run x");
        assert_eq!(line(6 * 3600), "0 */6 * * * sessionpipe run x");
        assert_eq!(line(86_400), "0 0 * * * sessionpipe run x");
        assert_eq!(line(7 * 60), "* * * * * sessionpipe run --due");
        assert_eq!(line(90), "* * * * * sessionpipe run --due");
        assert_eq!(
            crontab_line("/bin/sp --db '/a b'", "x", Duration::from_secs(60)),
            "* * * * * /bin/sp --db '/a b' run x"
        );
        assert_eq!(
            crontab_line("/x%y", "x", Duration::from_secs(60)),
            "* * * * * /x\\%y run x"
        );
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("/usr/bin/sessionpipe"), "/usr/bin/sessionpipe");
        assert_eq!(shell_quote("/a b"), "'/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
