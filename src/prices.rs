//! Model prices: the LiteLLM table shipped in `prices/` and the operator's
//! `[prices."MODEL"]` sections, and how a transcript's model name finds its
//! price.
//!
//! Prices are applied when the tables are read, never stored in a request
//! row: `usage` keeps `usage_model_prices` (one row per model name seen, with
//! the rates it resolved to) current with the table and the config, so a
//! changed price never needs a reprocess. A model that finds no price has no
//! row there, and its cost is NULL, never $0.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};

use serde::Deserialize;

/// Tokens in one request past which a model's long-context rates apply.
pub const LONG_CONTEXT: u64 = 200_000;

/// The table, embedded when sessionpipe is built.
const TABLE: &str = include_str!("../prices/litellm-claude.json");

/// The table's prices as [`digest`] hashes a book, which stands for the
/// table in [`PriceBook::fingerprint`], so that a run that prices nothing
/// (an unchanged one) never parses the table. A test holds it to the table
/// and to how it is read; the table's bytes count too (see [`TABLE_BYTES`]).
const TABLE_FINGERPRINT: &str = "c4e75cef57115c2956ea05e0919c950d";

/// The table's bytes, hashed (64-bit FNV-1a) when sessionpipe is built: a
/// refreshed table changes the fingerprint even before [`TABLE_FINGERPRINT`]
/// is brought up to date. About 70 KB takes a third of the steps after which
/// the compiler calls an evaluation long; a table three times larger would
/// need this allowed.
const TABLE_BYTES: u64 = {
    let bytes = TABLE.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
};

/// The table's models and their prices, parsed at the first lookup.
static TABLE_PRICES: OnceLock<BTreeMap<String, Price>> = OnceLock::new();

/// Dollars per token of each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    pub cache_write_5m: f64,
    pub cache_write_1h: f64,
    pub cache_read: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub base: Rates,
    /// For the tokens of a kind past [`LONG_CONTEXT`] in one request, where
    /// the model has a long-context tier.
    pub above: Option<Rates>,
    /// What a request in fast mode costs, as a multiple.
    pub fast_multiplier: f64,
}

impl Price {
    /// Every number of the price, a missing long-context tier as zeros: what
    /// [`PriceBook::fingerprint`] is made of. Destructured, so that a field
    /// added to either struct cannot be left out of it.
    fn numbers(&self) -> [f64; 11] {
        let Price {
            base,
            above,
            fast_multiplier,
        } = *self;
        let [a, b, c, d, e] = base.numbers();
        let [f, g, h, i, j] = above.map_or([0.0; 5], |above| above.numbers());
        [a, b, c, d, e, f, g, h, i, j, fast_multiplier]
    }
}

impl Rates {
    fn numbers(&self) -> [f64; 5] {
        let Rates {
            input,
            output,
            cache_write_5m,
            cache_write_1h,
            cache_read,
        } = *self;
        [input, output, cache_write_5m, cache_write_1h, cache_read]
    }

    /// Rates from an input and output rate, with the cache rates the
    /// provider derives from input where none is given: a five-minute write
    /// 1.25×, a one-hour write 2×, a read 0.1×.
    fn from(input: f64, output: f64, write_5m: Option<f64>, read: Option<f64>) -> Rates {
        Rates {
            input,
            output,
            cache_write_5m: write_5m.unwrap_or(input * 1.25),
            cache_write_1h: input * 2.0,
            cache_read: read.unwrap_or(input * 0.1),
        }
    }
}

impl Price {
    /// Dollars for one request's tokens (cache writes at the five-minute
    /// rate, what an API call writes unless told otherwise): each kind past
    /// [`LONG_CONTEXT`] at the long-context rate, where there is one.
    pub fn cost(&self, input: u64, output: u64, cache_write: u64, cache_read: u64) -> f64 {
        let split = |tokens: u64, rate: fn(&Rates) -> f64| {
            let below = tokens.min(LONG_CONTEXT) as f64;
            let above = tokens.saturating_sub(LONG_CONTEXT) as f64;
            below * rate(&self.base) + above * rate(self.above.as_ref().unwrap_or(&self.base))
        };
        split(input, |r| r.input)
            + split(output, |r| r.output)
            + split(cache_write, |r| r.cache_write_5m)
            + split(cache_read, |r| r.cache_read)
    }
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Table,
    Config,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Table => "litellm",
            Source::Config => "config",
        }
    }
}

/// The prices a run applies: the embedded table's, and the config's over
/// them.
#[derive(Debug, Clone)]
pub struct PriceBook {
    config: BTreeMap<String, Price>,
}

#[derive(Deserialize)]
struct TableFile {
    models: BTreeMap<String, TableEntry>,
}

