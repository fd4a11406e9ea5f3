//! `agentkeys listen` (issue 16, part 3), through the real binaries: it prints each new request
//! as it arrives and shows it on a real notification daemon (python-dbusmock's
//! `notification_daemon` on a private session bus; its summary and body checked), asks the
//! server once per change rather than in a loop (counted in the audit log), and stops cleanly
//! on Ctrl-C. `listen --approve` at a real terminal asks about each request: y runs the same
//! approval as `approve` (the agent's next read is served), d denies it.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use agentkeys_tests::notify::{NotificationRig, available};
use agentkeys_tests::{Backend, DaemonHost, InProcessServer, Master, TestDb};
use sqlx::{Connection as _, Row as _};

use crate::terminal::{exit_code, in_terminal};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The agent's `run` of `printenv K` with `K` bound to `prod-db`, giving `reason`.
fn agent_reads(host: &DaemonHost, agent: &str, reason: &str) -> std::process::Output {
    let session = DaemonHost::session_arg(agent);
    host.run(&[
        "run",
        "--session-id",
        &session,
        "--no-mask",
        "--reason",
        reason,
        "--env",
        "K=prod-db",
        "--",
        "printenv",
        "K",
    ])
}

/// How many times the master listed its queue, from the server's audit log.
async fn queue_listings(db: &TestDb) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.expect("connect to the test database");
    sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'request.list'")
        .fetch_one(&mut conn)
        .await
        .expect("count listings")
        .get::<i64, _>("n")
}

/// The code in a held read's `APPROVAL_REQUIRED` answer.
fn held_code(read: &std::process::Output) -> String {
    let stderr = text(&read.stderr);
    assert_eq!(read.status.code(), Some(6), "a high-value read waits for approval: {stderr}");
    let start = stderr.find("(request ").unwrap_or_else(|| panic!("no request code in: {stderr}")) + "(request ".len();
    stderr[start..start + 9].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_notifies_and_approves_requests_as_they_arrive() {
    if !available() {
        return;
    }
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let server = InProcessServer::start(&db.url).await;
    let rig = NotificationRig::start();
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "prod-db", "--high-value", "--yes"], Some(b"postgres://prod-secret"));
    let host = DaemonHost::new(&server.url);
    let bot = host.pair(&master, "bot", "prod-db");

    // Listening to an empty queue: it says it listens (on stderr, its readiness) and prints nothing.
    let before = queue_listings(&db).await;
    let mut listen = master.command(&["listen"]);
    listen.env("DBUS_SESSION_BUS_ADDRESS", &rig.bus).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut listening = listen.spawn().expect("spawn agentkeys listen");
    let mut stderr = BufReader::new(listening.stderr.take().unwrap()).lines();
    let ready = stderr.next().expect("a first line").unwrap();
    assert!(ready.contains("Listening for requests"), "{ready}");
    let mut stdout = BufReader::new(listening.stdout.take().unwrap()).lines();

    // An agent's high-value read opens a release request: printed at once, and notified.
    let code = held_code(&agent_reads(&host, &bot, "rotate the <b>prod</b> password"));
    let line = stdout.next().expect("a line for the request").unwrap();
    assert!(line.starts_with(&format!("{code} release: read high-value prod-db as bot")), "{line}");
    assert!(line.contains("reason: rotate the <b>prod</b> password"), "{line}");
    let shown = rig.shown();
    assert_eq!(shown.len(), 1, "one notification per request: {shown:?}");
    assert_eq!(shown[0].app_name, "AgentKeys");
    assert_eq!(shown[0].summary, format!("AgentKeys: Release request {code}"));
    assert!(shown[0].body.starts_with("read high-value prod-db as bot"), "{:?}", shown[0].body);
    // The agent's text is shown, never interpreted as markup.
    assert!(shown[0].body.contains("\nReason: rotate the &lt;b&gt;prod&lt;/b&gt; password"), "{:?}", shown[0].body);
    assert!(shown[0].body.ends_with(&format!("\nagentkeys approve {code}")), "{:?}", shown[0].body);

    // Asking again names the same pending request: nothing new to print or show.
    assert_eq!(held_code(&agent_reads(&host, &bot, "again")), code);
    // Ctrl-C: it stops at once, exit 0, and printed nothing more.
    rustix::process::kill_process(rustix::process::Pid::from_child(&listening), rustix::process::Signal::INT).unwrap();
    let status = listening.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C leaves cleanly");
    let rest: Vec<String> = stdout.map_while(Result::ok).collect();
    assert!(rest.is_empty(), "printed nothing for a request already shown: {rest:?}");
    assert!(stderr.map_while(Result::ok).any(|l| l.contains("Stopped listening")));
    assert_eq!(rig.shown().len(), 1, "no second notification for the same request");
    // Long-polls, not a loop: the first listing, and one per change of the queue.
    let listings = queue_listings(&db).await - before;
    assert!((1..=3).contains(&listings), "{listings} listings for one new request");

    // --approve at a terminal: the pending request is asked about and approved (y)…
    let mut at_terminal = master.command(&["listen", "--approve", "--no-notify"]);
    at_terminal.stdin(Stdio::inherit());
    let mut asking = in_terminal(at_terminal);
    asking.exp_string(&format!("Approve {code}? [y]es, [d]eny")).unwrap();
    asking.send_line("y").unwrap();
    // The same critical approval as `approve`: presence is off here, so its typed confirmation.
    asking.exp_string("Release high-value prod-db to agent bot").unwrap();
    asking.exp_string("? [y/N] ").unwrap();
    asking.send_line("y").unwrap();
    asking.exp_string("Approved: bot may read prod-db").unwrap();
    let served = agent_reads(&host, &bot, "now");
    assert_eq!(text(&served.stdout).trim(), "postgres://prod-secret", "{}", text(&served.stderr));
    // …and the next one, arriving while it listens, is denied (d).
    let next = held_code(&agent_reads(&host, &bot, "once more"));
    assert_ne!(next, code);
    asking.exp_string(&format!("{next} release: read high-value prod-db as bot")).unwrap();
    asking.exp_string(&format!("Approve {next}?")).unwrap();
    asking.send_line("d").unwrap();
    asking.exp_string(&format!("Denied {next}")).unwrap();
    asking.send_control('c').unwrap();
    asking.exp_string("Stopped listening").unwrap();
    asking.exp_eof().unwrap();
    assert_eq!(exit_code(&asking), 0);
    let listed = text(&master.ok(&["requests"], None));
    assert!(!listed.contains(&next) && !listed.contains(&code), "both were decided: {listed}");

    // Without a terminal, --approve is refused up front (it would have no one to ask).
    let piped = master.run(&["listen", "--approve"], None);
    assert_eq!(piped.status.code(), Some(2), "{}", text(&piped.stderr));
    assert!(text(&piped.stderr).contains("stdin is not a terminal"), "{}", text(&piped.stderr));
}
