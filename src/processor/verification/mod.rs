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
//!
//! What it costs is bounded: a session is sent once it has settled (see
//! [`crate::verdict::Settle`]); a session that grew since is sent only its
//! new turns, with a few before them as context, and keeps what it gave
//! before; a session rewritten since is judged afresh, and its evidence
//! that the new content no longer yields goes. Every call's tokens and
//! dollars are recorded with the session and the run.

mod evidence;
mod items;
mod turns;

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use super::{Interruption, Outcome, Processor, Session, Settle, Spend};
use crate::config::VerificationSettings;
use crate::exit;
use crate::llm::{Answer, Client, LlmConfig, LlmError, Usage};
use crate::prices::PriceBook;
use evidence::Rows;
pub use evidence::total_spend;
pub use items::Item;
use turns::normalize_space;
pub use turns::{Role, Turn, Turns, prompt};

pub const NAME: &str = "verification";
/// Bump when what a session yields changes: every session is reprocessed.
pub const VERSION: u32 = 1;
const CADENCE: Duration = Duration::from_secs(15 * 60);

pub struct Verification {
    client: Result<Client, String>,
    settings: VerificationSettings,
    prices: PriceBook,
}

impl Verification {
    pub fn new(llm: LlmConfig, settings: VerificationSettings, prices: PriceBook) -> Verification {
        Verification {
            client: Client::new(llm),
            settings,
            prices,
        }
    }

    /// What a call's tokens cost at the model's price, if it has one.
    fn spend(&self, model: &str, usage: Usage) -> Spend {
        let price = self.prices.resolve(model).map(|(_, _, price)| price);
        Spend {
            calls: 1,
            input_tokens: usage.input,
            output_tokens: usage.output,
            cache_creation_tokens: usage.cache_creation,
            cache_read_tokens: usage.cache_read,
            cost_usd: price.map_or(0.0, |p| {
                p.cost(
                    usage.input,
                    usage.output,
                    usage.cache_creation,
                    usage.cache_read,
                )
            }),
            unpriced_calls: u64::from(price.is_none()),
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
        let client = match &self.client {
            Ok(client) => client,
            Err(why) => return Some(why.clone()),
        };
        let model = client.model();
        (self.settings.max_cost.is_some() && self.prices.resolve(model).is_none()).then(|| {
            format!(
                "verification.max_cost_per_run is set, but the model {model:?} has no price: \
                 add [prices.{model:?}] to the config"
            )
        })
    }

    fn default_max_sessions(&self) -> Option<u64> {
        Some(self.settings.max_sessions)
    }

    fn default_time_budget(&self) -> Option<Duration> {
        Some(self.settings.time_budget)
    }

    fn default_max_cost(&self) -> Option<f64> {
        self.settings.max_cost
    }

    fn spends(&self) -> bool {
        true
    }

    fn settle(&self) -> Option<Settle> {
        Some(self.settings.settle).filter(|s| !s.quiet.is_zero())
    }

    fn forget(&self, db: &dyn crate::store::sql::Db, session_file: &str) -> Result<()> {
        evidence::forget(db, session_file)
    }

    fn process(&self, session: &mut Session) -> Result<Outcome> {
        let client = match &self.client {
            Ok(c) => c,
            Err(why) => bail!("{why}"),
        };
        let (turns, history) = read(session, self.settings.context_turns)?;
        let mut rows = Rows {
            source_user: session.user.to_owned(),
            model: client.model().to_owned(),
            // What a rewritten session gave before and no longer does goes.
            replace: history == History::Rewritten,
            ..Rows::default()
        };
        if let Some(signal) = crate::signals::received() {
            bail!(
                "stopped: sessionpipe received {}",
                crate::signals::name(signal)
            );
        }
        // Nothing new a user said: nothing to ask about.
        if turns.iter().any(|t| t.role == Role::User && !t.context) {
            let answer = ask(client, &turns)?;
            rows.spend = self.spend(client.model(), answer.usage);
            session.charge(&rows.spend);
            let found = answer.output.map_err(classify)?;
            keep_supported(&found, &turns, &mut rows)?;
        }
        Ok(Outcome {
            items: rows.items.len() as u64,
            output: Some(Box::new(rows)),
        })
    }
}

/// How a session stands to what was judged of it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// The lines judged before are still its first lines.
    Grew,
    /// They are not: truncated, edited or replaced.
    Rewritten,
    /// Nothing judged before is known: new, requeued, moved, or judged by
    /// another version. Judged afresh, adding to what it gave.
    Unknown,
}

/// The turns to show, and how the session stands to what was judged before.
fn read(session: &mut Session, context_turns: usize) -> Result<(Vec<Turn>, History)> {
    let previous = session.previous().cloned();
    if let Some(p) = &previous {
        session.probe(vec![p.bytes]);
    }
    let mut turns = Turns::new(context_turns);
    let lines = session.lines()?;
    loop {
        let start = lines.position();
        let Some(line) = lines.next_line()? else {
            break;
        };
        turns.add(line, previous.as_ref().is_some_and(|p| start < p.bytes));
    }
    let history = match &previous {
        Some(p) if lines.noted().contains(p) => History::Grew,
        Some(_) => History::Rewritten,
        None => History::Unknown,
    };
    Ok((turns.finish(history == History::Grew), history))
}

/// One call to the model. An error means no answer came; an answer holds
/// the tokens it cost, whatever its output.
/// The call runs on a thread of its own, so that a stopping signal ends the
/// wait at once (the call is abandoned; the process is about to exit).
fn ask(client: &Client, turns: &[Turn]) -> Result<Answer> {
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
    answer.map_err(classify)
}

/// A failed call, classified for the run.
fn classify(e: LlmError) -> anyhow::Error {
    match e {
        LlmError::Transient(m) => anyhow::Error::new(Interruption::Transient(m)),
        LlmError::Rejected(m) => anyhow::Error::new(Interruption::StopRun(exit::CONFIG, m)),
        LlmError::Unusable(m) => anyhow::anyhow!(m),
    }
}

/// Keeps the facts that pass the checks and quote what a user really said
/// in a turn shown for judging (not one shown as context); counts the
/// others.
fn keep_supported(answer: &Value, turns: &[Turn], rows: &mut Rows) -> Result<()> {
    let Some(found) = answer.get("verifications").and_then(Value::as_array) else {
        bail!("the LLM answer has no \"verifications\" list");
    };
    let user_text: Vec<String> = turns
        .iter()
        .filter(|t| t.role == Role::User && !t.context)
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
