//! PostgreSQL's own grammar (libpg_query) as the oracle of the runner's lexer: over the shipped
//! migrations, hand-picked tricky scripts and a generated corpus, the runner must split a script
//! into the same statements as the parser, and classify each the same way (transaction control,
//! must run outside a transaction). The runner sends what its lexer splits; a disagreement here
//! is a statement sent cut in two, or a transaction the runner thinks it controls and does not.

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{AlterTableType, ReindexObjectType, TransactionStmtKind};
use stepmigrate_core::sql;

/// What the parser says about one statement.
#[derive(Debug, PartialEq)]
struct Classified {
    transaction_control: bool,
    needs_no_transaction: bool,
}

fn oracle(statement: &str) -> Classified {
    let parsed = pg_query::parse(statement, 0)
        .unwrap_or_else(|e| panic!("the corpus must be valid SQL: {e}\n{statement}"));
    let node = parsed.protobuf.stmts[0]
        .stmt
        .as_ref()
        .and_then(|s| s.node.as_ref())
        .expect("a statement");
    let transaction_control = matches!(node, N::TransactionStmt(t)
        if !matches!(TransactionStmtKind::try_from(t.kind),
            Ok(TransactionStmtKind::TransStmtSavepoint
                | TransactionStmtKind::TransStmtRelease
                | TransactionStmtKind::TransStmtRollbackTo)));
    let option = |options: &[pg_query::protobuf::Node], name: &str| {
        options
            .iter()
            .any(|o| matches!(o.node.as_ref(), Some(N::DefElem(d)) if d.defname == name))
    };
    let needs_no_transaction = match node {
        N::IndexStmt(i) => i.concurrent,
        N::DropStmt(d) => d.concurrent,
        // PostgreSQL's ReindexMultipleTables refuses a transaction block too.
        N::ReindexStmt(r) => {
            option(&r.params, "concurrently")
                || matches!(
                    ReindexObjectType::try_from(r.kind),
                    Ok(ReindexObjectType::ReindexObjectDatabase
                        | ReindexObjectType::ReindexObjectSystem)
                )
        }
        N::VacuumStmt(v) => v.is_vacuumcmd,
        N::CreatedbStmt(_) | N::DropdbStmt(_) => true,
        N::CreateTableSpaceStmt(_) | N::DropTableSpaceStmt(_) => true,
        N::AlterSystemStmt(_) => true,
        N::AlterTableStmt(a) => a.cmds.iter().any(|c| {
            matches!(c.node.as_ref(), Some(N::AlterTableCmd(cmd))
                if AlterTableType::try_from(cmd.subtype) == Ok(AlterTableType::AtDetachPartition)
                    && matches!(cmd.def.as_ref().and_then(|d| d.node.as_ref()),
                        Some(N::PartitionCmd(p)) if p.concurrent))
        }),
        N::ClusterStmt(c) => c.relation.is_none(),
        N::DiscardStmt(d) => d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32,
        _ => false,
    };
    Classified {
        transaction_control,
        needs_no_transaction,
    }
}

fn ours(statement: &sql::Statement<'_>) -> Classified {
    Classified {
        transaction_control: sql::is_transaction_control(&statement.keywords),
        needs_no_transaction: sql::requires_no_transaction(statement).is_some(),
    }
}

/// Asserts that the runner's lexer and the parser agree on `script`; returns the number of
/// statements compared.
fn agree(name: &str, script: &str) -> usize {
    let expected: Vec<&str> = pg_query::split_with_parser(script)
        .unwrap_or_else(|e| panic!("{name}: the corpus must be valid SQL: {e}\n{script}"))
        .into_iter()
        .map(str::trim)
        .collect();
    let lexed = sql::lex(script);
    assert_eq!(lexed.unterminated, None, "{name}");
    let got: Vec<&str> = lexed.statements.iter().map(|s| s.text.trim()).collect();
    assert_eq!(got, expected, "{name}: the statements differ\n{script}");
    for statement in &lexed.statements {
        assert_eq!(
            ours(statement),
            oracle(statement.text),
            "{name}: classified differently: {}",
            statement.text
        );
    }
    got.len()
}

