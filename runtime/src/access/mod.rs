//! What generated accessors run: for each model, the SQL that reads and writes the right columns
//! in the current phase of every step, rebuilt whenever a phase changes.
//!
//! The rules, per step kind and phase (never naming a column that may not exist):
//!
//! | step | before expand / aborted | expand .. validate | switch | retire, contract |
//! |---|---|---|---|---|
//! | rename `old` → `new` | read and write `old` | read `COALESCE(new, old)`, write both | read `new`, write both | read and write `new` |
//! | type change of `col` (new column `n`) | read `using(col)`, write `col = down($)` | read `COALESCE(n, using(col))`, write `n` and `col = down($)` | read `n`, write both | retire: the same; contract: read and write `col` |
//! | backfilled column | read the expression, do not write | read `COALESCE(col, expression)`, write | | read and write |
//! | defaulted column | read the default, do not write | read `COALESCE(col, default)`, write | | read and write |
//! | nullable column | read `NULL`, do not write | read and write | | |
//!
//! A generated column (`#[evolve(generated)]`, an identity or serial) is read and written like
//! any column, except that `insert_returning` leaves it to the database and `update` never
//! writes it.

mod retry;
mod scope;
mod select;

pub use retry::{Ran, Retrying};
pub use scope::{EvolvedExecutor, On, RunStatement, Scope};
pub use select::Select;

use std::sync::Arc;

use crate::error::{ErrorKind, Result};
use crate::ident::{Ident, Qualified};
use crate::kinds::{FieldAccess, RenamedAtContract};
use crate::registry::{self, InFlight, PhaseRegistry};
use crate::spec::ModelSpec;
use crate::sql::type_change::PARAM;
use crate::step::{Phase, StepId, StepKind};

/// The SQL of every accessor of one model, for one combination of phases. Parameters are
/// numbered by field: `$n` is the n-th field of the struct, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSql {
    /// The read expression of each field, in field order (`"col"`, `COALESCE(...)`, ...).
    pub reads: Vec<String>,
    /// `expr AS "col", ...` in field order: decode by position.
    pub select_list: String,
    /// `INSERT` of one row.
    pub insert: String,
    /// `INSERT` of one row that leaves the generated columns (`#[evolve(generated)]`) to the
    /// database and returns the stored row with the select list, so the caller gets the keys
    /// the database assigned. Here `$n` is the n-th field that is *not* generated, in
    /// declaration order; with nothing left to write it is `INSERT ... DEFAULT VALUES`.
    pub insert_returning: String,
    /// `UPDATE` of the non-key fields by primary key (generated fields are never written).
    pub update: String,
    /// `DELETE` by primary key; `$n` is the n-th primary key field.
    pub delete: String,
    /// `SELECT` by primary key; `$n` is the n-th primary key field.
    pub find: String,
    /// `SELECT` of every row, without `WHERE` or `ORDER BY`.
    pub select_all: String,
    /// Columns written for each field, in field order (empty: not written in this phase).
    pub writes: Vec<Vec<&'static str>>,
    /// The value of each written column, with a placeholder for the field's bound value (see
    /// `FieldAccess::values`).
    values: Vec<Vec<String>>,
    /// What each field's bound value (`PARAM`) becomes before `values` take it: itself, or
    /// an enum's label sent as text, mapped and cast (see `sql::enums::write_mapped`).
    params: Vec<String>,
    table: String,
    /// The columns this SQL names that a step's contract renames, with the step.
    renamed_at_contract: Vec<(StepId, RenamedAtContract)>,
    /// The enum labels this SQL writes under their old name that a step's contract renames.
    enum_renames: Vec<(StepId, EnumRename)>,
}

/// An enum label the accessors write under its old name until a step's contract renames it:
/// a statement built before that commit and run after it fails (`22P02`) and runs again with
/// the contract's SQL (see `access::retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EnumRename {
    /// The type, qualified and quoted.
    pub type_name: String,
    pub old: &'static str,
    pub new: &'static str,
    /// The contract may come next (the step is at retire): a statement inside a transaction
    /// then runs under a savepoint.
    pub contract_next: bool,
}

