//! Operators' requests (`pgevolve pause`, `resume`, `switch`, `contract`, `abort`), carried out
//! by the instances (the tables and their statements are `state/requests.rs`).
//!
//! Every booted evolution runs a small task that looks for open requests after each round of
//! its coordinator: at once when the CLI's `pg_notify` wakes it, and every second otherwise.
//! - `pause` and `resume` were applied by the CLI's own transaction (the leader reads the
//!   pauses before every batch and phase): the first live instance to see one marks it done.
//! - `switch`, `contract` and `abort` are claimed by one instance whose build knows the step
//!   (any instance for a request about every step), and run on a task of their own, as
//!   [`Evolution::switch`], [`Evolution::contract`] (or
//!   [`Evolution::contract_overriding_window`] when the request has a reason) and
//!   [`Evolution::abort`] would, then marked done or failed with the error's `Display` text.
//!   An abort does not stop this instance's background work first (as [`Evolution::abort`]
//!   does for its caller): the operator did not ask this instance to stop, so it records the
//!   abort for the leader when another instance leads, and runs it itself under the leader
//!   lock otherwise.
//!
//! The task holds the engine weakly, so an evolution that is dropped ends it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{Engine, Evolution, try_lock};
use crate::error::{Error, Result};
use crate::state::{Action, RequestRow, Requests, instances};
use crate::step::StepId;

/// How often the task looks for requests when its coordinator is not running (yet).
const POLL: Duration = Duration::from_secs(1);

type Done = watch::Receiver<Option<std::result::Result<(), Arc<Error>>>>;

impl Engine {
    /// Starts the request task of this evolution (see the module's documentation).
    pub(super) fn serve_requests(self: &Arc<Self>, done: Done, fast: bool) {
        let engine = Arc::downgrade(self);
        tokio::spawn(serve(engine, done, fast));
    }
}

async fn serve(engine: Weak<Engine>, done: Done, fast: bool) {
    let mut rounds: Option<watch::Receiver<u64>> = None;
    let mut trouble: Option<String> = None;
    loop {
        match rounds.as_mut() {
            Some(r) => {
                if matches!(
                    tokio::time::timeout(POLL * 2, r.changed()).await,
                    Ok(Err(_))
                ) {
                    // The coordinator stopped: poll from now on.
                    rounds = None;
                }
            }
            None => tokio::time::sleep(POLL).await,
        }
        let Some(inner) = engine.upgrade() else {
            return;
        };
        if rounds.is_none()
            && let Some(c) = inner.coordinator.get()
        {
            rounds = Some(c.rounds());
        }
        let evolution = Evolution {
            inner,
            done: done.clone(),
            fast,
        };
        match look(&evolution).await {
            Ok(()) => trouble = None,
            Err(e) => {
                let message = e.to_string();
                if trouble.as_ref() != Some(&message) {
                    warn!(error = %message, "reading operators' requests failed; retrying every second");
                }
                trouble = Some(message);
            }
        }
    }
}

