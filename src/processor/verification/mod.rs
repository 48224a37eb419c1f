//! The built-in `verification` processor: an LLM reads what users told the
//! assistant and returns the facts they corrected, confirmed or defined;
//! those become knowledge items with evidence.
//!
//! What the model sees is only human text and the assistant's prose: tool
//! results, `isMeta` lines, command wrappers, thinking and tool calls are
//! left out, and every turn is wrapped as `<turn role="...">` data that the
//! instructions say never to obey. What is kept is checked in code: the
//! schema, the lengths, and that the quote really is something a user said.
//! Item ids come from the fact's text and evidence is unique per (item, user,
//! session), so reprocessing a session, or the same fact from another user,
//! never duplicates anything. A failed call never marks a session done.

mod evidence;
mod items;
mod turns;

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use super::{Interruption, Outcome, Processor, Session};
use crate::config::Budgets;
use crate::exit;
use crate::llm::{Client, LlmConfig, LlmError};
use evidence::Rows;
pub use items::Item;
use turns::normalize_space;
pub use turns::{Role, Turn, Turns, prompt};

pub const NAME: &str = "verification";
/// Bump when what a session yields changes: every session is reprocessed.
pub const VERSION: u32 = 1;
const CADENCE: Duration = Duration::from_secs(15 * 60);

pub struct Verification {
    client: Result<Client, String>,
    budgets: Budgets,
}

impl Verification {
    pub fn new(llm: LlmConfig, budgets: Budgets) -> Verification {
        Verification {
            client: Client::new(llm),
            budgets,
        }
    }
}

impl Processor for Verification {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn cadence(&self) -> Duration {
        CADENCE
    }

    fn unavailable(&self) -> Option<String> {
        self.client.as_ref().err().cloned()
    }

    fn default_max_sessions(&self) -> Option<u64> {
        Some(self.budgets.max_sessions)
    }

    fn default_time_budget(&self) -> Option<Duration> {
        Some(self.budgets.time_budget)
    }

    fn forget(&self, db: &rusqlite::Connection, session_file: &str) -> rusqlite::Result<()> {
        evidence::forget(db, session_file)
    }

    fn process(&self, session: &mut Session) -> Result<Outcome> {
        let client = match &self.client {
            Ok(c) => c,
            Err(why) => bail!("{why}"),
        };
        let mut turns = Turns::default();
        let lines = session.lines()?;
        while let Some(line) = lines.next_line()? {
            turns.add(line);
        }
        let turns = turns.finish();
        let mut rows = Rows {
            source_user: session.user.to_owned(),
            model: client.model().to_owned(),
            ..Rows::default()
        };
        if let Some(signal) = crate::signals::received() {
            bail!(
                "stopped: sessionpipe received {}",
                crate::signals::name(signal)
            );
        }
        // Nothing a user said: nothing to ask about.
        if turns.iter().any(|t| t.role == Role::User) {
            let answer = ask(client, &turns)?;
            keep_supported(&answer, &turns, &mut rows)?;
        }
        Ok(Outcome {
            items: rows.items.len() as u64,
            output: Some(Box::new(rows)),
        })
    }
}

/// One call to the model; its failures classified for the run.
/// The call runs on a thread of its own, so that a stopping signal ends the
/// wait at once (the call is abandoned; the process is about to exit).
fn ask(client: &Client, turns: &[Turn]) -> Result<Value> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (client, prompt) = (client.clone(), prompt(turns));
    std::thread::spawn(move || {
        let answer = client.extract(items::SYSTEM, &prompt, items::TOOL, &items::schema());
        let _ = tx.send(answer);
    });
    let answer = loop {
        if let Some(signal) = crate::signals::received() {
            bail!(
                "stopped: sessionpipe received {}",
                crate::signals::name(signal)
            );
        }
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(answer) => break answer,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                bail!("the LLM call ended without an answer")
            }
        }
    };
    answer.map_err(|e| match e {
        LlmError::Transient(m) => anyhow::Error::new(Interruption::Transient(m)),
        LlmError::Rejected(m) => anyhow::Error::new(Interruption::StopRun(exit::CONFIG, m)),
        LlmError::Unusable(m) => anyhow::anyhow!(m),
    })
}

/// Keeps the facts that pass the checks and quote what a user really said;
/// counts the others.
fn keep_supported(answer: &Value, turns: &[Turn], rows: &mut Rows) -> Result<()> {
    let Some(found) = answer.get("verifications").and_then(Value::as_array) else {
        bail!("the LLM answer has no \"verifications\" list");
    };
    let user_text: Vec<String> = turns
        .iter()
        .filter(|t| t.role == Role::User)
        .map(|t| normalize_space(&t.text))
        .collect();
    for v in found {
        match Item::validate(v) {
            None => rows.dropped_invalid += 1,
            Some(item) => {
                let quote = normalize_space(&item.user_quote);
                if user_text.iter().any(|t| t.contains(&quote)) {
                    rows.items.push(item);
                } else {
                    rows.dropped_unsupported += 1;
                }
            }
        }
    }
    Ok(())
}
