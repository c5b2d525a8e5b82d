//! `porter`: the command line of Porter.
//!
//! `porter gateway` and `porter worker` are the distributed mode (RabbitMQ + Redis);
//! `porter dev` runs both in one process over the in-process transport and memory store;
//! `porter sign`, `porter token` and `porter policy` are tools for trying things by hand.
//! The load generator behind `docs/benchmarks.md` is a binary of its own, `porter-bench`.

mod cli;
mod concealed;
mod events_worker;
mod serve;
mod tools;
mod verifier;

use std::process::ExitCode;

use clap::Parser;

/// Every request allocates many small, short-lived buffers across threads (HTTP, AMQP frames,
/// JSON); mimalloc's thread-local free lists made that measurably cheaper than glibc's malloc
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{Cli, Command, PolicyCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sign(args) => tools::sign(&args),
        Command::Token(args) => tools::token(&args),
        Command::Policy(PolicyCommand::Check {
            file,
            sign_private_data,
        }) => tools::policy_check(&file, sign_private_data),
        Command::Policy(PolicyCommand::Explain { channel, policy }) => {
            tools::policy_explain(&channel, policy.as_deref())
        }
        Command::Gateway(args) => serve::gateway(args),
        Command::Worker(args) => serve::worker(args),
        Command::Dev(args) => serve::dev(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line, as the CLI promises; `{:#}` joins the context chain.
            eprintln!("porter: {error:#}");
            ExitCode::from(2)
        }
    }
}
