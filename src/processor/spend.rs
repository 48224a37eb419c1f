//! What a processor's paid calls (an LLM's) cost: the tokens as the API
//! reported them and the dollars the price table makes of them.
//!
//! A run sums the spend of every call it made, answered usefully or not
//! (the tokens were paid for either way), and stops taking sessions once a
//! dollar cap is reached. Sums saturate: no count ever wraps.

use serde::Serialize;

use crate::store::sql::Row;

/// The spend of one call, or of many summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spend {
    #[serde(rename = "llm_calls")]
    pub calls: u64,
    #[serde(rename = "llm_input_tokens")]
    pub input_tokens: u64,
    #[serde(rename = "llm_output_tokens")]
    pub output_tokens: u64,
    #[serde(rename = "llm_cache_creation_tokens")]
    pub cache_creation_tokens: u64,
    #[serde(rename = "llm_cache_read_tokens")]
    pub cache_read_tokens: u64,
    /// Dollars, for the calls whose model has a price...
    pub cost_usd: f64,
    /// ...and the calls whose model has none (their cost is unknown, not 0).
    #[serde(rename = "llm_unpriced_calls")]
    pub unpriced_calls: u64,
}

impl Spend {
    pub fn add(&mut self, other: &Spend) {
        self.calls = self.calls.saturating_add(other.calls);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_creation_tokens = self
            .cache_creation_tokens
            .saturating_add(other.cache_creation_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(other.cache_read_tokens);
        self.cost_usd += other.cost_usd;
        self.unpriced_calls = self.unpriced_calls.saturating_add(other.unpriced_calls);
    }

    /// The spend a query row holds in seven columns from `first`: calls,
    /// input, output, cache-write and cache-read tokens, dollars, unpriced
    /// calls (the order of the `llm_*` columns of `runs` and
    /// `verification_sessions`); `None` when the calls column is NULL (a
    /// run that recorded no spend).
    pub fn from_columns(r: &dyn Row, first: usize) -> anyhow::Result<Option<Spend>> {
        let count = |i: usize| -> anyhow::Result<u64> {
            Ok(u64::try_from(r.get::<Option<i64>>(first + i)?.unwrap_or(0)).unwrap_or(0))
        };
        if r.get::<Option<i64>>(first)?.is_none() {
            return Ok(None);
        }
        Ok(Some(Spend {
            calls: count(0)?,
            input_tokens: count(1)?,
            output_tokens: count(2)?,
            cache_creation_tokens: count(3)?,
            cache_read_tokens: count(4)?,
            cost_usd: r.get::<Option<f64>>(first + 5)?.unwrap_or(0.0),
            unpriced_calls: count(6)?,
        }))
    }

    /// The dollars, when every call had a price.
    pub fn known_cost(&self) -> Option<f64> {
        (self.unpriced_calls == 0).then_some(self.cost_usd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_and_an_unpriced_call_makes_the_cost_unknown() {
        let mut total = Spend {
            calls: 1,
            input_tokens: u64::MAX - 1,
            cost_usd: 0.5,
            ..Spend::default()
        };
        total.add(&Spend {
            calls: 1,
            input_tokens: 10,
            cost_usd: 0.25,
            ..Spend::default()
        });
        assert_eq!(
            (total.calls, total.input_tokens, total.known_cost()),
            (2, u64::MAX, Some(0.75))
        );
        total.add(&Spend {
            calls: 1,
            unpriced_calls: 1,
            ..Spend::default()
        });
        assert_eq!(total.known_cost(), None);
    }
}
