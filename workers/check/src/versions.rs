//! Syntax newer than the server the migrations run on. The embedded grammar is PostgreSQL
//! [`EMBEDDED_MAJOR`]'s, so it accepts what an older server rejects (`MERGE` on 14, `1_000` on
//! 15): each such construct is found in the parse tree and named with the version that
//! introduced it. The list is in README ("Syntax by PostgreSQL version"); what is not on it
//! passes, and syntax newer than the embedded grammar is a plain syntax error.

use serde_json::{Map, Value};

use crate::tree::{self, boolean, def_names, int, present, string};

/// The major version of the PostgreSQL grammar libpg_query embeds (pg_query 18.x).
pub const EMBEDDED_MAJOR: u32 = 18;

/// How a major version is called: before 10 a major version had two parts, and the only one
/// of them a target may be (9.6) is kept as 9.
pub fn name(major: u32) -> String {
    if major == 9 {
        "9.6".to_owned()
    } else {
        major.to_string()
    }
}

/// One construct newer than the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Newer {
    pub feature: &'static str,
    pub since: u32,
    /// Offset in the statement, when the parser records one.
    pub offset: Option<usize>,
}

// libpg_query's enum numbers (pg_query.proto), as the JSON tree has them.
const AT_SET_EXPRESSION: i64 = 7;
const AT_DROP_EXPRESSION: i64 = 8;
const AT_SET_STATISTICS: i64 = 9;
const AT_SET_COMPRESSION: i64 = 13;
const AT_SET_STORAGE: i64 = 12;
const AT_SET_LOGGED: i64 = 30;
const AT_SET_UNLOGGED: i64 = 31;
const AT_ALTER_CONSTRAINT: i64 = 20;
const AT_SET_ACCESS_METHOD: i64 = 33;
const AT_ATTACH_PARTITION: i64 = 60;
const AT_DETACH_PARTITION: i64 = 61;
const AT_DETACH_PARTITION_FINALIZE: i64 = 62;
const CONSTR_NOTNULL: i64 = 2;
const CONSTR_IDENTITY: i64 = 4;
const CONSTR_GENERATED: i64 = 5;
const CONSTR_CHECK: i64 = 6;
const CONSTR_FOREIGN: i64 = 10;
const CONSTR_ATTR_ENFORCED: i64 = 15;
const CONSTR_ATTR_NOT_ENFORCED: i64 = 16;
const LIMIT_OPTION_WITH_TIES: i64 = 3;
const MERGE_WHEN_NOT_MATCHED_BY_SOURCE: i64 = 2;
const MERGE_WHEN_NOT_MATCHED_BY_TARGET: i64 = 3;
const OBJECT_LARGEOBJECT: i64 = 23;
const OBJECT_PARAMETER_ACL: i64 = 28;
const OBJECT_SEQUENCE: i64 = 38;
const OBJECT_COLUMN: i64 = 7;
const OBJECT_INDEX: i64 = 21;
const OBJECT_VIEW: i64 = 52;
const OBJECT_PROCEDURE: i64 = 30;
const OBJECT_ROUTINE: i64 = 35;
const CONSTR_UNIQUE: i64 = 8;
const ROLESPEC_CURRENT_ROLE: i64 = 2;
const COERCE_SQL_SYNTAX: i64 = 4;
const ALTER_SUBSCRIPTION_ADD_PUBLICATION: i64 = 4;
const ALTER_SUBSCRIPTION_DROP_PUBLICATION: i64 = 5;
const ALTER_SUBSCRIPTION_SKIP: i64 = 8;
const REINDEX_OBJECT_SYSTEM: i64 = 4;
const REINDEX_OBJECT_DATABASE: i64 = 5;
const CTE_MATERIALIZE_ALWAYS: i64 = 2;
const CTE_MATERIALIZE_NEVER: i64 = 3;
const PARTITION_STRATEGY_HASH: i64 = 3;
const PUBLICATIONOBJ_TABLES_IN_SCHEMA: i64 = 2;
const PUBLICATIONOBJ_TABLES_IN_CUR_SCHEMA: i64 = 3;
// TableLikeOption bits (parsenodes.h): INCLUDING ALL sets every bit, so bit 30 set means ALL
// (PostgreSQL 13 accepts it), COMPRESSION alone is bit 1 and GENERATED alone bit 4 (protobuf's
// TableLikeOption numbers them from 1: CREATE_TABLE_LIKE_COMPRESSION = 2, _GENERATED = 5).
const LIKE_COMPRESSION: i64 = 1 << 1;
const LIKE_GENERATED: i64 = 1 << 4;
const LIKE_ALL_MARK: i64 = 1 << 30;
// WindowDef frame options (parsenodes.h): GROUPS, EXCLUDE and RANGE with an offset came in
// PostgreSQL 11.
const FRAMEOPTION_RANGE: i64 = 0x00002;
const FRAMEOPTION_GROUPS: i64 = 0x00008;
const FRAMEOPTION_OFFSET: i64 = 0x00800 | 0x01000 | 0x02000 | 0x04000;
const FRAMEOPTION_EXCLUSION: i64 = 0x08000 | 0x10000 | 0x20000;
const AEXPR_OP: i64 = 1;