impl ModelSql {
    /// Builds the SQL for the phases `phase_of` gives (`None`: the step is not known).
    pub fn build(model: &ModelSpec, phase_of: impl Fn(&StepId) -> Option<Phase>) -> ModelSql {
        let steps = step_kinds(model);
        let mut renamed_at_contract = Vec::new();
        let mut enum_renames = Vec::new();
        let mut fields: Vec<FieldAccess> = model
            .columns
            .iter()
            .map(|c| {
                let step = steps
                    .iter()
                    .find(|(_, k)| k.column().is_some_and(|s| s.name == c.name));
                let room = step.map(|(id, k)| (id, crate::kinds::room(k)));
                // A widened reference follows its key's step; not knowing it, reads as before.
                let phase = match room.as_ref().and_then(|(_, r)| r.follows(model)) {
                    Some(key) => phase_of(&key).unwrap_or(Phase::Pending),
                    None => step
                        .and_then(|(id, _)| phase_of(id))
                        .unwrap_or(Phase::Contract),
                };
                if let Some((id, room)) = &room
                    && let Some(renamed) = room.renamed_at_contract(phase)
                {
                    renamed_at_contract.push(((*id).clone(), renamed));
                }
                room.and_then(|(_, room)| room.access(phase))
                    .unwrap_or_else(|| FieldAccess::plain(c))
            })
            .collect();
        // A field of an enum that renames a label is sent and read as text (`__private::as_text`).
        let params: Vec<String> = model
            .columns
            .iter()
            .zip(&mut fields)
            .map(|(c, f)| {
                let Some(spec) = c.enum_type.filter(|e| !e.renamed.is_empty()) else {
                    return PARAM.to_string();
                };
                let mut pending = Vec::new();
                for &(new, old) in spec.renamed {
                    let kind = StepKind::RenameEnumValue(spec, new, old);
                    let id = StepId::for_step(model, &kind);
                    let phase = phase_of(&id).unwrap_or(Phase::Contract);
                    if phase < Phase::Contract || phase == Phase::Aborted {
                        pending.push((new, old));
                    }
                    if phase < Phase::Contract && !enum_renames.iter().any(|(i, _)| *i == id) {
                        enum_renames.push((
                            id,
                            EnumRename {
                                type_name: spec.qualified_name(),
                                old,
                                new,
                                contract_next: phase == Phase::Retire,
                            },
                        ));
                    }
                }
                f.read = crate::sql::enums::read_mapped(&pending, &f.read);
                crate::sql::enums::write_mapped(spec, &pending, PARAM)
            })
            .collect();
        // A renamed table's accessors use the old name until its rename runs.
        let table_name = steps
            .iter()
            .find_map(|(id, k)| {
                crate::kinds::room(k).accessed_table(phase_of(id).unwrap_or(Phase::Contract))
            })
            .unwrap_or(model.table);
        let table = Qualified(model.schema, table_name).to_string();
        let reads: Vec<String> = fields.iter().map(|f| f.read.clone()).collect();
        let select_list = model
            .columns
            .iter()
            .zip(&reads)
            .map(|(c, r)| format!("{r} AS {}", Ident(c.name)))
            .collect::<Vec<_>>()
            .join(", ");

        let mut insert_cols = Vec::new();
        let mut insert_vals = Vec::new();
        let mut returning_cols = Vec::new();
        let mut returning_vals = Vec::new();
        let mut sets = Vec::new();
        // Position of each non-generated field among the non-generated fields.
        let mut written = 0;
        for (i, (c, f)) in model.columns.iter().zip(&fields).enumerate() {
            if !c.generated {
                written += 1;
            }
            for (k, col) in f.writes.iter().enumerate() {
                let value = f.value(k, &params[i].replace(PARAM, &format!("${}", i + 1)));
                insert_cols.push(Ident(col).to_string());
                insert_vals.push(value.clone());
                if !c.generated {
                    returning_cols.push(Ident(col).to_string());
                    returning_vals
                        .push(f.value(k, &params[i].replace(PARAM, &format!("${written}"))));
                }
                if !c.primary_key && !c.generated {
                    sets.push(format!("{} = {value}", Ident(col)));
                }
            }
        }
        let pk_by_field: Vec<String> = model
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.primary_key)
            .map(|(i, c)| format!("{} = ${}", Ident(c.name), i + 1))
            .collect();
        let pk_by_position: Vec<String> = model
            .primary_key()
            .enumerate()
            .map(|(i, c)| format!("{} = ${}", Ident(c.name), i + 1))
            .collect();
        let insert = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            insert_cols.join(", "),
            insert_vals.join(", ")
        );
        let insert_returning = if returning_cols.is_empty() {
            format!("INSERT INTO {table} DEFAULT VALUES RETURNING {select_list}")
        } else {
            format!(
                "INSERT INTO {table} ({}) VALUES ({}) RETURNING {select_list}",
                returning_cols.join(", "),
                returning_vals.join(", ")
            )
        };
        let update = if sets.is_empty() {
            // Nothing but the key: an update changes nothing, but still says whether the row exists.
            format!(
                "UPDATE {table} SET {} WHERE {}",
                pk_set(model),
                pk_by_field.join(" AND ")
            )
        } else {
            format!(
                "UPDATE {table} SET {} WHERE {}",
                sets.join(", "),
                pk_by_field.join(" AND ")
            )
        };
        let delete = format!("DELETE FROM {table} WHERE {}", pk_by_position.join(" AND "));
        let select_all = format!("SELECT {select_list} FROM {table}");
        let find = format!("{select_all} WHERE {}", pk_by_position.join(" AND "));
        ModelSql {
            reads,
            select_list,
            insert,
            insert_returning,
            update,
            delete,
            find,
            select_all,
            writes: fields.iter().map(|f| f.writes.clone()).collect(),
            values: fields.into_iter().map(|f| f.values).collect(),
            params,
            table,
            renamed_at_contract,
            enum_renames,
        }
    }

    /// `INSERT` of `rows` rows in one statement: row r, field n is `$(r * fields + n)`.
    pub fn insert_many(&self, rows: usize) -> String {
        let fields = self.writes.len();
        let mut cols = Vec::new();
        for w in &self.writes {
            cols.extend(w.iter().map(|c| Ident(c).to_string()));
        }
        let values: Vec<String> = (0..rows)
            .map(|r| {
                let vals: Vec<String> = self
                    .writes
                    .iter()
                    .enumerate()
                    .flat_map(|(n, w)| {
                        let param =
                            self.params[n].replace(PARAM, &format!("${}", r * fields + n + 1));
                        (0..w.len()).map(move |k| match self.values[n].get(k) {
                            Some(v) => v.replace(PARAM, &param),
                            None => param.clone(),
                        })
                    })
                    .collect();
                format!("({})", vals.join(", "))
            })
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            cols.join(", "),
            values.join(", ")
        )
    }

    /// Rows per `INSERT` so that a statement stays under PostgreSQL's 65,535 bind parameters.
    pub fn rows_per_insert(&self) -> usize {
        (65_535 / self.writes.len().max(1)).max(1)
    }
}

