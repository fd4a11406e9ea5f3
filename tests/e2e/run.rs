//! `agentkeys run`: argv only, credentials in the child's environment, masked output, signals
//! forwarded, and the child's exit status passed through (128+N for signal N).

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::Stdio;

use agentkeys_tests::{Backend, Master, ServerProcess, TestDb};

const SECRET: &[u8] = b"sk-mask-me-0123456789";

async fn master_with_secret() -> (TestDb, ServerProcess, Master) {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(SECRET));
    (db, server, master)
}

#[tokio::test]
async fn exit_status_passes_through() {
    let (_db, _server, master) = master_with_secret().await;
    assert_eq!(master.run(&["run", "--", "sh", "-c", "exit 7"], None).status.code(), Some(7));
    assert_eq!(master.run(&["run", "--", "true"], None).status.code(), Some(0));
    assert_eq!(master.run(&["run", "--", "sh", "-c", "kill -KILL $$"], None).status.code(), Some(128 + 9));
    assert_eq!(master.run(&["run", "--", "sh", "-c", "kill -TERM $$"], None).status.code(), Some(128 + 15));
    let missing = master.run(&["run", "--", "no-such-command-agentkeys"], None);
    assert_eq!(missing.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("command not found"));
    let literal = master.ok(&["run", "--", "echo", "$HOME;", "*"], None);
    assert_eq!(literal, b"$HOME; *\n", "argv is passed as is: no shell");
}

#[tokio::test]
async fn values_are_injected_and_masked_in_both_streams() {
    let (_db, _server, master) = master_with_secret().await;
    let out = master.run(
        &[
            "run",
            "--env",
            "KEY=openai",
            "--",
            "sh",
            "-c",
            "printf 'out:%s\\n' \"$KEY\"; printf 'err:%s\\n' \"$KEY\" >&2",
        ],
        None,
    );
    assert!(out.status.success());
    assert_eq!(out.stdout, b"out:********\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err:********"), "{}", String::from_utf8_lossy(&out.stderr));

    // The value written in two pieces, in two separate writes, is still masked.
    let split = master.ok(
        &[
            "run",
            "--env",
            "KEY=openai",
            "--",
            "sh",
            "-c",
            "printf '%s' \"${KEY%??????????}\"; sleep 0.1; printf '%s\\n' \"${KEY#${KEY%??????????}}\"",
        ],
        None,
    );
    assert_eq!(split, b"********\n");

    let unmasked =
        master.ok(&["run", "--no-mask", "--env", "KEY=openai", "--", "sh", "-c", "printf '%s' \"$KEY\""], None);
    assert_eq!(unmasked, SECRET, "--no-mask shows the value and injects it byte-exact");
}

#[tokio::test]
async fn masked_output_never_keeps_run_alive() {
    let (_db, _server, master) = master_with_secret().await;

    // `agentkeys run … -- yes | head -1`: when our reader goes, the child gets SIGPIPE, as unmasked.
    let mut command = master.command(&["run", "--env", "KEY=openai", "--", "yes"]);
    command.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "y\n");
    drop(stdout);
    assert_eq!(child.wait().unwrap().code(), Some(128 + 13), "the child ended by SIGPIPE, and run with it");

    // A daemonized grandchild holding the pipes open does not hold `run` past its grace period.
    let started = std::time::Instant::now();
    let out = master.run(&["run", "--env", "KEY=openai", "--", "sh", "-c", "sleep 20 & echo started"], None);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"started\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "run returned after {:?}", started.elapsed());
}

/// Starts `run` with a child that reports each forwarded signal, and waits until it is ready.
fn start_trapping_child(master: &Master, trap: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let script = format!("{trap} echo ready; while true; do sleep 0.05; done");
    let mut command = master.command(&["run", "--env", "KEY=openai", "--", "sh", "-c", &script]);
    command.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n", "the child started");
    (child, stdout)
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal).unwrap();
}

#[tokio::test]
async fn signals_are_forwarded_to_the_child() {
    let (_db, _server, master) = master_with_secret().await;
    use rustix::process::Signal;
    for (name, sig) in [("INT", Signal::INT), ("TERM", Signal::TERM), ("HUP", Signal::HUP), ("QUIT", Signal::QUIT)] {
        let trap = format!("trap 'echo got-{name}; exit 42' {name};");
        let (mut child, mut stdout) = start_trapping_child(&master, &trap);
        signal(child.id(), sig);
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, format!("got-{name}\n"), "SIG{name} reached the child");
        assert_eq!(child.wait().unwrap().code(), Some(42), "SIG{name}: the child's own exit status");
    }
    let (mut child, _stdout) = start_trapping_child(&master, "");
    signal(child.id(), Signal::TERM);
    assert_eq!(child.wait().unwrap().code(), Some(128 + 15), "a child killed by the forwarded signal: 128+N");
}
