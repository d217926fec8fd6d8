//! An index the struct declares (`#[evolve(index)]`, `index(...)` on the struct): built with
//! `CREATE INDEX CONCURRENTLY` in the background, on a dedicated connection outside any
//! transaction; an INVALID index of the same name is dropped first, a valid one with the same
//! definition adopted.

use super::resolving::BoxFuture;
use super::{Kind, NewTablePart, PlannedPhase, Resolving, Runner, Shown, catalog_object};
use crate::error::Result;
use crate::spec::{IndexSpec, ModelSpec};
use crate::sql::Statement;
use crate::sql::index::{self, IndexDef};
use crate::step::{Phase, StepId};

pub(crate) struct CreateIndex(pub &'static IndexSpec);

/// How a concurrent build runs, for reviewers of `plan()`.
const BUILD_NOTE: &str = "in the background, not at boot: outside any transaction, on a dedicated connection with \
lock_timeout = 0 and statement_timeout = 0 (SHARE UPDATE EXCLUSIVE blocks neither reads nor writes, and the build \
waits for older transactions by design); an INVALID index of this name is dropped CONCURRENTLY first, \
pg_index.indisvalid is checked after";

impl Kind for CreateIndex {
    fn name(&self) -> &'static str {
        "create_index"
    }

    fn identity(&self) -> Vec<&'static str> {
        let ix = self.0;
        let mut parts = vec![
            ix.name.unwrap_or_default(),
            ix.method.as_str(),
            if ix.unique { "unique" } else { "" },
            ix.predicate.unwrap_or_default(),
            "columns",
        ];
        parts.extend(ix.columns.iter().copied());
        parts.push("include");
        parts.extend(ix.include.iter().copied());
        parts
    }

    fn phases(&self) -> &'static [Phase] {
        &[Phase::Expand]
    }

    fn expands_at_boot(&self) -> bool {
        false
    }

    fn plan(&self, model: &ModelSpec, id: &StepId, _shown: &Shown) -> Vec<PlannedPhase> {
        vec![PlannedPhase {
            phase: Phase::Expand,
            note: BUILD_NOTE,
            statements: vec![index::create_concurrently(
                model,
                &IndexDef::for_index(model, self.0, id),
            )],
        }]
    }

    fn describe(&self, model: &ModelSpec, id: &StepId) -> String {
        let def = IndexDef::for_index(model, self.0, id);
        let mut line = format!(
            "create {}index {} on {} using {} {}",
            if def.unique { "unique " } else { "" },
            def.name,
            model.qualified_name(),
            def.method.as_str(),
            def.describe_columns()
        );
        if !def.include.is_empty() {
            line.push_str(&format!(" include ({})", def.include.join(", ")));
        }
        if let Some(predicate) = def.predicate {
            line.push_str(&format!(" where {predicate}"));
        }
        line
    }

    fn abort(&self, model: &ModelSpec, id: &StepId) -> Vec<Statement> {
        vec![index::drop_concurrently(
            model,
            &IndexDef::for_index(model, self.0, id).name,
        )]
    }

    fn index(&self, model: &ModelSpec, id: &StepId) -> Option<IndexDef> {
        Some(IndexDef::for_index(model, self.0, id))
    }

    fn object_name(&self, model: &ModelSpec, id: &StepId) -> Option<String> {
        Some(IndexDef::for_index(model, self.0, id).name)
    }

    fn in_new_table(&self, model: &ModelSpec, id: &StepId) -> Option<NewTablePart> {
        Some(NewTablePart::Statement(index::create_with_table(
            model,
            &IndexDef::for_index(model, self.0, id),
        )))
    }

    fn runner(&self, phase: Phase) -> Runner {
        match phase {
            Phase::Expand => Runner::ConcurrentBuild,
            _ => Runner::Statements,
        }
    }

    fn progress<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<Phase>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            if let Some(phase) = catalog_object::settled(cx, &name, &self.describe(cx.model, cx.id))
            {
                return Ok(phase);
            }
            let def = IndexDef::for_index(cx.model, self.0, cx.id);
            catalog_object::index_progress(cx, &def, None, &name).await
        })
    }

    fn abort_leftovers<'a>(&'a self, cx: &'a mut Resolving<'_, '_>) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let name = self.object_name(cx.model, cx.id).unwrap_or_default();
            catalog_object::index_left(cx, &name, false).await
        })
    }

    fn judged_on_catalog(&self) -> bool {
        true
    }
}
