//! An accessor statement that a contract may rename a column, or an enum label, under.
//!
//! An enum label renamed by a build (`kinds::enum_rename`) follows the same rule: until the
//! contract the new build writes it under its old name (mapped in SQL), and a statement built
//! before the contract's commit and run after it names a label that no longer exists:
//! `invalid_text_representation` (22P02). The catalog (`pg_enum`) says which renames committed,
//! and the statement runs once more with those steps' contract SQL. A value the application
//! sends that is no label at all fails with the same code; no rename committed, so the first
//! error stands.
//!
//! A type change's accessors name its new column (`pgevolve_new_<column>_<hash>`) until
//! contract, and the contract renames that column to the old one's name in the transaction that
//! records the phase. No instance can move its accessors to the contract's SQL before that
//! commit (the new name is the old column's until then), so a statement built before the commit
//! and parsed after it (one queued behind the contract's lock, or sent between the commit and the
//! notification) finds no such column: `undefined_column` (42703).
//!
//! Why a retry and not a name valid on both sides: PostgreSQL has no second name for a column,
//! so that would take an updatable view for every accessor of the model from switch on, which
//! cannot carry the both-ways write of retire and would change every statement of the model.
//! The retry is exact and costs nothing in the normal case: only a statement that failed with
//! 42703 while its SQL names a column a contract renames asks the catalog (on the same
//! connection) which contracts committed, and runs once more with those steps' contract SQL, the
//! SQL every instance uses a few milliseconds later. The catalog decides, not this instance's
//! phases, which may lag the commit; a column that is merely missing (dropped by hand) renames
//! nothing and the first error stands. The failed statement changed nothing (it never ran), so
//! running it again writes once. Inside a transaction the statement runs under a savepoint while
//! the contract may be next (switch, retire), so the transaction survives the error; a
//! `REPEATABLE READ` transaction whose snapshot predates the contract sees the old catalog and
//! gets the error. Aborts need none of this: an abort drops the new column only once every live
//! instance has stopped naming it.

use sqlx::postgres::{PgArguments, PgConnection, PgQueryResult, PgRow};
use sqlx::{AssertSqlSafe, Connection};

use super::{Accessor, EnumRename, ModelSql};
use crate::ident::Qualified;
use crate::kinds::RenamedAtContract;
use crate::registry::PhaseRegistry;
use crate::spec::ModelSpec;
use crate::step::{Phase, StepId};

/// What a statement gave: its result, or its rows.
#[derive(Debug)]
pub enum Ran {
    /// A statement run for its result (`INSERT`, `UPDATE`, `DELETE`).
    Done(PgQueryResult),
    /// A statement run for its rows.
    Rows(Vec<PgRow>),
}

impl Ran {
    /// The result of a statement run for it.
    pub(super) fn done(self) -> sqlx::Result<PgQueryResult> {
        match self {
            Ran::Done(done) => Ok(done),
            Ran::Rows(_) => Err(sqlx::Error::Protocol(
                "an accessor statement run for its result returned rows".into(),
            )),
        }
    }

    /// The rows of a statement run for them.
    pub(super) fn rows(self) -> sqlx::Result<Vec<PgRow>> {
        match self {
            Ran::Rows(rows) => Ok(rows),
            Ran::Done(_) => Err(sqlx::Error::Protocol(
                "an accessor statement run for its rows returned none".into(),
            )),
        }
    }
}

/// An accessor statement whose SQL names a column that a contract renames (see the module's
/// documentation), with what it takes to make it again from the contract's SQL.
#[derive(Debug)]
pub struct Retrying {
    pub(super) accessor: Accessor,
    pub(super) text: String,
    pub(super) args: PgArguments,
    /// Run for its rows (else for its result).
    pub(super) rows: bool,
    /// The application's pool goes through a transaction pooler.
    pub(super) pooled: bool,
    pub(super) model: &'static ModelSpec,
    pub(super) registry: std::sync::Arc<PhaseRegistry>,
    pub(super) renamed_at_contract: Vec<(StepId, RenamedAtContract)>,
    /// The enum labels the SQL writes under a name a contract renames.
    pub(super) enum_renames: Vec<(StepId, EnumRename)>,
}

/// `undefined_column`.
const UNDEFINED_COLUMN: &str = "42703";

/// `invalid_text_representation`: a label the enum type does not have (renamed since).
const INVALID_TEXT_REPRESENTATION: &str = "22P02";

