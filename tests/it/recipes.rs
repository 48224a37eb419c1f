//! The README's SQL recipes run on the schema a run creates, and the
//! partial index on skills serves the recipe it exists for: an index no
//! documented query uses would cost every write and serve nothing.

use crate::usage::query;
use crate::util::Env;

/// The text of each ```sql block of the README.
fn recipes() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sql") => block = Some(String::new()),
            (Some(_), "```") => out.extend(block.take()),
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The indexes the plan of `sql` searches.
fn indexes_used(env: &Env, sql: &str) -> Vec<String> {
    query(env, &format!("EXPLAIN QUERY PLAN {sql}"))
        .iter()
        .filter_map(|row| {
            let detail = row["detail"].as_str()?;
            let (_, after) = detail.split_once(" INDEX ")?;
            after.split_whitespace().next().map(str::to_owned)
        })
        .collect()
}

#[test]
fn every_readme_recipe_runs_and_the_skill_index_serves_its_recipe() {
    let env = Env::new();
    env.copy_fixtures("agnes-usage", "alice");
    env.cmd().args(["run", "usage"]).assert().code(0);
    let recipes = recipes();
    assert!(recipes.len() >= 8, "only {} recipes found", recipes.len());
    let conn = env.db();
    for sql in &recipes {
        // Runs to its end: every table and column it names exists.
        let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
        let mut rows = stmt.query([]).unwrap_or_else(|e| panic!("{e}: {sql}"));
        while rows
            .next()
            .unwrap_or_else(|e| panic!("{e}: {sql}"))
            .is_some()
        {}
    }
    let skills = recipes
        .iter()
        .find(|sql| sql.contains("skill_name IS NOT NULL"))
        .expect("a recipe over skills");
    assert_eq!(
        indexes_used(&env, skills),
        ["usage_events_skill"],
        "{skills}"
    );
}
