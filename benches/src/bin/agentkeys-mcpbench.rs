//! MCP round-trip benchmark: a minimal MCP client (newline-delimited JSON-RPC, as MCP's stdio and
//! socket transports carry it) that initializes once, then times `tools/call get_credential`.
//!
//! * `latency --socket PATH` — through a running `agentkeys-daemon serve`;
//! * `latency -- CMD ARGS…` — through a spawned stdio server (`agentkeys-daemon mcp`, or the
//!   Python MCP SDK server in `benches/mcp_python_server.py` for comparison);
//! * `fleet --sockets FILE --pids FILE` — one client per socket (one per agent), all at once, for
//!   `--seconds`: counts answers by code and samples each daemon's RSS before and after.
//! * `fd --socket PATH` — the same credential by descriptor (the socket's native protocol), each
//!   call a new connection, the value mapped and copied as a runtime would;
//! * `spawn -- CMD ARGS…` — wall time of running a whole command (e.g. `agentkeys-daemon run --
//!   true`, directly or through `serve`), start to exit.

#![allow(clippy::print_stdout, reason = "a benchmark prints its figures on stdout")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Sequential get_credential calls on one connection; prints median and p99.
    Latency {
        #[arg(long)]
        socket: Option<PathBuf>,
        #[arg(long, default_value = "openai")]
        service: String,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
        /// A stdio MCP server to spawn instead of a socket.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Sequential get_credential calls by descriptor; prints median and p99.
    Fd {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long, default_value = "openai")]
        service: String,
        #[arg(long, default_value_t = 2000)]
        calls: usize,
    },
    /// Runs a command `--runs` times in sequence; prints the median and p99 wall time.
    Spawn {
        #[arg(long, default_value_t = 200)]
        runs: usize,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// One client per socket, concurrently, for a while.
    Fleet {
        /// A file with one socket path per line.
        #[arg(long)]
        sockets: PathBuf,
        /// A file with the daemons' pids, one per line (for RSS).
        #[arg(long)]
        pids: PathBuf,
        #[arg(long, default_value = "openai")]
        service: String,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

/// One MCP client connection.
struct Client<R, W> {
    reader: BufReader<R>,
    writer: W,
    next_id: u64,
    line: String,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Client<R, W> {
    async fn connect(reader: R, writer: W) -> anyhow::Result<Self> {
        let mut client = Self { reader: BufReader::new(reader), writer, next_id: 1, line: String::new() };
        let init = client
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "mcpbench", "version": "1"}}),
            )
            .await?;
        if init.get("result").is_none() {
            bail!("initialize failed: {init}");
        }
        client.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await?;
        Ok(client)
    }

    async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec(message)?;
        bytes.push(b'\n');
        self.writer.write_all(&bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await?;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                bail!("the server closed the connection");
            }
            let message: Value = serde_json::from_str(&self.line)?;
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                return Ok(message);
            }
        }
    }

    /// One `get_credential`: `Ok(None)` on success, `Ok(Some(code))` for a tool error.
    async fn get_credential(&mut self, service: &str) -> anyhow::Result<Option<String>> {
        let answer =
            self.request("tools/call", json!({"name": "get_credential", "arguments": {"service": service}})).await?;
        let result = answer.get("result").with_context(|| format!("protocol error: {answer}"))?;
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            let code = result.pointer("/structuredContent/error/code").and_then(Value::as_str).unwrap_or("UNKNOWN");
            return Ok(Some(code.to_owned()));
        }
        Ok(None)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label}: {} calls, median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.9).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
}

async fn latency<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    label: &str,
    mut client: Client<R, W>,
    service: &str,
    calls: usize,
) -> anyhow::Result<()> {
    for _ in 0..50 {
        client.get_credential(service).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        if let Some(code) = client.get_credential(service).await? {
            bail!("get_credential failed with {code}; raise the server's --agent-read-rate for a latency run");
        }
        samples.push(started.elapsed());
    }
    report(label, samples);
    Ok(())
}

