//! The CLI at a real pseudo-terminal (rexpect): questions that must come from the human are asked
//! on `/dev/tty` and refused without one. Here: a master session sealed with a passphrase
//! (`init --passphrase`), opened with it, refused after three wrong tries, cancelled by Ctrl-C
//! with the terminal restored, and refused outright with no terminal at all.

use std::process::Command;

use agentkeys_tests::{Master, ServerProcess, TestDb, without_terminal};
use rexpect::process::WaitStatus;
use rexpect::session::{PtySession, spawn_command};

const PASSPHRASE: &str = "correct horse battery";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `command` in a new pseudo-terminal that is its controlling terminal.
pub fn in_terminal(command: Command) -> PtySession {
    spawn_command(command, Some(30_000)).expect("spawn in a pty")
}

/// The exit code of a process that ran in a pty.
pub fn exit_code(session: &PtySession) -> i32 {
    match session.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("did not exit normally: {other:?}"),
    }
}

#[tokio::test]
async fn a_passphrase_sealed_master_session_asks_on_the_terminal_only() {
    let db = TestDb::new(agentkeys_tests::Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);

    // init --passphrase: too short is refused, then two matching entries seal the session.
    let mut init = in_terminal(master.command(&["init", "--label", "pty", "--passphrase"]));
    init.exp_string("New passphrase for the 'master' session: ").unwrap();
    init.send_line("short").unwrap();
    init.exp_string("Too short").unwrap();
    init.exp_string("New passphrase").unwrap();
    init.send_line(PASSPHRASE).unwrap();
    init.exp_string("Repeat it: ").unwrap();
    init.send_line(PASSPHRASE).unwrap();
    let shown = init.exp_eof().unwrap();
    assert!(shown.contains("Session saved in passphrase (Argon2id)"), "{shown}");
    assert!(!shown.contains(PASSPHRASE), "the passphrase is never echoed");
    assert_eq!(exit_code(&init), 0);
    let sealed = std::fs::read(master.session_dir().join("session.enc")).unwrap();
    assert_eq!(sealed[0], 2, "the passphrase form of the session file");
    assert!(!master.session_dir().join("session.key").exists(), "no key is stored anywhere");

    // A command asks for it; a wrong one gets a second try.
    let mut who = in_terminal(master.command(&["whoami"]));
    who.exp_string("Passphrase for the AgentKeys 'master' session: ").unwrap();
    who.send_line("not it").unwrap();
    who.exp_string("Wrong passphrase, try again: ").unwrap();
    who.send_line(PASSPHRASE).unwrap();
    let shown = who.exp_eof().unwrap();
    assert!(shown.contains("Stored:   passphrase (Argon2id)"), "{shown}");
    assert_eq!(exit_code(&who), 0);

    // Three wrong tries: exit 6, nothing changed.
    let mut wrong = in_terminal(master.command(&["whoami"]));
    for _ in 0..3 {
        wrong.exp_string("assphrase").unwrap();
        wrong.send_line("guess").unwrap();
    }
    let shown = wrong.exp_eof().unwrap();
    assert!(shown.contains("wrong passphrase for the 'master' session (3 attempts)"), "{shown}");
    assert_eq!(exit_code(&wrong), 6);
    assert_eq!(std::fs::read(master.session_dir().join("session.enc")).unwrap(), sealed);

    // Ctrl-C at the prompt: exit 6, and the terminal is back in line mode.
    let mut cancelled = in_terminal(master.command(&["whoami"]));
    cancelled.exp_string("Passphrase for").unwrap();
    cancelled.send_control('c').unwrap();
    let shown = cancelled.exp_eof().unwrap();
    assert!(shown.contains("cancelled at the passphrase prompt"), "{shown}");
    let pty = cancelled.process().get_file_handle().unwrap();
    let modes = rustix::termios::tcgetattr(&pty).unwrap().local_modes;
    assert!(modes.contains(rustix::termios::LocalModes::ICANON), "the terminal was restored: {modes:?}");
    assert_eq!(exit_code(&cancelled), 6);

    // No terminal at all: refused at once with the fix, never read from stdin.
    let out = without_terminal(&master.command(&["whoami"])).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no terminal to ask for it"), "{}", text(&out.stderr));
    let mut piped = without_terminal(&master.command(&["init", "--passphrase", "--force", "--yes"]));
    let mut child = piped.stdin(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let _ = std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{PASSPHRASE}\n").as_bytes());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a piped passphrase is not a terminal: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--passphrase needs a terminal"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(master.session_dir().join("session.enc")).unwrap(), sealed, "nothing was replaced");

    // A forgotten passphrase: `init --force` replaces the slot without asking for the old one.
    let out = without_terminal(&master.command(&["init", "--force", "--yes"])).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("assphrase"), "the old passphrase is not asked: {}", text(&out.stderr));
    assert_eq!(std::fs::read(master.session_dir().join("session.enc")).unwrap()[0], 1, "a key-sealed session now");
    master.ok(&["whoami"], None);
}
