//! `agentkeys-server backup` and `restore` through the real binaries (PRODUCT.md §8, issue 15
//! part 4, SQLite): a snapshot taken while a burst of stores runs holds every store acknowledged
//! before it began, restores into a new data dir whose server answers them and whose audit chain
//! verifies; a client that saw newer state is told the server was rolled back and takes it with
//! `--accept-rollback`; the file holds no credential's plaintext. And what is refused: an
//! unwritable target, an existing one, a non-empty data dir, a truncated or corrupted file,
//! PostgreSQL (pg_dump's job); a backup killed halfway leaves no file that looks like one.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agentkeys_tests::{Backend, Master, ServerProcess, TestDb, bin, contains_any_window};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn server_cmd(args: &[&str]) -> std::process::Output {
    Command::new(bin("agentkeys-server")).args(args).output().expect("run agentkeys-server")
}

fn value(i: usize) -> Vec<u8> {
    format!("sk-backup-{i:04}-0123456789abcdef").into_bytes()
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("agentkeys.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_a_store_burst_restores_every_acknowledged_store() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Arc::new(Master::new(&server.url));
    master.init();
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (each, stored) = std::sync::mpsc::channel::<usize>();
    let burst = {
        let (master, acked, stop) = (master.clone(), acked.clone(), stop.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let service = format!("svc-{i}");
                master.ok(&["store", &service], Some(&value(i)));
                acked.lock().unwrap().push(i);
                let _ = each.send(i);
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.db");
    // Each acknowledged store is announced: wait for `n` more.
    let wait_for = |n: usize| {
        for _ in 0..n {
            stored.recv_timeout(std::time::Duration::from_secs(30)).expect("the store burst goes on");
        }
    };
    tokio::task::block_in_place(|| wait_for(5));
    let before: Vec<usize> = acked.lock().unwrap().clone();
    let out = server_cmd(&["backup", "--database-url", &db.url, "--to", file.to_str().unwrap()]);
    assert!(out.status.success(), "backup: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("audit chain verified"), "{}", text(&out.stdout));
    // Stores go on past the snapshot: the master then knows newer state than the backup holds.
    while stored.try_recv().is_ok() {}
    tokio::task::block_in_place(|| wait_for(2));
    stop.store(true, Ordering::Relaxed);
    burst.join().unwrap();

    // Only ciphertext: no stored value appears in the file.
    let bytes = std::fs::read(&file).unwrap();
    for i in acked.lock().unwrap().iter() {
        assert!(!contains_any_window(&bytes, &value(*i)), "the backup holds svc-{i}'s plaintext");
    }

    let restored_dir = tempfile::tempdir().unwrap();
    let target = restored_dir.path().join("data");
    let out = server_cmd(&["restore", "--from", file.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert!(out.status.success(), "restore: {}", text(&out.stderr));
    let verify = server_cmd(&["verify-audit", "--data-dir", target.to_str().unwrap()]);
    assert!(verify.status.success(), "the restored chain verifies: {}", text(&verify.stderr));
    let restored = ServerProcess::start(&sqlite_url(&target));
    let on_restored = |args: &[&str]| {
        let mut command = master.command(args);
        command.env("AGENTKEYS_SERVER", &restored.url);
        command.output().unwrap()
    };
    let told = on_restored(&["whoami"]);
    assert_eq!(told.status.code(), Some(1), "a rolled-back server is caught: {}", text(&told.stderr));
    assert!(text(&told.stderr).contains("--accept-rollback"), "{}", text(&told.stderr));
    let accepted = on_restored(&["whoami", "--accept-rollback"]);
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
    for i in before {
        let read = on_restored(&["read", &format!("svc-{i}"), "--accept-rollback"]);
        assert!(read.status.success(), "svc-{i} was acknowledged before the backup: {}", text(&read.stderr));
        assert_eq!(read.stdout, value(i), "svc-{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_refuse_what_they_cannot_do_safely() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-refusals"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("snapshot.db");
    let file_arg = file.to_str().unwrap();

    let out = server_cmd(&["backup", "--database-url", &db.url, "--to", "/proc/agentkeys-backup.db"]);
    assert_eq!(out.status.code(), Some(1), "an unwritable target");
    assert!(text(&out.stderr).contains("cannot write the backup"), "{}", text(&out.stderr));
    assert!(server_cmd(&["backup", "--database-url", &db.url, "--to", file_arg]).status.success());
    let out = server_cmd(&["backup", "--database-url", &db.url, "--to", file_arg]);
    assert_eq!(out.status.code(), Some(1), "an existing target without --force: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--force"), "{}", text(&out.stderr));
    let out = server_cmd(&["backup", "--database-url", "postgres://nobody@127.0.0.1/none", "--to", file_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("pg_dump"), "{}", text(&out.stderr));

    // A data dir that holds a database is not overwritten without --force.
    let occupied = tempfile::tempdir().unwrap();
    let restore = |from: &str, into: &std::path::Path, force: bool| {
        let mut args = vec!["restore", "--from", from, "--data-dir", into.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        server_cmd(&args)
    };
    assert!(restore(file_arg, occupied.path(), false).status.success(), "an empty dir takes it");
    let held = std::fs::read(occupied.path().join("agentkeys.db")).unwrap();
    let out = restore(file_arg, occupied.path(), false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not empty"), "{}", text(&out.stderr));
    assert!(restore(file_arg, occupied.path(), true).status.success(), "--force replaces it");

    // Truncated and corrupted files are refused before anything is touched.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let corrupted = dir.path().join("corrupted.db");
    // Every page's header after the first: whatever the layout, the b-trees no longer hold.
    let mut flipped = bytes.clone();
    for page in (4096..bytes.len()).step_by(4096) {
        for byte in &mut flipped[page..page + 16] {
            *byte ^= 0x5a;
        }
    }
    std::fs::write(&corrupted, &flipped).unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"not a database at all").unwrap();
    for bad in [&truncated, &corrupted, &garbage] {
        let out = restore(bad.to_str().unwrap(), occupied.path(), true);
        assert_eq!(out.status.code(), Some(1), "{}: {}", bad.display(), text(&out.stderr));
        assert!(text(&out.stderr).contains("refusing to restore"), "{}", text(&out.stderr));
        assert_eq!(std::fs::read(occupied.path().join("agentkeys.db")).unwrap(), held, "nothing was touched");
    }
}

/// SIGKILL at any moment of a backup: the live database is intact and serving, and the target
/// is either absent or a whole, checked backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_killed_halfway_leaves_the_live_data_intact() {
    let Some(db) = TestDb::new(Backend::Sqlite).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    for i in 0..20 {
        master.ok(&["store", &format!("svc-{i}")], Some(&value(i)));
    }
    let dir = tempfile::tempdir().unwrap();
    for attempt in 0..5 {
        let file = dir.path().join(format!("killed-{attempt}.db"));
        let mut child = Command::new(bin("agentkeys-server"))
            .args(["backup", "--database-url", &db.url, "--to", file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A different moment each time: from right after the start to some way in.
        std::thread::sleep(std::time::Duration::from_millis(attempt * 15));
        let _ = child.kill();
        let _ = child.wait();
        if file.exists() {
            let into = dir.path().join(format!("check-{attempt}"));
            let out = server_cmd(&["restore", "--from", file.to_str().unwrap(), "--data-dir", into.to_str().unwrap()]);
            assert!(out.status.success(), "a file in place is a whole backup: {}", text(&out.stderr));
        }
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    // A killed backup may leave its temporary file (hidden, never a name a restore is pointed at).
    assert!(leftovers.iter().all(|n| n.contains(".partial-")), "{leftovers:?}");
    let verify = server_cmd(&["verify-audit", "--database-url", &db.url]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    assert_eq!(master.ok(&["read", "svc-19"], None), value(19));
}

/// PostgreSQL is backed up with its own tools, as the README says: `pg_dump --format=custom`
/// while the server serves, `pg_restore` into an empty database; a server on the restored one
/// answers the stored credential and its audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_backed_up_with_pg_dump_and_restored_with_pg_restore() {
    let Some(db) = TestDb::new(Backend::Postgres).await else { return };
    let server = ServerProcess::start(&db.url);
    let master = Master::new(&server.url);
    master.init();
    master.ok(&["store", "openai"], Some(b"sk-from-postgres"));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("agentkeys.pgdump");
    let out =
        Command::new("pg_dump").args(["--format=custom", "--no-owner", "--file"]).arg(&dump).arg(&db.url).output();
    let out = out.expect("pg_dump (PostgreSQL's client tools; scripts/test.sh installs them)");
    assert!(out.status.success(), "pg_dump: {}", text(&out.stderr));
    let bytes = std::fs::read(&dump).unwrap();
    assert!(!contains_any_window(&bytes, b"sk-from-postgres"), "the dump holds only ciphertext");

    let Some(fresh) = TestDb::new(Backend::Postgres).await else { return };
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname", &fresh.url])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", text(&out.stderr));
    let verify = server_cmd(&["verify-audit", "--database-url", &fresh.url]);
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let restored = ServerProcess::start(&fresh.url);
    let mut read = master.command(&["read", "openai"]);
    read.env("AGENTKEYS_SERVER", &restored.url);
    let read = read.output().unwrap();
    assert!(read.status.success(), "{}", text(&read.stderr));
    assert_eq!(read.stdout, b"sk-from-postgres");
}
