//! A hostile server (PRODUCT.md §2; docs/security.md, "What a hostile server can and cannot do").
//! Each test edits the database between requests the way an operator, a compromised host or a
//! restored backup would, and checks that every reader refuses what it was handed: the master's
//! `read`, the daemon's `run`, descriptor delivery on its socket and MCP `get_credential`.

use std::path::Path;

use agentkeys_core::crypto::{self, CredentialContext, SymmetricKey, WrapLabel};
use agentkeys_core::{OsRandom, daemon_client};
use agentkeys_tests::{Backend, DaemonHost, Master, ServerProcess, TestDb, spawn_serving};
use sqlx::{Connection as _, Row as _};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `(outcome, code)` of each `integrity.report` row of `openai` in the master's audit.
fn integrity_reports(master: &Master) -> Vec<(String, String)> {
    let usage: serde_json::Value =
        serde_json::from_slice(&master.ok(&["usage", "--json", "--service", "openai"], None)).unwrap();
    usage["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "integrity.report")
        .map(|e| (e["outcome"].as_str().unwrap_or("").to_owned(), e["code"].as_str().unwrap_or("").to_owned()))
        .collect()
}

on_both_backends!(
    forged_versions_are_refused_by_every_reader,
    a_deleted_newest_version_is_caught_by_every_reader,
    a_revoked_device_brought_back_gets_no_key,
    a_service_slipped_into_a_scope_gets_no_key,
    a_truncated_audit_chain_is_caught,
    the_account_log_keeps_revocations_and_catches_a_dropped_one,
    a_statement_the_account_never_signed_is_refused,
);

/// That a command failed with `INTEGRITY` (exit 1) and its error mentions `what`.
fn assert_integrity(out: &std::process::Output, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("INTEGRITY") && stderr.contains(what), "{stderr}");
}

/// The newest version of `service` in the database, of any namespace.
async fn newest_version(conn: &mut sqlx::AnyConnection, service: &str) -> i64 {
    sqlx::query("SELECT MAX(version) AS v FROM credential_versions WHERE service = $1")
        .bind(service)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .get("v")
}

async fn conn(db: &TestDb) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&db.url).await.expect("connect to the test database")
}

