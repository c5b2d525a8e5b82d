//! The worker's run loop in process: deadlines, time limits, reply-then-ack, failed replies,
//! malformed and foreign tasks, the concurrency bound, the give-up on tasks delivered too
//! often, the hand-back before the drain on shutdown, and what the metrics count.
//!
//! Each test drives `Worker::run` with a scripted source and reads the journal of what the
//! source, the responders and the store saw. Time is tokio's paused clock, so a time limit
//! fires as soon as nothing else can run and no test waits on the wall clock.

mod support;

use std::sync::Arc;
use std::time::Duration;

use porter_core::policy::Policy;
use porter_core::routing::Queue;
use porter_core::wire::Task;
use porter_store::Store;
use porter_worker::WorkerMetrics;
use porter_worker::metrics::TaskOutcome;
use porter_worker::registry::Registry;
use porter_worker::runner::GIVE_UP_DELIVERY_COUNT;
use support::{
    Delivery, Gate, Journal, RecordedStore, ScriptedSource, Step, StopSwitch, gateway_task, policy,
    recorded_store, settle, within_an_hour, worker,
};

/// `team` channels need a membership in the store; `open` ones let anyone in.
const POLICY: &str = r#"
[[rule]]
name = "team"
pattern = "private-team@{object_id}"
allow = "member"

[[rule]]
name = "open"
pattern = "private-open@{object_id}"
allow = "anyone"
"#;

fn team_task(policy: &Policy, id: &str, user: &str) -> Task {
    gateway_task(policy, id, "private-team@1", Some(user))
}

fn open_task(policy: &Policy, id: &str) -> Task {
    gateway_task(policy, id, "private-open@1", None)
}

/// A recorded store in which `alice` is a member of the team channel `team_task` asks about.
async fn team_store(journal: &Journal) -> Arc<RecordedStore> {
    let store = recorded_store(journal);
    store
        .inner
        .add_member("private-team@1", "alice")
        .await
        .expect("the memory store adds a member");
    store
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_deadline_is_expired_without_running() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let store = team_store(&journal).await;
    let source = ScriptedSource::new(
        [
            Delivery::of(team_task(&policy, "late", "alice")).past_deadline(),
            Delivery::of(team_task(&policy, "on-time", "alice")).future_deadline(),
        ],
        &journal,
    );

    within_an_hour(worker(&policy, store, Registry::builtin(), 1).run(source)).await;

    let late = journal.reply("late");
    assert_eq!(late["ok"], false);
    assert_eq!(late["reason"], "expired");
    // The same membership allows the task that is on time, so only the deadline refused the
    // late one, and it did so before the authorizer asked the store anything.
    assert_eq!(journal.reply("on-time")["ok"], true);
    assert_eq!(journal.store_calls(), 1, "{:?}", journal.steps());
}

#[tokio::test(start_paused = true)]
async fn an_authorizer_past_its_time_limit_is_cancelled() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let gate = Gate::new();
    let limit = Duration::from_millis(100);
    let source = ScriptedSource::new(
        [Delivery::of(open_task(&policy, "stuck")).time_limit(limit)],
        &journal,
    );
    let started = tokio::time::Instant::now();

    within_an_hour(worker(&policy, recorded_store(&journal), gate.registry(), 4).run(source)).await;

    let reply = journal.reply("stuck");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["reason"], "time limit exceeded");
    assert_eq!(gate.entered(), 1);
    assert_eq!(gate.inside(), 0, "the held authorizer was not cancelled");
    // The task's own limit applied, not the 2 s default (paused time: exact, not a race).
    let elapsed = started.elapsed();
    assert!(
        elapsed >= limit && elapsed < Duration::from_secs(1),
        "{elapsed:?}"
    );
    assert!(journal.steps().contains(&Step::Acked("stuck".into())));
}

