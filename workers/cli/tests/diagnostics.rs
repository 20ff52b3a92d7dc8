//! What a failing or talkative migration tells its user (issue 8, section 2): lines for every
//! error, PostgreSQL's notices, clean output and clean disconnects.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::{Dir, TestDb};

#[tokio::test]
async fn errors_without_a_position_name_their_line_and_statement() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_dup.sql",
        "-- Migration: a duplicate key\nCREATE TABLE t (id int PRIMARY KEY);\n\nINSERT INTO t VALUES (1);\n-- again\nINSERT INTO t VALUES (1);\nCREATE TABLE after_it (id int);\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let error = &run.json()["error"]["details"]["migration"]["error"];
    assert_eq!(error["sqlstate"], "23505");
    assert_eq!(error["line"], 6, "{error}");
    assert_eq!(error["statement"], "INSERT INTO t VALUES (1)");
    assert!(!db.table_exists("t").await, "the replay was rolled back");

    let dir = Dir::new(&[(
        "001_raise.sql",
        "CREATE TABLE t (id int);\nDO $$ BEGIN RAISE EXCEPTION 'no way'; END $$;\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let error = &run.json()["error"]["details"]["migration"]["error"];
    assert_eq!(error["line"], 2, "{error}");
    let human = db.cli(dir.path(), &["up"]);
    assert!(human.stderr.contains("at line 2"), "{}", human.stderr);
}

#[tokio::test]
async fn lines_count_from_the_files_first_line_comments_included() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_raise.sql",
        "-- stepmigrate: no-transaction\n-- why: a comment\n\nDO $$ BEGIN RAISE EXCEPTION 'no way'; END $$;\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let error = &run.json()["error"]["details"]["migration"]["error"];
    assert_eq!(error["line"], 4, "{error}");
    assert_eq!(
        error["statement"],
        "DO $$ BEGIN RAISE EXCEPTION 'no way'; END $$"
    );
}

#[tokio::test]
async fn notices_and_warnings_are_shown_under_their_migration_and_kept() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_talk.sql",
            "CREATE TABLE a (id int);\nCREATE VIEW v AS SELECT * FROM a;\nDROP TABLE IF EXISTS nothing_here;\nDROP TABLE a CASCADE;\n",
        ),
        (
            "002_index.sql",
            "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS no_such_index;\n",
        ),
        ("003_quiet.sql", "CREATE TABLE quiet (id int);"),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(0);
    for needle in [
        "NOTICE: table \"nothing_here\" does not exist, skipping",
        "NOTICE: drop cascades to view v",
        "NOTICE: index \"no_such_index\" does not exist, skipping",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            run.stdout
        );
    }
    // Under their own migration, in order.
    let talk = run.stdout.find("001_talk").unwrap();
    let cascade = run.stdout.find("drop cascades").unwrap();
    let index = run.stdout.find("002_index").unwrap();
    assert!(talk < cascade && cascade < index, "{}", run.stdout);
    let kept = db
        .query("SELECT version || ' ' || kind || ' ' || notices::text FROM schema_migration_events WHERE notices IS NOT NULL ORDER BY id")
        .await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept[0].starts_with("001 notices [\"NOTICE: table"),
        "{kept:?}"
    );
    assert!(
        kept[1].starts_with("002 applied [\"NOTICE: index"),
        "{kept:?}"
    );
    // The notices event leaves the projection as it was.
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);

    // --json carries them; -q stays quiet; the tool's own (a ledger reinstall) never show.
    dir.write("004_more.sql", "DROP TABLE IF EXISTS still_nothing;");
    db.tamper("UPDATE schema_migrations SET checksum = 'older' WHERE version = '000'")
        .await;
    let run = db.cli(dir.path(), &["-q", "up"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "", "{run:?}");
    dir.write("005_more.sql", "SELECT 1;");
    db.tamper("UPDATE schema_migrations SET checksum = 'older' WHERE version = '000'")
        .await;
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(0);
    assert!(!run.stdout.contains("NOTICE"), "{}", run.stdout);
    let doc = db.cli(dir.path(), &["--json", "status"]);
    doc.assert_code(0);
}

#[tokio::test]
async fn the_json_result_carries_the_notices() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_talk.sql", "DROP TABLE IF EXISTS nothing_here;")]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][0]["notices"][0],
        "NOTICE: table \"nothing_here\" does not exist, skipping"
    );
}

#[tokio::test]
async fn a_comment_only_down_file_is_valid() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "001_a.down.sql",
            "-- nothing to undo: the table is dropped later\n",
        ),
        ("002_b.sql", "SELECT 1;"),
        ("002_b.down.sql", ""),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
}

#[tokio::test]
async fn detach_partition_concurrently_needs_no_transaction() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_detach.sql",
        "ALTER TABLE measurements\n    DETACH PARTITION measurements_2020 CONCURRENTLY;",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    assert!(
        run.stderr
            .contains("001_detach.sql:1: ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY cannot run inside a transaction block"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn verbose_output_has_no_colour_codes_when_piped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (id int);")]);
    let run = db.cli(dir.path(), &["-vv", "up"]);
    run.assert_code(0);
    assert!(!run.stderr.is_empty());
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}

#[tokio::test]
async fn a_long_run_ends_with_its_slowest_migrations() {
    let db = TestDb::new().await;
    let dir = common::numbered_tables(25);
    dir.write("026_slow.sql", "SELECT pg_sleep(0.2);");
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(0);
    let slowest = run.stdout.find("slowest:").expect(&run.stdout);
    let tail = &run.stdout[slowest..];
    assert!(tail.lines().nth(1).unwrap().ends_with("026_slow"), "{tail}");
    assert!(tail.contains("applied 26 migration(s) in"), "{tail}");
    db.cli(dir.path(), &["up"]).assert_code(0);
}

/// A TCP proxy that records what the client sent.
fn recording_proxy(upstream: &'static str) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            let mut client_reader = client.try_clone().unwrap();
            let mut server_writer = server.try_clone().unwrap();
            let record = record.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                loop {
                    match client_reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            record.lock().unwrap().extend_from_slice(&buf[..n]);
                            if server_writer.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = server_writer.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    (port, sent)
}

#[tokio::test]
async fn sessions_end_with_a_terminate_message() {
    let db = TestDb::new().await;
    let (port, sent) = recording_proxy("127.0.0.1:5432");
    let url = format!(
        "postgres://postgres@127.0.0.1:{port}/{}?sslmode=disable",
        db.name
    );
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (id int);")]);
    common::run_cli(&url, dir.path(), &["up"]).assert_code(0);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let sent = sent.lock().unwrap().clone();
    // Each session's last message is Terminate: 'X' and a length of 4. `up` opens two (the
    // migrations' and the lock's).
    let terminates = sent.windows(5).filter(|w| w == b"X\0\0\0\x04").count();
    assert!(terminates >= 2, "{terminates} Terminate message(s)");
}
