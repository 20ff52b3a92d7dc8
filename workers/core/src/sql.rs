//! A small lexer for PostgreSQL SQL text: enough to split a script into top-level statements
//! (for migrations that run outside a transaction, where PostgreSQL needs one statement per
//! query), to map an error position back to a line, and to spot statements that cannot run
//! inside a transaction block.
//!
//! It understands what can hide a `;`: `--` and nested `/* */` comments, quoted strings
//! (standard, `E''` with backslash escapes), quoted identifiers, dollar-quoted bodies, and
//! SQL-standard function bodies (`BEGIN ATOMIC ... END`).

/// One top-level statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    /// The statement's text, from its first token to the terminating `;` (excluded), trimmed:
    /// comments before it belong to no statement.
    pub text: &'a str,
    /// Byte offset of `text` in the script.
    pub offset: usize,
    /// 1-based line of the statement's first token, counted from the file's first line.
    pub line: usize,
    /// The first words of the statement (upper case; quoted identifiers unquoted; comments
    /// skipped), for classification.
    pub keywords: Vec<String>,
    /// `COPY ... FROM STDIN` or `... TO STDOUT` somewhere in it.
    pub copies_with_client: bool,
    /// `DETACH ... CONCURRENTLY` somewhere in it.
    pub detaches_concurrently: bool,
    /// The verb of its main command: its first word, or after `WITH` the first word outside
    /// parentheses that starts a command (`WITH d AS (DELETE ...) SELECT ...` is a `SELECT`).
    pub main_verb: Option<String>,
}

/// A script as the lexer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lexed<'a> {
    pub statements: Vec<Statement<'a>>,
    /// A string, quoted identifier, dollar quote or block comment that the script never
    /// closes: PostgreSQL would refuse it, and the runner's own SQL after it would be read as
    /// part of it.
    pub unterminated: Option<Unterminated>,
    /// Byte offsets of each [`BATCH_SIZE_PLACEHOLDER`] outside strings, quoted identifiers
    /// and comments.
    pub placeholders: Vec<usize>,
}

/// What a batch migration's statement writes where the runner puts the batch's size.
pub const BATCH_SIZE_PLACEHOLDER: &str = ":batch_size";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    /// What is left open, e.g. "quoted string".
    pub what: &'static str,
    /// 1-based line where it starts.
    pub line: usize,
}

/// Splits `script` into its top-level statements. Statements that hold only comments or
/// whitespace are dropped. Linear in the script's length.
pub fn split_statements(script: &str) -> Vec<Statement<'_>> {
    lex(script).statements
}

/// What the lexer keeps of the statement it is in.
#[derive(Default)]
struct Current {
    first_token: Option<usize>,
    words: Vec<String>,
    previous_word: String,
    copies_with_client: bool,
    detach: bool,
    detaches_concurrently: bool,
    main_verb: Option<String>,
}

impl Current {
    /// A word outside parentheses: the first, or the command after a `WITH`'s CTEs.
    fn top_level_word(&mut self, word: &str) {
        let first = self.words.is_empty() && word != "WITH";
        let after_with = self.words.first().map(String::as_str) == Some("WITH")
            && matches!(
                word,
                "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "VALUES" | "TABLE"
            );
        if self.main_verb.is_none() && (first || after_with) {
            self.main_verb = Some(word.to_owned());
        }
    }

    fn word(&mut self, word: String) {
        match (self.previous_word.as_str(), word.as_str()) {
            ("FROM", "STDIN") | ("TO", "STDOUT") => self.copies_with_client = true,
            (_, "DETACH") => self.detach = true,
            (_, "CONCURRENTLY") if self.detach => self.detaches_concurrently = true,
            _ => {}
        }
        // Only the first few words classify a statement; the ATOMIC check needs the first.
        if self.words.len() < 8 {
            self.words.push(word.clone());
        }
        self.previous_word = word;
    }
}

/// Reads `script` once: its statements, and whatever it leaves unterminated.
pub fn lex(script: &str) -> Lexed<'_> {
    let bytes = script.as_bytes();
    let mut statements = Vec::new();
    let mut unterminated = None;
    let mut placeholders = Vec::new();
    let mut i = 0;
    let mut atomic_depth = 0usize;
    // `;` inside parentheses does not end a statement (CREATE RULE ... DO ALSO (a; b)).
    let mut paren_depth = 0usize;
    // Whether the previous token was a top-level `BEGIN`: only `BEGIN ATOMIC`, adjacent, opens
    // a function body (`(begin, atomic)` names two columns).
    let mut after_begin = false;
    // Lines are counted as the scan goes: one pass, whatever the file's size.
    let mut lines = LineCounter::default();
    let mut current = Current::default();

    let mut finish = |current: Current, end: usize, lines: &mut LineCounter| {
        if let (Some(offset), false) = (current.first_token, current.words.is_empty()) {
            statements.push(Statement {
                text: script[offset..end].trim_end(),
                offset,
                line: lines.line_at(bytes, offset),
                main_verb: current.main_verb.or_else(|| current.words.first().cloned()),
                keywords: current.words.into_iter().take(4).collect(),
                copies_with_client: current.copies_with_client,
                detaches_concurrently: current.detaches_concurrently,
            });
        }
    };
    let mut open = |what: &'static str, at: usize, lines: &mut LineCounter| {
        unterminated.get_or_insert(Unterminated {
            what,
            line: lines.line_at(bytes, at),
        });
    };

    while i < bytes.len() {
        let c = bytes[i];
        let token_start = i;
        let mut is_begin = false;
        if !(c.is_ascii_whitespace()
            || c == b';'
            || (c == b'-' && bytes.get(i + 1) == Some(&b'-'))
            || (c == b'/' && bytes.get(i + 1) == Some(&b'*')))
        {
            current.first_token.get_or_insert(i);
        }
        match c {
            // PostgreSQL ends a `--` comment at a newline or a carriage return.
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(bytes, i).unwrap_or_else(|| {
                    open("/* comment", token_start, &mut lines);
                    bytes.len()
                });
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'\'' => {
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && !is_ident_byte_at(bytes, i.wrapping_sub(2));
                i = skip_quoted(bytes, i, b'\'', escapes).unwrap_or_else(|| {
                    open("quoted string", token_start, &mut lines);
                    bytes.len()
                });
            }
            b'"' => {
                i = skip_quoted(bytes, i, b'"', false).unwrap_or_else(|| {
                    open("quoted identifier", token_start, &mut lines);
                    bytes.len()
                });
                // A quoted identifier is never a keyword (an index named "concurrently" is
                // built in a transaction), but names a setting like the word it spells (`SET
                // "client_encoding"`): kept with its quote in front.
                let inner = script[token_start + 1..i.saturating_sub(1).max(token_start + 1)]
                    .replace("\"\"", "\"");
                current.word(format!("\"{}", inner.to_ascii_uppercase()));
            }
            b'$' if !(i > 0 && is_ident_byte(bytes[i - 1])) => {
                if let Some(tag_end) = dollar_tag_end(bytes, i) {
                    let tag = &bytes[i..=tag_end];
                    i = match find_subslice(bytes, tag, tag_end + 1) {
                        Some(p) => p + tag.len(),
                        None => {
                            open("dollar-quoted string", token_start, &mut lines);
                            bytes.len()
                        }
                    };
                } else {
                    i += 1;
                }
            }
            b'(' => {
                paren_depth += 1;
                i += 1;
            }
            b')' => {
                paren_depth = paren_depth.saturating_sub(1);
                i += 1;
            }
            b';' if atomic_depth == 0 && paren_depth == 0 => {
                finish(std::mem::take(&mut current), i, &mut lines);
                i += 1;
            }
            b';' => {
                current.first_token.get_or_insert(i);
                i += 1;
            }
            c if is_ident_start(c) => {
                while i < bytes.len() && is_ident_byte(bytes[i]) {
                    i += 1;
                }
                let word = script[token_start..i].to_ascii_uppercase();
                // Only a function or procedure body is BEGIN ATOMIC ... END.
                if word == "ATOMIC"
                    && after_begin
                    && paren_depth == 0
                    && current.words.first().map(String::as_str) == Some("CREATE")
                {
                    atomic_depth += 1;
                } else if word == "CASE" && atomic_depth > 0 {
                    atomic_depth += 1; // its END is not the body's
                } else if word == "END" && atomic_depth > 0 {
                    atomic_depth -= 1;
                }
                is_begin = word == "BEGIN" && paren_depth == 0;
                if paren_depth == 0 {
                    current.top_level_word(&word);
                }
                current.word(word);
            }
            // `:batch_size`, not the `::` of a cast nor the start of a longer name.
            b':' if bytes[i + 1..].starts_with(&BATCH_SIZE_PLACEHOLDER.as_bytes()[1..])
                && !(i > 0 && bytes[i - 1] == b':')
                && !is_ident_byte_at(bytes, i + BATCH_SIZE_PLACEHOLDER.len()) =>
            {
                placeholders.push(i);
                i += BATCH_SIZE_PLACEHOLDER.len();
            }
            _ => i += 1,
        }
        after_begin = is_begin;
    }
    finish(current, bytes.len(), &mut lines);
    Lexed {
        statements,
        unterminated,
        placeholders,
    }
}

