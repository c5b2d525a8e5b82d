//! `porter-bench`: the load generator behind `docs/benchmarks.md`, kept out of the `porter`
//! binary so that production images ship no load generator.
//!
//! It drives a running gateway (`porter gateway` or `porter dev`) over HTTP, or, with
//! `--scenario floor`, RabbitMQ alone through Porter's transport; see [`bench`] for the
//! scenarios and `scripts/bench.sh` for the suites that run them.

mod bench;
mod cpu;
mod floor;
mod http;

use std::process::ExitCode;

use clap::Parser;

/// The same allocator as `porter`: the `floor` scenario runs both sides of the transport in
/// this process and reports its own CPU, which must compare with the gateway's and workers'.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "porter-bench",
    version,
    about = "Load-test a running Porter gateway, or the bare RabbitMQ transport floor"
)]
struct Cli {
    #[command(flatten)]
    bench: bench::BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(bench::run(cli.bench)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, like `porter`; `{:#}` joins the context chain.
            eprintln!("porter-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}