/// Runs `call` `warmup` times, then times `calls` sequential calls and reports them.
fn time_blocking(
    label: &str,
    warmup: usize,
    calls: usize,
    call: impl Fn() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for _ in 0..warmup {
        call()?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call()?;
        samples.push(started.elapsed());
    }
    report(label, samples);
    Ok(())
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

async fn fleet(sockets: Vec<String>, pids: Vec<String>, service: String, seconds: u64) -> anyhow::Result<()> {
    let before: Vec<u64> = pids.iter().filter_map(|p| rss_kib(p)).collect();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for socket in sockets {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::UnixStream::connect(&socket).await?;
            let (read, write) = stream.into_split();
            let mut client = Client::connect(read, write).await?;
            let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
            let mut samples = Vec::new();
            while Instant::now() < deadline {
                let started = Instant::now();
                let outcome = client.get_credential(&service).await?;
                match outcome.as_deref() {
                    None => samples.push(started.elapsed()),
                    // A designed 429: back off as the error says instead of spinning on it.
                    Some("RATE_LIMITED") => tokio::time::sleep(Duration::from_millis(50)).await,
                    Some(_) => {}
                }
                *counts.entry(outcome.unwrap_or_else(|| "OK".into())).or_default() += 1;
            }
            anyhow::Ok((counts, samples))
        }));
    }
    // RSS every 10 s while the load runs: steady means flat after the first connection's warm-up.
    let sampled_pids = pids.clone();
    let sampler = tokio::spawn(async move {
        let mut series = Vec::new();
        while Instant::now() + Duration::from_secs(10) <= deadline {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let rss: Vec<u64> = sampled_pids.iter().filter_map(|p| rss_kib(p)).collect();
            series.push(rss.iter().sum::<u64>() / rss.len().max(1) as u64);
        }
        series
    });
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    let mut samples = Vec::new();
    for task in tasks {
        let (counts, mut s) = task.await??;
        for (code, n) in counts {
            *totals.entry(code).or_default() += n;
        }
        samples.append(&mut s);
    }
    let after: Vec<u64> = pids.iter().filter_map(|p| rss_kib(p)).collect();
    println!("answers by code over {seconds}s: {totals:?}");
    report("successful get_credential", samples);
    let stats = |v: &[u64]| {
        let (min, max) = (v.iter().min().copied().unwrap_or(0), v.iter().max().copied().unwrap_or(0));
        format!("min {min} KiB, max {max} KiB, mean {} KiB", v.iter().sum::<u64>() / v.len().max(1) as u64)
    };
    println!("daemon RSS before: {} ({} daemons)", stats(&before), before.len());
    println!("daemon RSS after:  {} ({} daemons)", stats(&after), after.len());
    println!("daemon mean RSS every 10 s under load (KiB): {:?}", sampler.await?);
    Ok(())
}

fn lines(path: &PathBuf) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    runtime.block_on(async move {
        match args.mode {
            Mode::Latency { socket: Some(socket), service, calls, .. } => {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                let (read, write) = stream.into_split();
                latency(&format!("socket {}", socket.display()), Client::connect(read, write).await?, &service, calls)
                    .await
            }
            Mode::Latency { socket: None, service, calls, command } => {
                let (program, rest) = command.split_first().context("pass --socket PATH or -- CMD ARGS")?;
                let mut child = tokio::process::Command::new(program)
                    .args(rest)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()?;
                let (stdin, stdout) = (child.stdin.take().context("stdin")?, child.stdout.take().context("stdout")?);
                latency(&format!("stdio {}", command.join(" ")), Client::connect(stdout, stdin).await?, &service, calls)
                    .await
            }
            Mode::Fd { socket, service, calls } => {
                let call = || -> anyhow::Result<()> {
                    let value = agentkeys_core::daemon_client::get_credential_fd(&socket, &service)
                        .map_err(|e| anyhow::anyhow!("{e}"))?
                        .read()?;
                    anyhow::ensure!(!value.is_empty(), "an empty credential");
                    Ok(())
                };
                time_blocking(&format!("fd {}", socket.display()), 50, calls, call)
            }
            Mode::Spawn { runs, command } => {
                let (program, rest) = command.split_first().context("pass -- CMD ARGS")?;
                let run = || -> anyhow::Result<()> {
                    let status = std::process::Command::new(program).args(rest).status()?;
                    anyhow::ensure!(status.success(), "{} exited with {status}", command.join(" "));
                    Ok(())
                };
                time_blocking(&format!("spawn {}", command.join(" ")), 10, runs, run)
            }
            Mode::Fleet { sockets, pids, service, seconds } => {
                fleet(lines(&sockets)?, lines(&pids)?, service, seconds).await
            }
        }
    })
}