/// Counts lines up to increasing offsets in one pass. A line ends at `\n`, `\r\n` or a lone
/// `\r`, as PostgreSQL's own lexer sees them.
#[derive(Default)]
struct LineCounter {
    offset: usize,
    line: usize,
}

impl LineCounter {
    fn line_at(&mut self, bytes: &[u8], offset: usize) -> usize {
        let offset = offset.min(bytes.len());
        if offset < self.offset {
            *self = LineCounter::default();
        }
        self.line += line_breaks(bytes, self.offset, offset);
        self.offset = offset;
        self.line + 1
    }
}

/// Line breaks in `bytes[from..to]`: each `\n`, and each `\r` not followed by `\n`.
fn line_breaks(bytes: &[u8], from: usize, to: usize) -> usize {
    (from..to)
        .filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count()
}

/// 1-based line number of a byte offset.
pub fn line_of_byte(script: &str, offset: usize) -> usize {
    line_breaks(script.as_bytes(), 0, offset.min(script.len())) + 1
}

/// Byte offset of the `chars`-th character (0-based), as PostgreSQL counts error positions
/// in characters, not bytes.
pub fn byte_of_char(script: &str, chars: usize) -> usize {
    script
        .char_indices()
        .nth(chars)
        .map_or(script.len(), |(b, _)| b)
}

/// The statement that contains the byte `offset`, if any.
pub fn statement_at(script: &str, offset: usize) -> Option<Statement<'_>> {
    split_statements(script)
        .into_iter()
        .find(|s| offset >= s.offset && offset <= s.offset + s.text.len())
}

/// Quotes a value as a standard SQL string literal (`standard_conforming_strings` is on in
/// every supported PostgreSQL), for the few values the runner inlines into its own scripts.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether a `REINDEX` is concurrent: `CONCURRENTLY`, or `(CONCURRENTLY)` /
/// `(CONCURRENTLY true)` in its option list, not `(CONCURRENTLY false)` (or off, 0, no). By
/// its keywords: a quoted `"concurrently"` is a name.
pub fn reindexes_concurrently(statement: &Statement<'_>) -> bool {
    if !statement.keywords.iter().any(|w| w == "CONCURRENTLY") {
        return false;
    }
    // The value after it, as written (a number is not a keyword).
    let upper = statement.text.to_ascii_uppercase();
    let after: String = upper
        .split("CONCURRENTLY")
        .nth(1)
        .unwrap_or_default()
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect();
    !matches!(after.as_str(), "FALSE" | "OFF" | "0" | "NO")
}

