//! Syntax with PostgreSQL's own grammar (libpg_query): each statement the runner would send,
//! and the bodies of PL/pgSQL functions and `DO` blocks, which PostgreSQL itself only reads when
//! they run or are created.

use std::path::Path;

use pg_query::protobuf::node::Node as N;
use stepmigrate_core::sql;

use crate::{versions, Finding, Lines, Severity, SYNTAX_RULE};

/// How the message of an error inside a PL/pgSQL body starts.
pub const IN_PLPGSQL: &str = "in a PL/pgSQL body: ";

/// How the message of an error inside a `LANGUAGE sql` function body written as a string
/// starts.
pub const IN_SQL_BODY: &str = "in a SQL function body: ";

/// What the message of syntax newer than the target server says.
pub const NEWER_SYNTAX: &str = " syntax: the target, PostgreSQL ";

/// Whether a syntax finding is about a function or `DO` body, which leaves the statement
/// itself readable (and lintable).
pub fn in_body(message: &str) -> bool {
    message.starts_with(IN_PLPGSQL) || message.starts_with(IN_SQL_BODY)
}

/// The syntax errors of a script, one per statement that PostgreSQL's grammar rejects.
///
/// Statements are split by the runner's own lexer: the differential test (tests/oracle.rs)
/// holds it to libpg_query's splitter, so what is checked here is what the runner sends.
pub fn check(path: &Path, script: &str) -> Vec<Finding> {
    check_for(path, script, None)
}

/// [`check`], and the syntax newer than `target` (the server's major version) as errors too.
pub fn check_for(path: &Path, script: &str, target: Option<u32>) -> Vec<Finding> {
    let lexed = sql::lex(script);
    let mut findings = Vec::new();
    let lines = Lines::new(script);
    let error = |offset: usize, message: String, help: Option<String>| {
        let (line, column) = lines.at(offset);
        Finding {
            file: path.to_owned(),
            line,
            column,
            rule: SYNTAX_RULE.into(),
            severity: Severity::Error,
            message,
            help,
        }
    };
    let too_new = |offset: usize, newer: &versions::Newer, target: u32| {
        let (message, help) = too_new_message(newer, target);
        error(offset, message, Some(help))
    };
    if script.contains('\0') {
        let offset = script.find('\0').unwrap_or(0);
        findings.push(error(
            offset,
            "a NUL byte: PostgreSQL accepts no NUL in SQL text".into(),
            None,
        ));
        return findings;
    }
    for statement in &lexed.statements {
        match pg_query::parse(statement.text, 0) {
            Ok(parsed) => {
                if let Some(target) = target {
                    for newer in versions::newer_than(&parsed.protobuf, statement.text, target) {
                        findings.push(too_new(
                            statement.offset + newer.offset.unwrap_or(0),
                            &newer,
                            target,
                        ));
                    }
                }
                for body in sql_bodies(&parsed.protobuf, statement.text) {
                    match pg_query::parse(&body.text, 0) {
                        Err(e) => {
                            let message = parse_message(e);
                            if gave_up(&message) {
                                findings.push(Finding {
                                    severity: Severity::Warning,
                                    ..error(
                                        statement.offset,
                                        format!("{IN_SQL_BODY}{GAVE_UP}"),
                                        Some(GAVE_UP_HELP.into()),
                                    )
                                });
                                continue;
                            }
                            let at = body.offset.map_or(0, |o| o + locate(&body.text));
                            findings.push(error(
                                statement.offset + at,
                                format!("{IN_SQL_BODY}{message}"),
                                None,
                            ));
                        }
                        Ok(inner) => {
                            let Some(target) = target else { continue };
                            for newer in versions::newer_than(&inner.protobuf, &body.text, target) {
                                let at = body.offset.map_or(0, |o| o + newer.offset.unwrap_or(0));
                                findings.push(too_new(statement.offset + at, &newer, target));
                            }
                        }
                    }
                }
                for body in plpgsql_bodies(&parsed.protobuf, statement.text) {
                    if let Err(message) = check_plpgsql(&body.function) {
                        // Where the body is verbatim in the statement, the place in it;
                        // otherwise the statement's start.
                        // A SQL statement's error (PL/pgSQL hands each to the core
                        // parser) is found in that statement; others by the prefix search.
                        // Only where the prefix search found nothing or stopped in that
                        // statement: a statement that fails alone for PL/pgSQL's own
                        // reasons (`FOR r IN SELECT ... LOOP`) is not the error.
                        let prefix = locate_in_body(&body);
                        let in_body = match sql_error_in_body(&body.text) {
                            Some((at, (start, end)))
                                if prefix.is_none_or(|p| start <= p && p <= end) =>
                            {
                                Some(at)
                            }
                            _ => prefix,
                        };
                        let at = body.offset.zip(in_body).map_or(0, |(o, at)| o + at);
                        findings.push(error(
                            statement.offset + at,
                            format!("{IN_PLPGSQL}{message}"),
                            None,
                        ));
                    }
                }
            }
            Err(e) => {
                let message = parse_message(e);
                if gave_up(&message) {
                    findings.push(Finding {
                        severity: Severity::Warning,
                        ..error(statement.offset, GAVE_UP.into(), Some(GAVE_UP_HELP.into()))
                    });
                    continue;
                }
                let mut at = statement.offset + locate(statement.text);
                // Cut short: point at what ends it (the `;`), as PostgreSQL would.
                if at == statement.offset + statement.text.len() {
                    let rest = &script[at..];
                    let blank = rest.len() - rest.trim_start().len();
                    if rest[blank..].starts_with(';') {
                        at += blank;
                    }
                }
                // A newer server's syntax fails here like a typo: say which grammar read it.
                let help = (message.starts_with("syntax error")
                    && target.is_none_or(|t| t > versions::EMBEDDED_MAJOR))
                    .then(|| format!(
                        "stepmigrate reads SQL with PostgreSQL {0}'s grammar: syntax newer than PostgreSQL {0} is reported as a syntax error",
                        versions::EMBEDDED_MAJOR
                    ));
                findings.push(error(at, message, help));
            }
        }
    }
    if let Some(open) = lexed.unterminated {
        let (line, _) = (open.line, 0);
        findings.push(Finding {
            file: path.to_owned(),
            line,
            column: 0,
            rule: SYNTAX_RULE.into(),
            severity: Severity::Error,
            message: format!("unterminated {}", open.what),
            help: Some("close it: everything after it is read as part of it".into()),
        });
    }
    findings
}

