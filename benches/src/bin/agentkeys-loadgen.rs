//! Load generator for the server's credential reads: N concurrent clients, each sending signed
//! `GET /v1/credentials/{service}` requests (every one verified, nonce-checked and audited by the
//! server) as fast as answers come back. Prints throughput and latency percentiles.
//!
//! `agentkeys-loadgen --server URL --service openai --concurrency 64 --seconds 10`
//! (the session comes from `$AGENTKEYS_HOME/master`, as for the CLI; `--session-id daemon-…` with
//! the agent's home reads as a linked agent, the path the account's policy is evaluated on).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentkeys_core::ApiClient;
use agentkeys_core::session::{EncryptedFileStore, SessionId, SessionStore as _};
use anyhow::Context as _;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    server: String,
    #[arg(long, default_value = "openai")]
    service: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The session slot to read with: `master`, or a linked agent's `daemon-…` slot.
    #[arg(long, default_value = "master")]
    session_id: String,
    /// Client worker threads (the server shares the machine).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    runtime.block_on(async move {
        let store = EncryptedFileStore::from_env()?;
        let id = SessionId::parse(&args.session_id)?;
        let session = Arc::new(store.load(&id)?.with_context(|| format!("no session {}: run agentkeys init", id.as_str()))?);
        let client = ApiClient::for_session(&args.server, session)?;
        client.get_credential(&args.service, None).await.context("warm-up read")?;
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..args.concurrency {
            let (client, service) = (client.clone(), args.service.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies_us = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match client.get_credential(&service, None).await {
                        Ok(_) => latencies_us.push(start.elapsed().as_micros() as u32),
                        Err(_) => errors += 1,
                    }
                }
                (latencies_us, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let (latencies, task_errors) = task.await?;
            all.extend(latencies);
            errors += task_errors;
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_unstable();
        anyhow::ensure!(!all.is_empty(), "no request succeeded ({errors} errors)");
        let ms = |us: u32| f64::from(us) / 1000.0;
        eprintln!(
            "{} reads in {elapsed:.1} s = {:.0}/s at concurrency {}; latency ms p50 {:.2} p90 {:.2} p99 {:.2} max {:.2}; errors {errors}",
            all.len(),
            all.len() as f64 / elapsed,
            args.concurrency,
            ms(percentile(&all, 0.50)),
            ms(percentile(&all, 0.90)),
            ms(percentile(&all, 0.99)),
            ms(*all.last().unwrap()),
        );
        Ok(())
    })
}