#[tokio::test(start_paused = true)]
async fn a_webhook_that_never_answers_is_cut_off_by_the_time_limit() {
    // Bound but never accepted: the kernel completes the handshake and no answer ever comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let journal = Journal::default();
    let policy = policy(&format!(
        "[[rule]]\nname = \"hook\"\npattern = \"private-hook@{{object_id}}\"\nallow = {{ webhook = \"http://{address}/decide\" }}\n"
    ));
    let task = gateway_task(&policy, "hooked", "private-hook@1", Some("alice"));
    let source = ScriptedSource::new(
        [Delivery::of(task).time_limit(Duration::from_millis(250))],
        &journal,
    );

    within_an_hour(worker(&policy, recorded_store(&journal), Registry::builtin(), 1).run(source))
        .await;

    assert_eq!(journal.reply("hooked")["reason"], "time limit exceeded");
    drop(listener);
}

#[tokio::test(start_paused = true)]
async fn each_task_is_acked_only_after_its_reply_allowed_or_refused() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let store = team_store(&journal).await;
    let source = ScriptedSource::new(
        [
            Delivery::of(team_task(&policy, "allowed", "alice")),
            Delivery::of(team_task(&policy, "refused", "mallory")),
        ],
        &journal,
    );

    within_an_hour(worker(&policy, store, Registry::builtin(), 1).run(source)).await;

    assert_eq!(journal.reply("allowed")["ok"], true);
    assert_eq!(journal.reply("refused")["reason"], "forbidden");
    for tag in ["allowed", "refused"] {
        let steps = journal.of(tag);
        assert!(
            matches!(
                steps.as_slice(),
                [Step::Pulled(_), Step::Replied(_, _), Step::Acked(_)]
            ),
            "{tag}: {steps:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn run_returns_only_after_the_tasks_in_hand_are_answered_then_shuts_the_source() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let gate = Gate::new();
    let source = ScriptedSource::new(
        [
            Delivery::of(open_task(&policy, "first")),
            Delivery::of(open_task(&policy, "second")),
        ],
        &journal,
    );
    let worker = worker(&policy, recorded_store(&journal), gate.registry(), 4);
    let run = tokio::spawn(async move { worker.run(source).await });

    settle().await;
    // The source has stopped and both tasks are held in the authorizer.
    assert!(journal.steps().contains(&Step::SourceEnded));
    assert_eq!(gate.inside(), 2);
    assert!(!run.is_finished());
    assert!(!journal.steps().contains(&Step::Shutdown));

    gate.open(1);
    settle().await;
    assert_eq!(journal.count(|s| matches!(s, Step::Acked(_))), 1);
    assert!(!run.is_finished(), "returned with a task still in hand");
    assert!(!journal.steps().contains(&Step::Shutdown));

    gate.open(1);
    within_an_hour(run).await.unwrap();
    let steps = journal.steps();
    assert_eq!(steps.last(), Some(&Step::Shutdown), "{steps:?}");
    assert_eq!(journal.count(|s| *s == Step::Shutdown), 1);
    for tag in ["first", "second"] {
        assert_eq!(journal.reply(tag)["ok"], true);
        assert!(steps.contains(&Step::Acked(tag.into())), "{tag} not acked");
    }
}

#[tokio::test(start_paused = true)]
async fn a_malformed_task_is_answered_internal_error_under_its_correlation_id() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let source = ScriptedSource::new(
        [Delivery::malformed(
            "corr-7",
            "expected value at line 1 column 1",
        )],
        &journal,
    );

    within_an_hour(worker(&policy, recorded_store(&journal), Registry::builtin(), 1).run(source))
        .await;

    let reply = journal.reply("corr-7");
    assert_eq!(reply["id"], "corr-7");
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["reason"], "internal_error");
    assert!(journal.steps().contains(&Step::Acked("corr-7".into())));
    assert_eq!(journal.store_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_task_in_an_unknown_format_version_is_refused_without_running() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let store = team_store(&journal).await;
    let future_task = Task {
        v: 99,
        ..team_task(&policy, "from-the-future", "alice")
    };
    let source = ScriptedSource::new([Delivery::of(future_task)], &journal);

    within_an_hour(worker(&policy, store, Registry::builtin(), 1).run(source)).await;

    let reply = journal.reply("from-the-future");
    assert_eq!(reply["id"], "from-the-future");
    assert_eq!(reply["reason"], "internal_error");
    assert_eq!(journal.store_calls(), 0, "{:?}", journal.steps());
}

