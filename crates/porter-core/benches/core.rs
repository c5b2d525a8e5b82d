//! Signing, parsing and pattern matching throughput: `cargo bench -p porter-core`.

use criterion::{Criterion, SamplingMode, Throughput, black_box, criterion_group, criterion_main};
use porter_core::channel::{Channel, validate_socket_id};
use porter_core::pattern::{Constraints, Pattern};
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};
use porter_core::task_auth::{Message, Mode, ReplyMessage, TaskAuth, TaskKeys, TaskMessage};

fn signer() -> Signer {
    Signer::new(
        "100000",
        "278d425bdf160c739803",
        &Secret::new("7ad3773142a6692b25b8"),
        Some("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="),
    )
    .expect("bench credentials are valid")
}

fn signing(c: &mut Criterion) {
    let signer = signer();
    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("private", |b| {
        b.iter(|| {
            signer.sign_channel(
                black_box("123456.654321"),
                black_box("private-stream@42"),
                None,
            )
        })
    });
    let data = r#"{"user_id":"7","user_info":{"name":"Ann"}}"#;
    group.bench_function("presence", |b| {
        b.iter(|| {
            signer.sign_channel(
                black_box("123456.654321"),
                black_box("presence-stream@42"),
                Some(black_box(data)),
            )
        })
    });
    group.bench_function("encrypted", |b| {
        b.iter(|| {
            signer.sign_channel(
                black_box("123456.654321"),
                black_box("private-encrypted-chat@9"),
                None,
            )
        })
    });
    group.bench_function("user", |b| {
        b.iter(|| signer.sign_user(black_box("123456.654321"), black_box(r#"{"id":"7"}"#)))
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let policy = Policy::default();
    let mut group = c.benchmark_group("parsing");
    group.throughput(Throughput::Elements(1));
    group.bench_function("channel", |b| {
        b.iter(|| Channel::parse(black_box("private-stream-viewer@42")))
    });
    group.bench_function("socket_id", |b| {
        b.iter(|| validate_socket_id(black_box("123456.654321")))
    });
    group.bench_function("policy_match", |b| {
        b.iter(|| {
            policy
                .match_name(black_box("private-stream-viewer@42"))
                .map(|m| m.rule.route)
        })
    });
    group.finish();
}

/// Issue 10's finding 3: four captures separated by a literal that the name repeats at every
/// position. `no_match` is the case the issue measured (a backtracking matcher tried every
/// way of cutting the name before it gave up); the other two make the matcher fill its whole
/// tables: a match, and a constrained last capture that fails only at the end.
fn pattern_worst_case(c: &mut Criterion) {
    let four = Pattern::parse("private-{a}-{b}-{c}-{d}-end").expect("the bench pattern is valid");
    let open_end = Pattern::parse("private-{a}-{b}-{c}-{d}").expect("the bench pattern is valid");
    let no_match = format!("private-{}", "-".repeat(192));
    let matching = format!("private-{}-end", "-".repeat(188));
    assert_eq!((no_match.len(), matching.len()), (200, 200));
    let none = Constraints::new();
    let last_is_end = Constraints::from([("d".to_owned(), vec!["end".to_owned()])]);
    let mut group = c.benchmark_group("pattern");
    group.throughput(Throughput::Elements(1));
    // Ten samples of as few iterations as criterion allows: before the fix one call took
    // most of a second.
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("four_captures_200_dashes_no_match", |b| {
        b.iter(|| four.captures(black_box(&no_match), &none))
    });
    group.bench_function("four_captures_200_dashes_match", |b| {
        b.iter(|| four.captures(black_box(&matching), &none))
    });
    group.bench_function("four_captures_constrained_last_no_match", |b| {
        b.iter(|| open_end.captures(black_box(&no_match), &last_is_end))
    });
    group.finish();
}

/// What task authentication adds per channel (docs/task-auth.md): the gateway signs a task
/// and verifies its reply, the worker verifies the task and signs the reply. Bodies of the
/// sizes a presence task and its reply have.
fn task_signatures(c: &mut Criterion) {
    let keys = TaskKeys::parse(&"ab".repeat(32)).expect("the bench key is valid");
    let auth = TaskAuth::new(Some(Mode::Require), Some(keys)).expect("keys and mode agree");
    let task_body = format!(
        r#"{{"v":1,"id":"0f8c2b1e-7d7a-4c1e-9f3a-2b6d5e4c3a21","channel":"presence-room-42","rule":"presence","captures":{{"room":"42"}},"user":{{"id":"7","claims":{{"sub":"7","name":"Ann","email":"ann@example.com"}}}},"dry_run":false,"pad":"{}"}}"#,
        "x".repeat(40)
    );
    let reply_body = r#"{"id":"0f8c2b1e-7d7a-4c1e-9f3a-2b6d5e4c3a21","ok":true,"data":{"channel_data":{"user_id":"7","user_info":{"name":"Ann"}}}}"#;
    let task = Message::Task(TaskMessage {
        correlation_id: Some("0f8c2b1e-7d7a-4c1e-9f3a-2b6d5e4c3a21"),
        reply_to: Some("amq.gen-JzTY20BRgKO-HjmUJj0wLg"),
        expiration: Some("5000"),
        deadline_ms: Some(1_796_000_000_000),
        time_limit_ms: Some(4000),
        body: task_body.as_bytes(),
    });
    let reply = Message::Reply(ReplyMessage {
        correlation_id: Some("0f8c2b1e-7d7a-4c1e-9f3a-2b6d5e4c3a21"),
        body: reply_body.as_bytes(),
    });
    let task_signature = auth.sign(&task).expect("keys sign");
    let reply_signature = auth.sign(&reply).expect("keys sign");
    let mut group = c.benchmark_group("task_auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_task", |b| b.iter(|| auth.sign(black_box(&task))));
    group.bench_function("verify_task", |b| {
        b.iter(|| auth.verify(black_box(&task), Some(task_signature.as_bytes())))
    });
    group.bench_function("sign_reply", |b| b.iter(|| auth.sign(black_box(&reply))));
    group.bench_function("verify_reply", |b| {
        b.iter(|| auth.verify(black_box(&reply), Some(reply_signature.as_bytes())))
    });
    group.finish();
}

criterion_group!(
    benches,
    signing,
    parsing,
    pattern_worst_case,
    task_signatures
);
criterion_main!(benches);