/// What a hostile server can do with public keys alone: seal `value` under a data key of its own
/// as the newest version of `service`, and wrap that key to the account key and to every agent
/// device that held a wrap of it. With `keep_grants` it leaves the account's signatures in place
/// (they no longer match); without, it clears them (an "unsigned" version).
async fn forge_newest(db: &TestDb, account_id: &str, service: &str, value: &[u8], keep_grants: bool) {
    let mut conn = conn(db).await;
    let version: i64 = sqlx::query(
        "SELECT MAX(version) AS v FROM credential_versions WHERE account_id = $1 AND namespace = 'vault' AND service = $2",
    )
    .bind(account_id)
    .bind(service)
    .fetch_one(&mut conn)
    .await
    .unwrap()
    .get("v");
    let account_kx: Vec<u8> = sqlx::query("SELECT kx_public FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get("kx_public");
    let data_key = SymmetricKey::generate(&mut OsRandom);
    let context = CredentialContext { account_id, namespace: "vault", service, version: version as u64 };
    let sealed = crypto::seal_credential(&data_key, &context, value, &mut OsRandom);
    let wrap_to = |kx: &[u8]| {
        crypto::wrap_to(&kx.try_into().unwrap(), data_key.expose(), WrapLabel::DataKey, &mut OsRandom).unwrap()
    };
    sqlx::query(
        "UPDATE credential_versions SET ciphertext = $1, data_key_wrap = $2 \
         WHERE account_id = $3 AND namespace = 'vault' AND service = $4 AND version = $5",
    )
    .bind(&sealed)
    .bind(wrap_to(&account_kx))
    .bind(account_id)
    .bind(service)
    .bind(version)
    .execute(&mut conn)
    .await
    .unwrap();
    let devices = sqlx::query(
        "SELECT w.device_id, d.kx_public FROM credential_wraps w JOIN devices d ON d.id = w.device_id \
         WHERE w.account_id = $1 AND w.namespace = 'vault' AND w.service = $2 AND w.version = $3",
    )
    .bind(account_id)
    .bind(service)
    .bind(version)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!devices.is_empty(), "the agent held a wrap to forge");
    for device in devices {
        let (device_id, kx): (String, Vec<u8>) = (device.get("device_id"), device.get("kx_public"));
        sqlx::query(
            "UPDATE credential_wraps SET wrap = $1 WHERE account_id = $2 AND namespace = 'vault' AND service = $3 \
             AND version = $4 AND device_id = $5",
        )
        .bind(wrap_to(&kx))
        .bind(account_id)
        .bind(service)
        .bind(version)
        .bind(&device_id)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    if !keep_grants {
        for sql in [
            "UPDATE credential_versions SET grant_signer = NULL, grant_signature = NULL \
             WHERE account_id = $1 AND service = $2 AND version = $3",
            "UPDATE credential_wraps SET grant_recipient = NULL, grant_signer = NULL, grant_signature = NULL \
             WHERE account_id = $1 AND service = $2 AND version = $3",
        ] {
            sqlx::query(sql).bind(account_id).bind(service).bind(version).execute(&mut conn).await.unwrap();
        }
    }
}

/// What a hostile server does to hide the newest version of `service`: deletes it.
async fn delete_newest(db: &TestDb, account_id: &str, service: &str) {
    let mut conn = conn(db).await;
    for sql in [
        "DELETE FROM credential_wraps WHERE account_id = $1 AND service = $2 AND version = \
         (SELECT MAX(version) FROM credential_versions WHERE account_id = $1 AND service = $2)",
        "DELETE FROM credential_versions WHERE account_id = $1 AND service = $2 AND version = \
         (SELECT MAX(version) FROM credential_versions WHERE account_id = $1 AND service = $2)",
    ] {
        sqlx::query(sql).bind(account_id).bind(service).execute(&mut conn).await.unwrap();
    }
}

/// What an operator hiding what happened would do: cut the last `rows` rows off the audit log and
/// move both heads back to match, so that the server's own `verify-audit` finds nothing wrong.
async fn truncate_audit(db: &TestDb, backend: Backend, rows: i64) {
    let mut conn = conn(db).await;
    let drop_triggers: &[&str] = match backend {
        Backend::Sqlite => &["DROP TRIGGER audit_log_no_delete"],
        Backend::Postgres => &["DROP TRIGGER audit_log_no_change ON audit_log"],
    };
    for sql in drop_triggers.iter().copied().chain([
        "DELETE FROM audit_log WHERE seq > (SELECT seq FROM audit_head WHERE id = 1) - $1",
        "UPDATE audit_head SET seq = (SELECT MAX(seq) FROM audit_log), \
         hash = (SELECT hash FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)) WHERE id = 1",
        "UPDATE account_audit_heads SET \
         seq = (SELECT MAX(account_seq) FROM audit_log a WHERE a.account_id = account_audit_heads.account_id), \
         hash = (SELECT account_hash FROM audit_log a WHERE a.account_id = account_audit_heads.account_id \
                 AND a.account_seq = (SELECT MAX(account_seq) FROM audit_log b WHERE b.account_id = a.account_id))",
    ]) {
        let query = sqlx::query(sql);
        let query = if sql.contains("$1") { query.bind(rows) } else { query };
        query.execute(&mut conn).await.unwrap();
    }
}

/// A master with `openai`, an agent paired with scope `openai`, and its `serve` daemon.
struct Scene {
    master: Master,
    host: DaemonHost,
    session: String,
    socket: std::path::PathBuf,
    _sockets: tempfile::TempDir,
    serve: std::process::Child,
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = self.serve.kill();
        let _ = self.serve.wait();
    }
}

impl Scene {
    fn start(server: &ServerProcess, value: &[u8]) -> Self {
        let master = Master::new(&server.url);
        master.init();
        master.ok(&["store", "openai"], Some(value));
        let host = DaemonHost::new(&server.url);
        let agent = host.pair(&master, "victim-bot", "openai");
        let session = DaemonHost::session_arg(&agent);
        let sockets = tempfile::tempdir().unwrap();
        let socket = sockets.path().join("daemon.sock");
        let serve = spawn_serving(host.command(&[
            "--session-id",
            &session,
            "--cache-ttl",
            "0",
            "serve",
            "--socket",
            socket.to_str().unwrap(),
        ]));
        Self { master, host, session, socket, _sockets: sockets, serve }
    }

