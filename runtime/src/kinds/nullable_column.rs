//! An `Option<T>` field missing from the table: `ADD COLUMN`, metadata only.

use super::resolving::BoxFuture;
use super::{FieldAccess, Kind, PlannedPhase, Resolving, Shown};
use crate::error::Result;
use crate::spec::{ColumnSpec, ModelSpec};
use crate::sql;
use crate::step::{Phase, StepId};

pub(crate) struct NullableColumn(pub &'static ColumnSpec);

impl Kind for NullableColumn {
    fn name(&self) -> &'static str {
        "add_nullable_column"
    }

    fn identity(&self) -> Vec<&'static str> {
        super::filled_column::column_identity(self.0)
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn plan(&self, model: &ModelSpec, _id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: "metadata only, one short transaction under lock_timeout",
            statements: sql::add_nullable_column(model, self.0),
        }]
    }

    fn describe(&self, model: &ModelSpec, _id: &StepId) -> String {
        format!(
            "add nullable column {}.{} {}",
            model.qualified_name(),
            self.0.name,
            self.0.sql_type
        )
    }

    fn column(&self) -> Option<&'static ColumnSpec> {
        Some(self.0)
    }

    /// Before expand (or once aborted) the column does not exist: read `NULL`, write nothing.
    fn access(&self, phase: Phase) -> Option<FieldAccess> {
        matches!(phase, Phase::Pending | Phase::Aborted).then(|| FieldAccess {
            read: format!("CAST(NULL AS {})", self.0.sql_type),
            writes: vec![],
            values: Vec::new(),
        })
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        let present = cx.live.column(self.0.name).is_some();
        Box::pin(async move {
            Ok(if present {
                Phase::Expand
            } else {
                Phase::Pending
            })
        })
    }
}
