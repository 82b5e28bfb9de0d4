//! `/api/v1/agent`: the protocol connection agents speak. Agents dial out to the server; they claim
//! approved jobs for the connections assigned to them, start them, keep their lease with
//! heartbeats and report results. A claim is only an offer: the job runs once its agent starts it,
//! and an offer nobody starts returns to `approved`, so a lost claim reply loses no job. A started
//! job is never handed out again.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{Agent, Body, MaybeBody};
use crate::config::{Config, DEFAULT_MAX_OUTPUT_BYTES};
use crate::domain::{ConnectionName, ExecutionResult};
use crate::error::{Error, Result};
use crate::service::{Hoop, OFFER_TIME};
use crate::view::AccessRequestView;

const DEFAULT_CLAIM_WAIT: u64 = 30;
const MAX_CLAIM_WAIT: u64 = 120;

/// The agent protocol's routes; the result route has a body limit of its own, sized for results.
pub fn router(config: &Config) -> Router<Hoop> {
    Router::new()
        .route("/agent/jobs/claim", post(claim))
        .route("/agent/jobs/{id}/start", post(start))
        .route("/agent/jobs/{id}/heartbeat", post(heartbeat))
        .route(
            "/agent/jobs/{id}/result",
            post(result).layer(DefaultBodyLimit::max(result_body_limit(config))),
        )
        .route("/agent/jobs/{id}/refuse", post(refuse))
}

/// The largest result body an agent may send: a result within the output cap (`max_output_bytes`,
/// the largest of any connection, at least the default) for stdout and for stderr, with every
/// byte escaped by JSON (up to six bytes each, `\u0000`), plus room for the rest of the result.
/// The command limit that guards every other route would refuse most real results.
fn result_body_limit(config: &Config) -> usize {
    let cap = config
        .connections
        .iter()
        .map(|c| c.target.max_output_bytes)
        .fold(DEFAULT_MAX_OUTPUT_BYTES, usize::max);
    cap.saturating_mul(2 * 6).saturating_add(1024 * 1024)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Only these connections; all connections assigned to the agent when absent.
    #[serde(default)]
    pub connections: Option<Vec<ConnectionName>>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

#[derive(Serialize)]
pub struct JobReply {
    pub job: Option<AccessRequestView>,
    /// Seconds the claim holds without a heartbeat; agents heartbeat well within it.
    pub lease_s: u64,
    /// The offer of a claimed job, to start it with; only in claim replies with a job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer: Option<String>,
    /// Seconds the offer waits to be started before the job goes back to `approved`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offer_s: Option<u64>,
}

impl JobReply {
    fn new(hoop: &Hoop, job: Option<crate::domain::AccessRequest>) -> Json<JobReply> {
        Json(JobReply {
            job: job.map(|j| AccessRequestView::new(j, hoop.public_url())),
            lease_s: hoop.job_lease().as_secs().max(1),
            offer: None,
            offer_s: None,
        })
    }
}

/// Long-polls for the oldest approved job of the agent's connections and offers it to the agent.
async fn claim(
    State(hoop): State<Hoop>,
    agent: Agent,
    MaybeBody(body): MaybeBody<ClaimBody>,
) -> Result<Json<JobReply>> {
    let Agent {
        name: agent,
        token_sha256,
    } = agent;
    let connections = hoop.connections_for(&agent, body.connections)?;
    let timeout = body.timeout_s.unwrap_or(DEFAULT_CLAIM_WAIT);
    if timeout > MAX_CLAIM_WAIT {
        return Err(Error::InvalidInput(format!(
            "timeout_s must be at most {MAX_CLAIM_WAIT}"
        )));
    }
    let job = hoop
        .claim(
            &agent,
            Some(&token_sha256),
            &connections,
            Duration::from_secs(timeout),
        )
        .await?;
    let offer = job.as_ref().and_then(|j| j.offer.clone());
    let Json(mut reply) = JobReply::new(&hoop, job);
    if offer.is_some() {
        reply.offer = offer;
        reply.offer_s = Some(OFFER_TIME.as_secs());
    }
    Ok(Json(reply))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    pub offer: String,
}

/// Starts an offered job: it becomes `running` for this agent, which may then run it.
async fn start(
    State(hoop): State<Hoop>,
    agent: Agent,
    Path(id): Path<String>,
    Body(body): Body<StartBody>,
) -> Result<Json<JobReply>> {
    let job = hoop.start(&agent.name, &id, &body.offer).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}

async fn heartbeat(
    State(hoop): State<Hoop>,
    Agent { name: agent, .. }: Agent,
    Path(id): Path<String>,
) -> Result<Json<JobReply>> {
    let job = hoop.heartbeat(&agent, &id).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}

async fn result(
    State(hoop): State<Hoop>,
    Agent { name: agent, .. }: Agent,
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
    Agent { name: agent, .. }: Agent,
    Path(id): Path<String>,
    Body(body): Body<RefuseBody>,
) -> Result<Json<JobReply>> {
    // Debug-formatted: the id (from the path) and the reason are the caller's text, and a raw
    // newline in either forged whole log lines.
    tracing::warn!(request_id = ?id, agent, reason = ?body.reason, "agent refused a job");
    let job = hoop.refuse(&agent, &id, &body.reason).await?;
    Ok(JobReply::new(&hoop, Some(job)))
}