/// Carries out (or hands to a task) every open request this instance may take.
async fn look(evolution: &Evolution) -> std::result::Result<(), sqlx::Error> {
    let inner = &evolution.inner;
    let requests = Requests::new(&inner.store.schema);
    let timeout = inner.evolver.heartbeat_timeout;
    let mut conn = inner.evolver.pool.acquire().await?;
    let open = match requests.open(&mut conn, timeout).await {
        Ok(open) => open,
        // A store of an older version: no requests table yet.
        Err(e) if instances::is_missing_table(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for request in open {
        let Some(action) = Action::parse(&request.action) else {
            debug!(id = request.id, action = %request.action, "request of an unknown action left for a newer build");
            continue;
        };
        if action.is_pause() {
            let message = pause_message(&requests, &mut conn, action, &request).await?;
            requests
                .finish(&mut conn, &request, &inner.instance, "done", &message)
                .await?;
            info!(id = request.id, %action, "operator's request seen: {message}");
            continue;
        }
        // A step this build does not know is left for an instance whose build does.
        let step = match &request.step {
            Some(id) => match inner.step(&StepId::from_stored(id.clone())) {
                Ok(step) => Some(step.id),
                Err(_) => continue,
            },
            None => None,
        };
        if !requests
            .claim(&mut conn, request.id, &inner.instance, timeout)
            .await?
        {
            continue;
        }
        info!(id = request.id, %action, step = ?request.step, by = %request.requested_by, "carrying out an operator's request");
        let evolution = evolution.clone();
        tokio::spawn(async move {
            let result = carry_out(&evolution, action, step.as_ref(), &request).await;
            let (outcome, message) = match &result {
                Ok(message) => ("done", message.clone()),
                Err(e) => ("failed", e.to_string()),
            };
            if let Err(e) = &result {
                warn!(id = request.id, %action, error = %e, "operator's request failed");
            }
            let inner = &evolution.inner;
            let finished = async {
                let mut conn = inner.evolver.pool.acquire().await?;
                Requests::new(&inner.store.schema)
                    .finish(&mut conn, &request, &inner.instance, outcome, &message)
                    .await
            }
            .await;
            if let Err(e) = finished {
                warn!(id = request.id, error = %e, "could not record the outcome of an operator's request");
            }
        });
    }
    Ok(())
}

/// What a pause or resume request did, as its outcome says it: what is paused now.
async fn pause_message(
    requests: &Requests,
    conn: &mut sqlx::PgConnection,
    action: Action,
    request: &RequestRow,
) -> std::result::Result<String, sqlx::Error> {
    let paused: Vec<String> = requests
        .pauses(conn)
        .await?
        .into_iter()
        .map(|p| p.scope)
        .collect();
    let what = |scope: &str| {
        if scope == "*" {
            "every step".to_string()
        } else {
            format!("step {scope}")
        }
    };
    let scope = what(request.step.as_deref().unwrap_or("*"));
    Ok(match action {
        Action::Pause => format!(
            "paused {scope}: the leader stops before its next backfill batch or phase, keeping its checkpoint"
        ),
        _ if paused.is_empty() => format!("resumed {scope}: nothing is paused now"),
        _ => format!(
            "resumed {scope}; still paused: {}",
            paused
                .iter()
                .map(|s| what(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Runs a claimed switch, contract or abort as the matching [`Evolution`] call does.
async fn carry_out(
    evolution: &Evolution,
    action: Action,
    step: Option<&StepId>,
    request: &RequestRow,
) -> Result<String> {
    let inner = &evolution.inner;
    let reason = request.reason.as_deref();
    match (action, step) {
        (Action::Switch, None) => evolution.switch().await.map(|()| "switched".into()),
        (Action::Switch, Some(id)) => evolution
            .switch_step(id)
            .await
            .map(|()| format!("switched step {id}")),
        (Action::Contract, None) => {
            evolution.contract_with(reason).await?;
            Ok(match reason {
                Some(reason) => format!("contracted (deploy window overridden: {reason})"),
                None => "contracted".into(),
            })
        }
        (Action::Contract, Some(id)) => {
            let step = inner.step(id)?;
            let lock = inner.lead().await?;
            inner
                .advance_to(&step, crate::step::Phase::Contract, reason)
                .await?;
            inner.record_verified_if_done().await;
            sqlx::Connection::close(lock).await?;
            Ok(format!("contracted step {id}"))
        }
        (Action::Abort, Some(id)) => {
            let step = inner.step(id)?;
            let mut lock = inner.leader_connection().await?;
            if try_lock(&mut lock, inner.lock_key()).await? {
                inner.abort(&step).await?;
                inner.record_verified_if_done().await;
                sqlx::Connection::close(lock).await?;
            } else {
                // Another instance (or this one's background walk) leads: record the abort
                // and wait until the leader has dropped what the step added.
                drop(lock);
                inner.request_abort(&step).await?;
            }
            Ok(format!("aborted step {id}: {}", step.describe()))
        }
        (Action::Abort, None) => Err(crate::error::ErrorKind::UnknownStep {
            step: "(none: an abort names its step)".into(),
        }
        .into()),
        // Never claimed: `look` marks them done.
        (Action::Pause | Action::Resume, _) => Ok("nothing to carry out".into()),
    }
}