    /// The daemon's own `run` (not through the socket): exit code, stdout, stderr.
    fn agent_run(&self) -> (Option<i32>, String, String) {
        let out = run_printing(&self.host, &["--session-id", &self.session], "openai");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    fn fd(&self) -> Result<String, String> {
        daemon_client::get_credential_fd(&self.socket, "openai")
            .map(|fd| text(&fd.read().unwrap()))
            .map_err(|e| format!("{:?} {}: {:?}", e.code, e.message, e.hint))
    }

    /// MCP `get_credential` on the socket: the value, or the tool error's text.
    fn mcp(&self) -> Result<String, String> {
        mcp_get_credential(&self.socket, "openai")
    }
}

/// MCP `get_credential` on a daemon socket: the value, or the whole answer when it is an error.
fn mcp_get_credential(socket: &Path, service: &str) -> Result<String, String> {
    let answer = agentkeys_tests::mcp_get_credential_answer(socket, service);
    match answer["result"]["structuredContent"]["value"].as_str() {
        Some(value) if answer["result"]["isError"] != true => Ok(value.to_owned()),
        _ => Err(answer.to_string()),
    }
}

/// `agentkeys-daemon GLOBAL... run` of a command that prints the credential `service` (`$K`).
fn run_printing(host: &DaemonHost, global: &[&str], service: &str) -> std::process::Output {
    let binding = format!("K={service}");
    let mut args = global.to_vec();
    args.extend(["run", "--no-mask", "--env", &binding, "--", "sh", "-c", "printf %s \"$K\""]);
    host.run(&args)
}

async fn forged_versions_are_refused_by_every_reader(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let scene = Scene::start(&server, b"sk-genuine-0");
    let account_id = scene.master.session().account_id.clone();
    assert_eq!(scene.agent_run().1, "sk-genuine-0");
    assert_eq!(scene.fd().unwrap(), "sk-genuine-0");
    assert_eq!(scene.mcp().unwrap(), "sk-genuine-0");
    let attacker = "sk-attacker-chosen";
    for (round, keep_grants) in [(1, true), (2, false)] {
        forge_newest(&db, &account_id, "openai", attacker.as_bytes(), keep_grants).await;
        let what = if keep_grants { "with the account's old signatures" } else { "unsigned" };

        let read = scene.master.run(&["read", "openai"], None);
        assert_eq!(read.status.code(), Some(1), "master read of a forgery ({what}): {}", text(&read.stderr));
        assert!(!text(&read.stdout).contains(attacker), "nothing of it printed ({what})");
        assert!(text(&read.stderr).contains("INTEGRITY"), "{what}: {}", text(&read.stderr));
        assert!(
            text(&read.stderr).contains("never wrote") || text(&read.stderr).contains("unsigned"),
            "{}",
            text(&read.stderr)
        );

        let (code, stdout, stderr) = scene.agent_run();
        assert_eq!(code, Some(1), "agent run of a forgery ({what}): {stderr}");
        assert!(!stdout.contains(attacker) && stderr.contains("INTEGRITY"), "{what}: {stdout} {stderr}");

        let fd = scene.fd().expect_err("descriptor delivery of a forgery");
        assert!(fd.contains("INTEGRITY") && !fd.contains(attacker), "{what}: {fd}");

        let mcp = scene.mcp().expect_err("MCP delivery of a forgery");
        assert!(mcp.contains("INTEGRITY") && !mcp.contains(attacker), "{what}: {mcp}");

        // A plain store keeps the current version's high-value mark, which a forgery cannot say.
        let genuine = format!("sk-genuine-{round}");
        let unknown = scene.master.run(&["store", "openai"], Some(genuine.as_bytes()));
        assert_eq!(unknown.status.code(), Some(1), "{what}: {}", text(&unknown.stderr));
        assert!(text(&unknown.stderr).contains("--high-value=false"), "{what}: {}", text(&unknown.stderr));
        // The owner stores it again saying which: every reader trusts the new, signed version.
        scene.master.ok(&["store", "openai", "--high-value=false", "--yes"], Some(genuine.as_bytes()));
        assert_eq!(text(&scene.master.ok(&["read", "openai"], None)).trim_end(), genuine);
        assert_eq!(scene.agent_run().1, genuine);
        assert_eq!(scene.fd().unwrap(), genuine);
        assert_eq!(scene.mcp().unwrap(), genuine);
    }
    // Each refusal (master read, agent run, descriptor, MCP, the plain store; two rounds) reached
    // the audit.
    let reports = integrity_reports(&scene.master);
    assert_eq!(reports.len(), 10, "{reports:?}");
    assert!(reports.iter().all(|(_, code)| code == "INTEGRITY"), "{reports:?}");
}

async fn a_deleted_newest_version_is_caught_by_every_reader(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let scene = Scene::start(&server, b"sk-one");
    let account_id = scene.master.session().account_id.clone();
    scene.master.ok(&["store", "openai"], Some(b"sk-two"));
    assert_eq!(scene.agent_run().1, "sk-two");
    assert_eq!(scene.mcp().unwrap(), "sk-two", "the serving daemon saw version 2 too");
    delete_newest(&db, &account_id, "openai").await;

    let read = scene.master.run(&["read", "openai"], None);
    assert_eq!(read.status.code(), Some(1), "{}", text(&read.stderr));
    let stderr = text(&read.stderr);
    assert!(stderr.contains("INTEGRITY") && stderr.contains("version 1") && stderr.contains("version 2"), "{stderr}");
    assert!(stderr.contains("--accept-rollback"), "the fix names the way out: {stderr}");
    assert!(!text(&read.stdout).contains("sk-one"));
    let (code, stdout, stderr) = scene.agent_run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("sk-one") && stderr.contains("INTEGRITY"), "{stdout} {stderr}");
    assert!(scene.mcp().expect_err("MCP of a rolled-back version").contains("INTEGRITY"));