/// What a statement nested deeper than the embedded parser's own stack limit gets: the
/// checker gave up, which says nothing of the SQL (PostgreSQL's limit is its server's
/// `max_stack_depth`, and 2,000 nested `AND (` pass there), so a warning, not a syntax error.
pub const GAVE_UP: &str = "not checked: the checker's parser (libpg_query) gave up at its stack depth limit on a statement nested this deep; this says nothing of whether PostgreSQL accepts it";

const GAVE_UP_HELP: &str = "PostgreSQL parses it within its server's max_stack_depth (2MB by default): `stepmigrate verify` runs it there. Its statements are not linted.";

/// libpg_query's message when its stack depth check stops it.
fn gave_up(message: &str) -> bool {
    message.starts_with("stack depth limit exceeded")
}

fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) | pg_query::Error::Scan(m) | pg_query::Error::Split(m) => m,
        other => other.to_string(),
    }
}

/// Where in `statement` the grammar gives up (or its end, when it stops too early).
fn locate(statement: &str) -> usize {
    first_bad_token(statement, |end| {
        match pg_query::parse(&statement[..end], 0) {
            Ok(_) => false,
            Err(pg_query::Error::Parse(m)) => !m.ends_with("at end of input"),
            Err(_) => true,
        }
    })
    .unwrap_or(statement.len())
}