#[tokio::test(start_paused = true)]
async fn a_failed_reply_leaves_the_task_unacked_and_the_worker_goes_on() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let source = ScriptedSource::new(
        [
            Delivery::of(open_task(&policy, "lost")).failing_reply(),
            Delivery::of(open_task(&policy, "after")),
        ],
        &journal,
    );

    within_an_hour(worker(&policy, recorded_store(&journal), Registry::builtin(), 1).run(source))
        .await;

    assert_eq!(
        journal.of("lost"),
        vec![
            Step::Pulled("lost".into()),
            Step::ReplyFailed("lost".into())
        ]
    );
    assert_eq!(journal.reply("after")["ok"], true);
    assert!(journal.steps().contains(&Step::Acked("after".into())));
    assert_eq!(journal.steps().last(), Some(&Step::Shutdown));
}

#[tokio::test(start_paused = true)]
async fn never_more_than_the_concurrency_bound_run_at_once() {
    const BOUND: usize = 2;
    const TASKS: usize = 5;
    let journal = Journal::default();
    let policy = policy(POLICY);
    let gate = Gate::new();
    let tags: Vec<String> = (0..TASKS).map(|i| format!("task-{i}")).collect();
    let source = ScriptedSource::new(
        tags.iter().map(|tag| Delivery::of(open_task(&policy, tag))),
        &journal,
    );
    let worker = worker(&policy, recorded_store(&journal), gate.registry(), BOUND);
    let run = tokio::spawn(async move { worker.run(source).await });

    settle().await;
    assert_eq!(gate.inside(), BOUND, "the bound was not used or not kept");
    // A task is taken only with a free slot: none waits in the loop.
    assert_eq!(journal.pulled(), BOUND);

    for released in 1..=TASKS {
        gate.open(1);
        settle().await;
        assert!(gate.inside() <= BOUND);
        assert_eq!(journal.count(|s| matches!(s, Step::Acked(_))), released);
    }

    within_an_hour(run).await.unwrap();
    assert_eq!(gate.entered(), TASKS);
    assert_eq!(gate.most_inside(), BOUND);
    for tag in &tags {
        assert_eq!(journal.reply(tag)["ok"], true);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_every_slot_is_busy_hands_back_before_the_drain() {
    const BOUND: usize = 2;
    let journal = Journal::default();
    let policy = policy(POLICY);
    let gate = Gate::new();
    let switch = StopSwitch::new();
    let source = ScriptedSource::held_open(
        ["first", "second", "waiting"].map(|tag| Delivery::of(open_task(&policy, tag))),
        &journal,
        &switch,
    );
    let worker = worker(&policy, recorded_store(&journal), gate.registry(), BOUND);
    let run = tokio::spawn(async move { worker.run(source).await });

    settle().await;
    assert_eq!(gate.inside(), BOUND);
    assert_eq!(journal.pulled(), BOUND, "{:?}", journal.steps());

    // The signal comes while the loop waits for a slot, not inside the source.
    switch.stop();
    settle().await;
    assert!(journal.steps().contains(&Step::StoppedConsuming));
    assert_eq!(journal.count(|s| matches!(s, Step::Acked(_))), 0);
    assert!(!run.is_finished(), "returned with tasks in hand");

    gate.open(BOUND);
    within_an_hour(run).await.unwrap();
    let steps = journal.steps();
    assert_eq!(steps.last(), Some(&Step::Shutdown), "{steps:?}");
    let stopped_at = steps
        .iter()
        .position(|s| *s == Step::StoppedConsuming)
        .unwrap();
    let first_ack = steps
        .iter()
        .position(|s| matches!(s, Step::Acked(_)))
        .unwrap();
    assert!(
        stopped_at < first_ack,
        "handed back after the drain: {steps:?}"
    );
    // The third was never taken: it stays with the source, to be handed back.
    assert!(journal.of("waiting").is_empty(), "{steps:?}");
    for tag in ["first", "second"] {
        assert_eq!(journal.reply(tag)["ok"], true);
    }
    assert_eq!(journal.count(|s| *s == Step::StoppedConsuming), 1);
}

#[tokio::test(start_paused = true)]
async fn a_task_delivered_too_often_is_refused_without_running() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let store = team_store(&journal).await;
    let metrics = Arc::new(WorkerMetrics::new(["team", "open"]));
    let source = ScriptedSource::new(
        [
            Delivery::of(team_task(&policy, "poison", "alice"))
                .redelivered(Some(GIVE_UP_DELIVERY_COUNT)),
            Delivery::of(team_task(&policy, "retried", "alice"))
                .redelivered(Some(GIVE_UP_DELIVERY_COUNT - 1)),
            // A classic queue: redelivered, but no count to give up on.
            Delivery::of(team_task(&policy, "classic", "alice")).redelivered(None),
        ],
        &journal,
    );

    within_an_hour(
        worker(&policy, store, Registry::builtin(), 1)
            .with_metrics(metrics.clone())
            .run(source),
    )
    .await;

    let poison = journal.reply("poison");
    assert_eq!(poison["ok"], false);
    assert_eq!(poison["reason"], "internal_error");
    assert!(journal.steps().contains(&Step::Acked("poison".into())));
    assert_eq!(journal.reply("retried")["ok"], true);
    assert_eq!(journal.reply("classic")["ok"], true);
    // Only the two that ran asked the store.
    assert_eq!(journal.store_calls(), 2, "{:?}", journal.steps());
    assert_eq!(metrics.task_count(Queue::Auth, TaskOutcome::GaveUp), 1);
    assert_eq!(metrics.task_count(Queue::Auth, TaskOutcome::Allowed), 2);
    let page = metrics.render(None);
    assert!(
        page.lines()
            .any(|l| l == r#"porter_worker_redelivered_tasks_total{queue="auth"} 3"#),
        "{page}"
    );
}

#[tokio::test(start_paused = true)]
async fn each_outcome_is_counted_once_by_queue_reason_and_rule() {
    let journal = Journal::default();
    let policy = policy(POLICY);
    let store = team_store(&journal).await;
    let gate = Gate::new();
    let metrics = Arc::new(WorkerMetrics::new(["team", "open"]));
    let source = ScriptedSource::new(
        [
            Delivery::of(team_task(&policy, "member", "alice")),
            Delivery::of(team_task(&policy, "stranger", "mallory")),
            Delivery::of(team_task(&policy, "late", "alice")).past_deadline(),
            Delivery::malformed("garbage", "expected value"),
            Delivery::of(open_task(&policy, "stuck")).time_limit(Duration::from_millis(100)),
        ],
        &journal,
    );
    let worker = worker(&policy, store, gate.registry(), 1).with_metrics(metrics.clone());
    // The gate holds the allowed tasks in the authorizer: it lets the member through and
    // keeps the open one until its time limit.
    gate.open(1);

    within_an_hour(worker.run(source)).await;

    assert_eq!(journal.reply("member")["ok"], true);
    assert_eq!(journal.reply("stranger")["reason"], "forbidden");
    assert_eq!(journal.reply("stuck")["reason"], "time limit exceeded");
    for (outcome, count) in [
        (TaskOutcome::Allowed, 1),
        (TaskOutcome::Refused, 1),
        (TaskOutcome::Expired, 1),
        (TaskOutcome::Malformed, 1),
        (TaskOutcome::TimeLimitExceeded, 1),
        (TaskOutcome::GaveUp, 0),
    ] {
        assert_eq!(
            metrics.task_count(Queue::Auth, outcome),
            count,
            "{outcome:?}"
        );
        assert_eq!(metrics.task_count(Queue::AuthHigh, outcome), 0);
    }
    let page = metrics.render(None);
    for line in [
        r#"porter_worker_refusals_total{queue="auth",reason="forbidden"} 1"#,
        // The two team tasks that ran, and the one cut off under `open`.
        r#"porter_worker_task_duration_seconds_count{rule="team"} 2"#,
        r#"porter_worker_task_duration_seconds_count{rule="open"} 1"#,
        "porter_worker_tasks_in_flight 0",
        "porter_worker_concurrency_limit 1",
        "porter_worker_broker_connected 0",
    ] {
        assert!(
            page.lines().any(|l| l == line),
            "missing `{line}` in:\n{page}"
        );
    }
}
