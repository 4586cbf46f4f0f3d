//! The schema's migrations, embedded in the binary, one folder per backend with the same
//! versions (`V1__initial`, `V2__revisions`, `V3__history`, `V4__client_tokens`,
//! `V5__forgetting`), applied by refinery in one transaction at open. A database that has a
//! migration this binary does not know was written by a newer imds and is refused before
//! anything is applied.

#[allow(missing_docs)]
mod sqlite_scripts {
    refinery::embed_migrations!("src/store/migrations/sqlite");
}

#[allow(missing_docs)]
mod postgres_scripts {
    refinery::embed_migrations!("src/store/migrations/postgres");
}

/// The table refinery records applied migrations in.
pub(super) const HISTORY_TABLE: &str = "refinery_schema_history";

/// The embedded store's migrations.
pub(super) fn sqlite() -> refinery::Runner {
    sqlite_scripts::migrations::runner()
        .set_grouped(true)
        .set_abort_missing(true)
}

/// The shared store's migrations.
pub(super) fn postgres() -> refinery::Runner {
    postgres_scripts::migrations::runner()
        .set_grouped(true)
        .set_abort_missing(true)
}

/// The newest migration `runner` applies.
pub(super) fn newest(runner: &refinery::Runner) -> i64 {
    runner
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_versions() {
        let versions = |runner: refinery::Runner| {
            let mut v: Vec<(i64, String)> = runner
                .get_migrations()
                .iter()
                .map(|m| (i64::from(m.version()), m.name().to_owned()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(versions(sqlite()), versions(postgres()));
        assert_eq!(newest(&sqlite()), 5);
    }
}