    // The owner says the server was restored on purpose: taken once, then read as usual.
    assert_eq!(text(&scene.master.ok(&["read", "openai", "--accept-rollback"], None)).trim_end(), "sk-one");
    assert_eq!(text(&scene.master.ok(&["read", "openai"], None)).trim_end(), "sk-one");
    let accepted = run_printing(&scene.host, &["--session-id", &scene.session, "--accept-rollback"], "openai");
    assert_eq!(text(&accepted.stdout), "sk-one", "{}", text(&accepted.stderr));
    let reports = integrity_reports(&scene.master);
    assert!(reports.iter().any(|(_, code)| code == "INTEGRITY"), "the refusals: {reports:?}");
    let accepted: Vec<_> = reports.iter().filter(|(outcome, _)| outcome == "allowed").collect();
    assert_eq!(accepted.len(), 2, "each --accept-rollback is audited: {reports:?}");
}

/// An older copy of the whole database put back (SQLite: the files, with the server stopped):
/// the clients that saw newer versions refuse the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_database_put_back_is_caught() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let path = db.sqlite_path.clone().unwrap();
    let mut server = ServerProcess::start(&db.url);
    let mut scene = Scene::start(&server, b"sk-old");
    assert!(server.terminate(), "a clean stop, so the files are whole");
    let backup = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", path.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, backup.path().join(format!("db{suffix}"))).unwrap();
        }
    }
    let restart = |scene: &mut Scene| {
        let server = ServerProcess::start(&db.url);
        scene.master.server = server.url.clone();
        scene.host.server = server.url.clone();
        server
    };
    let mut server = restart(&mut scene);
    scene.master.ok(&["store", "openai"], Some(b"sk-new"));
    assert_eq!(scene.agent_run().1, "sk-new");
    assert!(server.terminate());
    for suffix in ["", "-wal", "-shm"] {
        let target = format!("{}{suffix}", path.display());
        let _ = std::fs::remove_file(&target);
        let saved = backup.path().join(format!("db{suffix}"));
        if saved.exists() {
            std::fs::copy(&saved, &target).unwrap();
        }
    }
    let _server = restart(&mut scene);
    // Any command, not only a read: the audit chain is shorter than the one each client saw.
    let agents = scene.master.run(&["agents"], None);
    assert_eq!(agents.status.code(), Some(1), "{}", text(&agents.stderr));
    assert!(text(&agents.stderr).contains("INTEGRITY"), "{}", text(&agents.stderr));
    let read = scene.master.run(&["read", "openai"], None);
    assert_eq!(read.status.code(), Some(1), "{}", text(&read.stderr));
    assert!(text(&read.stderr).contains("INTEGRITY"), "{}", text(&read.stderr));
    let (code, stdout, stderr) = scene.agent_run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("sk-old") && stderr.contains("INTEGRITY") && stderr.contains("audit chain"), "{stderr}");

    // The owner says the server was restored on purpose: the older chain and version are taken
    // once (and audited), then everything works without the flag.
    assert_eq!(text(&scene.master.ok(&["read", "openai", "--accept-rollback"], None)).trim_end(), "sk-old");
    scene.master.ok(&["agents"], None);
    let accepted = run_printing(&scene.host, &["--session-id", &scene.session, "--accept-rollback"], "openai");
    assert_eq!(text(&accepted.stdout), "sk-old", "{}", text(&accepted.stderr));
    assert_eq!(scene.agent_run().1, "sk-old");
}

