//! Decides one task: finds the rule, evaluates who may subscribe, gathers the data, and
//! writes the cache after a cacheable success.

use std::sync::Arc;

use porter_core::cache::{CachedDecision, RuleStamps};
use porter_core::channel::Channel;
use porter_core::policy::Policy;
use porter_core::reason::Reason;
use porter_core::wire::{AuthData, Task, TaskKind};
use porter_store::Store;

use crate::decision::{Facts, Verdict, decide};
use crate::metrics::WorkerMetrics;
use crate::registry::{Context, Registry};
use crate::webhook::WebhookClient;

#[derive(Clone)]
pub struct Authorizer {
    policy: Arc<Policy>,
    store: Arc<dyn Store>,
    /// The stamp each cache entry records of the rule that wrote it.
    stamps: Arc<RuleStamps>,
    registry: Registry,
    webhooks: WebhookClient,
    /// Where store errors and webhook calls are counted.
    metrics: Arc<WorkerMetrics>,
}

impl Authorizer {
    pub fn new(policy: Arc<Policy>, store: Arc<dyn Store>, registry: Registry) -> Authorizer {
        Authorizer {
            stamps: Arc::new(RuleStamps::of(&policy)),
            policy,
            store,
            registry,
            webhooks: WebhookClient::new(),
            metrics: Arc::default(),
        }
    }

    /// Counts store errors and webhook calls into `metrics` (the listener's).
    pub fn with_metrics(mut self, metrics: Arc<WorkerMetrics>) -> Authorizer {
        self.webhooks = self.webhooks.with_metrics(metrics.clone());
        self.metrics = metrics;
        self
    }

    /// The rule names of the policy, for the metrics' `rule` label; `[signin]` when the
    /// policy has that section.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        let signin = self.policy.signin().map(|_| porter_core::wire::SIGNIN_RULE);
        self.policy
            .rules()
            .iter()
            .map(|rule| rule.name.as_str())
            .chain(signin)
    }

    /// Decides a task: the data to sign, or the refusal reason.
    pub async fn authorize(&self, task: &Task) -> Result<AuthData, Reason> {
        if task.kind == TaskKind::Signin {
            let facts = Facts {
                task,
                store: self.store.as_ref(),
                webhooks: &self.webhooks,
            };
            return crate::signin::sign_in(self.policy.signin(), &facts)
                .await
                .inspect_err(|reason| {
                    if *reason == Reason::StoreUnavailable {
                        self.metrics.store_error();
                    }
                });
        }
        let channel = Channel::parse(&task.channel).map_err(|e| e.reason())?;
        // The gateway names the rule it matched; the worker's policy must agree on it, so a
        // rolling deploy with differing policies refuses instead of guessing.
        let matched = self
            .policy
            .match_channel(&channel)
            .map_err(|e| e.reason())?;
        if matched.rule.name != task.rule {
            tracing::warn!(channel = %task.channel, gateway_rule = %task.rule, worker_rule = %matched.rule.name, "gateway and worker policies disagree");
            return Err(Reason::NoRule);
        }
        let rule = matched.rule;
        let mut verdict = Verdict::default();
        let facts = Facts {
            task,
            store: self.store.as_ref(),
            webhooks: &self.webhooks,
        };
        decide(&rule.allow, &facts, &mut verdict)
            .await
            .inspect_err(|reason| {
                // The decision logs its store failure; here it is only counted.
                if *reason == Reason::StoreUnavailable {
                    self.metrics.store_error();
                }
            })?;

        let cx = Context {
            task,
            channel: &channel,
            rule,
            store: self.store.as_ref(),
            webhook: verdict.webhook.as_ref(),
            partial: Default::default(),
        };
        let data = self.registry.run(&cx).await.map_err(|error| {
            self.metrics.store_error();
            tracing::warn!(channel = %task.channel, %error, "store failed while gathering data");
            crate::registry::refusal_for(&error)
        })?;
        if cx.is_partial() {
            // Optional data left out because the store did not answer: a store error too.
            self.metrics.store_error();
        }
        if channel.kind.is_presence() && data.user_id.is_none() {
            return Err(Reason::Unauthenticated);
        }

        // A what-if decision grants nothing, and an answer without data the store did not
        // give holds less than it should: neither is cached.
        if let Some(spec) = rule.cache
            && !task.dry_run
            && !cx.is_partial()
            && let Some(scope) = spec.scope.field(task.user_id.as_deref())
            && let Some(stamp) = self.stamps.get(&rule.name)
        {
            match CachedDecision::encode(&rule.name, stamp, &data) {
                Ok(json) => {
                    if let Err(error) = self
                        .store
                        .put_cached(&channel.cache_name(), &scope, &json, spec.ttl)
                        .await
                    {
                        self.metrics.store_error();
                        tracing::warn!(channel = %task.channel, %error, "could not write the cache");
                    }
                }
                Err(error) => tracing::warn!(%error, "could not encode data for the cache"),
            }
        }
        Ok(data)
    }
}
