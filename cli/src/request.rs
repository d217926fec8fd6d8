//! `pause`, `resume`, `switch`, `contract`, `abort`: a request recorded in the state store
//! (with the runtime's own statement, which notifies every instance's coordinator at commit),
//! then, unless `--no-wait`, its outcome as the instance that carried it out recorded it.

use std::time::{Duration, Instant};

use pgevolve_runtime::__private::{Action, RequestRow, Requests};
use serde_json::json;

use crate::Wait;
use crate::error::{CliError, Reading};
use crate::store::Store;

/// How often the outcome is looked at.
const POLL: Duration = Duration::from_millis(100);

/// A request as the command line gave it.
pub struct Asked<'a> {
    action: Action,
    step: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Asked<'a> {
    pub fn pause(step: Option<&'a str>, reason: Option<&'a str>) -> Asked<'a> {
        Asked {
            action: Action::Pause,
            step,
            reason,
        }
    }
    pub fn resume(step: Option<&'a str>) -> Asked<'a> {
        Asked {
            action: Action::Resume,
            step,
            reason: None,
        }
    }
    pub fn switch(step: Option<&'a str>) -> Asked<'a> {
        Asked {
            action: Action::Switch,
            step,
            reason: None,
        }
    }
    /// With `override_window`, the contract runs outside the deploy window and the reason is
    /// journaled.
    pub fn contract(step: Option<&'a str>, override_window: Option<&'a str>) -> Asked<'a> {
        Asked {
            action: Action::Contract,
            step,
            reason: override_window,
        }
    }
    pub fn abort(step: &'a str) -> Asked<'a> {
        Asked {
            action: Action::Abort,
            step: Some(step),
            reason: None,
        }
    }
}

pub async fn request(
    store: &mut Store,
    asked: Asked<'_>,
    wait: &Wait,
    json: bool,
) -> Result<(), CliError> {
    store.require_table("requests").await?;
    let step = match asked.step {
        Some(given) => Some(store.resolve_step(given).await?),
        None => None,
    };
    let by = match &wait.requested_by {
        Some(by) => by.clone(),
        None => requested_by(store).await?,
    };
    let requests = Requests::new(&store.schema);
    let id = requests
        .submit(
            &mut store.conn,
            asked.action,
            step.as_deref(),
            asked.reason,
            &by,
        )
        .await
        .reading("the requests (recording this one)")?;
    let action = asked.action;
    if wait.no_wait {
        if json {
            println!(
                "{}",
                json!({"request": id, "action": action.as_str(), "step": step, "outcome": null})
            );
        } else {
            println!(
                "request #{id} ({action}) recorded; live instances pick it up within about a second \
                 (`pgevolve history` shows the outcome)"
            );
        }
        return Ok(());
    }
    let started = Instant::now();
    let timeout = Duration::from_secs(wait.timeout);
    let row = loop {
        let row = requests
            .get(&mut store.conn, id)
            .await
            .reading("the requests")?
            .ok_or(CliError::Query {
                what: "the requests",
                source: sqlx::Error::RowNotFound,
            })?;
        if row.outcome.is_some() {
            break row;
        }
        if started.elapsed() >= timeout {
            return Err(not_done(store, &requests, &row, action, wait.timeout).await?);
        }
        tokio::time::sleep(POLL).await;
    };
    let instance = row.picked_by.clone().unwrap_or_default();
    let mut message = row.message.clone().unwrap_or_default();
    if action == Action::Contract
        && row.outcome.as_deref() == Some("failed")
        && message.contains("deploy window")
    {
        message.push_str(" (from the CLI: pgevolve contract --override-window REASON)");
    }
    if json {
        println!(
            "{}",
            json!({
                "request": id, "action": action.as_str(), "step": step, "outcome": row.outcome,
                "instance": instance, "message": message,
            })
        );
    }
    match row.outcome.as_deref() {
        Some("done") => {
            if !json {
                println!("request #{id} ({action}) done by instance {instance}: {message}");
            }
            Ok(())
        }
        _ => Err(CliError::RequestFailed {
            id,
            action: action.to_string(),
            instance,
            message,
        }),
    }
}

/// The error for a request not finished within the timeout. A switch, contract or abort that no
/// instance took is cancelled, so it cannot run by surprise at the next boot; a pause or resume
/// is already in force (the request only waits for an instance to see it).
async fn not_done(
    store: &mut Store,
    requests: &Requests,
    row: &RequestRow,
    action: Action,
    waited: u64,
) -> Result<CliError, CliError> {
    if let Some(instance) = &row.picked_by {
        return Ok(CliError::StillRunning {
            id: row.id,
            action: action.to_string(),
            instance: instance.clone(),
            waited,
        });
    }
    if action.is_pause() {
        return Ok(CliError::NotPickedUp {
            id: row.id,
            action: action.to_string(),
            waited,
            what_now: "The pause state is recorded all the same: the next instance that leads \
                       the background work follows it.",
        });
    }
    let cancelled = requests
        .cancel_unpicked(
            &mut store.conn,
            row.id,
            &format!("cancelled by the CLI: no live instance picked it up within {waited} s"),
        )
        .await
        .reading("the requests (cancelling this one)")?;
    if !cancelled {
        // An instance took it just now.
        let instance = requests
            .get(&mut store.conn, row.id)
            .await
            .reading("the requests")?
            .and_then(|r| r.picked_by)
            .unwrap_or_default();
        return Ok(CliError::StillRunning {
            id: row.id,
            action: action.to_string(),
            instance,
            waited,
        });
    }
    Ok(CliError::NotPickedUp {
        id: row.id,
        action: action.to_string(),
        waited,
        what_now: "The request was cancelled, so it will not run by surprise later; \
                   ask again once an instance runs.",
    })
}

/// `<OS user> via role <database role>`.
async fn requested_by(store: &mut Store) -> Result<String, CliError> {
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut store.conn)
        .await
        .reading("the session's role")?;
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    Ok(format!("{user} via role {role}"))
}