const TRICKY: &[&str] = &[
    "SELECT 'a;b', E'it\\'s; here', $$ ; $$, $tag$ $$ ; $tag$, \"semi;colon\" FROM t",
    "SELECT 1; /* nested /* comment; */ still ; */ SELECT 2; -- trailing; comment\nSELECT 3",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SELECT 3",
    "CREATE FUNCTION g(a int) RETURNS int LANGUAGE plpgsql AS $fn$ BEGIN RETURN a; END; $fn$; SELECT g(1)",
    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); SELECT 4",
    "CREATE TABLE \"begin\" (\"commit\" int); INSERT INTO \"begin\" VALUES (1); SELECT \"commit\" FROM \"begin\"",
    "BEGIN; SAVEPOINT s; ROLLBACK TO SAVEPOINT s; RELEASE s; ROLLBACK TO s; COMMIT",
    "START TRANSACTION ISOLATION LEVEL SERIALIZABLE; END; BEGIN WORK; ABORT; ROLLBACK; COMMIT AND CHAIN",
    "PREPARE TRANSACTION 'x'; COMMIT PREPARED 'x'; ROLLBACK PREPARED 'y'",
    "PREPARE q AS SELECT 1; EXECUTE q; DEALLOCATE q",
    "CREATE INDEX CONCURRENTLY i ON t (a); CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS j ON t (b); DROP INDEX CONCURRENTLY IF EXISTS i; CREATE INDEX k ON t (c)",
    "REINDEX (VERBOSE) INDEX CONCURRENTLY i; REINDEX TABLE CONCURRENTLY t; REINDEX TABLE t; REINDEX DATABASE d; REINDEX (VERBOSE) SYSTEM; REINDEX SCHEMA s",
    "VACUUM; VACUUM (ANALYZE) t; ANALYZE t; VACUUM FULL t",
    "CREATE DATABASE d; DROP DATABASE d; ALTER SYSTEM SET work_mem = '8MB'",
    "ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY; ALTER TABLE p DETACH PARTITION p2; ALTER TABLE p ATTACH PARTITION p3 FOR VALUES IN (3)",
    "CLUSTER; CLUSTER t USING i; DISCARD ALL; DISCARD PLANS",
    "CREATE TABLESPACE ts LOCATION '/tmp/x'; DROP TABLESPACE ts",
    "DO $$ BEGIN IF 1 = 1 THEN PERFORM 1; END IF; END $$; SELECT 5",
    "COMMENT ON TABLE t IS 'it''s; fine'; SELECT U&'d\\0061t\\+000061'",
    "SELECT 1 -- no newline at the end; SELECT 2",
    "SELECT (SELECT 1); SELECT (ARRAY[1, 2])[1]; SELECT '{}'::int[]",
    "CREATE TRIGGER t BEFORE UPDATE ON t FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION f(); SELECT 1",
    "SELECT $1; SELECT a$b FROM t; SELECT $q$x$q$ || $Q$y$Q$",
    "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); END; CALL p()",
    "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT 1; END TRANSACTION",
    "CREATE INDEX \"concurrently\" ON t (a); DROP INDEX \"concurrently\"; ALTER TABLE p DETACH PARTITION \"concurrently\"; REINDEX INDEX \"concurrently\"",
    "CREATE TABLE \"vacuum\" (a int); CLUSTER \"verbose\"; SELECT 1 FROM \"stdin\"",
];

#[test]
fn the_lexer_agrees_with_the_parser_on_tricky_scripts() {
    let mut statements = 0;
    for (i, script) in TRICKY.iter().enumerate() {
        statements += agree(&format!("tricky #{i}"), script);
    }
    assert!(statements > 70, "{statements}");
}

#[test]
fn the_lexer_agrees_with_the_parser_on_the_shipped_migrations() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let script = std::fs::read_to_string(&path).unwrap();
            agree(&path.display().to_string(), &script);
            files += 1;
        }
    }
    assert!(files >= 7, "{files}");
}

/// A small deterministic generator (no dependency, same corpus on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Scripts assembled from statement pieces that hide `;`, keywords and quotes in every place
/// the lexer must see through, separated by every kind of blank and comment.
#[test]
fn the_lexer_agrees_with_the_parser_on_a_generated_corpus() {
    const PIECES: &[&str] = &[
        "SELECT 'x;y'",
        "SELECT E'a\\';b'",
        "SELECT $$;$$",
        "SELECT $a$ $b$ ; $b$ $a$",
        "SELECT \"a;\"\"b\" FROM t",
        "SELECT 1 /* ; */ + 2",
        "SELECT 1 -- ;\n + 2",
        "CREATE TABLE t (a int, b text DEFAULT ';')",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END",
        "CREATE FUNCTION h() RETURNS void LANGUAGE plpgsql AS $$BEGIN COMMIT; END$$",
        "DO $$BEGIN ROLLBACK; END$$",
        "BEGIN",
        "COMMIT",
        "ROLLBACK TO SAVEPOINT s",
        "SAVEPOINT s",
        "END",
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "CREATE INDEX i ON t (a)",
        "VACUUM t",
        "ANALYZE t",
        "SELECT 'begin' AS \"commit\"",
        "INSERT INTO t (a) VALUES (1), (2)",
        "UPDATE t SET b = 'end;' WHERE a = 1",
        "CREATE RULE r AS ON DELETE TO t DO INSTEAD (SELECT 1; SELECT 2)",
        "SELECT U&'\\0041;'",
        "SELECT B'101', X'1F', 1.5e3",
    ];
    const GAPS: &[&str] = &[
        ";",
        ";\n",
        ";\r\n",
        "; -- done\n",
        ";/* c */",
        " ;\n\n/* a\n comment */\n",
        ";\t",
        ";\n-- ; a comment with a semicolon\n",
    ];
    let mut random = Lcg(0x5eed);
    let mut statements = 0;
    for case in 0..400 {
        let mut script = String::new();
        for _ in 0..1 + random.next(8) {
            script.push_str(PIECES[random.next(PIECES.len())]);
            script.push_str(GAPS[random.next(GAPS.len())]);
        }
        statements += agree(&format!("generated #{case}"), &script);
    }
    assert!(statements > 1000, "{statements}");
}