impl Retrying {
    /// Runs the statement on `conn`; once more with the contract's SQL when a contract renamed
    /// a column it names in the meantime.
    pub(crate) async fn run(self, conn: &mut PgConnection) -> sqlx::Result<Ran> {
        let guarded = self
            .renamed_at_contract
            .iter()
            .any(|(_, r)| r.contract_next)
            || self.enum_renames.iter().any(|(_, r)| r.contract_next);
        let first = self.once(conn, &self.text, guarded).await;
        let (error, columns) = match first {
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(UNDEFINED_COLUMN)
                    && !self.renamed_at_contract.is_empty() =>
            {
                (sqlx::Error::Database(e), true)
            }
            Err(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(INVALID_TEXT_REPRESENTATION)
                    && !self.enum_renames.is_empty() =>
            {
                (sqlx::Error::Database(e), false)
            }
            other => return other,
        };
        let renamed = if columns {
            self.renamed(conn).await
        } else {
            self.renamed_labels(conn).await
        };
        let Ok(renamed) = renamed else {
            return Err(error);
        };
        if renamed.is_empty() {
            return Err(error);
        }
        let sql = ModelSql::build(self.model, |id| {
            if renamed.contains(&id) {
                Some(Phase::Contract)
            } else {
                self.registry.get(id)
            }
        });
        let text = self.accessor.text(self.model, &sql);
        tracing::debug!(table = %self.model.qualified_name(), "a contract renamed a column or an enum label this statement named: run again with the contract's SQL");
        self.once(conn, &text, false).await
    }

    /// The steps whose contract committed: the column the SQL names is gone, and the one it
    /// was renamed to has the new type.
    async fn renamed<'a>(&'a self, conn: &mut PgConnection) -> sqlx::Result<Vec<&'a StepId>> {
        let (before, after, types): (Vec<&str>, Vec<&str>, Vec<&str>) = self
            .renamed_at_contract
            .iter()
            .map(|(_, r)| (r.from.as_str(), r.to, r.sql_type))
            .collect();
        let query = sqlx::query(crate::sql::type_change::renamed_by_contract())
            .bind(Qualified(self.model.schema, self.model.table).to_string())
            .bind(before)
            .bind(after)
            .bind(types)
            .persistent(!self.pooled);
        Ok(self
            .renamed_positions(conn, query)
            .await?
            .into_iter()
            .filter_map(|i| self.renamed_at_contract.get(i).map(|(id, _)| id))
            .collect())
    }

    /// Runs a catalog probe whose `renamed` column lists 1-based positions into the caller's
    /// list (in a transaction of its own behind a transaction pooler); returns them 0-based.
    async fn renamed_positions(
        &self,
        conn: &mut PgConnection,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::Result<Vec<usize>> {
        let row = if self.pooled && !conn.is_in_transaction() {
            let mut tx = conn.begin().await?;
            let row = query.fetch_one(&mut *tx).await?;
            tx.commit().await?;
            row
        } else {
            query.fetch_one(&mut *conn).await?
        };
        let positions: Vec<i64> = sqlx::Row::try_get(&row, "renamed")?;
        Ok(positions
            .into_iter()
            .filter_map(|p| usize::try_from(p).ok()?.checked_sub(1))
            .collect())
    }

    /// The steps whose enum label rename committed: the type has the new label and not the
    /// old one.
    async fn renamed_labels<'a>(
        &'a self,
        conn: &mut PgConnection,
    ) -> sqlx::Result<Vec<&'a StepId>> {
        let types: Vec<&str> = self
            .enum_renames
            .iter()
            .map(|(_, r)| r.type_name.as_str())
            .collect();
        let old: Vec<&str> = self.enum_renames.iter().map(|(_, r)| r.old).collect();
        let new: Vec<&str> = self.enum_renames.iter().map(|(_, r)| r.new).collect();
        let query = sqlx::query(crate::sql::enums::renamed_labels())
            .bind(types)
            .bind(old)
            .bind(new)
            .persistent(!self.pooled);
        Ok(self
            .renamed_positions(conn, query)
            .await?
            .into_iter()
            .filter_map(|i| self.enum_renames.get(i).map(|(id, _)| id))
            .collect())
    }

    /// One run of `text`: in a transaction of its own behind a transaction pooler, under a
    /// savepoint inside the caller's transaction when `guarded`.
    async fn once(&self, conn: &mut PgConnection, text: &str, guarded: bool) -> sqlx::Result<Ran> {
        let in_transaction = conn.is_in_transaction();
        if !(self.pooled && !in_transaction || guarded && in_transaction) {
            return self.statement(conn, text).await;
        }
        // A transaction, or a savepoint inside the caller's.
        let mut tx = conn.begin().await?;
        match self.statement(&mut tx, text).await {
            Ok(ran) => {
                tx.commit().await?;
                Ok(ran)
            }
            Err(e) => {
                tx.rollback().await?;
                Err(e)
            }
        }
    }

    async fn statement(&self, conn: &mut PgConnection, text: &str) -> sqlx::Result<Ran> {
        let query = sqlx::query_with(AssertSqlSafe(text.to_owned()), self.args.clone())
            .persistent(!self.pooled);
        Ok(if self.rows {
            Ran::Rows(query.fetch_all(conn).await?)
        } else {
            Ran::Done(query.execute(conn).await?)
        })
    }
}
