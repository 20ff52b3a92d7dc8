//! Syntax with PostgreSQL's own grammar (libpg_query): each statement the runner would send,
//! and the bodies of PL/pgSQL functions and `DO` blocks, which PostgreSQL itself only reads when
//! they run or are created.

use std::path::Path;

use pg_query::protobuf::node::Node as N;
use stepmigrate_core::sql;

use crate::{line_column, Finding, Severity, SYNTAX_RULE};

/// The syntax errors of a script, one per statement that PostgreSQL's grammar rejects.
///
/// Statements are split by the runner's own lexer: the differential test (tests/oracle.rs)
/// holds it to libpg_query's splitter, so what is checked here is what the runner sends.
pub fn check(path: &Path, script: &str) -> Vec<Finding> {
    let lexed = sql::lex(script);
    let mut findings = Vec::new();
    let error = |offset: usize, message: String, help: Option<String>| {
        let (line, column) = line_column(script, offset);
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
                for (body, body_offset) in plpgsql_bodies(&parsed.protobuf, statement.text) {
                    if let Err(message) = check_plpgsql(&body) {
                        let at = body_offset
                            .and_then(|o| near(statement.text, &message, o))
                            .unwrap_or(0);
                        findings.push(error(
                            statement.offset + at,
                            format!("in a PL/pgSQL body: {message}"),
                            None,
                        ));
                    }
                }
            }
            Err(e) => {
                let message = parse_message(e);
                let at = locate(statement.text).unwrap_or(0);
                findings.push(error(statement.offset + at, message, None));
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

fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) | pg_query::Error::Scan(m) | pg_query::Error::Split(m) => m,
        other => other.to_string(),
    }
}

/// Where in `statement` the grammar gives up: the first token whose prefix can no longer start
/// a valid statement. libpg_query knows the cursor position but its Rust binding drops it, so
/// it is found again by parsing prefixes: a prefix that is fine so far fails only "at end of
/// input", and once the bad token is in, every longer prefix fails before its end. Binary
/// search: a few parses, only for a statement that is wrong.
fn locate(statement: &str) -> Option<usize> {
    use pg_query::protobuf::Token;
    let tokens: Vec<(usize, usize)> = pg_query::scan(statement)
        .ok()?
        .tokens
        .iter()
        .filter(|t| {
            !matches!(
                Token::try_from(t.token),
                Ok(Token::SqlComment | Token::CComment)
            )
        })
        .map(|t| (t.start as usize, t.end as usize))
        .collect();
    let fails_inside = |k: usize| -> bool {
        let end = tokens[k - 1].1.min(statement.len());
        match pg_query::parse(&statement[..end], 0) {
            Ok(_) => false,
            Err(pg_query::Error::Parse(m)) => !m.ends_with("at end of input"),
            Err(_) => true,
        }
    };
    let (mut lo, mut hi) = (1, tokens.len());
    if hi == 0 || !fails_inside(hi) {
        // Only "at end of input": the statement stops too early; point at its last token.
        return tokens.last().map(|t| t.0);
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails_inside(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(tokens[lo - 1].0)
}

/// The offset of the `"TOKEN"` a message is "at or near", searched from `from`.
fn near(text: &str, message: &str, from: usize) -> Option<usize> {
    let token = message.split("at or near \"").nth(1)?.strip_suffix('"')?;
    text.get(from..)?.find(token).map(|i| from + i)
}

/// The PL/pgSQL bodies of a statement: of `CREATE FUNCTION/PROCEDURE ... LANGUAGE plpgsql`
/// (the whole statement, as libpg_query's PL/pgSQL parser wants it) and of `DO` blocks (wrapped
/// into such a function), each with the offset of its text in the statement when known.
fn plpgsql_bodies(
    parsed: &pg_query::protobuf::ParseResult,
    statement: &str,
) -> Vec<(String, Option<usize>)> {
    let mut bodies = Vec::new();
    for raw in &parsed.stmts {
        let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
            continue;
        };
        match node {
            N::CreateFunctionStmt(f) => {
                let language = def_string(&f.options, "language");
                if f.sql_body.is_none()
                    && language
                        .as_deref()
                        .is_some_and(|l| l.eq_ignore_ascii_case("plpgsql"))
                {
                    let body = def_string(&f.options, "as");
                    let offset = body.as_deref().and_then(|b| statement.find(b));
                    bodies.push((statement.to_owned(), offset));
                }
            }
            N::DoStmt(d) => {
                let language = def_string(&d.args, "language").unwrap_or_else(|| "plpgsql".into());
                if !language.eq_ignore_ascii_case("plpgsql") {
                    continue;
                }
                let Some(body) = def_string(&d.args, "as") else {
                    continue;
                };
                let offset = statement.find(body.as_str());
                let mut tag = String::from("stepmigrate");
                while body.contains(&format!("${tag}$")) {
                    tag.push('_');
                }
                bodies.push((
                    format!(
                        "CREATE FUNCTION stepmigrate_do_block() RETURNS void LANGUAGE plpgsql AS ${tag}${body}${tag}$"
                    ),
                    offset,
                ));
            }
            _ => {}
        }
    }
    bodies
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
    fn an_unterminated_string_is_named() {
        let found = errors("SELECT 1;\nSELECT 'oops;\n");
        assert!(
            found.iter().any(|f| f.2.contains("unterminated")),
            "{found:?}"
        );
    }
}
