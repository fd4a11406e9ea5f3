//! Memory residue (issue 6): a random canary credential is delivered by the real binaries, and
//! every readable mapping of the real process is scanned through `/proc/<pid>/mem` for any
//! 16-byte window of it. With `memfd_secret` the value is never in readable memory, even while a
//! command uses it; with the forced fallback it is (in the locked pages) while in use and cached,
//! and gone once evicted — which also proves the scan finds what is there. Inline MCP delivery
//! leaves nothing once the connection that carried it is closed; delivery by descriptor leaves
//! nothing at all. The CLI's `run` parent holds no readable copy once its child started.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agentkeys_core::daemon_client;
use agentkeys_tests::mappings_holding;

use crate::mediated::Served;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A command that prints `ready`, then holds its credential until its stdin closes.
const HOLD: [&str; 3] = ["sh", "-c", "echo ready; read _ || true"];

/// Spawns `command` running [`HOLD`] and returns once it is ready.
fn hold(command: &mut Command) -> Child {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{:?}", child.wait_with_output());
    child
}

/// Lets a [`hold`] command finish (closes its stdin) and checks it succeeded.
fn release(mut child: Child) {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `get_credential` through MCP on the daemon's socket, on one connection that is closed before
/// this returns.
fn mcp_get_credential(socket: &std::path::Path, service: &str) -> String {
    let answer = agentkeys_tests::mcp_get_credential_answer(socket, service);
    answer["result"]["structuredContent"]["value"].as_str().expect("a value").to_owned()
}

/// The children of `pid`, whichever of its threads started them.
fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().filter_map(Result::ok) {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    found
}

/// Scans until no copy is left (for up to 5 s): for what the daemon frees asynchronously.
fn eventually_absent(pid: u32, canary: &[u8]) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if mappings_holding(pid, canary).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_no_readable_copy_of_a_delivered_credential() {
    let served = Served::start(&["--cache-ttl", "0"], &[]).await;
    let canary = served.value.as_bytes();
    let pid = served.serve_pid();
    // The scan's control: a string the daemon certainly holds (its socket path) is found.
    assert!(!mappings_holding(pid, served.socket.to_str().unwrap().as_bytes()).is_empty(), "the scan reads memory");
    assert_eq!(mappings_holding(pid, canary), Vec::<String>::new(), "nothing fetched yet");

    // Inline over MCP: gone once the connection closed (freed buffers are wiped). The daemon
    // sees the close asynchronously, so this waits for that.
    assert_eq!(mcp_get_credential(&served.socket, "openai"), served.value);
    assert!(eventually_absent(pid, canary), "after inline delivery: {:?}", mappings_holding(pid, canary));

    // By descriptor: nothing left as soon as it is answered.
    assert_eq!(daemon_client::get_credential_fd(&served.socket, "openai").unwrap().read().unwrap().as_slice(), canary);
    assert_eq!(mappings_holding(pid, canary), Vec::<String>::new(), "after fd delivery");

    // Run: while the command holds it, the daemon's copy is in memfd_secret pages only.
    let running = hold(served.daemon(&["run", "--env", "V=openai", "--"]).args(HOLD));
    assert_eq!(mappings_holding(pid, canary), Vec::<String>::new(), "in use, but only in memfd_secret");
    release(running);
    assert_eq!(mappings_holding(pid, canary), Vec::<String>::new(), "after the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_fallback_a_value_is_held_while_used_and_cached_then_wiped() {
    let served = Served::start(&["--cache-ttl", "1"], &[("AGENTKEYS_SECRET_MEMORY", "fallback")]).await;
    let canary = served.value.as_bytes();
    let pid = served.serve_pid();
    let running = hold(served.daemon(&["run", "--env", "V=openai", "--"]).args(HOLD));
    let held = mappings_holding(pid, canary);
    assert_eq!(held.len(), 1, "exactly one copy, in the locked pages, while in use: {held:?}");
    assert!(held[0].starts_with("anon@"), "{held:?}");
    release(running);
    assert_eq!(mappings_holding(pid, canary), held, "cached after the run");
    assert!(served.wait_for_event("openai", "evict", Duration::from_secs(10)), "{}", served.trail());
    assert_eq!(mappings_holding(pid, canary), Vec::<String>::new(), "evicted and wiped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_run_parent_holds_no_readable_copy_once_its_child_started() {
    let served = Served::start(&[], &[]).await;
    let canary = served.value.as_bytes();
    for (fallback, expect_copy) in [(false, false), (true, true)] {
        let mut command = served.master_command(&["run", "--env", "V=openai", "--"]);
        if fallback {
            command.env("AGENTKEYS_SECRET_MEMORY", "fallback");
        }
        let running = hold(command.args(HOLD));
        let parent = running.id();
        let child = children(parent).into_iter().next().expect("the command runs");
        assert!(!mappings_holding(child, canary).is_empty(), "the command's environment holds it (control)");
        let copies = mappings_holding(parent, canary);
        assert_eq!(!copies.is_empty(), expect_copy, "fallback={fallback}: {copies:?}");
        release(running);
    }
}
