//! Prices in the database: `usage_model_prices` holds, for every model name
//! the requests use, the rates it resolves to in the [`PriceBook`], and the
//! `usage_request_costs` view prices each request from it when read. The
//! rows follow the price book without any reprocess: a session's write adds
//! its models, and a run whose table or config changed rebuilds them all.

use std::collections::BTreeSet;

use anyhow::Result;

use super::settings::Scope;
use crate::args;
use crate::prices::{Price, PriceBook, Source};
use crate::store::sql::{Db, Param, Table};

/// A model name and what it resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    pub model: String,
    pub key: String,
    pub source: Source,
    pub price: Price,
}

/// The prices of `models`; models without one are left out (their cost is
/// NULL).
pub(super) fn resolve<'m>(
    book: &PriceBook,
    models: impl IntoIterator<Item = &'m str>,
) -> Vec<ModelPrice> {
    models
        .into_iter()
        .filter_map(|model| {
            let (key, source, price) = book.resolve(model)?;
            Some(ModelPrice {
                model: model.to_owned(),
                key,
                source,
                price,
            })
        })
        .collect()
}

/// Rebuilds every model's price when the book differs from the one last
/// applied (a fingerprint is kept): an unchanged book costs one lookup.
pub(super) fn apply(db: &dyn Db, book: &PriceBook) -> Result<()> {
    let Some(tx) = super::settings::changed(db, Scope::Shared, "prices", &book.fingerprint())?
    else {
        return Ok(());
    };
    let models: BTreeSet<String> = tx
        .rows(
            "SELECT DISTINCT model FROM usage_requests WHERE model IS NOT NULL",
            &[],
            |r| r.get(0),
        )?
        .into_iter()
        .collect();
    tx.execute("DELETE FROM usage_model_prices", &[])?;
    write(&*tx, &resolve(book, models.iter().map(String::as_str)))?;
    tx.commit()
}

/// Records the prices of models not recorded yet. A recorded one already
/// has this book's price: [`apply`] rebuilt them all when the book changed,
/// so a session's write touches no row its models already have.
pub(super) fn write(db: &dyn Db, prices: &[ModelPrice]) -> Result<()> {
    let mut bulk = db.bulk(&[TABLE])?;
    each_row(prices, |row| bulk.push(0, row))?;
    bulk.finish()
}

/// `usage_model_prices` as a bulk write's table: a model already priced
/// keeps its row.
pub(super) const TABLE: Table<'static> = Table {
    name: "usage_model_prices",
    columns: &[
        "model",
        "price_key",
        "source",
        "input",
        "output",
        "cache_write_5m",
        "cache_write_1h",
        "cache_read",
        "input_above_200k",
        "output_above_200k",
        "cache_write_5m_above_200k",
        "cache_write_1h_above_200k",
        "cache_read_above_200k",
        "fast_multiplier",
    ],
    keep_existing: true,
};

/// Calls `f` with each model's row, in [`TABLE`]'s columns.
pub(super) fn each_row(
    prices: &[ModelPrice],
    mut f: impl FnMut(&[&dyn Param]) -> Result<()>,
) -> Result<()> {
    for m in prices {
        let (b, a) = (&m.price.base, m.price.above.as_ref());
        f(args![
            m.model,
            m.key,
            m.source.as_str(),
            b.input,
            b.output,
            b.cache_write_5m,
            b.cache_write_1h,
            b.cache_read,
            a.map(|a| a.input),
            a.map(|a| a.output),
            a.map(|a| a.cache_write_5m),
            a.map(|a| a.cache_write_1h),
            a.map(|a| a.cache_read),
            m.price.fast_multiplier
        ])?;
    }
    Ok(())
}