/// The operator cuts the audit log's tail and moves both heads back, so the server's own check
/// passes: every client that saw the longer chain refuses the shorter one, naming both places,
/// on every command, until told the server was restored on purpose.
async fn a_truncated_audit_chain_is_caught(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let scene = Scene::start(&server, b"sk-audited");
    assert_eq!(scene.agent_run().1, "sk-audited");
    scene.master.ok(&["usage"], None);
    truncate_audit(&db, backend, 3).await;
    let verify = std::process::Command::new(agentkeys_tests::bin("agentkeys-server"))
        .args(["verify-audit", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(verify.status.success(), "a careful operator leaves the chain consistent: {}", text(&verify.stderr));

    let whoami = scene.master.run(&["whoami"], None);
    assert_eq!(whoami.status.code(), Some(1), "{}", text(&whoami.stderr));
    let stderr = text(&whoami.stderr);
    assert!(stderr.contains("INTEGRITY") && stderr.contains("place"), "{stderr}");
    assert!(stderr.contains("--accept-rollback"), "the fix names the way out: {stderr}");
    let (code, stdout, stderr) = scene.agent_run();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("sk-audited") && stderr.contains("audit chain"), "{stdout} {stderr}");
    assert!(scene.mcp().expect_err("MCP over a truncated chain").contains("INTEGRITY"));
    // The refusals' own reports make the chain grow again past the place the master saw: it is
    // still refused (another row is there now), as a rewritten history.
    for _ in 0..4 {
        let again = scene.master.run(&["whoami"], None);
        assert_eq!(again.status.code(), Some(1), "{}", text(&again.stderr));
    }
    let again = text(&scene.master.run(&["whoami"], None).stderr);
    assert!(again.contains("rewritten") || again.contains("cut short"), "{again}");

    scene.master.ok(&["whoami", "--accept-rollback"], None);
    scene.master.ok(&["whoami"], None);
    let usage = text(&scene.master.ok(&["usage", "--json"], None));
    assert!(usage.contains("integrity.report"), "the refusals and the accepted rollback were reported: {usage}");
}

/// The server stands in an account of its own behind a link code: it points the code at its own
/// agent and certifies the code's (public) link key with its own account key. Only the link key,
/// which the server never had, could vouch for that account: the daemon refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_code_is_bound_to_the_account_that_minted_it() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-genuine-link"));
    let code =
        text(&master.ok(&["agent", "create", "linked-bot", "--scope", "openai", "--yes"], None)).trim().to_owned();
    let impostor = Master::new(&server.url);
    impostor.init();
    impostor.ok(&["agent", "create", "linked-bot", "--yes"], None);
    let impostor_session = impostor.session();
    let impostor_agent = agentkeys_proto::ids::agent_id(&impostor_session.account_id, "linked-bot");
    let link_id = agentkeys_core::agents::LinkCode::parse(&code).unwrap().link_id();
    let mut conn = conn(&db).await;
    let keys = sqlx::query("SELECT sign_public, kx_public FROM links WHERE id = $1")
        .bind(&link_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (sign, kx): (Vec<u8>, Vec<u8>) = (keys.get("sign_public"), keys.get("kx_public"));
    let certificate = impostor_session.account.as_ref().unwrap().sign(&agentkeys_proto::ids::link_key_payload(
        &impostor_session.account_id,
        &impostor_agent,
        &sign.clone().try_into().unwrap(),
        &kx.try_into().unwrap(),
    ));
    sqlx::query("UPDATE links SET account_id = $1, agent_id = $2, certificate = $3 WHERE id = $4")
        .bind(&impostor_session.account_id)
        .bind(&impostor_agent)
        .bind(certificate.to_vec())
        .bind(&link_id)
        .execute(&mut conn)
        .await
        .unwrap();
    let host = DaemonHost::new(&server.url);
    let linked = host.command(&["link", &code]).output().unwrap();
    assert_eq!(linked.status.code(), Some(1), "{}", text(&linked.stderr));
    assert!(text(&linked.stderr).contains("INTEGRITY"), "{}", text(&linked.stderr));
    assert!(std::fs::read_dir(host.home.path()).map(|d| d.count()).unwrap_or(0) == 0, "no session was saved");
}

/// The server un-revokes a device in its database (agent, devices, sessions): the master that
/// revoked it remembers, and wraps nothing to it; the store is refused whole.
async fn a_revoked_device_brought_back_gets_no_key(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-before-revoke"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "bot2", "openai");
    master.ok(&["revoke", "bot2", "--yes"], None);
    let mut conn = conn(&db).await;
    unrevoke(&mut conn, &agent).await;
    assert_integrity(&master.run(&["store", "openai"], Some(b"sk-after-revoke")), "revoked");
    assert_eq!(newest_version(&mut conn, "openai").await, 1, "nothing was stored");
    let ran = run_printing(&host, &[], "openai");
    assert!(!text(&ran.stdout).contains("sk-after-revoke"), "{}", text(&ran.stderr));
}

/// Deletes the master slot's `seen.json`, as a second master device would start without one.
fn forget_master_memory(master: &Master) {
    let mut removed = 0;
    for slot in std::fs::read_dir(master.home.path()).unwrap().flatten() {
        if std::fs::remove_file(slot.path().join("seen.json")).is_ok() {
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "the master slot had a seen.json");
}

/// Un-revokes every device of `agent` in the database (agent, devices, sessions).
async fn unrevoke(conn: &mut sqlx::AnyConnection, agent: &str) {
    for sql in [
        "UPDATE agents SET status = 'active' WHERE id = $1",
        "UPDATE devices SET revoked_at_ms = NULL WHERE agent_id = $1",
        "UPDATE sessions SET revoked_at_ms = NULL WHERE device_id IN (SELECT id FROM devices WHERE agent_id = $1)",
    ] {
        sqlx::query(sql).bind(agent).execute(&mut *conn).await.unwrap();
    }
}

/// The account's statements as the server keeps them: `(seq, payload)`, in order.
async fn statements(conn: &mut sqlx::AnyConnection) -> Vec<(i64, Vec<u8>)> {
    sqlx::query("SELECT seq, payload FROM account_statements ORDER BY seq")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get("seq"), row.get("payload")))
        .collect()
}