/// Why a statement cannot run inside a transaction block, if it cannot.
pub fn requires_no_transaction(statement: &Statement<'_>) -> Option<&'static str> {
    let k: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    match k.as_slice() {
        ["CREATE", "INDEX", "CONCURRENTLY", ..]
        | ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", ..]
        | ["DROP", "INDEX", "CONCURRENTLY", ..] => Some("an index built or dropped CONCURRENTLY"),
        ["REINDEX", ..] if reindexes_concurrently(statement) => Some("REINDEX CONCURRENTLY"),
        ["REINDEX", ..] if reindexes_many(&k) => Some("REINDEX DATABASE/SYSTEM"),
        ["VACUUM", ..] => Some("VACUUM"),
        ["CREATE", "DATABASE", ..] | ["DROP", "DATABASE", ..] => Some("CREATE/DROP DATABASE"),
        ["CREATE", "TABLESPACE", ..] | ["DROP", "TABLESPACE", ..] => Some("CREATE/DROP TABLESPACE"),
        ["ALTER", "SYSTEM", ..] => Some("ALTER SYSTEM"),
        ["ALTER", "TABLE", ..] if statement.detaches_concurrently => {
            Some("ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY")
        }
        ["CLUSTER"] | ["CLUSTER", "VERBOSE"] => Some("CLUSTER of the whole database"),
        ["DISCARD", "ALL", ..] => Some("DISCARD ALL"),
        _ => None,
    }
}

/// What a statement changes beyond its database, if it does: roles, databases, tablespaces
/// and server settings belong to the whole PostgreSQL server, so running it on a scratch
/// database of the same server is a real change there.
pub fn touches_the_server(statement: &Statement<'_>) -> Option<&'static str> {
    let k: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    match k.as_slice() {
        // A user mapping belongs to its database (`pg_user_mapping` is not shared).
        ["CREATE" | "ALTER" | "DROP", "USER", "MAPPING", ..] => None,
        ["CREATE" | "ALTER" | "DROP", "ROLE" | "USER" | "GROUP", ..] => Some("roles"),
        ["CREATE" | "ALTER" | "DROP", "DATABASE", ..] => Some("databases"),
        ["CREATE" | "ALTER" | "DROP", "TABLESPACE", ..] => Some("tablespaces"),
        ["ALTER", "SYSTEM", ..] => Some("server settings (ALTER SYSTEM)"),
        ["COMMENT", "ON", "DATABASE" | "ROLE" | "TABLESPACE", ..] => {
            Some("comments on roles, databases or tablespaces")
        }
        ["VACUUM" | "REINDEX", ..] if rebuilds_a_shared_catalog(statement) => Some(SHARED_STORAGE),
        _ => None,
    }
}

const SHARED_STORAGE: &str =
    "the storage of catalogs the whole server shares (VACUUM FULL or REINDEX of pg_authid, pg_database...: every login of the server waits for it)";

/// The catalogs every database of the server shares (PostgreSQL 15's; the server guard
/// reads the server's own list, `relisshared`, and names these).
pub(crate) const SHARED_CATALOGS: [&str; 11] = [
    "pg_authid",
    "pg_auth_members",
    "pg_database",
    "pg_db_role_setting",
    "pg_tablespace",
    "pg_shdepend",
    "pg_shdescription",
    "pg_shseclabel",
    "pg_replication_origin",
    "pg_subscription",
    "pg_parameter_acl",
];

/// `VACUUM FULL` of a shared catalog, or of the whole database (which includes them);
/// `REINDEX` of one, `REINDEX SYSTEM`, or `REINDEX DATABASE` (which takes in the shared
/// catalogs before PostgreSQL 16): their storage is rebuilt for the whole server.
fn rebuilds_a_shared_catalog(statement: &Statement<'_>) -> bool {
    // Names as PostgreSQL reads them: `U&"..."` decoded, the quotes of each part removed.
    let text = decode_unicode_names(&statement.text.to_ascii_lowercase());
    let words: Vec<String> = Tokens(&text)
        .map(|w| w.trim_start_matches("u&").replace('"', ""))
        .filter(|w| !matches!(w.as_str(), "," | ";"))
        .collect();
    let shared = |w: &str| {
        let name = w.strip_prefix("pg_catalog.").unwrap_or(w);
        SHARED_CATALOGS.contains(&name)
            || (name.starts_with("pg_") && SHARED_CATALOGS.iter().any(|c| name.starts_with(c)))
            // The catalogs' TOAST tables and indexes: those of the shared ones are shared,
            // and which they are is a matter of OIDs: every one is taken as shared.
            || name.starts_with("pg_toast.")
    };
    match words.first().map(String::as_str) {
        Some("reindex") => {
            words.iter().any(|w| w == "system" || w == "database")
                || words
                    .windows(2)
                    .any(|w| w[0] == "schema" && matches!(w[1].as_str(), "pg_catalog" | "pg_toast"))
                || words.iter().any(|w| shared(w))
        }
        Some("vacuum") => {
            // Options in parentheses (`(FULL, ANALYZE)`, `(FULL true)`) or as keywords, then
            // the tables: none means all of them, the shared catalogs included.
            let mut rest = &words[1..];
            let mut full = false;
            if rest.first().map(String::as_str) == Some("(") {
                let close = rest.iter().position(|w| w == ")").unwrap_or(rest.len() - 1);
                let options = &rest[1..close];
                full = options.iter().enumerate().any(|(i, w)| {
                    w == "full"
                        && !options
                            .get(i + 1)
                            .is_some_and(|v| matches!(v.as_str(), "false" | "off" | "0"))
                });
                rest = &rest[close + 1..];
            } else {
                while let Some(w) = rest.first() {
                    match w.as_str() {
                        "full" => full = true,
                        "freeze" | "verbose" | "analyze" | "analyse" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            full && (rest.is_empty() || rest.iter().any(|w| shared(w)))
        }
        _ => false,
    }
}

/// The function or command of `statement` that acts outside its transaction, if it names
/// one: its effect stays (or is seen elsewhere) whether the transaction commits or not, so a
/// verification that rolls back cannot keep it from happening. Read from the words as written,
/// `DO` bodies and `EXECUTE` strings included (a name built by `format` or called from inside
/// another function is not seen). `on_target`: the statement would run on the target itself,
/// where `setval` moves the target's sequence; on a scratch database it moves the copy's.
pub fn acts_outside_transaction(statement: &Statement<'_>, on_target: bool) -> Option<String> {
    if statement.keywords.first().map(String::as_str) == Some("COPY")
        && !statement.copies_with_client
    {
        return Some(COPY_FILE.to_owned());
    }
    if locks_a_catalog(statement) {
        return Some(CATALOG_LOCK.to_owned());
    }
    // Lower case, with `U&"..."` names decoded (`U&"setv\0061l"` is `setval`).
    let text = decode_unicode_names(&statement.text.to_ascii_lowercase());
    let words = words_of(&text);
    // The verification database's own guard (verify's event trigger): a migration that
    // names it would turn it off before what it guards against.
    if text.contains("stepmigrate_verify_guard") {
        return Some(VERIFY_GUARD.to_owned());
    }
    for (i, (at, word)) in words.iter().enumerate() {
        // `CREATE EXTENSION [IF NOT EXISTS] dblink`: from then on any statement may reach
        // its functions, by a name built at run time too.
        if *word == "extension" && i > 0 && words[i - 1].1 == "create" {
            let name = words[i + 1..]
                .iter()
                .map(|(_, w)| *w)
                .find(|w| !matches!(*w, "if" | "not" | "exists"));
            if let Some(name) = name.filter(|n| REMOTE_EXTENSIONS.contains(n)) {
                return Some(format!("{name}: {REMOTE_EXTENSION}"));
            }
        }
        let called = called_next(&text[at + word.len()..]);
        if called && outside_function(word, on_target) {
            return Some((*word).to_owned());
        }
        // The same function behind an operator or an aggregate (`CREATE OPERATOR ... (FUNCTION
        // = pg_terminate_backend, ...)`): using it calls it.
        if matches!(
            *word,
            "function" | "procedure" | "sfunc" | "finalfunc" | "combinefunc"
        ) && text[at + word.len()..].trim_start().starts_with('=')
        {
            // The name, or the name after its schema (`pg_catalog.setval`).
            let named = words
                .iter()
                .skip(i + 1)
                .take(2)
                .find(|(_, name)| outside_function(name, on_target));
            if let Some((_, name)) = named {
                return Some((*name).to_owned());
            }
        }
        // On the target, where no guard judges what a function made here calls: one in an
        // untrusted language can call any built-in under any name (`LANGUAGE internal AS
        // 'pg_terminate_backend'`, `setval_oid`), and a `DO` in one can do anything.
        if on_target
            && *word == "language"
            && words[..i]
                .iter()
                .any(|(_, w)| matches!(*w, "function" | "procedure" | "do"))
        {
            if let Some((_, language)) = words.get(i + 1) {
                if UNTRUSTED_LANGUAGES.contains(language) {
                    return Some(format!(
                        "code in the untrusted language {language}, which can call anything under any name"
                    ));
                }
            }
        }
        // A foreign table that runs a server program when read (file_fdw's `program`): COPY
        // FROM PROGRAM under another name.
        if *word == "program"
            && words[..i].iter().any(|(_, w)| *w == "options")
            && text[at + word.len()..]
                .trim_start()
                .starts_with(['\'', '$'])
        {
            return Some(FDW_PROGRAM.to_owned());
        }
        // COPY to or from a file or a program, inside a DO body or an EXECUTE string.
        if *word == "copy" {
            // A file or a program after TO/FROM: a literal, a `format` placeholder (`%L`,
            // `%s`), a string spliced in (`'... TO ' || path`), or a word cut by one
            // (`PRO'||'GRAM`).
            let to_file = words[i + 1..].iter().take(40).any(|(w_at, w)| {
                if *w == "program" {
                    return true;
                }
                if !matches!(*w, "to" | "from") {
                    return false;
                }
                let rest = text[w_at + w.len()..].trim_start();
                let next: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest.starts_with(['\'', '$', '%'])
                    || (!next.is_empty()
                        && !matches!(next.as_str(), "stdin" | "stdout")
                        && rest[next.len()..].starts_with(['\'', '"']))
            });
            if to_file {
                return Some(COPY_FILE.to_owned());
            }
        }
    }
    None
}

const COPY_FILE: &str = "COPY to or from a server file or program";
/// Languages a function or `DO` is untrusted in: only a superuser may use them, and their
/// code reaches past the database (a built-in under another name, files, the network).
const UNTRUSTED_LANGUAGES: [&str; 10] = [
    "c",
    "internal",
    "plpython3u",
    "plpythonu",
    "plpython2u",
    "plperlu",
    "pltclu",
    "plsh",
    "pljavau",
    "plrustu",
];
/// Extensions whose functions run SQL in another session, which commits on its own.
pub const REMOTE_EXTENSIONS: [&str; 2] = ["dblink", "pg_background"];

/// Why a migration that names verify's own guard is not run.
const VERIFY_GUARD: &str =
    "verify's own guard (the stepmigrate_verify_guard event trigger), which it would turn off";

/// Why an extension of [`REMOTE_EXTENSIONS`] acts outside the transaction.
pub const REMOTE_EXTENSION: &str =
    "an extension whose functions run SQL in another session, which commits whatever this transaction does";

const CATALOG_LOCK: &str =
    "LOCK of a system catalog (every session of the database, or of the server for a shared catalog, waits for it: logins too)";

/// `LOCK [TABLE] [ONLY] pg_catalog.x` or `pg_x`: a system catalog, which every session
/// reads (a shared one, `pg_authid`, on the whole server).
fn locks_a_catalog(statement: &Statement<'_>) -> bool {
    let mut words = Tokens(statement.text).map(|w| w.to_ascii_lowercase());
    if words.next().as_deref() != Some("lock") {
        return false;
    }
    words
        .filter(|w| !matches!(w.as_str(), "table" | "only" | ","))
        .take_while(|w| w != "in" && w != "nowait" && w != ";")
        .any(|name| {
            let name = name.trim_matches('"');
            name.starts_with("pg_catalog.") || name.starts_with("pg_")
        })
}
const FDW_PROGRAM: &str = "a foreign table's server program (file_fdw's program option)";

/// `u&"..."` names with their `\XXXX` / `\+XXXXXX` escapes decoded (quotes kept), so that a
/// name spelled with escapes is read as the name it is.
fn decode_unicode_names(text: &str) -> String {
    if !text.contains("u&\"") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("u&\"") {
        out.push_str(&rest[..at]);
        let body = &rest[at + 3..];
        let Some(end) = body.find('"') else {
            out.push_str(&rest[at..]);
            return out;
        };
        out.push('"');
        let mut chars = body[..end].chars().peekable();
        while let Some(c) = chars.next() {
            let digits = match (c, chars.peek()) {
                ('\\', Some('+')) => {
                    chars.next();
                    6
                }
                ('\\', Some(d)) if d.is_ascii_hexdigit() => 4,
                _ => {
                    out.push(c);
                    continue;
                }
            };
            let hex: String = chars.by_ref().take(digits).collect();
            match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                Some(decoded) => out.extend(decoded.to_lowercase()),
                None => out.push_str(&hex),
            }
        }
        out.push('"');
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The words of a lower-cased text (letters, digits, `_`) with their byte offsets: a
/// statement's words wherever they are written (a `DO` body, an `EXECUTE` string).
fn words_of(text: &str) -> Vec<(usize, &str)> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_ascii_alphanumeric() || c == '_' {
            start.get_or_insert(i);
        } else if let Some(s) = start.take() {
            words.push((s, &text[s..i]));
        }
    }
    if let Some(s) = start {
        words.push((s, &text[s..]));
    }
    words
}

/// Whether `statement` calls the function `name` (lower case), wherever the call is written.
fn calls(statement: &Statement<'_>, name: &str) -> bool {
    let text = statement.text.to_ascii_lowercase();
    words_of(&text)
        .iter()
        .any(|(at, word)| *word == name && called_next(&text[at + word.len()..]))
}

/// Whether what follows a word calls it: `(` after the closing quote of a quoted name
/// (`"setval"(`), white space and comments (`setval/**/(`).
fn called_next(rest: &str) -> bool {
    let mut rest = rest.strip_prefix('"').unwrap_or(rest);
    loop {
        rest = rest.trim_start();
        if let Some(comment) = rest.strip_prefix("/*") {
            match comment.find("*/") {
                Some(end) => rest = &comment[end + 2..],
                None => return false,
            }
        } else if let Some(comment) = rest.strip_prefix("--") {
            match comment.find('\n') {
                Some(end) => rest = &comment[end + 1..],
                None => return false,
            }
        } else {
            return rest.starts_with('(');
        }
    }
}

/// Functions whose effect a rollback does not undo: replication slots and origins, other
/// connections (`dblink`), other sessions (terminate, cancel), server files, the server's
/// configuration and WAL, statistics resets; `setval` on the target.
fn outside_function(name: &str, on_target: bool) -> bool {
    (on_target && name == "setval")
        || name.starts_with("dblink")
        || name.starts_with("pg_replication_origin_")
        || name.starts_with("pg_logical_slot_")
        || name.starts_with("pg_stat_reset")
        || (name.starts_with("pg_stat_") && name.ends_with("_reset"))
        // pg_surgery and pg_visibility write heap pages and maps in place.
        || name.starts_with("heap_force_")
        || name == "pg_truncate_visibility_map"
        || name.starts_with("pg_file_")
        || name.starts_with("pg_backup_")
        || name.starts_with("pg_wal_replay_")
        || (name.starts_with("pg_") && name.contains("replication_slot"))
        || matches!(
            name,
            "pg_terminate_backend"
                | "pg_cancel_backend"
                | "lo_import"
                | "lo_export"
                | "pg_reload_conf"
                | "pg_switch_wal"
                | "pg_logical_emit_message"
                | "pg_create_restore_point"
                | "pg_rotate_logfile"
                | "pg_promote"
                | "pg_log_backend_memory_contexts"
        )
}

/// Whether `statement` is of a kind known not to read or check the rows of the relations it
/// locks (so its outcome on an empty copy is its outcome on the target): the short list of
/// catalog-only changes. Anything else that locks a relation holding rows on the target is
/// unknown on an empty copy.
pub fn reads_no_rows(statement: &Statement<'_>) -> bool {
    let k: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    match k.as_slice() {
        // Not TRUNCATE (its triggers, and a foreign key's check, read other tables' rows), nor
        // ANALYZE (it computes statistics expressions over the rows), nor a RULE (`_RETURN`
        // converts a table to a view only while it is empty).
        ["DROP" | "COMMENT" | "GRANT" | "REVOKE" | "LOCK", ..] => true,
        ["CREATE", "TRIGGER" | "POLICY" | "VIEW" | "STATISTICS", ..]
        | ["CREATE", "OR", "REPLACE", "TRIGGER" | "VIEW", ..]
        | ["CREATE", "CONSTRAINT", "TRIGGER", ..] => true,
        ["ALTER", "TABLE", ..] => alter_table_subcommands(statement.text)
            .iter()
            .all(|sub| subcommand_reads_no_rows(sub)),
        ["ALTER", "INDEX" | "VIEW" | "SEQUENCE" | "TRIGGER" | "POLICY", ..] => {
            let words = upper_words(statement.text);
            words.contains(&"RENAME".to_owned()) || words.contains(&"OWNER".to_owned())
        }
        _ => false,
    }
}

/// Whether a statement reads or changes rows one by one, so that what runs per row (row-level
/// triggers, rules' actions, foreign keys' actions, functions called in its expressions) runs
/// only where rows are: DML, queries and prepared statements.
pub fn acts_on_rows(statement: &Statement<'_>) -> bool {
    matches!(
        statement.keywords.first().map(String::as_str),
        Some(
            "INSERT"
                | "UPDATE"
                | "DELETE"
                | "MERGE"
                | "WITH"
                | "SELECT"
                | "COPY"
                | "EXECUTE"
                | "TABLE"
                | "VALUES"
        )
    )
}

fn upper_words(text: &str) -> Vec<String> {
    Tokens(text)
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(str::to_ascii_uppercase)
        .collect()
}

/// The subcommands of an `ALTER TABLE`, split at the commas outside parentheses and quotes.
fn alter_table_subcommands(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, None::<char>, 0);
    for (i, c) in text.char_indices() {
        match (quoted, c) {
            (Some(q), c) if c == q => quoted = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quoted = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// One `ALTER TABLE` subcommand that changes the catalog only: a column added without a
/// default that is not a constant, a constraint added `NOT VALID`, a drop, a rename, a
/// default set or dropped, `DROP NOT NULL`, triggers and row security switched, an owner, a
/// detach.
fn subcommand_reads_no_rows(sub: &str) -> bool {
    let w = upper_words(sub);
    let has = |seq: &[&str]| w.windows(seq.len()).any(|x| x == seq);
    let any = |words: &[&str]| w.iter().any(|x| words.contains(&x.as_str()));
    if any(&[
        "TYPE",
        "GENERATED",
        "ATTACH",
        "VALIDATE",
        "USING",
        "TABLESPACE",
        "LOGGED",
        "ACCESS",
    ]) || has(&["SET", "NOT", "NULL"])
        || has(&["SET", "DATA"])
    {
        return false;
    }
    if any(&["ADD"]) {
        if has(&["NOT", "VALID"]) {
            return true;
        }
        if any(&[
            "CONSTRAINT",
            "CHECK",
            "UNIQUE",
            "PRIMARY",
            "REFERENCES",
            "EXCLUDE",
            "FOREIGN",
        ]) || (has(&["NOT", "NULL"]) && (!any(&["DEFAULT"]) || has(&["DEFAULT", "NULL"])))
            || !added_type_is_built_in(sub)
        {
            return false;
        }
        // A constant default is stored once; any other is computed for every row.
        return match sub.to_ascii_uppercase().find("DEFAULT") {
            None => true,
            Some(at) => {
                let rest = sub[at + "DEFAULT".len()..].trim_start();
                let value: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != ',')
                    .collect();
                value.starts_with('\'')
                    || value.parse::<f64>().is_ok()
                    || matches!(
                        value.to_ascii_uppercase().as_str(),
                        "NULL" | "TRUE" | "FALSE"
                    )
            }
        };
    }
    any(&[
        "DROP",
        "RENAME",
        "OWNER",
        "ENABLE",
        "DISABLE",
        "FORCE",
        "REPLICA",
        "CLUSTER",
        "DEFAULT",
        "STATISTICS",
        "STORAGE",
        "SCHEMA",
        "RESET",
        "INHERIT",
    ])
}

/// Whether the column an `ADD [COLUMN] [IF NOT EXISTS] name type` subcommand adds is of a
/// built-in base type. Another type may be a domain whose `NOT NULL` or `CHECK` is checked
/// against every row (or a serial, whose default is computed for every row).
fn added_type_is_built_in(sub: &str) -> bool {
    const BUILT_IN: &[&str] = &[
        "SMALLINT",
        "INT2",
        "INTEGER",
        "INT",
        "INT4",
        "BIGINT",
        "INT8",
        "REAL",
        "FLOAT",
        "FLOAT4",
        "FLOAT8",
        "DOUBLE",
        "NUMERIC",
        "DECIMAL",
        "BOOLEAN",
        "BOOL",
        "TEXT",
        "VARCHAR",
        "CHARACTER",
        "CHAR",
        "BPCHAR",
        "NAME",
        "BYTEA",
        "DATE",
        "TIME",
        "TIMETZ",
        "TIMESTAMP",
        "TIMESTAMPTZ",
        "INTERVAL",
        "UUID",
        "JSON",
        "JSONB",
        "INET",
        "CIDR",
        "MACADDR",
        "MACADDR8",
        "MONEY",
        "BIT",
        "VARBIT",
        "XML",
        "TSVECTOR",
        "TSQUERY",
        "POINT",
        "LINE",
        "LSEG",
        "BOX",
        "PATH",
        "POLYGON",
        "CIRCLE",
        "OID",
        "INT4RANGE",
        "INT8RANGE",
        "NUMRANGE",
        "TSRANGE",
        "TSTZRANGE",
        "DATERANGE",
    ];
    let words: Vec<String> = Tokens(sub)
        .filter(|t| !t.starts_with("/*") && !t.starts_with("--"))
        .map(|t| t.to_ascii_uppercase())
        .collect();
    let Some(add) = words.iter().position(|w| w == "ADD") else {
        return false;
    };
    let mut rest = words[add + 1..].iter().map(String::as_str).peekable();
    if rest.peek() == Some(&"COLUMN") {
        rest.next();
    }
    if rest.peek() == Some(&"IF") {
        rest.nth(2);
    }
    let _name = rest.next();
    rest.next().is_some_and(|ty| {
        let ty = ty.strip_prefix("PG_CATALOG.").unwrap_or(ty);
        BUILT_IN.contains(&ty.trim_matches('"'))
    })
}

/// `REINDEX [(options)] DATABASE|SYSTEM`: the kind is the first word after the options.
fn reindexes_many(keywords: &[&str]) -> bool {
    keywords
        .iter()
        .skip(1)
        .find(|w| {
            w.chars().all(|c| c.is_ascii_alphabetic())
                && !matches!(
                    **w,
                    "VERBOSE" | "TABLESPACE" | "TRUE" | "FALSE" | "ON" | "OFF"
                )
        })
        .is_some_and(|w| matches!(*w, "DATABASE" | "SYSTEM"))
}

/// Why the runner cannot run a statement at all, if it cannot: it would need data the runner
/// cannot send, or it changes how the rest of the session is read.
pub fn unsupported(statement: &Statement<'_>) -> Option<&'static str> {
    let k: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    let setting = match k.as_slice() {
        ["SET", "SESSION" | "LOCAL", name, ..] | ["SET" | "RESET", name, ..] => {
            Some(name.trim_start_matches('"'))
        }
        _ => None,
    };
    match setting {
        Some("CLIENT_ENCODING" | "NAMES") => {
            return Some("changing client_encoding makes the server's messages unreadable to the runner; the migration's text is UTF-8 already")
        }
        Some("STANDARD_CONFORMING_STRINGS") => {
            return Some("changing standard_conforming_strings changes how the rest of the migration's strings are read; the runner requires it on")
        }
        _ => {}
    }
    // The same settings changed as a function call (`set_config`) or through `pg_settings`,
    // the two other ways PostgreSQL offers, in any statement (a SELECT, a DO block).
    let text = statement.text.to_ascii_lowercase();
    if calls(statement, "set_config") || text.contains("pg_settings") {
        if text.contains("client_encoding") {
            return Some("changing client_encoding (set_config, pg_settings) makes the server's messages unreadable to the runner; the migration's text is UTF-8 already");
        }
        if text.contains("standard_conforming_strings") {
            return Some("changing standard_conforming_strings (set_config, pg_settings) changes how the rest of the migration's strings are read; the runner requires it on");
        }
    }
    if calls(statement, "pg_advisory_unlock_all") {
        return Some("pg_advisory_unlock_all releases the runner's own locks (the build lock that keeps other runners from settling a migration while its statements run); unlock your own keys with pg_advisory_unlock");
    }
    if matches!(k.as_slice(), ["DISCARD", "ALL"]) {
        return Some("DISCARD ALL releases the runner's own locks (the build lock that keeps other runners from settling a migration while its statements run) and drops its prepared statements; DISCARD PLANS, SEQUENCES or TEMP discard one thing each");
    }
    if matches!(
        k.as_slice(),
        ["DEALLOCATE", "ALL"] | ["DEALLOCATE", "PREPARE", "ALL"]
    ) {
        return Some(
            "DEALLOCATE ALL drops the runner's own prepared statements in the middle of its work",
        );
    }
    if matches!(k.as_slice(), ["SET", "TRANSACTION", ..]) {
        return Some("SET TRANSACTION must be the first statement of its transaction, and the runner's own statements come first: it always fails here (a migration's isolation level cannot be chosen)");
    }
    if k.first() == Some(&"COPY") && statement.copies_with_client {
        return Some("COPY FROM STDIN / TO STDOUT exchanges data with a client the runner is not; load data with INSERT, or COPY from a file on the server");
    }
    None
}

/// The verb of the main command of `statement`'s first statement (see
/// [`Statement::main_verb`]).
pub fn main_verb(statement: &str) -> Option<String> {
    split_statements(statement)
        .into_iter()
        .next()
        .and_then(|s| s.main_verb)
}

/// Words of a statement (as written, for reading names out of it): bare words, quoted identifiers and dotted names as one token each;
/// punctuation ends a word.
pub struct Tokens<'a>(pub &'a str);

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let text = self.0.trim_start();
        let bytes = text.as_bytes();
        let mut end = 0;
        loop {
            match bytes.get(end) {
                Some(b'"') => {
                    let close = text[end + 1..].find('"')?;
                    end += close + 2;
                    // `""` inside a quoted identifier is a quote.
                    while bytes.get(end) == Some(&b'"') {
                        end += text[end + 1..].find('"')? + 2;
                    }
                }
                Some(&b) if b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80 => {
                    end += 1
                }
                Some(b'.') if end > 0 => end += 1,
                _ => break,
            }
        }
        if end == 0 {
            // A punctuation character is a token of its own.
            let c = text.chars().next()?;
            end = c.len_utf8();
        }
        self.0 = &text[end..];
        Some(&text[..end])
    }
}

/// Whether a statement ends or starts a transaction, which would break the atomicity the
/// runner gives a transactional migration.
pub fn is_transaction_control(keywords: &[String]) -> bool {
    let k: Vec<&str> = keywords.iter().map(String::as_str).collect();
    match k.as_slice() {
        ["BEGIN", "ATOMIC", ..] => false,
        ["BEGIN", ..] | ["COMMIT", ..] | ["END", ..] | ["ABORT", ..] => true,
        ["START", "TRANSACTION", ..] => true,
        ["PREPARE", "TRANSACTION", ..] => true,
        ["ROLLBACK", rest @ ..] => !rest.contains(&"TO"),
        _ => false,
    }
}

fn find_subslice(bytes: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > bytes.len() {
        return None;
    }
    bytes[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn skip_block_comment(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

fn skip_quoted(bytes: &[u8], start: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < bytes.len() {
        let c = bytes[i];
        if backslash_escapes && c == b'\\' {
            i += 2;
        } else if c == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// If a dollar-quote tag (`$$` or `$tag$`) starts at `start`, the index of its closing `$`.
fn dollar_tag_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    if bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
        return None; // `$1` is a parameter, not a tag
    }
    while i < bytes.len() && is_ident_byte(bytes[i]) && bytes[i] != b'$' {
        i += 1;
    }
    (bytes.get(i) == Some(&b'$')).then_some(i)
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

fn is_ident_byte_at(bytes: &[u8], i: usize) -> bool {
    bytes.get(i).is_some_and(|&b| is_ident_byte(b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_catalog_only_kinds_read_no_rows() {
        let safe = |s: &str| reads_no_rows(&split_statements(s).remove(0));
        assert!(safe(
            "ALTER TABLE t ADD COLUMN e int DEFAULT 0, ALTER COLUMN b SET DEFAULT now()"
        ));
        assert!(safe(
            "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID"
        ));
        assert!(safe(
            "ALTER TABLE t ALTER COLUMN a DROP NOT NULL, DROP COLUMN b"
        ));
        assert!(safe("COMMENT ON TABLE t IS 'x'"));
        assert!(!safe(
            "ALTER TABLE t ADD COLUMN e timestamptz DEFAULT now()"
        ));
        assert!(!safe(
            "ALTER TABLE t ADD COLUMN e int, ALTER b TYPE varchar(5)"
        ));
        assert!(!safe(
            "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (10 / a) STORED"
        ));
        assert!(!safe("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0)"));
        // A domain's NOT NULL or CHECK, and NOT NULL over a NULL default, check every row.
        assert!(!safe("ALTER TABLE t ADD COLUMN c nn_int"));
        assert!(!safe("ALTER TABLE t ADD COLUMN c public.pos_int DEFAULT 0"));
        assert!(!safe(
            "ALTER TABLE t ADD COLUMN c int DEFAULT NULL NOT NULL"
        ));
        assert!(!safe("ALTER TABLE t ADD COLUMN c bigserial"));
        assert!(safe("ALTER TABLE t ADD c int NOT NULL DEFAULT 0"));
        assert!(safe(
            "ALTER TABLE t ADD COLUMN IF NOT EXISTS \"Some Col\" pg_catalog.int4, ADD e varchar(10)[]"
        ));
        assert!(safe("ALTER TABLE t ADD COLUMN e \"text\" DEFAULT 'x'"));
        assert!(!safe("INSERT INTO t SELECT 1"));
        assert!(!safe("CREATE INDEX ON t (a)"));
        // A TRUNCATE trigger reads other tables; removing a partition checks the rows
        // referencing it.
        assert!(!safe("TRUNCATE t"));
        assert!(!safe("ANALYZE t"));
        assert!(!safe(
            "CREATE RULE \"_RETURN\" AS ON SELECT TO t DO INSTEAD SELECT 1 AS id"
        ));
        assert!(!safe("ALTER TABLE p DETACH PARTITION p1"));
    }

    #[test]
    fn a_foreign_table_that_runs_a_program_acts_outside_its_transaction() {
        let first = |s: &str| acts_outside_transaction(&split_statements(s).remove(0), false);
        assert_eq!(
            first("CREATE FOREIGN TABLE ff (x text) SERVER s OPTIONS (program 'touch /tmp/x')")
                .as_deref(),
            Some(FDW_PROGRAM)
        );
        assert_eq!(
            first("ALTER FOREIGN TABLE ff OPTIONS (SET program $$rm x$$)").as_deref(),
            Some(FDW_PROGRAM)
        );
        assert_eq!(
            first("CREATE FOREIGN TABLE ff (x text) SERVER s OPTIONS (filename '/tmp/x')"),
            None
        );
        assert_eq!(first("UPDATE t SET program = 'x'"), None);
    }

    #[test]
    fn a_lock_of_a_catalog_and_in_place_heap_surgery_act_outside_the_transaction() {
        let first = |s: &str| acts_outside_transaction(&split_statements(s).remove(0), true);
        assert_eq!(
            first("LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE").as_deref(),
            Some(CATALOG_LOCK)
        );
        assert_eq!(first("LOCK pg_class, t").as_deref(), Some(CATALOG_LOCK));
        assert_eq!(first("LOCK TABLE t IN SHARE MODE"), None);
        assert_eq!(
            first("CREATE OPERATOR public.#!# (FUNCTION = pg_terminate_backend, LEFTARG = integer, RIGHTARG = bigint)")
                .as_deref(),
            Some("pg_terminate_backend")
        );
        assert_eq!(
            first("CREATE OPERATOR #=# (PROCEDURE = pg_catalog.setval, LEFTARG = regclass, RIGHTARG = bigint)")
                .as_deref(),
            Some("setval")
        );
        assert_eq!(
            first("SELECT U&\"setv\\0061l\"('s', 52)").as_deref(),
            Some("setval")
        );
        assert_eq!(
            first("CREATE OPERATOR === (FUNCTION = int4eq, LEFTARG = int, RIGHTARG = int)"),
            None
        );
        assert_eq!(
            first("SELECT heap_force_kill('t'::regclass, ARRAY['(0,1)']::tid[])").as_deref(),
            Some("heap_force_kill")
        );
        assert_eq!(
            first("SELECT pg_stat_statements_reset()").as_deref(),
            Some("pg_stat_statements_reset")
        );
    }

    #[test]
    fn roles_touch_the_server_and_user_mappings_do_not() {
        let touches = |s: &str| touches_the_server(&split_statements(s).remove(0));
        assert_eq!(touches("CREATE USER bob"), Some("roles"));
        assert_eq!(
            touches("ALTER ROLE bob SET work_mem = '1MB'"),
            Some("roles")
        );
        assert_eq!(
            touches("CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (user 'x')"),
            None
        );
        assert_eq!(
            touches("DROP USER MAPPING IF EXISTS FOR bob SERVER s"),
            None
        );
    }

    #[test]
    fn rebuilding_a_shared_catalog_touches_the_server() {
        let touches = |s: &str| touches_the_server(&split_statements(s).remove(0));
        for s in [
            "VACUUM FULL pg_catalog.pg_shdescription",
            "VACUUM FULL pg_authid",
            "VACUUM (FULL, ANALYZE) t, pg_database",
            "VACUUM FULL",
            "VACUUM (FULL true, INDEX_CLEANUP off)",
            "vacuum full verbose",
            "REINDEX TABLE pg_catalog.pg_authid",
            "REINDEX INDEX pg_authid_rolname_index",
            "REINDEX SYSTEM",
            "REINDEX DATABASE app",
            "VACUUM FULL pg_catalog.\"pg_shseclabel\"",
            "VACUUM FULL U&\"pg_shs\\0065clabel\"",
            "VACUUM FULL pg_toast.pg_toast_1262",
            "REINDEX INDEX pg_toast.pg_toast_1260_index",
            "REINDEX SCHEMA pg_catalog",
        ] {
            assert_eq!(touches(s), Some(SHARED_STORAGE), "{s}");
        }
        for s in [
            "VACUUM",
            "VACUUM pg_authid",
            "VACUUM FULL t",
            "VACUUM (FULL false)",
            "VACUUM (ANALYZE) t",
            "REINDEX TABLE t",
            "REINDEX INDEX CONCURRENTLY t_pkey",
        ] {
            assert_eq!(touches(s), None, "{s}");
        }
    }

    #[test]
    fn installing_dblink_acts_outside_the_transaction() {
        let first = |s: &str| acts_outside_transaction(&split_statements(s).remove(0), false);
        for s in [
            "CREATE EXTENSION dblink",
            "CREATE EXTENSION IF NOT EXISTS dblink SCHEMA x",
            "create extension \"dblink\"",
            "DO $$ BEGIN EXECUTE 'CREATE EXTENSION IF NOT EXISTS pg_background'; END $$",
        ] {
            assert!(
                first(s).is_some_and(|w| w.contains(REMOTE_EXTENSION)),
                "{s}"
            );
        }
        assert_eq!(first("CREATE EXTENSION citext"), None);
        assert_eq!(first("CREATE EXTENSION IF NOT EXISTS postgres_fdw"), None);
    }

    #[test]
    fn what_acts_outside_its_transaction_is_named_wherever_it_is_written() {
        let first = |s: &str, on_target| {
            acts_outside_transaction(&split_statements(s).remove(0), on_target)
        };
        assert_eq!(
            first("SELECT setval('t_id_seq', 1)", true).as_deref(),
            Some("setval")
        );
        assert_eq!(first("SELECT setval('t_id_seq', 1)", false), None);
        // Quoted, schema-qualified and quoted, or with a comment before its parenthesis.
        for copy in [
            "DO $$ BEGIN EXECUTE format('COPY (SELECT 1) TO %L', '/tmp/x'); END $$",
            "DO $$ BEGIN EXECUTE 'COPY t FROM PRO'||'GRAM ''id'''; END $$",
            "DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO ' || quote_literal('/tmp/x'); END $$",
        ] {
            assert_eq!(first(copy, false).as_deref(), Some(COPY_FILE), "{copy}");
        }
        for copy in [
            "DO $$ BEGIN EXECUTE 'COPY (SELECT a FROM t) TO STDOUT'; END $$",
            "DO $$ BEGIN EXECUTE 'COPY t FROM stdin'; END $$",
        ] {
            assert_eq!(first(copy, false), None, "{copy}");
        }
        for call in [
            "SELECT \"setval\"('s', 1000)",
            "SELECT pg_catalog.\"setval\"('s', 6)",
            "SELECT setval/**/('s', 7)",
            "SELECT setval -- why\n ('s', 8)",
        ] {
            assert_eq!(first(call, true).as_deref(), Some("setval"), "{call}");
        }
        assert_eq!(
            first(
                "DO $$ BEGIN PERFORM \"pg_terminate_backend\"(pid) FROM pg_stat_activity; END $$",
                false
            )
            .as_deref(),
            Some("pg_terminate_backend")
        );
        assert_eq!(first("SELECT 'setval' AS name", true), None);
        assert_eq!(first("SELECT nextval('t_id_seq')", true), None);
        assert_eq!(
            first(
                "DO $$ BEGIN PERFORM pg_catalog.pg_create_physical_replication_slot('s'); END $$",
                false
            )
            .as_deref(),
            Some("pg_create_physical_replication_slot")
        );
        assert_eq!(
            first(
                "DO $$ BEGIN EXECUTE 'SELECT dblink_exec(''host=x'', ''INSERT 1'')'; END $$",
                false
            )
            .as_deref(),
            Some("dblink_exec")
        );
        assert_eq!(
            first("COPY (SELECT 1) TO '/tmp/f'", false).as_deref(),
            Some(COPY_FILE)
        );
        assert_eq!(
            first("DO $$ BEGIN EXECUTE 'COPY t TO ''/tmp/f'''; END $$", false).as_deref(),
            Some(COPY_FILE)
        );
        assert_eq!(
            first(
                "DO $$ BEGIN EXECUTE 'COPY t FROM PROGRAM ''true'''; END $$",
                false
            )
            .as_deref(),
            Some(COPY_FILE)
        );
        assert_eq!(
            first("SELECT pg_terminate_backend (42)", false).as_deref(),
            Some("pg_terminate_backend")
        );
        // Only a call counts, and only the whole name.
        assert_eq!(
            first("CREATE TABLE copy_to (setval int, lo_export_x int)", true),
            None
        );
        assert_eq!(first("SELECT my_setval(1)", true), None);
    }

    use super::*;

    #[test]
    fn the_main_verb_is_after_the_ctes() {
        for (statement, verb) in [
            ("UPDATE t SET a = 1", "UPDATE"),
            ("with d as (update t set a = 1 returning 1) select count(*) from d", "SELECT"),
            ("WITH RECURSIVE r(x) AS (SELECT 1) , s AS MATERIALIZED (DELETE FROM t RETURNING *) INSERT INTO u SELECT * FROM s", "INSERT"),
            ("WITH \"select\" AS (SELECT 'UPDATE (') DELETE FROM t /* SELECT */ -- SELECT\n WHERE true", "DELETE"),
        ] {
            assert_eq!(main_verb(statement).as_deref(), Some(verb), "{statement}");
        }
    }

    fn texts(script: &str) -> Vec<&str> {
        split_statements(script)
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let script = "CREATE TABLE a (x text DEFAULT ';');\n-- a ; comment\nINSERT INTO a VALUES ($$;$$), (E'\\';'), (\"we;ird\");\n/* ; /* nested ; */ ; */ SELECT 1";
        assert_eq!(
            texts(script),
            vec![
                "CREATE TABLE a (x text DEFAULT ';')",
                "INSERT INTO a VALUES ($$;$$), (E'\\';'), (\"we;ird\")",
                "SELECT 1",
            ]
        );
    }

    #[test]
    fn dollar_tags_and_parameters() {
        let script = "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $$ not the end $$; $body$ LANGUAGE sql;\nPREPARE p AS SELECT $1; SELECT 2";
        let s = texts(script);
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(s[0].ends_with("LANGUAGE sql"));
        assert_eq!(s[1], "PREPARE p AS SELECT $1");
    }

    #[test]
    fn begin_atomic_bodies_stay_whole() {
        let script = "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;\nSELECT 3;";
        let s = texts(script);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].ends_with("END"));
        // Not a body: a column named `atomic` after a `begin` column.
        assert_eq!(texts("SELECT begin atomic FROM x; COMMIT").len(), 2);
    }

    #[test]
    fn parentheses_hold_semicolons() {
        let script = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2));\nSELECT 1";
        assert_eq!(texts(script).len(), 2);
    }

    #[test]
    fn comment_only_scripts_have_no_statement() {
        assert!(split_statements("-- only a comment\n\n/* and this */\n;;").is_empty());
    }

    #[test]
    fn lines_and_keywords() {
        let script = "-- header\n\nCREATE INDEX CONCURRENTLY i ON t (x);\n\n  create unique index concurrently j on t(y)";
        let s = split_statements(script);
        assert_eq!(s[0].line, 3); // the statement's own line, not its leading comment's
        assert_eq!(s[1].line, 5);
        assert_eq!(
            s[1].keywords,
            vec!["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"]
        );
        assert!(requires_no_transaction(&s[0]).is_some());
        assert!(requires_no_transaction(&s[1]).is_some());
        let detach = split_statements(
            "ALTER TABLE measurements DETACH PARTITION m2020 CONCURRENTLY;\nALTER TABLE m DETACH PARTITION p;",
        );
        assert!(requires_no_transaction(&detach[0]).is_some());
        assert!(requires_no_transaction(&detach[1]).is_none());
    }

    #[test]
    fn transaction_control_is_recognised() {
        let kw = |s: &str| split_statements(s).remove(0).keywords;
        assert!(is_transaction_control(&kw("COMMIT")));
        assert!(is_transaction_control(&kw("begin;")));
        assert!(is_transaction_control(&kw("ROLLBACK")));
        assert!(!is_transaction_control(&kw("ROLLBACK TO SAVEPOINT a")));
        assert!(!is_transaction_control(&kw("SAVEPOINT a")));
        assert!(!is_transaction_control(&kw("CREATE TABLE t (x int)")));
    }

    #[test]
    fn character_positions_map_to_bytes() {
        let script = "SELECT 'é';\nSELEC 1";
        let byte = byte_of_char(script, 12);
        assert_eq!(&script[byte..byte + 5], "SELEC");
        assert_eq!(line_of_byte(script, byte), 2);
        assert_eq!(statement_at(script, byte).unwrap().text, "SELEC 1");
    }

    #[test]
    fn begin_atomic_only_when_adjacent_at_top_level() {
        // Two columns named begin and atomic hide no COMMIT.
        let s = split_statements("CREATE INDEX i ON t (begin, atomic);\nCOMMIT;\nSELECT 1");
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(is_transaction_control(&s[1].keywords));
        let s = split_statements("CREATE TABLE t (x int, begin atomic);\nCOMMIT");
        assert_eq!(s.len(), 2, "{s:?}");
        let s = split_statements(
            "CREATE PROCEDURE p() LANGUAGE sql BEGIN /* c */ ATOMIC INSERT INTO t VALUES (1); END;\nCOMMIT",
        );
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].text.ends_with("END"));
    }

    #[test]
    fn a_carriage_return_ends_a_line_comment() {
        let s = split_statements("SELECT 1; -- note\rCOMMIT;\rSELECT 2");
        assert_eq!(s.len(), 3, "{s:?}");
        assert!(is_transaction_control(&s[1].keywords), "{s:?}");
    }

    #[test]
    fn lines_are_counted_in_one_pass() {
        let script = "SELECT 1;\n".repeat(100_000);
        let s = split_statements(&script);
        assert_eq!(s.len(), 100_000);
        assert_eq!(s[99_999].line, 100_000);
    }

    #[test]
    fn statements_the_runner_cannot_run() {
        fn first(sql: &str) -> Statement<'_> {
            split_statements(sql).remove(0)
        }
        for sql in [
            "COPY t (a, b) FROM STDIN WITH (FORMAT csv)",
            "copy t from stdin",
            "COPY (SELECT 1) TO STDOUT",
            "SET client_encoding = 'LATIN1'",
            "SET NAMES 'LATIN1'",
            "set session standard_conforming_strings = off",
            "SELECT set_config('client_encoding', 'LATIN1', false)",
            "SELECT pg_catalog.SET_CONFIG('standard_conforming_strings', 'off', false)",
            "UPDATE pg_settings SET setting = 'LATIN1' WHERE name = 'client_encoding'",
            "DO $$BEGIN PERFORM set_config('client_encoding', 'SQL_ASCII', false); END$$",
            "SELECT pg_advisory_unlock_all()",
            "DO $$BEGIN PERFORM pg_catalog.PG_ADVISORY_UNLOCK_ALL(); END$$",
            "DISCARD ALL",
            "discard all",
        ] {
            assert!(unsupported(&first(sql)).is_some(), "{sql}");
        }
        for sql in [
            "COPY t FROM '/srv/data.csv'",
            "SET search_path = a, public",
            "SELECT 'FROM STDIN'",
            "SELECT set_config('search_path', 'a, public', false)",
            "SELECT current_setting('client_encoding')",
            "SELECT pg_advisory_unlock(42)",
            "DISCARD TEMP",
            "DISCARD PLANS",
        ] {
            assert!(unsupported(&first(sql)).is_none(), "{sql}");
        }
    }

    #[test]
    fn quotes_literals() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