#[derive(Deserialize)]
struct TableEntry {
    input_cost_per_token: f64,
    output_cost_per_token: f64,
    cache_creation_input_token_cost: Option<f64>,
    cache_read_input_token_cost: Option<f64>,
    input_cost_per_token_above_200k_tokens: Option<f64>,
    output_cost_per_token_above_200k_tokens: Option<f64>,
    cache_creation_input_token_cost_above_200k_tokens: Option<f64>,
    cache_read_input_token_cost_above_200k_tokens: Option<f64>,
    fast_multiplier: Option<f64>,
}

/// A `[prices."MODEL"]` section: dollars per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPrice {
    input: f64,
    output: f64,
    cache_write_5m: Option<f64>,
    cache_write_1h: Option<f64>,
    cache_read: Option<f64>,
    input_above_200k: Option<f64>,
    output_above_200k: Option<f64>,
    fast_multiplier: Option<f64>,
}

impl PriceBook {
    /// The embedded table with the config's sections over it.
    pub fn new(config: &BTreeMap<String, ConfigPrice>) -> Result<PriceBook> {
        let config = config
            .iter()
            .map(|(name, p)| {
                Ok((
                    name.clone(),
                    p.price().with_context(|| format!("[prices.{name:?}]"))?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(PriceBook { config })
    }

    /// The embedded table. It is valid JSON of the expected shape (the tests
    /// read it); should it not be, no model finds a price there, and its
    /// cost is unknown, never $0.
    fn table() -> &'static BTreeMap<String, Price> {
        TABLE_PRICES.get_or_init(|| parse_table().unwrap_or_default())
    }

    /// The price of a model as a transcript names it, and the name it was
    /// found under: the config's sections first, then the table; each by the
    /// name as it is, then without a provider prefix (`anthropic/`), a
    /// bracketed suffix (`[1m]`) and with `.` and `@` read as `-`, then
    /// without a trailing `-YYYYMMDD` date; last, an undated name as the
    /// table's latest release of it (`claude-sonnet-4-20250514`).
    pub fn resolve(&self, model: &str) -> Option<(String, Source, Price)> {
        let bare = model.rsplit('/').next().unwrap_or(model);
        let bare = bare
            .split('[')
            .next()
            .unwrap_or(bare)
            .replace(['.', '@'], "-");
        let undated = strip_date(&bare);
        let names = [Some(model), Some(bare.as_str()), undated];
        for (prices, source) in [
            (&self.config, Source::Config),
            (Self::table(), Source::Table),
        ] {
            for name in names.iter().flatten() {
                if let Some(price) = prices.get(*name) {
                    return Some(((*name).to_owned(), source, *price));
                }
            }
        }
        // An undated name (`claude-sonnet-4`) is its latest dated release.
        let dated = format!("{bare}-");
        Self::table()
            .range(dated.clone()..)
            .take_while(|(k, _)| k.starts_with(&dated))
            .filter(|(k, _)| strip_date(k) == Some(bare.as_str()))
            .last()
            .map(|(k, p)| (k.clone(), Source::Table, *p))
    }

    /// Changes whenever a resolution could: the table (its bytes and
    /// [`TABLE_FINGERPRINT`]) or the config.
    pub fn fingerprint(&self) -> String {
        use md5::{Digest as _, Md5};
        // Destructured, so that a part added to the book cannot be left out.
        let PriceBook { config } = self;
        let mut hash = Md5::new();
        hash.update(TABLE_FINGERPRINT);
        hash.update(TABLE_BYTES.to_le_bytes());
        hash.update(digest(config));
        crate::session::hex(&hash.finalize())
    }
}

/// A book's MD5, made of each name and each rate's bits, not of their text:
/// formatting the table's thousand rates as decimals was most of what
/// pricing cost a run with nothing to price. Lengths as u64, so that hosts
/// of any word size sharing a database agree.
fn digest(book: &BTreeMap<String, Price>) -> String {
    use md5::{Digest as _, Md5};
    let mut hash = Md5::new();
    hash.update((book.len() as u64).to_le_bytes());
    for (name, price) in book {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update([u8::from(price.above.is_some())]);
        for rate in price.numbers() {
            hash.update(rate.to_bits().to_le_bytes());
        }
    }
    crate::session::hex(&hash.finalize())
}

/// The embedded table's models and their prices.
fn parse_table() -> Result<BTreeMap<String, Price>> {
    let file: TableFile =
        serde_json::from_str(TABLE).context("the embedded price table is not valid")?;
    Ok(file
        .models
        .into_iter()
        .map(|(name, e)| (name, e.price()))
        .collect())
}

/// `name` without a trailing `-` and eight digits, if it has one.
fn strip_date(name: &str) -> Option<&str> {
    let (head, date) = name.rsplit_once('-')?;
    (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then_some(head)
}

impl TableEntry {
    fn price(&self) -> Price {
        let base = Rates::from(
            self.input_cost_per_token,
            self.output_cost_per_token,
            self.cache_creation_input_token_cost,
            self.cache_read_input_token_cost,
        );
        let above = long_context(
            &base,
            self.input_cost_per_token_above_200k_tokens,
            self.output_cost_per_token_above_200k_tokens,
            self.cache_creation_input_token_cost_above_200k_tokens,
            self.cache_read_input_token_cost_above_200k_tokens,
        );
        Price {
            base,
            above,
            fast_multiplier: self.fast_multiplier.unwrap_or(1.0),
        }
    }
}

/// The long-context tier, when any of its rates is given: each kind on its
/// own, a kind without a rate of its own at the tier's input rate times the
/// usual factor, or at the base rate.
fn long_context(
    base: &Rates,
    input: Option<f64>,
    output: Option<f64>,
    write_5m: Option<f64>,
    read: Option<f64>,
) -> Option<Rates> {
    if input.is_none() && output.is_none() && write_5m.is_none() && read.is_none() {
        return None;
    }
    let mut above = match input {
        Some(input) => Rates::from(input, base.output, write_5m, read),
        None => Rates {
            cache_write_5m: write_5m.unwrap_or(base.cache_write_5m),
            cache_read: read.unwrap_or(base.cache_read),
            ..*base
        },
    };
    above.output = output.unwrap_or(base.output);
    Some(above)
}

impl Rates {
    fn per_million(self) -> Rates {
        let f = |v: f64| v / 1e6;
        Rates {
            input: f(self.input),
            output: f(self.output),
            cache_write_5m: f(self.cache_write_5m),
            cache_write_1h: f(self.cache_write_1h),
            cache_read: f(self.cache_read),
        }
    }
}

/// The largest rate a config section may give, in dollars per million
/// tokens: far above any model's, far below what would overflow a cost.
const MAX_RATE: f64 = 1e6;

impl ConfigPrice {
    /// The section's price; its figures are dollars per million tokens.
    fn price(&self) -> Result<Price> {
        let check = |v: Option<f64>, what: &str| -> Result<Option<f64>> {
            match v {
                Some(v) if !(0.0..=MAX_RATE).contains(&v) => {
                    bail!(
                        "{what} must be from 0 to {MAX_RATE} (dollars per million tokens), not {v}"
                    )
                }
                v => Ok(v),
            }
        };
        let input = check(Some(self.input), "input")?.unwrap_or(0.0);
        let output = check(Some(self.output), "output")?.unwrap_or(0.0);
        let mut base = Rates::from(
            input,
            output,
            check(self.cache_write_5m, "cache_write_5m")?,
            check(self.cache_read, "cache_read")?,
        );
        if let Some(v) = check(self.cache_write_1h, "cache_write_1h")? {
            base.cache_write_1h = v;
        }
        let above = long_context(
            &base,
            check(self.input_above_200k, "input_above_200k")?,
            check(self.output_above_200k, "output_above_200k")?,
            None,
            None,
        );
        let fast_multiplier = match self.fast_multiplier {
            Some(m) if !(0.0..=100.0).contains(&m) => {
                bail!("fast_multiplier must be from 0 to 100, not {m}")
            }
            m => m.unwrap_or(1.0),
        };
        Ok(Price {
            base: base.per_million(),
            above: above.map(Rates::per_million),
            fast_multiplier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(config: &str) -> PriceBook {
        let config: BTreeMap<String, ConfigPrice> = toml::from_str(config).unwrap();
        PriceBook::new(&config).unwrap()
    }

    /// The fingerprint that stands for the table is the table's own: a
    /// table or a reading of it that changed without it would leave every
    /// database's prices as they were.
    #[test]
    fn the_tables_fingerprint_is_its_own() {
        let table = parse_table().unwrap();
        assert!(table.len() > 10, "{} models", table.len());
        assert_eq!(
            digest(&table),
            TABLE_FINGERPRINT,
            "update TABLE_FINGERPRINT"
        );
    }

    #[test]
    fn names_as_transcripts_write_them_find_the_table() {
        let b = book("");
        let key = |m: &str| b.resolve(m).map(|(k, _, _)| k);
        assert_eq!(
            key("claude-sonnet-4-5-20250929").as_deref(),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(
            key("anthropic/claude-opus-4.5").as_deref(),
            Some("claude-opus-4-5")
        );
        assert_eq!(
            key("claude-opus-4-6[1m]").as_deref(),
            Some("claude-opus-4-6")
        );
        assert_eq!(
            key("claude-sonnet-4-6-20990101").as_deref(),
            Some("claude-sonnet-4-6")
        );
        assert_eq!(
            key("claude-sonnet-4").as_deref(),
            Some("claude-sonnet-4-20250514")
        );
        assert_eq!(key("claude-sonnet"), None, "no release of that name");
        assert_eq!(key("<synthetic>"), None);
        assert_eq!(key("gpt-4o"), None);
        let (_, source, p) = b.resolve("claude-sonnet-4-20250514").unwrap();
        assert_eq!(source, Source::Table);
        assert_eq!((p.base.input, p.base.cache_write_1h), (3e-6, 6e-6));
        assert_eq!(p.above.map(|a| a.input), Some(6e-6));
        assert_eq!(b.resolve("claude-opus-4-8").unwrap().2.fast_multiplier, 2.0);
        // Published where the table has none.
        assert_eq!(b.resolve("claude-opus-4-6").unwrap().2.fast_multiplier, 6.0);
    }

    #[test]
    fn a_call_costs_its_tokens_at_the_rates_of_its_kind() {
        let book = PriceBook::new(&BTreeMap::new()).unwrap();
        let (_, _, haiku) = book.resolve("claude-haiku-4-5").unwrap();
        // $1 / $5 / $1.25 / $0.10 per million tokens.
        let cost = haiku.cost(1_000_000, 100_000, 200_000, 2_000_000);
        assert!((cost - (1.0 + 0.5 + 0.25 + 0.2)).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn the_fingerprint_changes_with_every_name_and_rate_and_tier() {
        let plain = "[m]\ninput = 1.0\noutput = 2.0\n";
        assert_eq!(book(plain).fingerprint(), book(plain).fingerprint());
        let mut seen = std::collections::HashSet::from([book(plain).fingerprint()]);
        let variants = [
            "[m]\ninput = 1.5\noutput = 2.0\n".to_owned(),
            "[m]\ninput = 1.0\noutput = 2.5\n".to_owned(),
            "[n]\ninput = 1.0\noutput = 2.0\n".to_owned(),
            "".to_owned(),
            // A long-context tier of zeros is a tier.
            format!("{plain}input_above_200k = 0.0\noutput_above_200k = 0.0\n"),
            // The table's own model named in the config is the config's.
            "[\"claude-haiku-4-5\"]\ninput = 1.0\noutput = 5.0\n".to_owned(),
        ]
        .into_iter()
        .chain(
            [
                "cache_write_5m",
                "cache_write_1h",
                "cache_read",
                "input_above_200k",
                "output_above_200k",
                "fast_multiplier",
            ]
            .map(|field| format!("{plain}{field} = 7.0\n")),
        );
        for config in variants {
            assert!(seen.insert(book(&config).fingerprint()), "{config}");
        }
    }

    #[test]
    fn the_config_adds_and_overrides_prices_per_million_tokens() {
        let b = book(
            r#"
            ["claude-sonnet-4-5"]
            input = 1.0
            output = 2.0
            ["in-house-model"]
            input = 0.5
            output = 1.5
            cache_read = 0.01
            "#,
        );
        // The operator's section wins, for the dated name too.
        let (key, source, p) = b.resolve("claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(
            (key.as_str(), source),
            ("claude-sonnet-4-5", Source::Config)
        );
        assert_eq!((p.base.input, p.base.cache_write_5m), (1e-6, 1.25e-6));
        assert_eq!(
            book("").resolve("claude-sonnet-4-5").unwrap().2.base.input,
            3e-6
        );
        let (_, _, p3) = b.resolve("in-house-model").unwrap();
        assert_eq!((p3.base.cache_read, p3.above), (0.01 / 1e6, None));
        let bad: BTreeMap<String, ConfigPrice> =
            toml::from_str("[m]\ninput = -1.0\noutput = 1.0").unwrap();
        let e = PriceBook::new(&bad).unwrap_err();
        assert!(format!("{e:#}").contains("input must be from 0"), "{e:#}");
        for bad in ["input = 1e308", "input = nan"] {
            let config = format!("[m]\n{bad}\noutput = 1.0");
            let config: BTreeMap<String, ConfigPrice> = toml::from_str(&config).unwrap();
            assert!(PriceBook::new(&config).is_err(), "{bad}");
        }
        // A long-context output rate alone is a tier of its own.
        let (_, _, p) = book("[m]\ninput = 1.0\noutput = 2.0\noutput_above_200k = 4.0\n")
            .resolve("m")
            .unwrap();
        assert_eq!(p.above.map(|a| (a.input, a.output)), Some((1e-6, 4e-6)));
    }
}
