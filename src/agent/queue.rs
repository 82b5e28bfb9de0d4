//! The two ways an agent reaches jobs: the server's agent protocol over HTTP, or the service itself
//! when `hoop serve` runs embedded connections.

use std::time::Duration;

use async_trait::async_trait;

use super::worker::{Job, JobQueue, QueueError};
use crate::client::{Client, ClientError};
use crate::config::EMBEDDED_AGENT;
use crate::domain::{AccessRequest, ConnectionName, ExecutionResult};
use crate::error::Error;
use crate::service::Hoop;

/// Jobs from a remote server, as `hoop agent` gets them.
pub struct HttpQueue(pub Client);

fn remote(e: ClientError) -> QueueError {
    QueueError {
        transient: e.is_transient(),
        message: e.to_string(),
    }
}

#[async_trait]
impl JobQueue for HttpQueue {
    async fn claim(
        &self,
        connections: &[ConnectionName],
        wait: Duration,
    ) -> Result<Option<Job>, QueueError> {
        let reply = self.0.claim(connections, wait).await.map_err(remote)?;
        let Some(j) = reply.job else {
            return Ok(None);
        };
        let offer = reply.offer.ok_or_else(|| QueueError {
            transient: false,
            message: "the server offered a job without an offer id; is it an older hoopbot?".into(),
        })?;
        Ok(Some(Job {
            id: j.id,
            connection: j.connection,
            command: j.command,
            command_sha256: j.command_sha256,
            offer,
        }))
    }

    async fn start(&self, job: &Job) -> Result<Duration, QueueError> {
        let reply = self.0.start(&job.id, &job.offer).await.map_err(remote)?;
        Ok(Duration::from_secs(reply.lease_s.unwrap_or(30)))
    }

    async fn heartbeat(&self, id: &str) -> Result<(), QueueError> {
        self.0.heartbeat(id).await.map(drop).map_err(remote)
    }

    async fn report(&self, id: &str, result: &ExecutionResult) -> Result<(), QueueError> {
        self.0.report(id, result).await.map(drop).map_err(remote)
    }

    async fn refuse(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        self.0.refuse(id, reason).await.map(drop).map_err(remote)
    }
}

/// Jobs of the connections `hoop serve` runs itself (agent `embedded`).
pub struct LocalQueue(pub Hoop);

fn local(e: Error) -> QueueError {
    QueueError {
        transient: matches!(e, Error::Internal(_)),
        message: e.to_string(),
    }
}

fn job(request: AccessRequest) -> Job {
    Job {
        id: request.id,
        connection: request.connection,
        command: request.command,
        command_sha256: request.command_sha256,
        offer: request.offer.unwrap_or_default(),
    }
}

#[async_trait]
impl JobQueue for LocalQueue {
    async fn claim(
        &self,
        connections: &[ConnectionName],
        wait: Duration,
    ) -> Result<Option<Job>, QueueError> {
        let claimed = self
            .0
            .claim(EMBEDDED_AGENT, None, connections, wait)
            .await
            .map_err(local)?;
        Ok(claimed.map(job))
    }

    async fn start(&self, job: &Job) -> Result<Duration, QueueError> {
        self.0
            .start(EMBEDDED_AGENT, &job.id, &job.offer)
            .await
            .map_err(local)?;
        Ok(self.0.job_lease())
    }

    async fn heartbeat(&self, id: &str) -> Result<(), QueueError> {
        self.0
            .heartbeat(EMBEDDED_AGENT, id)
            .await
            .map(drop)
            .map_err(local)
    }

    async fn report(&self, id: &str, result: &ExecutionResult) -> Result<(), QueueError> {
        self.0
            .report(EMBEDDED_AGENT, id, result.clone())
            .await
            .map(drop)
            .map_err(local)
    }

    async fn refuse(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        self.0
            .refuse(EMBEDDED_AGENT, id, reason)
            .await
            .map(drop)
            .map_err(local)
    }
}
