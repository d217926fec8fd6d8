//! A table the struct declares and the database does not have: created with every column,
//! constraint and index at once (it is empty and invisible until its transaction commits).

use super::resolving::BoxFuture;
use super::{Kind, NewTablePart, PlannedPhase, Resolving, Shown, of_model, room};
use crate::error::Result;
use crate::spec::ModelSpec;
use crate::sql::{self, Statement};
use crate::step::{Phase, StepId};

pub(crate) struct CreateTable;

impl Kind for CreateTable {
    fn name(&self) -> &'static str {
        "create_table"
    }

    fn identity(&self) -> Vec<&'static str> {
        Vec::new()
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn creates_table(&self) -> bool {
        true
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        let mut constraints = Vec::new();
        let mut after = Vec::new();
        let mut before = Vec::new();
        for kind in of_model(model) {
            let id = StepId::for_step(model, &kind);
            match room(&kind).in_new_table(model, &id) {
                Some(NewTablePart::Constraint(line)) => constraints.push(line),
                Some(NewTablePart::Statement(statement)) => after.push(statement),
                Some(NewTablePart::Before(statements)) => before.extend(statements),
                None => {}
            }
        }
        let mut statements: Vec<Statement> = before;
        statements.extend(sql::create_table(model, &constraints));
        statements.extend(after);
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "only when the table does not exist; the column steps below are then already satisfied",
            statements,
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!("create table {}", model.qualified_name())
    }

    /// The table exists (resolving a missing table never asks the steps).
    fn progress<'a>(&'a self, _cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async { Ok(Phase::Expand) })
    }
}