/// The constructs of one parsed statement that need a newer server than `target`.
pub fn newer_than(
    parsed: &pg_query::protobuf::ParseResult,
    statement: &str,
    target: u32,
) -> Vec<Newer> {
    let mut found: Vec<Newer> = Vec::new();
    let mut note = |feature: &'static str, since: u32, offset: Option<usize>| {
        if since > target && !found.iter().any(|n| n.feature == feature) {
            found.push(Newer {
                feature,
                since,
                offset,
            });
        }
    };
    numeric_literals(statement, &mut note);
    let json = tree::json_of(parsed);
    tree::visit(&json, &mut |kind, f| {
        let at = tree::location(f);
        // `OWNER TO` holds its role as a typed field, which the walk does not call for.
        if f.get("newowner")
            .and_then(|o| o.get("roletype"))
            .and_then(Value::as_i64)
            == Some(ROLESPEC_CURRENT_ROLE)
        {
            note("CURRENT_ROLE as a role name", 14, None);
        }
        // DROP / ALTER / COMMENT ON / GRANT ... ON [ALL] PROCEDURE(S) / ROUTINE(S), and the
        // like: every statement naming a procedure or routine as an object came with them.
        let routine = ["remove_type", "objtype", "rename_type", "object_type"]
            .iter()
            .any(|field| matches!(int(f, field), OBJECT_PROCEDURE | OBJECT_ROUTINE));
        if routine {
            note(
                "a PROCEDURE or ROUTINE as an object (DROP, ALTER, COMMENT ON, GRANT ...)",
                11,
                None,
            );
        }
        match kind {
            "MergeStmt" => {
                note("MERGE", 15, None);
                if returning(f) {
                    note("MERGE ... RETURNING", 17, None);
                }
                if returns_old_or_new(f) {
                    note("RETURNING old/new", 18, None);
                }
            }
            "MergeWhenClause" if int(f, "match_kind") == MERGE_WHEN_NOT_MATCHED_BY_SOURCE => {
                note("WHEN NOT MATCHED BY SOURCE", 17, None)
            }
            // `WHEN NOT MATCHED BY TARGET` is `WHEN NOT MATCHED` spelled out: the same tree, so
            // the words tell.
            "MergeWhenClause" if int(f, "match_kind") == MERGE_WHEN_NOT_MATCHED_BY_TARGET => {
                use pg_query::protobuf::Token;
                if let Some(at) = token_run(
                    statement,
                    &[&[Token::Not], &[Token::Matched], &[Token::By], &[Token::Target]],
                ) {
                    note("WHEN NOT MATCHED BY TARGET", 17, Some(at));
                }
            }
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" if returns_old_or_new(f) => {
                note("RETURNING old/new", 18, None)
            }
            "SelectStmt" => {
                if int(f, "limit_option") == LIMIT_OPTION_WITH_TIES {
                    note("FETCH FIRST ... WITH TIES", 13, None);
                }
                if boolean(f, "group_distinct") {
                    note("GROUP BY DISTINCT", 14, None);
                }
            }
            "CommonTableExpr" => {
                if present(f, "search_clause") || present(f, "cycle_clause") {
                    note("SEARCH / CYCLE in a recursive WITH", 14, at);
                }
                if matches!(
                    int(f, "ctematerialized"),
                    CTE_MATERIALIZE_ALWAYS | CTE_MATERIALIZE_NEVER
                ) {
                    note("WITH ... AS [NOT] MATERIALIZED", 12, at);
                }
            }
            "JoinExpr" if present(f, "join_using_alias") => {
                note("an alias for JOIN ... USING", 14, None)
            }
            "WindowDef" => window_frame(f, at, &mut note),
            // `CREATE TABLE ... USING am AS` and `CREATE MATERIALIZED VIEW ... USING am`: the
            // access method is the target's (a typed field, not a node the walk calls for).
            "CreateTableAsStmt"
                if f
                    .get("into")
                    .and_then(|i| i.get("access_method"))
                    .and_then(Value::as_str)
                    .is_some_and(|am| !am.is_empty()) =>
            {
                note(
                    "CREATE TABLE ... USING ... AS / CREATE MATERIALIZED VIEW ... USING (a table access method)",
                    12,
                    None,
                )
            }
            "CreateStmt" => {
                if !string(f, "access_method").is_empty() {
                    note("CREATE TABLE ... USING (a table access method)", 12, None);
                }
                // A typed field, not a node: the walk does not call for it.
                if f.get("partspec")
                    .and_then(|p| p.get("strategy"))
                    .and_then(Value::as_i64)
                    == Some(PARTITION_STRATEGY_HASH)
                {
                    note("PARTITION BY HASH", 11, None);
                }
                if present(f, "partspec") {
                    note("PARTITION BY (declarative partitioning)", 10, None);
                }
                if present(f, "partbound") {
                    note("CREATE TABLE ... PARTITION OF", 10, None);
                }
                if default_bound(f, "partbound") {
                    note("a DEFAULT partition", 11, None);
                }
                if let Some(at) = expression_bound(f, "partbound") {
                    note("an expression as a partition bound", 12, at);
                }
            }
            "PartitionCmd" => {
                note("ATTACH / DETACH PARTITION", 10, None);
                if default_bound(f, "bound") {
                    note("a DEFAULT partition", 11, None);
                }
                if let Some(at) = expression_bound(f, "bound") {
                    note("an expression as a partition bound", 12, at);
                }
            }
            "TableLikeClause" => {
                let options = int(f, "options");
                if options & LIKE_ALL_MARK == 0 {
                    if options & LIKE_COMPRESSION != 0 {
                        note("LIKE ... INCLUDING COMPRESSION", 14, None);
                    }
                    if options & LIKE_GENERATED != 0 {
                        note("LIKE ... INCLUDING GENERATED", 12, None);
                    }
                }
            }
            "CreateSeqStmt" if sequence_unlogged(f) => note("an UNLOGGED sequence", 15, None),
            "AlterTableStmt"
                if int(f, "objtype") == OBJECT_SEQUENCE
                    && has_subcommand(f, &[AT_SET_LOGGED, AT_SET_UNLOGGED]) =>
            {
                note("ALTER SEQUENCE ... SET LOGGED / UNLOGGED", 15, None)
            }
            "AlterTableStmt"
                if int(f, "objtype") == OBJECT_INDEX
                    && has_subcommand(f, &[AT_ATTACH_PARTITION]) =>
            {
                note("ALTER INDEX ... ATTACH PARTITION", 11, None)
            }
            // `CREATE ACCESS METHOD ... TYPE TABLE` (before 12, only TYPE INDEX).
            "CreateAmStmt" if string(f, "amtype") == "t" => {
                note("CREATE ACCESS METHOD ... TYPE TABLE", 12, None)
            }
            // Of the DefineStmt kinds, only AGGREGATE takes OR REPLACE.
            "DefineStmt" if boolean(f, "replace") => {
                note("CREATE OR REPLACE AGGREGATE", 12, None)
            }
            "AlterObjectDependsStmt" if boolean(f, "remove") => {
                note("ALTER ... NO DEPENDS ON EXTENSION", 13, None)
            }
            "AlterSubscriptionStmt" => match int(f, "kind") {
                ALTER_SUBSCRIPTION_ADD_PUBLICATION | ALTER_SUBSCRIPTION_DROP_PUBLICATION => note(
                    "ALTER SUBSCRIPTION ... ADD / DROP PUBLICATION",
                    14,
                    None,
                ),
                ALTER_SUBSCRIPTION_SKIP => note("ALTER SUBSCRIPTION ... SKIP", 15, None),
                _ => {}
            },
            "AlterDatabaseRefreshCollStmt" => {
                note("ALTER DATABASE ... REFRESH COLLATION VERSION", 15, None)
            }
            "XmlSerialize" if boolean(f, "indent") => note("XMLSERIALIZE ... INDENT", 16, at),
            // `base_stmt` is a typed CreateStmt, not a node: the walk does not call for it.
            "CreateForeignTableStmt"
                if f
                    .get("base_stmt")
                    .and_then(|b| b.get("table_elts"))
                    .and_then(Value::as_array)
                    .is_some_and(|elts| {
                        elts.iter()
                            .any(|e| e.pointer("/node/TableLikeClause").is_some())
                    }) =>
            {
                note("LIKE in CREATE FOREIGN TABLE", 18, None)
            }
            "VacuumStmt" => {
                if f.get("rels")
                    .and_then(Value::as_array)
                    .is_some_and(|rels| rels.len() > 1)
                {
                    note("VACUUM / ANALYZE of more than one table", 11, None);
                }
                // `ANALYZE VERBOSE` and `ANALYZE (VERBOSE)` give the same tree: the words tell.
                if !boolean(f, "is_vacuumcmd") {
                    use pg_query::protobuf::Token;
                    if let Some(at) =
                        token_pair(statement, &[Token::Analyze, Token::Analyse], Token::Ascii40)
                    {
                        note("ANALYZE (options in parentheses)", 11, Some(at));
                    }
                }
            }
            "VacuumRelation" => {
                // `relation` is a typed RangeVar: `inh` false is `ONLY`.
                let only = f
                    .get("relation")
                    .and_then(Value::as_object)
                    .is_some_and(|r| !boolean(r, "inh"));
                if only {
                    note("VACUUM / ANALYZE ONLY", 18, None);
                }
            }
            "CreateStatsStmt" => {
                note("CREATE STATISTICS", 10, None);
                if f.get("defnames")
                    .and_then(Value::as_array)
                    .is_none_or(|names| names.is_empty())
                {
                    note("CREATE STATISTICS without a name", 16, None);
                }
                let expression = f.get("exprs").and_then(Value::as_array).is_some_and(|es| {
                    es.iter().any(|e| {
                        e.pointer("/node/StatsElem/expr")
                            .is_some_and(|x| !x.is_null())
                    })
                });
                if expression {
                    note("an expression in CREATE STATISTICS", 14, None);
                }
            }
            "AlterStatsStmt" => note("ALTER STATISTICS ... SET STATISTICS", 13, None),
            "PublicationObjSpec" => {
                if matches!(
                    int(f, "pubobjtype"),
                    PUBLICATIONOBJ_TABLES_IN_SCHEMA | PUBLICATIONOBJ_TABLES_IN_CUR_SCHEMA
                ) {
                    note("a publication's TABLES IN SCHEMA", 15, at);
                }
                if let Some(table) = f.get("pubtable").and_then(Value::as_object) {
                    if present(table, "where_clause") {
                        note("a publication's row filter (WHERE)", 15, at);
                    }
                    if present(table, "columns") {
                        note("a publication's column list", 15, at);
                    }
                }
            }
            "Constraint" => constraint(f, statement, at, &mut note),
            "ColumnDef" => {
                if !string(f, "compression").is_empty() {
                    note("a column's COMPRESSION", 14, at);
                }
                if !string(f, "storage_name").is_empty() {
                    note("a column's STORAGE in CREATE TABLE or ADD COLUMN", 16, at);
                }
            }
            "IndexStmt" => {
                if boolean(f, "nulls_not_distinct") {
                    note("NULLS NOT DISTINCT", 15, None);
                }
                if present(f, "index_including_params") {
                    note("INCLUDE (covering index)", 11, None);
                }
                // `relation` is a typed RangeVar: `inh` false is `ON ONLY`.
                let only = f
                    .get("relation")
                    .and_then(Value::as_object)
                    .is_some_and(|r| !boolean(r, "inh"));
                if only {
                    note("CREATE INDEX ... ON ONLY", 11, None);
                }
                if boolean(f, "unique") {
                    nulls_distinct(statement, &mut note);
                }
            }
            "IndexElem" if present(f, "opclassopts") => {
                note("operator class parameters in an index", 13, None)
            }
            "ReindexStmt" => {
                let params = def_names(f, "params");
                if params.iter().any(|p| p == "concurrently") {
                    note("REINDEX CONCURRENTLY", 12, None);
                    if let Some(at) = reindex_concurrently_in_parentheses(statement) {
                        note("REINDEX (CONCURRENTLY) (in the option list)", 14, Some(at));
                    }
                }
                if params.iter().any(|p| p == "tablespace") {
                    note("REINDEX (TABLESPACE ...)", 14, None);
                }
                if matches!(
                    int(f, "kind"),
                    REINDEX_OBJECT_SYSTEM | REINDEX_OBJECT_DATABASE
                ) && string(f, "name").is_empty()
                {
                    note("REINDEX DATABASE / SYSTEM without a name", 16, None);
                }
            }
            "RenameStmt"
                if int(f, "rename_type") == OBJECT_COLUMN
                    && int(f, "relation_type") == OBJECT_VIEW =>
            {
                note("ALTER VIEW ... RENAME COLUMN", 13, None)
            }
            "RoleSpec" if int(f, "roletype") == ROLESPEC_CURRENT_ROLE => {
                note("CURRENT_ROLE as a role name", 14, at)
            }
            "AlterTableCmd" => match int(f, "subtype") {
                AT_SET_EXPRESSION => note("ALTER COLUMN ... SET EXPRESSION", 17, None),
                AT_DROP_EXPRESSION => note("ALTER COLUMN ... DROP EXPRESSION", 13, None),
                AT_SET_STATISTICS if !present(f, "def") => note("SET STATISTICS DEFAULT", 17, None),
                // `ALTER [INDEX] ... ALTER COLUMN 2 SET STATISTICS`: a column by its number.
                AT_SET_STATISTICS if int(f, "num") != 0 => {
                    note("ALTER COLUMN column_number SET STATISTICS", 11, None)
                }
                AT_SET_COMPRESSION => note("ALTER COLUMN ... SET COMPRESSION", 14, None),
                AT_SET_STORAGE
                    if f.get("def")
                        .and_then(|d| d.pointer("/node/String/sval"))
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.eq_ignore_ascii_case("default")) =>
                {
                    note("SET STORAGE DEFAULT", 16, None)
                }
                AT_SET_ACCESS_METHOD => {
                    note("ALTER TABLE ... SET ACCESS METHOD", 15, None);
                    if string(f, "name").is_empty() {
                        note("SET ACCESS METHOD DEFAULT", 17, None);
                    }
                }
                AT_DETACH_PARTITION_FINALIZE => note("DETACH PARTITION ... FINALIZE", 14, None),
                AT_DETACH_PARTITION => {
                    let concurrent = f
                        .get("def")
                        .and_then(|d| d.pointer("/node/PartitionCmd/concurrent"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    if concurrent {
                        note("DETACH PARTITION ... CONCURRENTLY", 14, None);
                    }
                }
                AT_ALTER_CONSTRAINT => {
                    let change = f
                        .get("def")
                        .and_then(|d| d.pointer("/node/AtalterConstraint"));
                    let flag = |name: &str| {
                        change
                            .and_then(|c| c.get(name))
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                    };
                    if flag("alter_enforceability") {
                        note("ALTER CONSTRAINT ... [NOT] ENFORCED", 18, None);
                    }
                    if flag("alter_inheritability") {
                        note("ALTER CONSTRAINT ... [NO] INHERIT", 18, None);
                    }
                }
                _ => {}
            },
            "CreateTrigStmt" | "CreateEventTrigStmt" => {
                if boolean(f, "replace") {
                    note("CREATE OR REPLACE TRIGGER", 14, None);
                }
                // `EXECUTE FUNCTION` and `EXECUTE PROCEDURE` give the same tree: the words tell.
                use pg_query::protobuf::Token;
                if let Some(at) = token_pair(statement, &[Token::Execute], Token::Function) {
                    note(
                        "EXECUTE FUNCTION in CREATE TRIGGER (before: EXECUTE PROCEDURE)",
                        11,
                        Some(at),
                    );
                }
            }
            "CreateFunctionStmt" => {
                if present(f, "sql_body") {
                    note(
                        "a SQL-standard function body (BEGIN ATOMIC or RETURN)",
                        14,
                        None,
                    );
                }
                if boolean(f, "is_procedure") {
                    note("CREATE PROCEDURE", 11, None);
                }
            }
            "CallStmt" => note("CALL", 11, None),
            "GrantStmt" => {
                if int(f, "objtype") == OBJECT_PARAMETER_ACL {
                    note("GRANT ... ON PARAMETER", 15, None);
                }
                // `grantor` is a typed RoleSpec (the walk does not call for it). A role's
                // GRANT (GrantRoleStmt) took GRANTED BY long before.
                if present(f, "grantor") {
                    note(
                        "GRANTED BY in GRANT / REVOKE of privileges on objects",
                        14,
                        None,
                    );
                }
                let maintain = f
                    .get("privileges")
                    .and_then(Value::as_array)
                    .is_some_and(|ps| {
                        ps.iter().any(|p| {
                            p.pointer("/node/AccessPriv/priv_name")
                                .and_then(Value::as_str)
                                .is_some_and(|n| n.eq_ignore_ascii_case("maintain"))
                        })
                    });
                if maintain {
                    note("the MAINTAIN privilege", 17, None);
                }
            }
            "GrantRoleStmt"
                if def_names(f, "opt")
                    .iter()
                    .any(|o| o == "inherit" || o == "set") =>
            {
                note("GRANT role ... WITH INHERIT / SET", 16, None)
            }
            // `WITH ADMIN TRUE | FALSE` parses as `WITH ADMIN OPTION` does: its words tell.
            "GrantRoleStmt" if admin_true_or_false(statement) => {
                note("GRANT role ... WITH ADMIN TRUE / FALSE", 16, None)
            }
            "AlterDefaultPrivilegesStmt"
                if f
                    .get("action")
                    .and_then(|a| a.get("objtype"))
                    .and_then(Value::as_i64)
                    == Some(OBJECT_LARGEOBJECT) =>
            {
                note("ALTER DEFAULT PRIVILEGES ... ON LARGE OBJECTS", 18, None)
            }
            // `ON ROUTINES` gives the tree of `ON FUNCTIONS`: the words tell.
            "AlterDefaultPrivilegesStmt" => {
                use pg_query::protobuf::Token;
                if let Some(at) = token_run(statement, &[&[Token::On], &[Token::Routines]]) {
                    note("ALTER DEFAULT PRIVILEGES ... ON ROUTINES", 11, Some(at));
                }
            }
            "RangeSubselect" if !present(f, "alias") => {
                note("a subquery in FROM without an alias", 16, at)
            }
            "CopyStmt" => {
                let options = def_names(f, "options");
                let has = |o: &str| options.iter().any(|x| x == o);
                if present(f, "where_clause") {
                    note("COPY FROM ... WHERE", 12, None);
                }
                if has("default") {
                    note("COPY ... DEFAULT", 16, None);
                }
                if has("on_error") {
                    note("COPY ... ON_ERROR", 17, None);
                }
                if has("log_verbosity") {
                    note("COPY ... LOG_VERBOSITY", 17, None);
                }
                if has("reject_limit") {
                    note("COPY ... REJECT_LIMIT", 18, None);
                }
            }
            "DropdbStmt" if present(f, "options") => {
                note("DROP DATABASE ... WITH (FORCE)", 13, None)
            }
            "AlterTypeStmt" => note("ALTER TYPE ... SET (...)", 13, None),
            "JsonObjectConstructor" | "JsonArrayConstructor" | "JsonArrayQueryConstructor" => {
                note("SQL/JSON constructors (JSON_OBJECT, JSON_ARRAY)", 16, at)
            }
            "JsonObjectAgg" | "JsonArrayAgg" => note("JSON_OBJECTAGG / JSON_ARRAYAGG", 16, None),
            "JsonIsPredicate" => note("IS JSON", 16, at),
            "JsonTable" => note("JSON_TABLE", 17, at),
            "JsonFuncExpr" => note("JSON_QUERY / JSON_VALUE / JSON_EXISTS", 17, at),
            "JsonParseExpr" | "JsonScalarExpr" | "JsonSerializeExpr" => {
                note("JSON() / JSON_SCALAR() / JSON_SERIALIZE()", 17, at)
            }
            "FuncCall" => {
                let name: Vec<&str> = f
                    .get("funcname")
                    .and_then(Value::as_array)
                    .map(|ns| {
                        ns.iter()
                            .filter_map(|n| n.pointer("/node/String/sval").and_then(Value::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                if name == ["pg_catalog", "system_user"] {
                    note("SYSTEM_USER", 16, at);
                }
                // `x AT LOCAL` is `pg_catalog.timezone(x)` in SQL syntax (`AT TIME ZONE z` has
                // two arguments, a call written out is an explicit call).
                if name == ["pg_catalog", "timezone"]
                    && int(f, "funcformat") == COERCE_SQL_SYNTAX
                    && f.get("args")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.len() == 1)
                {
                    note("AT LOCAL", 17, at);
                }
                if let Some(over) = f.get("over").and_then(Value::as_object) {
                    window_frame(over, at, &mut note);
                }
            }
            _ => {}
        }
    });
    found
}

/// `RETURNING WITH (OLD AS o)`, or `old.c` / `new.c` in RETURNING where no table of the
/// statement is called old or new (before 18 those name no table).
fn returns_old_or_new(f: &Map<String, Value>) -> bool {
    let Some(clause) = f.get("returning_clause").and_then(Value::as_object) else {
        return false;
    };
    if present(clause, "options") {
        return true;
    }
    let alias = f
        .get("relation")
        .and_then(|r| r.pointer("/alias/aliasname"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if matches!(alias, "old" | "new") {
        return false;
    }
    let mut found = false;
    if let Some(exprs) = clause.get("exprs") {
        tree::visit(exprs, &mut |kind, c| {
            if kind == "ColumnRef" {
                let fields = c.get("fields").and_then(Value::as_array);
                let first = fields
                    .filter(|fs| fs.len() >= 2)
                    .and_then(|fs| fs[0].pointer("/node/String/sval"))
                    .and_then(Value::as_str);
                if matches!(first, Some("old" | "new")) {
                    found = true;
                }
            }
        });
    }
    found
}

/// A window's frame (a `WindowDef`, named in WINDOW or inline in OVER).
fn window_frame(
    f: &Map<String, Value>,
    at: Option<usize>,
    note: &mut dyn FnMut(&'static str, u32, Option<usize>),
) {
    let options = int(f, "frame_options");
    if options & FRAMEOPTION_GROUPS != 0 {
        note("a GROUPS window frame", 11, at);
    }
    if options & FRAMEOPTION_RANGE != 0 && options & FRAMEOPTION_OFFSET != 0 {
        note("a RANGE window frame with an offset", 11, at);
    }
    if options & FRAMEOPTION_EXCLUSION != 0 {
        note("a window frame's EXCLUDE", 11, at);
    }
}

/// Whether an ALTER TABLE / INDEX / SEQUENCE has a subcommand of one of these types.
fn has_subcommand(f: &Map<String, Value>, subtypes: &[i64]) -> bool {
    f.get("cmds").and_then(Value::as_array).is_some_and(|cmds| {
        cmds.iter().any(|c| {
            c.pointer("/node/AlterTableCmd/subtype")
                .and_then(Value::as_i64)
                .is_some_and(|t| subtypes.contains(&t))
        })
    })
}

fn default_bound(f: &Map<String, Value>, field: &str) -> bool {
    f.get(field)
        .and_then(|b| b.get("is_default"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Where a partition bound (`FOR VALUES ...`) holds an expression rather than a literal:
/// before PostgreSQL 12, a bound was a string, a number (signed), TRUE / FALSE / NULL, or
/// MINVALUE / MAXVALUE. `Some(offset)` of the first expression.
fn expression_bound(f: &Map<String, Value>, field: &str) -> Option<Option<usize>> {
    let bound = f.get(field).and_then(Value::as_object)?;
    ["listdatums", "lowerdatums", "upperdatums"]
        .iter()
        .filter_map(|list| bound.get(*list).and_then(Value::as_array))
        .flatten()
        .filter_map(|d| d.get("node").and_then(Value::as_object))
        .find_map(|node| {
            let (kind, fields) = node.iter().next()?;
            let fields = fields.as_object()?;
            (!literal_bound(kind, fields)).then(|| tree::location(fields))
        })
}

fn literal_bound(kind: &str, f: &Map<String, Value>) -> bool {
    let numeric = |v: Option<&Value>| {
        v.and_then(|n| n.pointer("/node/AConst/val"))
            .and_then(Value::as_object)
            .is_some_and(|val| val.contains_key("Ival") || val.contains_key("Fval"))
    };
    match kind {
        "AConst" => true,
        // `-1` is a negative constant already; `+1` is the operator on one.
        "AExpr" => {
            int(f, "kind") == AEXPR_OP
                && !present(f, "lexpr")
                && f.get("name").and_then(Value::as_array).is_some_and(|n| {
                    n.len() == 1
                        && matches!(
                            n[0].pointer("/node/String/sval").and_then(Value::as_str),
                            Some("+" | "-")
                        )
                })
                && numeric(f.get("rexpr"))
        }
        "ColumnRef" => f.get("fields").and_then(Value::as_array).is_some_and(|fs| {
            fs.len() == 1
                && matches!(
                    fs[0].pointer("/node/String/sval").and_then(Value::as_str),
                    Some("minvalue" | "maxvalue")
                )
        }),
        _ => false,
    }
}

/// The offset of a token of `first` followed by `then` (comments between them aside), by the
/// scanner: string literals and comments are whole tokens, so their words do not count.
fn token_pair(
    statement: &str,
    first: &[pg_query::protobuf::Token],
    then: pg_query::protobuf::Token,
) -> Option<usize> {
    token_run(statement, &[first, &[then]])
}

/// The statement's tokens with their offsets, comments left out.
fn tokens(statement: &str) -> Vec<(pg_query::protobuf::Token, usize)> {
    use pg_query::protobuf::Token;
    let Ok(scanned) = pg_query::scan(statement) else {
        return Vec::new();
    };
    scanned
        .tokens
        .iter()
        .filter_map(|t| Some((Token::try_from(t.token).ok()?, t.start as usize)))
        .filter(|(t, _)| !matches!(t, Token::SqlComment | Token::CComment))
        .collect()
}

/// The offset of the first run of tokens, one of each `run[i]` in turn (comments between them
/// aside).
fn token_run(statement: &str, run: &[&[pg_query::protobuf::Token]]) -> Option<usize> {
    tokens(statement).windows(run.len()).find_map(|w| {
        w.iter()
            .zip(run)
            .all(|((t, _), one_of)| one_of.contains(t))
            .then_some(w[0].1)
    })
}

/// `REINDEX (... CONCURRENTLY ...)`: CONCURRENTLY in the parenthesized option list (before 14
/// that list took VERBOSE only), not after the object kind.
fn reindex_concurrently_in_parentheses(statement: &str) -> Option<usize> {
    use pg_query::protobuf::Token;
    let tokens = tokens(statement);
    if !matches!(
        tokens.as_slice(),
        [(Token::Reindex, _), (Token::Ascii40, _), ..]
    ) {
        return None;
    }
    tokens[2..]
        .iter()
        .take_while(|(t, _)| *t != Token::Ascii41)
        .find(|(t, _)| *t == Token::Concurrently)
        .map(|(_, at)| *at)
}

fn sequence_unlogged(f: &Map<String, Value>) -> bool {
    f.get("sequence")
        .and_then(|s| s.get("relpersistence"))
        .and_then(Value::as_str)
        == Some("u")
}

fn returning(f: &Map<String, Value>) -> bool {
    f.get("returning_clause")
        .and_then(Value::as_object)
        .is_some_and(|r| present(r, "exprs"))
}

fn constraint(
    f: &Map<String, Value>,
    statement: &str,
    at: Option<usize>,
    note: &mut dyn FnMut(&'static str, u32, Option<usize>),
) {
    let contype = int(f, "contype");
    if boolean(f, "nulls_not_distinct") {
        note("NULLS NOT DISTINCT", 15, at);
    }
    if contype == CONSTR_UNIQUE {
        nulls_distinct(statement, note);
    }
    if boolean(f, "without_overlaps") {
        note("WITHOUT OVERLAPS", 18, at);
    }
    if boolean(f, "fk_with_period") || boolean(f, "pk_with_period") {
        note("PERIOD in a foreign key", 18, at);
    }
    if present(f, "including") {
        note("INCLUDE in a constraint (covering index)", 11, at);
    }
    if present(f, "fk_del_set_cols") {
        note("ON DELETE SET NULL / SET DEFAULT (columns)", 15, at);
    }
    match contype {
        CONSTR_GENERATED if string(f, "generated_kind") == "v" => {
            note("a VIRTUAL generated column (or one without STORED)", 18, at)
        }
        CONSTR_GENERATED => note("a generated column", 12, at),
        CONSTR_IDENTITY => note("an identity column", 10, at),
        CONSTR_ATTR_ENFORCED | CONSTR_ATTR_NOT_ENFORCED => note("[NOT] ENFORCED", 18, at),
        CONSTR_CHECK | CONSTR_FOREIGN if !boolean(f, "is_enforced") => {
            note("[NOT] ENFORCED", 18, at)
        }
        // A table constraint `NOT NULL column` (a column's NOT NULL has no keys).
        CONSTR_NOTNULL if present(f, "keys") => note("a NOT NULL table constraint", 18, at),
        CONSTR_NOTNULL if boolean(f, "is_no_inherit") => {
            note("a column's NOT NULL ... NO INHERIT", 18, at)
        }
        _ => {}
    }
}

/// `NULLS DISTINCT` spelled out (the default, the tree of its absence) in a UNIQUE constraint or
/// index: PostgreSQL 15's words, as `NULLS NOT DISTINCT` is.
fn nulls_distinct(statement: &str, note: &mut dyn FnMut(&'static str, u32, Option<usize>)) {
    use pg_query::protobuf::Token;
    if let Some(at) = token_run(statement, &[&[Token::NullsP], &[Token::Distinct]]) {
        note("NULLS DISTINCT", 15, Some(at));
    }
}

/// `WITH ADMIN TRUE` or `WITH ADMIN FALSE` among the statement's words.
fn admin_true_or_false(statement: &str) -> bool {
    let words: Vec<String> = statement
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words
        .windows(2)
        .any(|w| w[0] == "admin" && (w[1] == "true" || w[1] == "false"))
}

/// Integer literals with `_` separators or in hexadecimal, octal or binary (`1_000`, `0x1F`):
/// PostgreSQL 16. Before, `1_000` is `1` followed by an alias or an error.
fn numeric_literals(statement: &str, note: &mut dyn FnMut(&'static str, u32, Option<usize>)) {
    use pg_query::protobuf::Token;
    let Ok(scanned) = pg_query::scan(statement) else {
        return;
    };
    for t in &scanned.tokens {
        if !matches!(Token::try_from(t.token), Ok(Token::Iconst | Token::Fconst)) {
            continue;
        }
        let (start, end) = (t.start as usize, t.end as usize);
        let Some(text) = statement.get(start..end) else {
            continue;
        };
        let lower = text.to_ascii_lowercase();
        if text.contains('_') {
            note("underscores in a numeric literal", 16, Some(start));
        }
        if ["0x", "0o", "0b"].iter().any(|p| lower.starts_with(p)) {
            note(
                "a hexadecimal, octal or binary integer literal",
                16,
                Some(start),
            );
        }
    }
}
