//! The webhook authorizer: asks the application whether a caller may subscribe.
//!
//! The worker POSTs the task's facts as JSON and expects `{allow, user_info?, events?,
//! reason?}`. Any failure (non-2xx, invalid JSON, timeout, connection refused) is a refusal
//! with `authorizer_unavailable`: the decision never defaults to allow.
//!
//! Every call's duration and failure kind go to the worker's [`WorkerMetrics`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use porter_core::wire::{Event, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metrics::{WebhookFailure, WorkerMetrics};

/// What the worker sends.
#[derive(Debug, Serialize)]
struct WebhookRequest<'a> {
    channel: &'a str,
    channel_type: &'a str,
    feature: &'a str,
    object_id: Option<&'a str>,
    captures: &'a std::collections::BTreeMap<String, String>,
    user_id: Option<&'a str>,
    client_id: Option<&'a str>,
    claims: &'a serde_json::Map<String, Value>,
}

/// What the application answers.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct WebhookAnswer {
    pub allow: bool,
    #[serde(default)]
    pub user_info: Option<Value>,
    #[serde(default)]
    pub events: Vec<Event>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A pooled keep-alive HTTP client for webhook authorizers.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    metrics: Arc<WorkerMetrics>,
}

impl Default for WebhookClient {
    fn default() -> WebhookClient {
        WebhookClient::new()
    }
}

impl WebhookClient {
    pub fn new() -> WebhookClient {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_default();
        WebhookClient {
            http,
            metrics: Arc::default(),
        }
    }

    /// Records each call into `metrics` instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<WorkerMetrics>) -> WebhookClient {
        self.metrics = metrics;
        self
    }

    /// Asks the webhook, within `timeout` when the rule sets one (the rule's time limit
    /// bounds the call in any case). `None` means no usable answer.
    pub async fn ask(
        &self,
        url: &str,
        task: &Task,
        timeout: Option<Duration>,
    ) -> Option<WebhookAnswer> {
        let started = Instant::now();
        let answer = self.call(url, task, timeout).await;
        self.metrics
            .webhook_call(started.elapsed(), answer.as_ref().err().copied());
        answer.ok()
    }

    async fn call(
        &self,
        url: &str,
        task: &Task,
        timeout: Option<Duration>,
    ) -> Result<WebhookAnswer, WebhookFailure> {
        let request = WebhookRequest {
            channel: &task.channel,
            channel_type: task.channel_type.as_str(),
            feature: &task.feature,
            object_id: task.object_id.as_deref(),
            captures: &task.captures,
            user_id: task.user_id.as_deref(),
            client_id: task.client_id.as_deref(),
            claims: &task.claims,
        };
        let mut call = self.http.post(url).json(&request);
        if let Some(timeout) = timeout {
            call = call.timeout(timeout);
        }
        let response = match call.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                tracing::warn!(channel = %task.channel, "webhook authorizer timed out");
                return Err(WebhookFailure::Timeout);
            }
            Err(error) => {
                tracing::warn!(channel = %task.channel, error = %error.without_url(), "webhook authorizer unreachable");
                return Err(WebhookFailure::Unreachable);
            }
        };
        if !response.status().is_success() {
            tracing::warn!(channel = %task.channel, status = %response.status(), "webhook authorizer failed");
            return Err(WebhookFailure::Status);
        }
        match response.json::<WebhookAnswer>().await {
            Ok(answer) => Ok(answer),
            Err(error) if error.is_timeout() => {
                tracing::warn!(channel = %task.channel, "webhook authorizer timed out");
                Err(WebhookFailure::Timeout)
            }
            Err(_) => {
                tracing::warn!(channel = %task.channel, "webhook authorizer answered invalid JSON");
                Err(WebhookFailure::InvalidAnswer)
            }
        }
    }
}