/// The offset of the first token of `text` that no longer fits: libpg_query knows the cursor
/// position but its Rust binding drops it, so it is found again by parsing prefixes. A prefix
/// that is fine so far fails only "at end of input"; once the bad token is in, every longer
/// prefix fails before its end (`fails_inside(prefix_end)`). Binary search: a few parses, only
/// for text that is wrong.
fn first_bad_token(text: &str, fails_inside: impl Fn(usize) -> bool) -> Option<usize> {
    use pg_query::protobuf::Token;
    let tokens: Vec<(usize, usize)> = pg_query::scan(text)
        .ok()?
        .tokens
        .iter()
        .filter(|t| {
            !matches!(
                Token::try_from(t.token),
                Ok(Token::SqlComment | Token::CComment)
            )
        })
        .map(|t| (t.start as usize, (t.end as usize).min(text.len())))
        .filter(|(_, end)| text.is_char_boundary(*end))
        .collect();
    let (mut lo, mut hi) = (1, tokens.len());
    if hi == 0 || !fails_inside(tokens[hi - 1].1) {
        return None;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails_inside(tokens[mid - 1].1) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(tokens[lo - 1].0)
}

/// Where in a PL/pgSQL body its parser gives up, as an offset in the body: the same prefix
/// search, each prefix put back in the function in place of the whole body (so it keeps its
/// arguments and return type).
fn locate_in_body(body: &Body) -> Option<usize> {
    let start = body.offset_in_function;
    let before = &body.function[..start];
    let after = &body.function[start + body.text.len()..];
    first_bad_token(&body.text, |end| {
        let candidate = format!("{before}{}{after}", &body.text[..end]);
        match pg_query::parse_plpgsql(&candidate) {
            Ok(_) | Err(pg_query::Error::InvalidJson(_)) => false,
            Err(pg_query::Error::Parse(m)) => !m.ends_with("at end of input"),
            Err(_) => true,
        }
    })
}

/// Where the first SQL statement of a PL/pgSQL body that the core grammar rejects goes wrong,
/// as an offset in the body. PL/pgSQL passes each SQL statement (up to its `;`) to the core
/// parser, whose error is about that statement alone: a prefix of the body that cuts the
/// statement short fails differently, so the prefix search lands on the wrong token.
fn sql_error_in_body(body: &str) -> Option<(usize, (usize, usize))> {
    const VERBS: &[&str] = &[
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "PERFORM", "WITH", "CREATE", "ALTER",
        "DROP", "TRUNCATE", "GRANT", "REVOKE", "COMMENT", "VALUES",
    ];
    for piece in sql::lex(body).statements {
        let tokens = pg_query::scan(piece.text).ok()?.tokens;
        // The piece may start with PL/pgSQL words (BEGIN, DECLARE ..., THEN): the SQL
        // statement starts at its first SQL verb.
        let Some(start) = tokens.iter().map(|t| t.start as usize).find(|&start| {
            let word: String = piece.text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            VERBS.contains(&word.to_ascii_uppercase().as_str())
        }) else {
            continue;
        };
        let fragment = &piece.text[start..];
        // PERFORM is SELECT without a result: the core parser reads it as SELECT.
        let (text, shift) = match fragment.get(..7) {
            Some(w) if w.eq_ignore_ascii_case("perform") => {
                (format!("SELECT{}", &fragment[7..]), 1)
            }
            _ => (fragment.to_owned(), 0),
        };
        if pg_query::parse(&text, 0).is_ok() {
            continue;
        }
        let found = locate(&text);
        let mut at = piece.offset + start + if found >= 6 { found + shift } else { found };
        // Cut short: the `;` that ends it, as PostgreSQL points.
        if found == text.len() {
            let rest = &body[at..];
            let blank = rest.len() - rest.trim_start().len();
            if rest[blank..].starts_with(';') {
                at += blank;
            }
        }
        return Some((at, (piece.offset, piece.offset + piece.text.len())));
    }
    None
}

/// A PL/pgSQL body to check, as a whole `CREATE FUNCTION` statement.
struct Body {
    /// The function libpg_query's PL/pgSQL parser reads.
    function: String,
    /// The body's text, and where it is in `function`.
    text: String,
    offset_in_function: usize,
    /// Where the body is in the statement, when it is there verbatim (a dollar-quoted body;
    /// not a single-quoted one with doubled quotes).
    offset: Option<usize>,
}

/// The PL/pgSQL bodies of a statement: of `CREATE FUNCTION/PROCEDURE ... LANGUAGE plpgsql`
/// (the statement itself) and of `DO` blocks (wrapped into such a function).
fn plpgsql_bodies(parsed: &pg_query::protobuf::ParseResult, statement: &str) -> Vec<Body> {
    let mut bodies = Vec::new();
    for raw in &parsed.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        match node {
            N::CreateFunctionStmt(f) => {
                let language = def_string(&f.options, "language");
                let plpgsql = language
                    .as_deref()
                    .is_some_and(|l| l.eq_ignore_ascii_case("plpgsql"));
                if f.sql_body.is_some() || !plpgsql {
                    continue;
                }
                let Some(text) = def_string(&f.options, "as") else {
                    continue;
                };
                let offset = statement.find(text.as_str());
                bodies.push(Body {
                    function: statement.to_owned(),
                    offset_in_function: offset.unwrap_or(0),
                    offset,
                    text: if offset.is_some() {
                        text
                    } else {
                        String::new()
                    },
                });
            }
            N::DoStmt(d) => {
                let language = def_string(&d.args, "language").unwrap_or_else(|| "plpgsql".into());
                if !language.eq_ignore_ascii_case("plpgsql") {
                    continue;
                }
                let Some(text) = def_string(&d.args, "as") else {
                    continue;
                };
                let mut tag = String::from("stepmigrate");
                while text.contains(&format!("${tag}$")) {
                    tag.push('_');
                }
                let head = format!(
                    "CREATE FUNCTION stepmigrate_do_block() RETURNS void LANGUAGE plpgsql AS ${tag}$"
                );
                bodies.push(Body {
                    function: format!("{head}{text}${tag}$"),
                    offset_in_function: head.len(),
                    offset: statement.find(text.as_str()),
                    text,
                });
            }
            _ => {}
        }
    }
    bodies
}

