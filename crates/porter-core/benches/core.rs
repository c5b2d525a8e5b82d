//! Signing and parsing throughput: `cargo bench -p porter-core`.

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use porter_core::channel::{Channel, validate_socket_id};
use porter_core::policy::Policy;
use porter_core::signing::{Secret, Signer};

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

criterion_group!(benches, signing, parsing);
criterion_main!(benches);