/// A revocation lives in the account's signed log, not only in the slot that made it: a master
/// slot with no memory of it (as a second device would be) still refuses the device the server
/// brings back. A server that then drops the revocation from the log is caught by the number the
/// slot remembers, and `--accept-rollback` reads the log again without forgetting the revocation.
async fn the_account_log_keeps_revocations_and_catches_a_dropped_one(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-before-revoke"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "bot2", "openai");
    master.ok(&["revoke", "bot2", "--yes"], None);
    let mut conn = conn(&db).await;
    let log = statements(&mut conn).await;
    let kinds: Vec<u8> = log
        .iter()
        .map(|(_, payload)| match agentkeys_proto::statement::Statement::parse(payload).unwrap().body {
            agentkeys_proto::statement::StatementBody::Grant { .. } => b'g',
            agentkeys_proto::statement::StatementBody::Revoke { .. } => b'r',
            _ => b'?',
        })
        .collect();
    assert_eq!(kinds, b"gr", "the pairing's grant, then the revocation");

    unrevoke(&mut conn, &agent).await;
    forget_master_memory(&master);
    assert_integrity(&master.run(&["store", "openai"], Some(b"sk-after-revoke")), "revoked");

    sqlx::query("DELETE FROM account_statements WHERE seq = $1").bind(log[1].0).execute(&mut conn).await.unwrap();
    let dropped = master.run(&["store", "openai"], Some(b"sk-after-revoke"));
    assert_integrity(&dropped, "statement log for this account ends at number 1");
    // Told the server was restored, the master reads the log again; it still remembers the
    // revocation it read before.
    assert_integrity(&master.run(&["--accept-rollback", "store", "openai"], Some(b"sk-after-revoke")), "revoked");
    assert_eq!(newest_version(&mut conn, "openai").await, 1, "nothing was stored");
    let ran = run_printing(&host, &[], "openai");
    assert!(!text(&ran.stdout).contains("sk-after-revoke"), "{}", text(&ran.stderr));
}