/// A `LANGUAGE sql` function's body written as a string (`AS $$ ... $$`): PostgreSQL parses
/// it when the function is created (with `check_function_bodies`, the default), so a typo
/// there fails `up`.
struct SqlBody {
    text: String,
    /// Where the body is in the statement, when it is there verbatim.
    offset: Option<usize>,
}

fn sql_bodies(parsed: &pg_query::protobuf::ParseResult, statement: &str) -> Vec<SqlBody> {
    let mut bodies = Vec::new();
    for raw in &parsed.stmts {
        let Some(N::CreateFunctionStmt(f)) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        let sql = def_string(&f.options, "language").is_some_and(|l| l.eq_ignore_ascii_case("sql"));
        if f.sql_body.is_some() || !sql {
            continue;
        }
        let Some(text) = def_string(&f.options, "as") else {
            continue;
        };
        let offset = statement.find(text.as_str());
        bodies.push(SqlBody { text, offset });
    }
    bodies
}

/// The error for syntax newer than the target server.
fn too_new_message(newer: &versions::Newer, target: u32) -> (String, String) {
    let target = versions::name(target);
    (
        format!(
            "{} is PostgreSQL {}{NEWER_SYNTAX}{target}, rejects it",
            newer.feature, newer.since
        ),
        format!(
            "the target version is --pg-version or the project file's [lint] pg_version; if the server runs PostgreSQL {} or later, raise it, otherwise write this for PostgreSQL {target}",
            newer.since
        ),
    )
}

/// The string value of a `DefElem` option (`LANGUAGE x`, `AS 'body'`), if present.
fn def_string(options: &[pg_query::protobuf::Node], name: &str) -> Option<String> {
    options.iter().find_map(|o| match o.node.as_ref()? {
        N::DefElem(d) if d.defname == name => first_string(d.arg.as_deref()?),
        _ => None,
    })
}

fn first_string(node: &pg_query::protobuf::Node) -> Option<String> {
    match node.node.as_ref()? {
        N::String(s) => Some(s.sval.clone()),
        // `AS 'body'` is a one-element list; `AS 'obj', 'link'` (C functions) is not PL/pgSQL.
        N::List(l) => l.items.first().and_then(first_string),
        _ => None,
    }
}