fn pk_set(model: &ModelSpec) -> String {
    model
        .primary_key()
        .map(|c| format!("{0} = {0}", Ident(c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The step that concerns each column, without building any SQL.
fn step_kinds(model: &ModelSpec) -> Vec<(StepId, StepKind)> {
    crate::kinds::of_model(model)
        .into_iter()
        .map(|k| (StepId::for_step(model, &k), k))
        .collect()
}

/// Which statement of a [`ModelSql`] an accessor runs, so that it can be made again from the
/// SQL of other phases (after a contract renamed a column it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accessor {
    /// [`ModelSql::insert`].
    Insert,
    /// [`ModelSql::insert_returning`].
    InsertReturning,
    /// [`ModelSql::insert_many`] of this many rows.
    InsertMany(usize),
    /// [`ModelSql::update`].
    Update,
    /// [`ModelSql::delete`].
    Delete,
    /// [`ModelSql::find`].
    Find,
    /// A [`Select`]: [`ModelSql::select_all`] with its clauses, `{field}` read as now.
    Select {
        /// `WHERE`.
        filter: Option<String>,
        /// `ORDER BY`.
        order_by: Option<String>,
        /// `LIMIT`.
        limit: Option<i64>,
    },
}

impl Accessor {
    /// The statement's text in `sql`.
    pub fn text(&self, model: &ModelSpec, sql: &ModelSql) -> String {
        match self {
            Accessor::Insert => sql.insert.clone(),
            Accessor::InsertReturning => sql.insert_returning.clone(),
            Accessor::InsertMany(rows) => sql.insert_many(*rows),
            Accessor::Update => sql.update.clone(),
            Accessor::Delete => sql.delete.clone(),
            Accessor::Find => sql.find.clone(),
            Accessor::Select {
                filter,
                order_by,
                limit,
            } => select::text(model, sql, filter, order_by, *limit),
        }
    }
}

/// The SQL of a model for one accessor call. While it is alive the call counts as under way, so
/// a phase change that retires a column waits for it (see [`PhaseRegistry::drained`]).
///
/// [`PhaseRegistry::drained`]: crate::__private::PhaseRegistry::drained
#[derive(Debug)]
pub struct Access {
    sql: Arc<ModelSql>,
    model: &'static ModelSpec,
    registry: Arc<PhaseRegistry>,
    /// The database's application pool goes through a transaction pooler.
    pooled: bool,
    _in_flight: InFlight,
}

impl Access {
    /// Runs `query` (`accessor`'s statement of this access, bound) on `executor`: see
    /// [`RunStatement`]. While the SQL names a column that a contract renames, the statement
    /// runs as [`Retrying`] says.
    pub async fn execute<'q, X: RunStatement + 'q>(
        &self,
        accessor: Accessor,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        executor: X,
    ) -> Result<sqlx::postgres::PgQueryResult> {
        if self.sql.renamed_at_contract.is_empty() && self.sql.enum_renames.is_empty() {
            return Ok(executor.execute(query, self.pooled).await?);
        }
        let ran = executor
            .run_retrying(self.retrying(accessor, query, false)?)
            .await?;
        Ok(ran.done()?)
    }

    /// Runs `query` and returns its rows: see [`Access::execute`].
    pub async fn fetch_all<'q, X: RunStatement + 'q>(
        &self,
        accessor: Accessor,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        executor: X,
    ) -> Result<Vec<sqlx::postgres::PgRow>> {
        if self.sql.renamed_at_contract.is_empty() && self.sql.enum_renames.is_empty() {
            return Ok(executor.fetch_all(query, self.pooled).await?);
        }
        let ran = executor
            .run_retrying(self.retrying(accessor, query, true)?)
            .await?;
        Ok(ran.rows()?)
    }

    /// Runs `query` and returns its one row, or `None`.
    pub async fn fetch_optional<'q, X: RunStatement + 'q>(
        &self,
        accessor: Accessor,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        executor: X,
    ) -> Result<Option<sqlx::postgres::PgRow>> {
        Ok(self
            .fetch_all(accessor, query, executor)
            .await?
            .into_iter()
            .next())
    }

    /// Runs `query` and returns its one row (`RowNotFound` without one).
    pub async fn fetch_one<'q, X: RunStatement + 'q>(
        &self,
        accessor: Accessor,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
        executor: X,
    ) -> Result<sqlx::postgres::PgRow> {
        self.fetch_optional(accessor, query, executor)
            .await?
            .ok_or_else(|| sqlx::Error::RowNotFound.into())
    }

    fn retrying(
        &self,
        accessor: Accessor,
        mut query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        rows: bool,
    ) -> Result<Retrying> {
        use sqlx::Execute;
        let args = query
            .take_arguments()
            .map_err(sqlx::Error::Encode)?
            .unwrap_or_default();
        Ok(Retrying {
            text: accessor.text(self.model, &self.sql),
            accessor,
            args,
            rows,
            pooled: self.pooled,
            model: self.model,
            registry: self.registry.clone(),
            renamed_at_contract: self.sql.renamed_at_contract.clone(),
            enum_renames: self.sql.enum_renames.clone(),
        })
    }
}

impl std::ops::Deref for Access {
    type Target = ModelSql;

    fn deref(&self) -> &ModelSql {
        &self.sql
    }
}

/// The SQL for a model in the phases this process knows now, for a call without a pool: the
/// one database of this process whose evolution knows the model (see [`model_sql_in`]).
pub fn model_sql(model: &'static ModelSpec) -> Result<Access> {
    model_sql_in(model, &Scope::Unknown)
}

/// The SQL for a model in the phases this process knows now of the database `scope` names.
///
/// Errors when no evolution of the model was booted in this process for that database (without
/// the phases, no column choice is safe), and, for [`Scope::Unknown`], when several databases
/// know the model: then only the pool or an [`On`] handle can tell which one the call is for.
pub fn model_sql_in(model: &'static ModelSpec, scope: &Scope) -> Result<Access> {
    let create = StepId::for_step(model, &StepKind::CreateTable);
    let not_booted = || -> crate::error::Error {
        ErrorKind::NotBooted {
            model: model.rust_name.to_string(),
        }
        .into()
    };
    let registry: Arc<PhaseRegistry> = match scope {
        Scope::Registry(r) => r.clone(),
        Scope::Database(key) => registry::existing(key).ok_or_else(not_booted)?,
        Scope::Unknown => {
            let mut knowing = registry::knowing(&create);
            match knowing.len() {
                0 => return Err(not_booted()),
                1 => knowing.remove(0).1,
                _ => {
                    let mut databases: Vec<String> =
                        knowing.iter().map(|(k, _)| k.to_string()).collect();
                    databases.sort();
                    return Err(ErrorKind::AmbiguousDatabase {
                        model: model.rust_name.to_string(),
                        databases: databases.join(", "),
                    }
                    .into());
                }
            }
        }
    };
    // Enter before reading the phases: a phase change after this point waits for this call.
    let generation = registry.generation();
    let in_flight = registry.enter(generation);
    if registry.get(&create).is_none() {
        return Err(not_booted());
    }
    let key = (
        model.schema,
        model.table,
        model.rust_name,
        std::ptr::from_ref(model) as usize,
    );
    let sql = registry.sql(key, generation, || {
        ModelSql::build(model, |id| registry.get(id))
    });
    Ok(Access {
        sql,
        model,
        pooled: registry.transaction_pooled(),
        registry,
        _in_flight: in_flight,
    })
}

/// Decoding a row of [`ModelSql::select_list`] into the struct; implemented by the derive.
pub trait FromEvolvedRow: Sized {
    /// Reads the fields by position.
    fn from_evolved_row(row: &sqlx::postgres::PgRow) -> std::result::Result<Self, sqlx::Error>;
}