/// The server appends a statement of its own to the log — a grant of a service the owner never
/// granted, correctly numbered and linked, signed with a key of its own — and adds the service to
/// the agent's scope: the master refuses the statement, and wraps nothing.
async fn a_statement_the_account_never_signed_is_refused(backend: Backend) {
    use agentkeys_proto::statement::{Statement, StatementBody, statement_hash};
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "github"], Some(b"ghp-never-granted"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "narrow-bot", "openai");
    let mut conn = conn(&db).await;
    let log = statements(&mut conn).await;
    let (last_seq, last_payload) = log.last().cloned().expect("the pairing's grant");
    let account_id: String = sqlx::query("SELECT id FROM accounts").fetch_one(&mut conn).await.unwrap().get("id");
    let forged = Statement {
        account_id: account_id.clone(),
        seq: u64::try_from(last_seq).unwrap() + 1,
        prev: statement_hash(&last_payload),
        body: StatementBody::Grant { agent_id: agent.clone(), services: vec!["github".into()] },
    };
    let payload = forged.payload();
    let signature = crypto::KeyPair::generate(&mut OsRandom).sign(&payload);
    sqlx::query(
        "INSERT INTO account_statements (account_id, seq, payload, signature, created_at_ms) VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(&account_id)
    .bind(last_seq + 1)
    .bind(payload)
    .bind(signature.to_vec())
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO agent_scope (agent_id, service) VALUES ($1, 'github')")
        .bind(&agent)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_integrity(&master.run(&["store", "github"], Some(b"ghp-rotated")), "never signed");
    let ran = run_printing(&host, &[], "github");
    assert!(!text(&ran.stdout).contains("ghp-"), "{}", text(&ran.stderr));
}

/// The server adds a service to an agent's scope in its database: the master, which remembers what
/// it granted, refuses to wrap that service's key to the agent — at a store, and when approving a
/// second device of the agent — until the owner grants it.
async fn a_service_slipped_into_a_scope_gets_no_key(backend: Backend) {
    let Some(db) = TestDb::new(backend).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-in-scope"));
    master.ok(&["store", "github"], Some(b"ghp-never-granted"));
    let host = DaemonHost::new(&server.url);
    let agent = host.pair(&master, "narrow-bot", "openai");
    let mut conn = conn(&db).await;
    sqlx::query("INSERT INTO agent_scope (agent_id, service) VALUES ($1, 'github')")
        .bind(&agent)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_integrity(&master.run(&["store", "github"], Some(b"ghp-rotated")), "never");
    let second = DaemonHost::new(&server.url);
    let pairing = second.start_pair("narrow-bot", "");
    let approve = master.approve_pairing(&pairing, &["--yes"]);
    assert_eq!(approve.status.code(), Some(1), "{}", text(&approve.stderr));
    assert!(text(&approve.stderr).contains("INTEGRITY"), "{}", text(&approve.stderr));
    master.ok(&["deny", &pairing.prompt.code], None);
    let _ = pairing.finish();
    let ran = run_printing(&host, &[], "github");
    assert!(!text(&ran.stdout).contains("ghp-"), "{}", text(&ran.stderr));
    // Granted for real, it works.
    master.ok(&["scope", "narrow-bot", "--add", "github", "--yes"], None);
    master.ok(&["store", "github"], Some(b"ghp-granted"));
    let ran = run_printing(&host, &[], "github");
    assert_eq!(text(&ran.stdout), "ghp-granted", "{}", text(&ran.stderr));
}

/// What a slot remembers never refuses what the owner did: an agent torn down and paired again
/// under its label starts its private versions at 1 again, on the master and on the agent's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_refuse_an_agent_made_again() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    let host = DaemonHost::new(&server.url);
    host.pair(&master, "again-bot", "");
    for value in ["p-1", "p-2", "p-3"] {
        master.ok(&["store", "openai", "--agent", "again-bot"], Some(value.as_bytes()));
    }
    let run = |host: &DaemonHost| {
        let out = run_printing(host, &[], "openai");
        (text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(run(&host).0, "p-3");
    master.ok(&["teardown", "again-bot", "--yes"], None);
    host.pair(&master, "again-bot", "");
    master.ok(&["store", "openai", "--agent", "again-bot"], Some(b"fresh-1"));
    assert_eq!(text(&master.ok(&["read", "openai", "--agent", "again-bot"], None)).trim_end(), "fresh-1");
    let (stdout, stderr) = run(&host);
    assert_eq!(stdout, "fresh-1", "{stderr}");
}
