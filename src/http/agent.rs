//! `/api/v1/agent`: the protocol connection agents speak. Agents dial out to the server; they claim
//! approved jobs for the connections assigned to them, keep their lease with heartbeats and report
//! results. A job is handed out once; nothing here ever re-queues it.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{Agent, Body, MaybeBody};
use super::view::AccessRequestView;
use crate::domain::ExecutionResult;
use crate::error::{Error, Result};
use crate::service::Hoop;

const DEFAULT_CLAIM_WAIT: u64 = 30;
const MAX_CLAIM_WAIT: u64 = 120;

pub fn router() -> Router<Hoop> {
    Router::new()
        .route("/agent/jobs/claim", post(claim))
        .route("/agent/jobs/{id}/heartbeat", post(heartbeat))
        .route("/agent/jobs/{id}/result", post(result))
        .route("/agent/jobs/{id}/refuse", post(refuse))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Only these connections; all connections assigned to the agent when absent.
    #[serde(default)]
    pub connections: Option<Vec<String>>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

#[derive(Serialize)]
pub struct JobReply {
    pub job: Option<AccessRequestView>,
    /// Seconds the claim holds without a heartbeat; agents heartbeat well within it.
    pub lease_s: u64,
}

impl JobReply {
    fn new(hoop: &Hoop, job: Option<crate::domain::AccessRequest>) -> Json<JobReply> {
        Json(JobReply {
            job: job.map(|j| AccessRequestView::new(j, &hoop.config.server.public_url)),
            lease_s: hoop.config.server.job_lease.as_secs().max(1),
        })
    }
}

/// Long-polls for the oldest approved job of the agent's connections.
async fn claim(
    State(hoop): State<Hoop>,
    Agent(agent): Agent,
    MaybeBody(body): MaybeBody<ClaimBody>,
) -> Result<Json<JobReply>> {
    let assigned: Vec<String> = hoop
        .config
        .connections
        .iter()
        .filter(|c| c.agent.as_deref() == Some(agent.as_str()))
        .map(|c| c.name.clone())
        .collect();
    let connections = match body.connections {
        None => assigned,
        Some(asked) => {
            if let Some(other) = asked.iter().find(|c| !assigned.contains(c)) {
                return Err(Error::Forbidden(format!(
                    "connection {other:?} is not assigned to agent {agent} in the server's config"
                )));
            }
            asked
        }
    };
    let timeout = body.timeout_s.unwrap_or(DEFAULT_CLAIM_WAIT);
    if timeout > MAX_CLAIM_WAIT {
        return Err(Error::InvalidInput(format!(
            "timeout_s must be at most {MAX_CLAIM_WAIT}"
        )));
    }
    let job = hoop
        .claim(&agent, &connections, Duration::from_secs(timeout))
        .await?;
    Ok(JobReply::new(&hoop, job))
}

async fn heartbeat(
    State(hoop): State<Hoop>,
    Agent(agent): Agent,
    Path(id): Path<String>,
) -> Result<Json<JobReply>> {
    let job = hoop.heartbeat(&agent, &id).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}

async fn result(
    State(hoop): State<Hoop>,
    Agent(agent): Agent,
    Path(id): Path<String>,
    Body(result): Body<ExecutionResult>,
) -> Result<Json<JobReply>> {
    let job = hoop.report(&agent, &id, result).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefuseBody {
    pub reason: String,
}

async fn refuse(
    State(hoop): State<Hoop>,
    Agent(agent): Agent,
    Path(id): Path<String>,
    Body(body): Body<RefuseBody>,
) -> Result<Json<JobReply>> {
    tracing::warn!(request_id = %id, agent, reason = %body.reason, "agent refused a job");
    let job = hoop.refuse(&agent, &id, &body.reason).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}