fn check_plpgsql(function: &str) -> Result<(), String> {
    match pg_query::parse_plpgsql(function) {
        // The parser accepted it; only its JSON rendering, which is not needed here, was too
        // deep for serde_json.
        Ok(_) | Err(pg_query::Error::InvalidJson(_)) => Ok(()),
        Err(e) => Err(parse_message(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(sql: &str) -> Vec<(usize, usize, String)> {
        check(Path::new("m.sql"), sql)
            .into_iter()
            .map(|f| (f.line, f.column, f.message))
            .collect()
    }

    #[test]
    fn valid_sql_has_no_finding() {
        assert!(errors("CREATE TABLE t (id int);\nSELECT 1;").is_empty());
    }

    #[test]
    fn a_syntax_error_names_line_and_column() {
        let found = errors(
            "CREATE TABLE t (id int);\n\nALTER TABLE t\n  ADD COLUMN x int NOT NULL DEFALT 0;\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        let (line, column, message) = &found[0];
        assert_eq!((*line, *column), (4, 29), "{message}");
        assert!(message.contains("DEFALT"), "{message}");
    }

    #[test]
    fn a_statement_cut_short_points_at_its_end() {
        let found = errors("SELECT 1;\nCREATE TABLE t (id int\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 2);
        assert!(found[0].2.contains("end of input"), "{:?}", found[0]);
    }

    #[test]
    fn each_bad_statement_is_reported() {
        let found = errors("SELEC 1;\nSELECT 2;\nINSERT INTO;\n");
        assert_eq!(found.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn plpgsql_bodies_are_read() {
        let bad_function = "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  IF true THEN\n    RETURN 1;\n  END;\nEND $$;";
        let found = errors(bad_function);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].2.starts_with("in a PL/pgSQL body"), "{found:?}");

        let bad_do = "DO $body$\nBEGIN\n  PERFORM 1\n  PERFORM 2;\nEND\n$body$;";
        assert_eq!(errors(bad_do).len(), 1);
        let good_do = "DO $$BEGIN PERFORM 1; END$$;";
        assert!(errors(good_do).is_empty());
        // Another language's body is not PL/pgSQL's business.
        let sql_function = "CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1';";
        assert!(errors(sql_function).is_empty());
    }

    #[test]
    fn plpgsql_errors_point_where_the_parser_stops() {
        let found = errors("DO $$\nBEGIN\n  IF true THEN\n    NULL;\n  END IF;\n  IF true THEN\n    NULL;\n  END;\nEND $$;\n");
        assert_eq!((found[0].0, found[0].1), (8, 6), "{found:?}");
        let function = "SELECT 1;\nCREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n  IF a > 0 THEN\n    RETURN 1;\n  END IF;\n  RETURN 1\n  END IF;\nEND $$;\n";
        let found = errors(function);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 8, "{found:?}");
        let quoted =
            "CREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS '\nBEGIN\n  PERFORM 1 2;\nEND';";
        assert_eq!((errors(quoted)[0].0, errors(quoted)[0].1), (3, 13));
        // With doubled quotes the body is not in the statement verbatim: the statement's start.
        let doubled = "SELECT 1;\nCREATE FUNCTION g() RETURNS void LANGUAGE plpgsql AS '\nBEGIN\n  PERFORM ''x'' 2;\nEND';";
        assert_eq!((errors(doubled)[0].0, errors(doubled)[0].1), (2, 1));
    }

    #[test]
    fn a_sql_error_inside_a_plpgsql_body_points_at_its_token() {
        let found = errors("DO $$\nBEGIN\n  PERFORM 1 + ;\nEND $$;");
        assert_eq!((found[0].0, found[0].1), (3, 15), "{found:?}");
        let found = errors("CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  INSERT INTO t VALUES (1,, 2);\nEND $$;");
        assert_eq!((found[0].0, found[0].1), (3, 27), "{found:?}");
        let found = errors("DO $$\nDECLARE\n  n int;\nBEGIN\n  SELECT count(*) INTO n FROM t WHERE a = = 1;\nEND $$;");
        assert_eq!((found[0].0, found[0].1), (5, 43), "{found:?}");
    }

    #[test]
    fn a_sql_function_body_is_parsed() {
        let found = errors(
            "SELECT 1;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\n  SELEC 42\n$$;",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].2.starts_with(IN_SQL_BODY), "{found:?}");
        assert_eq!((found[0].0, found[0].1), (3, 3), "{found:?}");
        let found = errors("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT $1 +';");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(errors("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT a + 1; SELECT 2 $$;").is_empty());
    }

    #[test]
    fn a_statement_cut_short_points_at_its_semicolon() {
        let found = errors("SELECT 1 FROM a WHERE ;");
        assert_eq!((found[0].0, found[0].1), (1, 23), "{found:?}");
    }

    #[test]
    fn an_unterminated_string_is_named() {
        let found = errors("SELECT 1;\nSELECT 'oops;\n");
        assert!(
            found.iter().any(|f| f.2.contains("unterminated")),
            "{found:?}"
        );
    }
}
