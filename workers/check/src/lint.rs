//! Lint: squawk's rules (as a library), told whether each file runs inside a transaction, and
//! the few rules squawk has none for. Which rules run and how much each matters is
//! configurable ([`LintRules`]); `-- squawk-ignore RULE` above a statement silences a rule
//! there, for our rules as for squawk's.

use std::collections::{BTreeMap, BTreeSet};

use squawk_linter::{Linter, Rule};
use stepmigrate_core::migration::{Migration, Mode};
use stepmigrate_core::sql;

use crate::types::Columns;
use crate::{advice, tree, Finding, Lines, Script, Severity};

/// Our rules, for what squawk does not look at.
pub const UPDATE_WITHOUT_WHERE: &str = "update-without-where";
pub const DELETE_WITHOUT_WHERE: &str = "delete-without-where";
/// A migration with no down file that does not say `irreversible`: a rollback would refuse it.
pub const MISSING_DOWN: &str = "missing-down";
/// A batch migration whose statement would select rows it already did: it never ends, or
/// changes rows twice.
pub const BATCH_NOT_IDEMPOTENT: &str = "batch-not-idempotent";
/// An `after-deploy` migration that changes the schema: the deployed code runs before it.
pub const AFTER_DEPLOY_SCHEMA_CHANGE: &str = "after-deploy-schema-change";
/// A statement that rewrites a whole table under an ACCESS EXCLUSIVE lock: CLUSTER, VACUUM
/// FULL, SET LOGGED / UNLOGGED, SET ACCESS METHOD, SET TABLESPACE.
pub const TABLE_REWRITE: &str = "table-rewrite";
/// `ADD COLUMN ... serial`: its `nextval()` default fills every existing row (a rewrite).
pub const ADDING_SERIAL_FIELD: &str = "adding-serial-field";
/// `REFRESH MATERIALIZED VIEW` without CONCURRENTLY: readers wait for the whole refresh.
pub const REQUIRE_CONCURRENT_REFRESH: &str = "require-concurrent-refresh";
/// `TRUNCATE`: every row gone, under ACCESS EXCLUSIVE (as `delete-without-where`).
pub const BAN_TRUNCATE: &str = "ban-truncate";
/// A `DO` block: its statements are not linted.
pub const DO_BLOCK_NOT_LINTED: &str = "do-block-not-linted";
/// Every `DROP ... CASCADE`, and `ALTER TABLE ... DROP COLUMN / CONSTRAINT ... CASCADE`: what
/// depends on the object goes too, unnamed. Of a schema, type, domain or extension, tables and
/// columns with their rows; of a function, cast, operator or text search object, a generated
/// column using it (with its values), views, indexes, constraints and defaults; of an operator
/// class, the indexes using it; of a constraint, the foreign keys of other tables.
pub const BAN_DROP_CASCADE: &str = "ban-drop-cascade";
/// `DROP OWNED BY`: every object the role owns in the database, tables with their rows.
pub const BAN_DROP_OWNED: &str = "ban-drop-owned";
/// A partition added (`ATTACH PARTITION`, `CREATE TABLE ... PARTITION OF`) to a table with a
/// DEFAULT partition: the default one is locked ACCESS EXCLUSIVE and scanned.
pub const DEFAULT_PARTITION_SCAN: &str = "default-partition-scan";
/// `ATTACH PARTITION` of a table the migration did not make: PostgreSQL locks it ACCESS
/// EXCLUSIVE and scans every row for the partition bounds (unless a valid CHECK constraint
/// already implies them).
pub const ATTACH_PARTITION_SCAN: &str = "attach-partition-scan";
/// A statement that reads every row of a table under a lock that blocks its writes, with no
/// rewrite to show for it: `ADD COLUMN ... CHECK`, `PRIMARY KEY USING INDEX` of a nullable
/// column (made NOT NULL first), `ALTER DOMAIN ... SET NOT NULL` / `VALIDATE CONSTRAINT`.
pub const BLOCKING_SCAN: &str = "blocking-scan";
/// A statement that reads or writes the rows of a table an earlier statement of the same
/// transaction locked ACCESS EXCLUSIVE (or the same `ALTER TABLE`): the lock, held to the
/// commit, makes every read and write of the table wait for it too.
pub const SCAN_UNDER_HELD_LOCK: &str = "scan-under-held-lock";
/// `ALTER TYPE ... ADD VALUE` inside a transaction block, which PostgreSQL before 12 refuses
/// (unless the type was made in it).
pub const ENUM_VALUE_IN_TRANSACTION: &str = "enum-value-in-transaction";
/// A `-- squawk-ignore` comment naming a rule that does not exist: it silences nothing.
pub const UNKNOWN_IGNORED_RULE: &str = "unknown-ignored-rule";
const OUR_RULES: [&str; 18] = [
    UPDATE_WITHOUT_WHERE,
    DELETE_WITHOUT_WHERE,
    MISSING_DOWN,
    BATCH_NOT_IDEMPOTENT,
    AFTER_DEPLOY_SCHEMA_CHANGE,
    TABLE_REWRITE,
    ADDING_SERIAL_FIELD,
    REQUIRE_CONCURRENT_REFRESH,
    BAN_TRUNCATE,
    DO_BLOCK_NOT_LINTED,
    BAN_DROP_CASCADE,
    BAN_DROP_OWNED,
    DEFAULT_PARTITION_SCAN,
    ATTACH_PARTITION_SCAN,
    BLOCKING_SCAN,
    SCAN_UNDER_HELD_LOCK,
    ENUM_VALUE_IN_TRANSACTION,
    UNKNOWN_IGNORED_RULE,
];
/// Our rules that fail the check unless configured otherwise (the data-losing ones, like
/// squawk's below, and what the target refuses).
const OUR_ERRORS: [&str; 4] = [
    BATCH_NOT_IDEMPOTENT,
    BAN_DROP_CASCADE,
    BAN_DROP_OWNED,
    ENUM_VALUE_IN_TRANSACTION,
];

/// squawk rules that fail the check unless configured otherwise: they lose data, or they break
/// the runner's all-or-nothing promise for the file.
const ERRORS_BY_DEFAULT: [&str; 7] = [
    "ban-drop-database",
    "ban-drop-table",
    "ban-drop-column",
    "ban-truncate-cascade",
    "transaction-nesting",
    "ban-concurrent-index-creation-in-transaction",
    "ban-uncommitted-transaction",
];

/// squawk rules that are on in squawk but off here: the runner sets `lock_timeout` and
/// `statement_timeout` for every migration itself (a file's header may change them).
const OFF_BY_DEFAULT: [&str; 2] = ["require-lock-timeout", "require-statement-timeout"];

/// How a configuration sets one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSetting {
    Off,
    On(Severity),
}

impl std::str::FromStr for RuleSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<RuleSetting, String> {
        match s {
            "off" => Ok(RuleSetting::Off),
            "error" => Ok(RuleSetting::On(Severity::Error)),
            "warning" => Ok(RuleSetting::On(Severity::Warning)),
            other => Err(format!(
                "unknown severity {other:?}: use \"error\", \"warning\" or \"off\""
            )),
        }
    }
}

/// The rules a check runs, each with its severity.
#[derive(Debug, Clone)]
pub struct LintRules {
    enabled: BTreeMap<String, Severity>,
    pg_version: Option<squawk_linter::Version>,
    /// The target's major version, when given: syntax newer than it is an error.
    pg_major: Option<u32>,
    /// For a down file: the objects its up file made (`kind:name`), which it may drop with
    /// CASCADE (what depends on them was made with them, or after them).
    made_by_up: Option<BTreeSet<String>>,
}

impl Default for LintRules {
    /// squawk's default rules (minus the timeout ones, see above) and ours, as warnings, with
    /// the data-losing and transaction-breaking ones as errors.
    fn default() -> LintRules {
        let mut enabled = BTreeMap::new();
        for rule in enum_iterator::all::<Rule>() {
            let name = rule.to_string();
            if rule.is_opt_in()
                || !rule.expands_to().is_empty()
                || OFF_BY_DEFAULT.contains(&name.as_str())
                || rule == Rule::UnusedIgnore
            {
                continue;
            }
            let severity = if ERRORS_BY_DEFAULT.contains(&name.as_str()) {
                Severity::Error
            } else {
                Severity::Warning
            };
            enabled.insert(name, severity);
        }
        for name in OUR_RULES {
            let severity = if OUR_ERRORS.contains(&name) {
                Severity::Error
            } else {
                Severity::Warning
            };
            enabled.insert(name.to_owned(), severity);
        }
        LintRules {
            enabled,
            pg_version: None,
            pg_major: None,
            made_by_up: None,
        }
    }
}

impl LintRules {
    /// Every rule name a configuration may use, sorted.
    pub fn known_rules() -> BTreeSet<String> {
        enum_iterator::all::<Rule>()
            .filter(|r| *r != Rule::UnusedIgnore)
            .map(|r| r.to_string())
            .chain(OUR_RULES.iter().map(|r| r.to_string()))
            .collect()
    }

    /// The canonical name of `name`, or why it is not a rule.
    fn canonical(name: &str) -> Result<Vec<String>, String> {
        if OUR_RULES.contains(&name) {
            return Ok(vec![name.to_owned()]);
        }
        match name.parse::<Rule>() {
            Ok(Rule::UnusedIgnore) | Err(_) => Err(unknown_rule(name)),
            Ok(rule) if !rule.expands_to().is_empty() => {
                Ok(rule.expands_to().iter().map(Rule::to_string).collect())
            }
            Ok(rule) => Ok(vec![rule.to_string()]),
        }
    }

    /// Switches a rule on (an opt-in rule, or one that is off here by default) with its
    /// default severity, warning.
    pub fn enable(&mut self, name: &str) -> Result<(), String> {
        for rule in Self::canonical(name)? {
            self.enabled.entry(rule).or_insert(Severity::Warning);
        }
        Ok(())
    }

    pub fn disable(&mut self, name: &str) -> Result<(), String> {
        for rule in Self::canonical(name)? {
            self.enabled.remove(&rule);
        }
        Ok(())
    }

    /// Sets a rule's severity (which switches it on), or switches it off.
    pub fn set(&mut self, name: &str, setting: RuleSetting) -> Result<(), String> {
        for rule in Self::canonical(name)? {
            match setting {
                RuleSetting::Off => self.enabled.remove(&rule),
                RuleSetting::On(severity) => self.enabled.insert(rule, severity),
            };
        }
        Ok(())
    }

    /// The PostgreSQL version the migrations will run on (some advice depends on it, e.g. a
    /// column with a constant default is cheap from 11 on).
    pub fn set_pg_version(&mut self, version: &str) -> Result<(), String> {
        let invalid = || {
            format!("invalid PostgreSQL version {version:?}: write its major version, e.g. \"15\" or \"15.4\"")
        };
        version
            .parse::<squawk_linter::Version>()
            .map_err(|_| invalid())?;
        // PostgreSQL 9.6 is the oldest anyone still runs; 0 or 1 is a typo.
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.trim().parse().ok())
            .ok_or_else(invalid)?;
        if !(9..=99).contains(&major) {
            return Err(invalid());
        }
        // A major version after the next one is a typo ("95" for 9.5, "150" for 15).
        let newest = crate::versions::EMBEDDED_MAJOR + 1;
        if major > newest {
            return Err(format!(
                "PostgreSQL {version:?} is newer than any `check` knows ({newest} is the newest it accepts): give the server's major version, e.g. \"15\" or \"9.6\""
            ));
        }
        // Before 10 a major version had two parts; 9.6 is the oldest one known here, and the
        // only 9.x whose name the messages can give (they say "9.6" for 9).
        let minor = version.trim().split('.').nth(1).unwrap_or("");
        if major == 9 && minor != "6" {
            return Err(format!(
                "PostgreSQL {version:?} is older than 9.6, the oldest version `check` knows the syntax of: give 9.6 or later"
            ));
        }
        // squawk compares versions field by field, and "11" (no minor) is below its "11":
        // its fast-default rule would then call every default on 11 a rewrite. A bare major
        // version means its first release, `.0`.
        let full = if version.contains('.') {
            version.trim().to_owned()
        } else {
            format!("{major}.0")
        };
        self.pg_version = Some(full.parse().map_err(|_| invalid())?);
        // 9.6 is kept as 9 (nothing here is older): `versions::name` gives it back as "9.6".
        self.pg_major = Some(major);
        Ok(())
    }

    /// The target server's major version, when one was given (`--pg-version`, the project
    /// file's `pg_version`). Without one, syntax is held to the embedded grammar only, and
    /// squawk's advice assumes PostgreSQL 15 (its default).
    pub fn pg_major(&self) -> Option<u32> {
        self.pg_major
    }

    /// The rules for down migrations: undoing is dropping and renaming back, so the rules
    /// against those (squawk's `ban-drop-*` and `renaming-*`, `ban-truncate`) are off; the
    /// rest (locks, rewrites, transactions) still hold for a rollback run in production, and
    /// so do the ones against losing what the up file did not make: `delete-without-where`,
    /// `ban-drop-owned` and `ban-drop-cascade` (of an object its up file did not make, see
    /// [`LintRules::for_down_of`]).
    pub fn for_down_migrations(&self) -> LintRules {
        let mut rules = self.clone();
        rules.enabled.retain(|name, _| {
            !((name.starts_with("ban-drop-") && name != BAN_DROP_CASCADE && name != BAN_DROP_OWNED)
                || name.starts_with("renaming-")
                || name == "ban-truncate-cascade"
                || name == BAN_TRUNCATE)
        });
        rules
    }

    /// [`LintRules::for_down_migrations`] for the down file of `up_sql`: a `DROP ... CASCADE`
    /// of what the up file made (a schema, a type, a column) is its undoing, not a finding.
    pub fn for_down_of(&self, up_sql: &str) -> LintRules {
        let mut rules = self.for_down_migrations();
        rules.made_by_up = Some(made_objects(up_sql));
        rules
    }

    pub fn severity(&self, rule: &str) -> Option<Severity> {
        self.enabled.get(rule).copied()
    }

    fn squawk_rules(&self) -> Vec<Rule> {
        self.enabled
            .keys()
            .filter_map(|name| name.parse::<Rule>().ok())
            .collect()
    }
}

fn unknown_rule(name: &str) -> String {
    let suggestion = LintRules::known_rules()
        .into_iter()
        .min_by_key(|known| edit_distance(known, name))
        .filter(|known| edit_distance(known, name) <= 3)
        .map(|known| format!(" (did you mean {known:?}?)"))
        .unwrap_or_default();
    format!("unknown lint rule {name:?}{suggestion}; `stepmigrate check --list-rules` lists them")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

/// The lint findings of a script PostgreSQL's grammar accepts.
pub fn lint(script: &Script<'_>, rules: &LintRules) -> Vec<Finding> {
    lint_with(script, rules, &mut Columns::default())
}

/// [`lint`] with the column types the migrations before the script made, which it updates.
pub fn lint_with(script: &Script<'_>, rules: &LintRules, columns: &mut Columns) -> Vec<Finding> {
    // The tables as the migrations before this script left them: the rules that follow the
    // script statement by statement learn its own from them.
    let before = columns.clone();
    let facts = advice::facts(
        script.sql,
        script.mode != Mode::NoTransaction,
        columns,
        rules.pg_major(),
    );
    let mut used = vec![false; facts.len()];
    let mut findings = squawk_findings(script, rules, &facts, &mut used);
    findings.extend(own_facts(script, rules, &facts, &used));
    findings.extend(our_findings(script, rules, &before));
    findings.sort_by_key(|f| (f.line, f.column));
    findings
}

fn squawk_findings(
    script: &Script<'_>,
    rules: &LintRules,
    facts: &[advice::Fact],
    used: &mut [bool],
) -> Vec<Finding> {
    let squawk_rules = rules.squawk_rules();
    if squawk_rules.is_empty() {
        return Vec::new();
    }
    let parse = squawk_syntax::SourceFile::parse(script.sql);
    let lines = Lines::new(script.sql);
    let mut linter = Linter::from(squawk_rules);
    // The runner wraps a transactional file in a transaction: squawk must judge its
    // statements as running inside one (CONCURRENTLY is then an error, not advice).
    linter.settings.assume_in_transaction = script.mode != Mode::NoTransaction;
    if let Some(version) = &rules.pg_version {
        linter.settings.pg_version = *version;
    }
    linter
        .lint(&parse, script.sql)
        .into_iter()
        .filter_map(|v| {
            let rule = v.code.to_string();
            let severity = rules.severity(&rule)?;
            let offset = usize::from(v.text_range.start());
            let (line, column) = lines.at(offset);
            let docs = format!("https://squawkhq.com/docs/{rule}");
            // squawk's words where they are true; ours where they depend on the statement.
            let (message, help) = match advice::revise(facts, &rule, offset, &v.message, used)? {
                Some(said) => said,
                None => (v.message, v.help),
            };
            let help = match help {
                Some(help) => format!("{help} ({docs})"),
                None => docs,
            };
            Some(Finding {
                file: script.path.to_owned(),
                line,
                column,
                rule,
                severity,
                message,
                help: Some(help),
            })
        })
        .collect()
}

/// The rewrites squawk does not report that the facts know for certain (a volatile call in an
/// `ARRAY[...]` default, a column of a domain with constraints), under the rule they belong to.
fn own_facts(
    script: &Script<'_>,
    rules: &LintRules,
    facts: &[advice::Fact],
    used: &[bool],
) -> Vec<Finding> {
    let lines = Lines::new(script.sql);
    let text_lines = comment_lines(script.sql);
    facts
        .iter()
        .zip(used)
        .filter(|(f, used)| f.own && !**used)
        .filter_map(|(f, _)| {
            let rule = f.rule();
            let severity = rules.severity(rule)?;
            let (message, help) = f.says.clone()?;
            let statement_line = lines.at(f.statement_start()).0;
            if ignored_in_file(&text_lines, rule) || ignored(&text_lines, statement_line, rule) {
                return None;
            }
            let (line, column) = lines.at(f.offset());
            // squawk's rules link their page, as squawk's own findings do.
            let help = match (help, rule.parse::<Rule>().is_ok()) {
                (Some(help), true) => Some(format!("{help} (https://squawkhq.com/docs/{rule})")),
                (help, _) => help,
            };
            Some(Finding {
                file: script.path.to_owned(),
                line,
                column,
                rule: rule.to_owned(),
                severity,
                message,
                help,
            })
        })
        .collect()
}

/// A batch statement runs again until it changes no row, so it must select only rows not done
/// yet: an UPDATE whose filter reads a column it sets (`WHERE c IS NULL` with `SET c = ...`),
/// an INSERT whose source leaves out rows already in its target (`WHERE NOT EXISTS (...)`).
/// A DELETE is done by construction. What this cannot see (a filter on another table the
/// statement changes through a trigger) it leaves alone.
fn batch_findings(script: &Script<'_>, severity: Severity) -> Vec<Finding> {
    use pg_query::NodeRef;
    let mut findings = Vec::new();
    let lines = Lines::new(script.sql);
    let text_lines = comment_lines(script.sql);
    if ignored_in_file(&text_lines, BATCH_NOT_IDEMPOTENT) {
        return findings;
    }
    for statement in sql::lex(script.sql).statements {
        if ignored(&text_lines, statement.line, BATCH_NOT_IDEMPOTENT) {
            continue;
        }
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        let Some(top) = parsed
            .protobuf
            .stmts
            .first()
            .and_then(|s| s.stmt.as_ref())
            .and_then(|s| s.node.as_ref())
        else {
            continue;
        };
        let everything = top.nodes();
        // The subqueries that pick a batch: those with a LIMIT (`LIMIT :batch_size`).
        let pickers: Vec<&pg_query::protobuf::SelectStmt> = everything
            .iter()
            .filter_map(|(n, _, _, _)| match n {
                NodeRef::SelectStmt(s) if s.limit_count.is_some() => Some(*s),
                _ => None,
            })
            .collect();
        let deletes = everything
            .iter()
            .any(|(n, _, _, _)| matches!(n, NodeRef::DeleteStmt(_)));
        let problem = match top {
            pg_query::NodeEnum::UpdateStmt(u) => {
                let set: BTreeSet<String> = u
                    .target_list
                    .iter()
                    .filter_map(|t| match t.node.as_ref() {
                        Some(pg_query::NodeEnum::ResTarget(r)) => Some(r.name.clone()),
                        _ => None,
                    })
                    .collect();
                let list = set.iter().cloned().collect::<Vec<_>>().join(", ");
                if u.where_clause.is_none() && pickers.is_empty() {
                    Some("the UPDATE has no WHERE: every batch would change the whole table again, and it would never change no row".to_owned())
                } else if batch_pickers_blind(top, u, &set) {
                    Some(format!(
                        "the subquery that picks a batch (its LIMIT) does not filter on what the UPDATE sets ({list}): it picks rows already done, so the migration stops early or never ends"
                    ))
                } else if pickers.is_empty()
                    && !reads_own_column(
                        u.where_clause.as_deref(),
                        &mut vec![update_scope(u)],
                        u.relation.as_ref(),
                        &set,
                    )
                {
                    Some(format!(
                        "the UPDATE's WHERE does not read what it sets ({list}): a row done by one batch is selected again by the next, so the migration changes rows twice and never ends"
                    ))
                } else {
                    None
                }
            }
            pg_query::NodeEnum::InsertStmt(i) if !deletes => {
                let target = i
                    .relation
                    .as_ref()
                    .map(|r| r.relname.clone())
                    .unwrap_or_default();
                let reads_of_target = everything
                    .iter()
                    .filter(|(n, _, _, _)| matches!(n, NodeRef::RangeVar(r) if r.relname == target))
                    .count();
                // The target itself is one of them.
                (reads_of_target < 2).then(|| format!(
                    "the INSERT's source does not leave out rows already in {target}: each batch would pick the same rows again (e.g. add `WHERE NOT EXISTS (SELECT 1 FROM {target} WHERE ...)`)"
                ))
            }
            _ => None,
        };
        if let Some(message) = problem {
            let (line, column) = lines.at(statement.offset);
            findings.push(Finding {
                file: script.path.to_owned(),
                line,
                column,
                rule: BATCH_NOT_IDEMPOTENT.to_owned(),
                severity,
                message,
                help: Some("A batch statement must select only rows not done yet, e.g. `UPDATE t SET c = ... WHERE id IN (SELECT id FROM t WHERE c IS NULL ORDER BY id LIMIT :batch_size)`, so that running it again after a batch (or after an interrupted run) continues where it was.".to_owned()),
            });
        }
    }
    findings
}

/// The relations a query's FROM names, each by the name it is referred to with (its alias,
/// else its name), and whether it is the batch's target table.
type Scope = Vec<(String, bool)>;

/// The scope of an UPDATE's own WHERE: its table and its FROM's.
fn update_scope(u: &pg_query::protobuf::UpdateStmt) -> Scope {
    let mut scope = Scope::new();
    if let Some(r) = &u.relation {
        let name = r.alias.as_ref().map_or(&r.relname, |a| &a.aliasname);
        scope.push((name.clone(), true));
        for f in &u.from_clause {
            from_items(f, r, &mut scope);
        }
    }
    scope
}

fn from_items(
    node: &pg_query::protobuf::Node,
    target: &pg_query::protobuf::RangeVar,
    scope: &mut Scope,
) {
    let json = serde_json::to_value(node).unwrap_or_default();
    from_items_of(&json, target, scope);
}

/// The relations of one FROM item, as JSON (`{"node": {"RangeVar": ...}}`).
fn from_items_of(
    item: &serde_json::Value,
    target: &pg_query::protobuf::RangeVar,
    scope: &mut Scope,
) {
    use serde_json::Value;
    let Some(Value::Object(node)) = item.get("node") else {
        return;
    };
    let Some((kind, Value::Object(f))) = node.iter().next() else {
        return;
    };
    let alias = f
        .get("alias")
        .and_then(|a| a.get("aliasname"))
        .and_then(Value::as_str);
    match kind.as_str() {
        "RangeVar" => {
            let relname = tree::string(f, "relname");
            let schema = tree::string(f, "schemaname");
            let is = relname == target.relname
                && (schema.is_empty()
                    || target.schemaname.is_empty()
                    || schema == target.schemaname);
            scope.push((alias.unwrap_or(relname).to_owned(), is));
        }
        "JoinExpr" => {
            for side in ["larg", "rarg"] {
                if let Some(side) = f.get(side) {
                    from_items_of(side, target, scope);
                }
            }
        }
        "RangeSubselect" | "RangeFunction" | "RangeTableFunc" => {
            scope.push((alias.unwrap_or_default().to_owned(), false));
        }
        _ => {}
    }
}

/// Whether `node` reads one of the columns `set` of the target table: a column reference that
/// resolves to it (an unqualified one to the innermost query's FROM that has any relation, a
/// qualified one to the innermost relation of that name), at any depth.
fn reads_own_column(
    node: Option<&pg_query::protobuf::Node>,
    scopes: &mut Vec<Scope>,
    target: Option<&pg_query::protobuf::RangeVar>,
    set: &BTreeSet<String>,
) -> bool {
    let (Some(node), Some(target)) = (node, target) else {
        return false;
    };
    let json = serde_json::to_value(node).unwrap_or_default();
    reads_in(&json, scopes, target, set)
}

fn reads_in(
    value: &serde_json::Value,
    scopes: &mut Vec<Scope>,
    target: &pg_query::protobuf::RangeVar,
    set: &BTreeSet<String>,
) -> bool {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().any(|v| reads_in(v, scopes, target, set)),
        Value::Object(map) => {
            if let Some(Value::Object(node)) = map.get("node") {
                if let Some(Value::Object(c)) = node.get("ColumnRef") {
                    let fields: Vec<Option<&str>> = c
                        .get("fields")
                        .and_then(Value::as_array)
                        .map(|fs| {
                            fs.iter()
                                .map(|x| x.pointer("/node/String/sval").and_then(Value::as_str))
                                .collect()
                        })
                        .unwrap_or_default();
                    return match fields.as_slice() {
                        [Some(column)] => {
                            set.contains(*column)
                                && scopes
                                    .iter()
                                    .rev()
                                    .find(|s| !s.is_empty())
                                    .is_some_and(|s| s.iter().any(|(_, t)| *t))
                        }
                        [.., Some(q), Some(column)] => {
                            set.contains(*column)
                                && scopes
                                    .iter()
                                    .rev()
                                    .find_map(|s| s.iter().find(|(n, _)| n == q))
                                    .is_some_and(|(_, t)| *t)
                        }
                        _ => false,
                    };
                }
                if let Some(Value::Object(select)) = node.get("SelectStmt") {
                    let scope = select_scope(select, target);
                    scopes.push(scope);
                    let found = select.values().any(|v| reads_in(v, scopes, target, set));
                    scopes.pop();
                    return found;
                }
            }
            map.values().any(|v| reads_in(v, scopes, target, set))
        }
        _ => false,
    }
}

fn select_scope(
    select: &serde_json::Map<String, serde_json::Value>,
    target: &pg_query::protobuf::RangeVar,
) -> Scope {
    let mut scope = Scope::new();
    if let Some(serde_json::Value::Array(items)) = select.get("from_clause") {
        for item in items {
            from_items_of(item, target, &mut scope);
        }
    }
    scope
}

/// Whether a subquery that picks a batch (one with a LIMIT) of an UPDATE does not read what
/// the UPDATE sets of its own table in its WHERE.
fn batch_pickers_blind(
    top: &pg_query::NodeEnum,
    u: &pg_query::protobuf::UpdateStmt,
    set: &BTreeSet<String>,
) -> bool {
    use serde_json::Value;
    let Some(target) = &u.relation else {
        return false;
    };
    // Walks the statement keeping the scopes, and judges each picker's WHERE in them.
    fn walk(
        value: &Value,
        scopes: &mut Vec<Scope>,
        target: &pg_query::protobuf::RangeVar,
        set: &BTreeSet<String>,
        blind: &mut bool,
    ) {
        match value {
            Value::Array(items) => items
                .iter()
                .for_each(|v| walk(v, scopes, target, set, blind)),
            Value::Object(map) => {
                if let Some(Value::Object(select)) =
                    map.get("node").and_then(|n| n.get("SelectStmt"))
                {
                    scopes.push(select_scope(select, target));
                    let picks = select.get("limit_count").is_some_and(|l| !l.is_null());
                    if picks {
                        let reads = select
                            .get("where_clause")
                            .is_some_and(|w| reads_in(w, scopes, target, set));
                        *blind |= !reads;
                    }
                    select
                        .values()
                        .for_each(|v| walk(v, scopes, target, set, blind));
                    scopes.pop();
                    return;
                }
                map.values()
                    .for_each(|v| walk(v, scopes, target, set, blind));
            }
            _ => {}
        }
    }
    let json = match top {
        pg_query::NodeEnum::UpdateStmt(u) => serde_json::to_value(u).unwrap_or_default(),
        _ => return false,
    };
    let mut blind = false;
    walk(&json, &mut vec![update_scope(u)], target, set, &mut blind);
    blind
}

/// An `after-deploy` migration runs after the deployed code started, and newer migrations may
/// run before it: a schema change there is one the code and those migrations cannot count
/// on. Index builds and maintenance are what belongs there beside data changes, so they pass.
pub fn after_deploy_findings(m: &Migration, rules: &LintRules) -> Vec<Finding> {
    let Some(severity) = rules
        .severity(AFTER_DEPLOY_SCHEMA_CHANGE)
        .filter(|_| m.directives.after_deploy)
    else {
        return Vec::new();
    };
    let text_lines = comment_lines(&m.sql);
    if ignored_in_file(&text_lines, AFTER_DEPLOY_SCHEMA_CHANGE) {
        return Vec::new();
    }
    sql::lex(&m.sql)
        .statements
        .iter()
        .filter(|s| changes_the_schema(&s.keywords, s.text))
        .filter(|s| !ignored(&text_lines, s.line, AFTER_DEPLOY_SCHEMA_CHANGE))
        .map(|s| Finding {
            file: m.path.clone(),
            line: s.line,
            column: 1,
            rule: AFTER_DEPLOY_SCHEMA_CHANGE.into(),
            severity,
            message: format!(
                "`{}` changes the schema in an after-deploy migration: the deployed code, and newer migrations that do not `requires` this one, run before it",
                head(s.text)
            ),
            help: Some("Move the schema change to a migration of its own that runs with the deploy, and keep after-deploy for data changes and index builds; a migration that needs this one says `-- stepmigrate: requires = VERSION`.".into()),
        })
        .collect()
}

/// DDL other than index builds, temporary tables and validating a constraint (what a long
/// after-deploy step does beside changing data). A heuristic on the statement's words.
fn changes_the_schema(keywords: &[String], text: &str) -> bool {
    let word = |i: usize| keywords.get(i).map_or("", String::as_str);
    let words: Vec<String> = text
        .split_whitespace()
        .map(str::to_ascii_uppercase)
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    match word(0) {
        "CREATE" => !matches!(
            (word(1), word(2)),
            ("INDEX", _) | ("UNIQUE", "INDEX") | ("TEMP" | "TEMPORARY", _)
        ),
        "DROP" => word(1) != "INDEX",
        "ALTER" => {
            let only_validates =
                word(1) == "TABLE" && has("VALIDATE") && !has("ADD") && !has("DROP");
            !only_validates
        }
        "COMMENT" | "GRANT" | "REVOKE" | "IMPORT" => true,
        // `SELECT ... INTO t` creates a table.
        "SELECT" => has("INTO"),
        _ => false,
    }
}

/// The statement's first line, at most 60 characters, for a message.
fn head(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(60) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_owned(),
    }
}

fn our_findings(script: &Script<'_>, rules: &LintRules, columns: &Columns) -> Vec<Finding> {
    let mut findings = match (script.mode, rules.severity(BATCH_NOT_IDEMPOTENT)) {
        (Mode::Batch, Some(severity)) => batch_findings(script, severity),
        _ => Vec::new(),
    };
    findings.extend(without_where(script, rules, columns));
    findings.extend(locks_and_rewrites(script, rules));
    findings.extend(enum_values_in_transaction(script, rules));
    findings.extend(unknown_ignored_rules(script, rules));
    findings
}

/// `-- squawk-ignore RULE` and `-- squawk-ignore-file RULE` of a rule no one has: a typo
/// (`ban-drop-columns`) that silences nothing, while the author thinks it does.
fn unknown_ignored_rules(script: &Script<'_>, rules: &LintRules) -> Vec<Finding> {
    let Some(severity) = rules.severity(UNKNOWN_IGNORED_RULE) else {
        return Vec::new();
    };
    let known = LintRules::known_rules();
    let mut findings = Vec::new();
    for (i, line) in Lines::split(script.sql).into_iter().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        let comment = comment.trim_start();
        let Some(rest) = comment
            .strip_prefix("squawk-ignore-file")
            .or_else(|| comment.strip_prefix("squawk-ignore"))
        else {
            continue;
        };
        let list = rest.split("--").next().unwrap_or("");
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            // squawk's own `unused-ignore` and the rules that expand to others are names too.
            if known.contains(name) || name.parse::<Rule>().is_ok() {
                continue;
            }
            let column = line
                .find(name)
                .map_or(1, |at| line[..at].chars().count() + 1);
            findings.push(Finding {
                file: script.path.to_owned(),
                line: i + 1,
                column,
                rule: UNKNOWN_IGNORED_RULE.to_owned(),
                severity,
                message: format!("`squawk-ignore` names no rule here: {}", unknown_rule(name)),
                help: Some("Name the rule as `stepmigrate check --list-rules` lists it: a misspelled one silences nothing.".into()),
            });
        }
    }
    findings
}

/// Before PostgreSQL 12, `ALTER TYPE ... ADD VALUE` cannot run inside a transaction block,
/// unless the type was made in that transaction.
fn enum_values_in_transaction(script: &Script<'_>, rules: &LintRules) -> Vec<Finding> {
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::TransactionStmtKind as K;
    let (Some(severity), Some(target)) = (
        rules.severity(ENUM_VALUE_IN_TRANSACTION),
        rules.pg_major().filter(|v| *v < 12),
    ) else {
        return Vec::new();
    };
    let lines = Lines::new(script.sql);
    let text_lines = comment_lines(script.sql);
    if ignored_in_file(&text_lines, ENUM_VALUE_IN_TRANSACTION) {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let mut in_tx = script.mode != Mode::NoTransaction;
    // The enum types made in the transaction block that is open.
    let mut made: BTreeSet<String> = BTreeSet::new();
    let last = |names: &[pg_query::protobuf::Node]| match names.last().and_then(|n| n.node.as_ref())
    {
        Some(N::String(s)) => s.sval.clone(),
        _ => String::new(),
    };
    for statement in sql::lex(script.sql).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        for raw in &parsed.protobuf.stmts {
            match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                Some(N::TransactionStmt(t)) => match K::try_from(t.kind) {
                    Ok(K::TransStmtBegin | K::TransStmtStart) => in_tx = true,
                    Ok(K::TransStmtCommit | K::TransStmtRollback) => {
                        in_tx = false;
                        made.clear();
                    }
                    _ => {}
                },
                Some(N::CreateEnumStmt(e)) if in_tx => {
                    made.insert(last(&e.type_name));
                }
                // `ADD VALUE` (a RENAME VALUE names the old one).
                Some(N::AlterEnumStmt(e)) if in_tx && e.old_val.is_empty() => {
                    let name = last(&e.type_name);
                    if made.contains(&name)
                        || ignored(&text_lines, statement.line, ENUM_VALUE_IN_TRANSACTION)
                    {
                        continue;
                    }
                    let (line, column) = lines.at(statement.offset);
                    findings.push(Finding {
                        file: script.path.to_owned(),
                        line,
                        column,
                        rule: ENUM_VALUE_IN_TRANSACTION.to_owned(),
                        severity,
                        message: format!(
                            "`ALTER TYPE {name} ADD VALUE` inside a transaction block: PostgreSQL {} refuses it (\"ALTER TYPE ... ADD cannot run inside a transaction block\"; from 12 it is accepted)",
                            crate::versions::name(target)
                        ),
                        help: Some("Move it to a migration of its own that starts with `-- stepmigrate: no-transaction` (each statement then runs on its own, outside a transaction block).".into()),
                    });
                }
                _ => {}
            }
        }
    }
    findings
}

/// How long a lock taken by a statement of this script is held.
fn held(mode: Mode) -> &'static str {
    match mode {
        Mode::NoTransaction => "until the statement ends",
        Mode::Batch => "until its batch commits",
        _ => "until the migration commits",
    }
}

/// The statements squawk is silent on that rewrite or empty a table under an ACCESS EXCLUSIVE
/// lock, or drop tables and columns it does not name, and `DO` blocks, whose statements no
/// rule reads.
fn locks_and_rewrites(script: &Script<'_>, rules: &LintRules) -> Vec<Finding> {
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::AlterTableType as At;
    let lines = Lines::new(script.sql);
    let text_lines = comment_lines(script.sql);
    let on = |rule: &str| {
        rules
            .severity(rule)
            .filter(|_| !ignored_in_file(&text_lines, rule))
    };
    let held = held(script.mode);
    let blocks = format!("blocking its reads and writes {held}");
    let mut findings = Vec::new();
    for statement in sql::lex(script.sql).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        let mut found: Vec<(&'static str, String, String)> = Vec::new();
        let rewrite_help = "On a large table, run it in a maintenance window or use an online tool (pg_repack; REPACK CONCURRENTLY from PostgreSQL 19); `stepmigrate verify` shows the rewrite.".to_owned();
        for raw in &parsed.protobuf.stmts {
            let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
                continue;
            };
            let name = |r: Option<&pg_query::protobuf::RangeVar>| {
                r.map_or_else(
                    || "every table clustered before".to_owned(),
                    |r| {
                        if r.schemaname.is_empty() {
                            r.relname.clone()
                        } else {
                            format!("{}.{}", r.schemaname, r.relname)
                        }
                    },
                )
            };
            match node {
                N::ClusterStmt(c) => found.push((
                    TABLE_REWRITE,
                    format!(
                        "`CLUSTER` rewrites {} and its indexes under an ACCESS EXCLUSIVE lock, {blocks}",
                        name(c.relation.as_ref())
                    ),
                    rewrite_help.clone(),
                )),
                N::VacuumStmt(v) => {
                    // `FULL`, `FULL true`, not `FULL false` (or off, 0).
                    let full = v.options.iter().any(|o| {
                        matches!(o.node.as_ref(), Some(N::DefElem(d)) if d.defname == "full"
                            && !match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                                Some(N::Boolean(b)) => !b.boolval,
                                Some(N::String(s)) => ["false", "off", "0", "no"]
                                    .contains(&s.sval.to_ascii_lowercase().as_str()),
                                Some(N::Integer(i)) => i.ival == 0,
                                _ => false,
                            })
                    });
                    if v.is_vacuumcmd && full {
                        let tables: Vec<String> = v
                            .rels
                            .iter()
                            .filter_map(|r| match r.node.as_ref() {
                                Some(N::VacuumRelation(v)) => Some(name(v.relation.as_ref())),
                                _ => None,
                            })
                            .collect();
                        let tables = if tables.is_empty() {
                            "every table of the database".to_owned()
                        } else {
                            tables.join(", ")
                        };
                        found.push((
                            TABLE_REWRITE,
                            format!("`VACUUM FULL` rewrites {tables} under an ACCESS EXCLUSIVE lock, {blocks}"),
                            rewrite_help.clone(),
                        ));
                    }
                }
                N::AlterTableStmt(a) => {
                    let table = name(a.relation.as_ref());
                    for cmd in &a.cmds {
                        let Some(N::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                            continue;
                        };
                        let cascade =
                            cmd.behavior == pg_query::protobuf::DropBehavior::DropCascade as i32;
                        let made_by_up = |kind: &str| {
                            rules
                                .made_by_up
                                .as_ref()
                                .is_some_and(|made| made.contains(&format!("{kind}:{}", cmd.name)))
                        };
                        match At::try_from(cmd.subtype) {
                            Ok(At::AtDropColumn) if cascade && !made_by_up("column") => found.push((
                                BAN_DROP_CASCADE,
                                format!("`DROP COLUMN {} ... CASCADE` also drops everything that depends on the column, without naming it: the views, indexes and constraints that use it, and the foreign keys of other tables that reference it", cmd.name),
                                "Drop the views, indexes and constraints that use the column by name first (the lint then judges each), and the column without CASCADE, which fails if anything still depends on it.".into(),
                            )),
                            Ok(At::AtAddConstraint) => {
                                if let Some(N::Constraint(c)) = cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                                    if c.contype == pg_query::protobuf::ConstrType::ConstrPrimary as i32 && !c.indexname.is_empty() {
                                        found.push((
                                            BLOCKING_SCAN,
                                            format!("`ADD {}PRIMARY KEY USING INDEX {}` first makes each column of the index NOT NULL that is not already: a full scan of {table} under an ACCESS EXCLUSIVE lock, {blocks}", if c.conname.is_empty() { String::new() } else { format!("CONSTRAINT {} ", c.conname) }, c.indexname),
                                            "Make the columns NOT NULL first without a long lock: `ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID`, `VALIDATE CONSTRAINT` in a later migration, then `ALTER COLUMN col SET NOT NULL` (from PostgreSQL 12 the valid CHECK spares the scan) and drop the CHECK.".into(),
                                        ));
                                    }
                                }
                            }
                            Ok(At::AtDropConstraint) if cascade && !made_by_up("constraint") => found.push((
                                BAN_DROP_CASCADE,
                                format!("`DROP CONSTRAINT {} ... CASCADE` also drops everything that depends on the constraint, without naming it: the foreign keys of other tables that reference the key it is", cmd.name),
                                "Drop the foreign keys that reference it by name first (the lint then judges each), and the constraint without CASCADE, which fails if anything still depends on it.".into(),
                            )),
                            _ => {}
                        }
                        let what = match At::try_from(cmd.subtype) {
                            Ok(At::AtSetLogged) => "`SET LOGGED` rewrites",
                            Ok(At::AtSetUnLogged) => "`SET UNLOGGED` rewrites",
                            Ok(At::AtSetAccessMethod) => "`SET ACCESS METHOD` rewrites",
                            // A stored generated column computed again for every row (17+).
                            Ok(At::AtSetExpression) => "`ALTER COLUMN ... SET EXPRESSION` computes the generated column again for every row: it rewrites",
                            // The relation named only: a table's indexes stay where they are.
                            Ok(At::AtSetTableSpace) => {
                                let (relation, rest) = match pg_query::protobuf::ObjectType::try_from(a.objtype) {
                                    Ok(pg_query::protobuf::ObjectType::ObjectIndex) => ("the index ", ""),
                                    Ok(pg_query::protobuf::ObjectType::ObjectMatview) => ("the materialized view ", " (its indexes stay where they are)"),
                                    _ => ("", " (its indexes stay where they are: move them with `ALTER INDEX ... SET TABLESPACE`)"),
                                };
                                found.push((
                                    TABLE_REWRITE,
                                    format!("`SET TABLESPACE` copies {relation}{table} under an ACCESS EXCLUSIVE lock, {blocks}{rest}"),
                                    rewrite_help.clone(),
                                ));
                                continue;
                            }
                            Ok(At::AtAddColumn) => {
                                let serial = match cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                                    Some(N::ColumnDef(d)) => d.type_name.as_ref().and_then(|t| {
                                        match t.names.as_slice() {
                                            [n] => match n.node.as_ref() {
                                                Some(N::String(s)) if matches!(s.sval.as_str(),
                                                    "serial" | "serial4" | "bigserial" | "serial8" | "smallserial" | "serial2") =>
                                                    Some((d.colname.clone(), s.sval.clone())),
                                                _ => None,
                                            },
                                            _ => None,
                                        }
                                    }),
                                    _ => None,
                                };
                                // A CHECK given with the column is checked over every row.
                                if let Some(N::ColumnDef(d)) = cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                                    let checked = d.constraints.iter().any(|c| matches!(c.node.as_ref(),
                                        Some(N::Constraint(c)) if c.contype == pg_query::protobuf::ConstrType::ConstrCheck as i32));
                                    if checked {
                                        found.push((
                                            BLOCKING_SCAN,
                                            format!("`ADD COLUMN {} ... CHECK (...)` checks the constraint over every existing row: a full scan of {table} under its ACCESS EXCLUSIVE lock, {blocks}", d.colname),
                                            "Add the column without the CHECK, then `ADD CONSTRAINT ... CHECK (...) NOT VALID` and `VALIDATE CONSTRAINT` in a later migration (SHARE UPDATE EXCLUSIVE: reads and writes go on).".into(),
                                        ));
                                    }
                                }
                                if let Some((column, ty)) = serial {
                                    found.push((
                                        ADDING_SERIAL_FIELD,
                                        format!("`ADD COLUMN {column} {ty}` fills every existing row from its sequence (a volatile nextval() default): it rewrites {table} under an ACCESS EXCLUSIVE lock, {blocks}"),
                                        "Add a nullable bigint column, give it the sequence default with `ALTER COLUMN ... SET DEFAULT nextval(...)` (new rows only), and backfill existing rows in batches.".into(),
                                    ));
                                }
                                continue;
                            }
                            _ => continue,
                        };
                        found.push((
                            TABLE_REWRITE,
                            format!("{what} {table} (and its indexes) under an ACCESS EXCLUSIVE lock, {blocks}"),
                            rewrite_help.clone(),
                        ));
                    }
                }
                // Every table (index, materialized view) of the tablespace, each locked ACCESS
                // EXCLUSIVE (all before the first is copied) and copied.
                N::AlterTableMoveAllStmt(m) => {
                    use pg_query::protobuf::ObjectType as O;
                    let (statement, kind) = match O::try_from(m.objtype) {
                        Ok(O::ObjectIndex) => ("ALTER INDEX", "index"),
                        Ok(O::ObjectMatview) => ("ALTER MATERIALIZED VIEW", "materialized view"),
                        _ => ("ALTER TABLE", "table"),
                    };
                    let roles: Vec<String> = m
                        .roles
                        .iter()
                        .filter_map(|r| match r.node.as_ref() {
                            Some(N::RoleSpec(r)) if !r.rolename.is_empty() => Some(r.rolename.clone()),
                            Some(N::RoleSpec(_)) => Some("the current user".to_owned()),
                            _ => None,
                        })
                        .collect();
                    let owned = if roles.is_empty() {
                        String::new()
                    } else {
                        format!(" owned by {}", roles.join(", "))
                    };
                    let (from, to) = (&m.orig_tablespacename, &m.new_tablespacename);
                    found.push((
                        TABLE_REWRITE,
                        format!("`{statement} ALL IN TABLESPACE {from} SET TABLESPACE {to}` copies every {kind} in tablespace {from}{owned} of this database, each under an ACCESS EXCLUSIVE lock taken before the first is copied, blocking their reads and writes {held}"),
                        format!("Move the {kind}s one at a time in migrations of their own (`SET TABLESPACE` of each, when it is small or quiet), or with an online tool (pg_repack's --tablespace)."),
                    ));
                }
                N::RefreshMatViewStmt(r) if !r.concurrent => found.push((
                    REQUIRE_CONCURRENT_REFRESH,
                    format!(
                        "`REFRESH MATERIALIZED VIEW` without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on {}: its readers wait for the whole refresh, {held}",
                        name(r.relation.as_ref())
                    ),
                    "Use `REFRESH MATERIALIZED VIEW CONCURRENTLY` (the view needs a unique index and must have been populated): its EXCLUSIVE lock lets reads go on.".into(),
                )),
                N::TruncateStmt(t) => {
                    let tables: Vec<String> = t
                        .relations
                        .iter()
                        .filter_map(|r| match r.node.as_ref() {
                            Some(N::RangeVar(r)) => Some(name(Some(r))),
                            _ => None,
                        })
                        .collect();
                    found.push((
                        BAN_TRUNCATE,
                        format!(
                            "`TRUNCATE` removes every row of {} under an ACCESS EXCLUSIVE lock, {blocks}",
                            tables.join(", ")
                        ),
                        format!("If every row is meant to go, say so with `-- squawk-ignore {BAN_TRUNCATE}` on the line above; on a live table, delete in batches with a batch migration."),
                    ));
                }
                // Every DROP ... CASCADE: what depends on the object goes with it unnamed. A
                // down file may drop so what its up file made.
                N::DropStmt(d)
                    if d.behavior == pg_query::protobuf::DropBehavior::DropCascade as i32
                        && !rules.made_by_up.as_ref().is_some_and(|made| {
                            let names = dropped_names(d);
                            !names.is_empty()
                                && names.len() == d.objects.len()
                                && names.iter().all(|n| made.contains(&format!("{}:{n}", d.remove_type)))
                        }) =>
                {
                    let (what, goes, first) = cascade_of(d.remove_type);
                    found.push((
                        BAN_DROP_CASCADE,
                        format!("`DROP {what} ... CASCADE` also drops everything that depends on it, without naming it: {goes}"),
                        format!("Drop {first} by name first (the lint then judges each), and the {} without CASCADE, which fails if anything still depends on it.", what.to_ascii_lowercase()),
                    ));
                }
                N::DropOwnedStmt(_) => found.push((
                    BAN_DROP_OWNED,
                    "`DROP OWNED BY` drops every object the role owns in this database, without naming them: tables go with their rows".into(),
                    "Drop the role's objects by name (the lint then judges each), or `REASSIGN OWNED BY` them to another role first.".into(),
                )),
                // A domain's new NOT NULL or validated constraint is checked in every column of
                // it, in every table, under a SHARE lock (writes wait), not the SHARE UPDATE
                // EXCLUSIVE of a table's VALIDATE.
                N::AlterDomainStmt(a) if matches!(a.subtype.as_str(), "O" | "V") => {
                    let domain = a
                        .type_name
                        .iter()
                        .filter_map(|n| match n.node.as_ref() {
                            Some(N::String(s)) => Some(s.sval.clone()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(".");
                    let what = if a.subtype == "O" {
                        format!("`ALTER DOMAIN {domain} SET NOT NULL`")
                    } else {
                        format!("`ALTER DOMAIN {domain} VALIDATE CONSTRAINT {}`", a.name)
                    };
                    found.push((
                        BLOCKING_SCAN,
                        format!("{what} checks every column of type {domain} in every table that has one: a full scan of each under a SHARE lock, which blocks their writes {held} (a table's VALIDATE CONSTRAINT lets writes go on; a domain's does not)"),
                        "Find the tables that use the domain (`pg_attribute.atttypid`); on large ones, run it when their writes can wait, or check the rows with a table constraint (NOT VALID, then VALIDATE CONSTRAINT) instead.".into(),
                    ));
                }
                N::DoStmt(_) => found.push((
                    DO_BLOCK_NOT_LINTED,
                    "a DO block is not linted: the statements it runs (their locks, rewrites and lost rows) are not judged by `check`".into(),
                    "Write the statements outside the DO block where they can be (check reads them then); `stepmigrate verify` runs the block and reports its locks and rewrites.".into(),
                )),
                _ => {}
            }
        }
        for (rule, message, help) in found {
            let Some(severity) = on(rule) else { continue };
            if ignored(&text_lines, statement.line, rule) {
                continue;
            }
            let (line, column) = lines.at(statement.offset);
            findings.push(Finding {
                file: script.path.to_owned(),
                line,
                column,
                rule: rule.to_owned(),
                severity,
                message,
                help: Some(help),
            });
        }
    }
    findings
}

/// The last part of the name of each object a DROP names, where it has one.
fn dropped_names(d: &pg_query::protobuf::DropStmt) -> Vec<String> {
    use pg_query::protobuf::node::Node as N;
    let last = |names: &[pg_query::protobuf::Node]| match names.last()?.node.as_ref()? {
        N::String(s) => Some(s.sval.clone()),
        _ => None,
    };
    d.objects
        .iter()
        .filter_map(|o| match o.node.as_ref()? {
            N::String(s) => Some(s.sval.clone()),
            N::List(l) => last(&l.items),
            N::TypeName(t) => last(&t.names),
            N::ObjectWithArgs(o) => last(&o.objname),
            _ => None,
        })
        .collect()
}

/// The objects a script makes, as `kind:name` (the kind as a DROP of it numbers it, the last
/// part of the name; `column:name` and `constraint:name` for what ALTER TABLE adds).
fn made_objects(script: &str) -> BTreeSet<String> {
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::ObjectType as O;
    let mut made = BTreeSet::new();
    let last = |names: &[pg_query::protobuf::Node]| match names.last().and_then(|n| n.node.as_ref())
    {
        Some(N::String(s)) => s.sval.clone(),
        _ => String::new(),
    };
    for statement in sql::lex(script).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        for raw in &parsed.protobuf.stmts {
            let mut add = |kinds: &[O], name: String| {
                for kind in kinds {
                    made.insert(format!("{}:{name}", *kind as i32));
                }
            };
            match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                Some(N::CreateSchemaStmt(c)) => add(&[O::ObjectSchema], c.schemaname.clone()),
                Some(N::CreateStmt(c)) => {
                    if let Some(r) = &c.relation {
                        add(&[O::ObjectTable], r.relname.clone());
                    }
                }
                Some(N::CreateForeignTableStmt(c)) => {
                    if let Some(r) = c.base_stmt.as_ref().and_then(|b| b.relation.as_ref()) {
                        add(&[O::ObjectForeignTable], r.relname.clone());
                    }
                }
                Some(N::CreateTableAsStmt(c)) => {
                    if let Some(r) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                        add(&[O::ObjectTable, O::ObjectMatview], r.relname.clone());
                    }
                }
                Some(N::ViewStmt(v)) => {
                    if let Some(r) = &v.view {
                        add(&[O::ObjectView], r.relname.clone());
                    }
                }
                Some(N::CreateEnumStmt(e)) => add(&[O::ObjectType], last(&e.type_name)),
                Some(N::CreateRangeStmt(e)) => add(&[O::ObjectType], last(&e.type_name)),
                Some(N::CompositeTypeStmt(c)) => {
                    if let Some(r) = &c.typevar {
                        add(&[O::ObjectType], r.relname.clone());
                    }
                }
                Some(N::CreateDomainStmt(d)) => {
                    add(&[O::ObjectDomain, O::ObjectType], last(&d.domainname));
                }
                Some(N::CreateExtensionStmt(e)) => add(&[O::ObjectExtension], e.extname.clone()),
                Some(N::CreateFunctionStmt(f)) => add(
                    &[O::ObjectFunction, O::ObjectProcedure, O::ObjectRoutine],
                    last(&f.funcname),
                ),
                Some(N::CreateSeqStmt(q)) => {
                    if let Some(r) = &q.sequence {
                        add(&[O::ObjectSequence], r.relname.clone());
                    }
                }
                Some(N::IndexStmt(i)) => add(&[O::ObjectIndex], i.idxname.clone()),
                Some(N::DefineStmt(d)) => {
                    if let Ok(kind) = O::try_from(d.kind) {
                        add(&[kind], last(&d.defnames));
                    }
                }
                Some(N::AlterTableStmt(a)) => {
                    for cmd in &a.cmds {
                        let Some(N::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                            continue;
                        };
                        match cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                            Some(N::ColumnDef(d))
                                if cmd.subtype
                                    == pg_query::protobuf::AlterTableType::AtAddColumn as i32 =>
                            {
                                made.insert(format!("column:{}", d.colname));
                            }
                            Some(N::Constraint(c)) if !c.conname.is_empty() => {
                                made.insert(format!("constraint:{}", c.conname));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    made
}

/// What `DROP <kind> ... CASCADE` is called, what goes with it, and what to drop by name first.
fn cascade_of(kind: i32) -> (String, &'static str, &'static str) {
    use pg_query::protobuf::ObjectType as O;
    const TABLES: (&str, &str) = (
        "tables and columns go with their rows",
        "the dependent tables and columns",
    );
    const USES: (&str, &str) = (
        "a generated column that uses it goes with its values, and so do the views, indexes, constraints, defaults and triggers that use it",
        "the columns, views, indexes, constraints, defaults and triggers that use it",
    );
    const INDEXES: (&str, &str) = (
        "the indexes that use it go, and the primary key, unique and exclusion constraints they back",
        "the indexes and constraints that use it",
    );
    const TEXT_SEARCH: (&str, &str) = (
        "the text search configurations built on it go, and a generated column that uses them goes with its values, and so do the indexes, views, constraints and defaults that use them",
        "the configurations, columns, indexes, views, constraints and defaults that use it",
    );
    const FOREIGN: (&str, &str) = (
        "the foreign tables on it go (and a wrapper's servers and user mappings), and the views that use them",
        "the foreign tables, servers and user mappings on it",
    );
    const RELATION: (&str, &str) = (
        "the views built on it go, and the foreign keys of other tables that reference it",
        "the views and foreign keys that depend on it",
    );
    const ANYTHING: (&str, &str) = (
        "what depends on it goes with it, whatever that is",
        "what depends on it",
    );
    let (what, (goes, first)) = match O::try_from(kind) {
        Ok(O::ObjectSchema) => ("SCHEMA", TABLES),
        Ok(O::ObjectType) => ("TYPE", TABLES),
        Ok(O::ObjectDomain) => ("DOMAIN", TABLES),
        Ok(O::ObjectExtension) => ("EXTENSION", TABLES),
        Ok(O::ObjectCollation) => ("COLLATION", TABLES),
        Ok(O::ObjectAccessMethod) => ("ACCESS METHOD", TABLES),
        Ok(O::ObjectFunction) => ("FUNCTION", USES),
        Ok(O::ObjectProcedure) => ("PROCEDURE", USES),
        Ok(O::ObjectRoutine) => ("ROUTINE", USES),
        Ok(O::ObjectAggregate) => ("AGGREGATE", USES),
        Ok(O::ObjectOperator) => ("OPERATOR", USES),
        Ok(O::ObjectCast) => ("CAST", USES),
        Ok(O::ObjectTransform) => ("TRANSFORM", USES),
        Ok(O::ObjectLanguage) => ("LANGUAGE", USES),
        Ok(O::ObjectConversion) => ("CONVERSION", USES),
        Ok(O::ObjectOpclass) => ("OPERATOR CLASS", INDEXES),
        Ok(O::ObjectOpfamily) => ("OPERATOR FAMILY", INDEXES),
        Ok(O::ObjectTsconfiguration) => ("TEXT SEARCH CONFIGURATION", TEXT_SEARCH),
        Ok(O::ObjectTsdictionary) => ("TEXT SEARCH DICTIONARY", TEXT_SEARCH),
        Ok(O::ObjectTsparser) => ("TEXT SEARCH PARSER", TEXT_SEARCH),
        Ok(O::ObjectTstemplate) => ("TEXT SEARCH TEMPLATE", TEXT_SEARCH),
        Ok(O::ObjectForeignServer) => ("SERVER", FOREIGN),
        Ok(O::ObjectFdw) => ("FOREIGN DATA WRAPPER", FOREIGN),
        Ok(O::ObjectTable) => ("TABLE", RELATION),
        Ok(O::ObjectForeignTable) => ("FOREIGN TABLE", RELATION),
        Ok(O::ObjectView) => ("VIEW", RELATION),
        Ok(O::ObjectMatview) => ("MATERIALIZED VIEW", RELATION),
        Ok(O::ObjectSequence) => ("SEQUENCE", ("the column defaults that use it go (inserts then get NULL or fail), and the views that use it", "the defaults that use it")),
        Ok(O::ObjectIndex) => ("INDEX", ("the foreign keys of other tables that rely on it go", "the foreign keys that rely on it")),
        Ok(other) => {
            let words = other
                .as_str_name()
                .trim_start_matches("OBJECT_")
                .replace('_', " ");
            return (words, ANYTHING.0, ANYTHING.1);
        }
        Err(_) => ("OBJECT", ANYTHING),
    };
    (what.to_owned(), goes, first)
}

fn without_where(script: &Script<'_>, rules: &LintRules, before: &Columns) -> Vec<Finding> {
    let update = rules.severity(UPDATE_WITHOUT_WHERE);
    let delete = rules.severity(DELETE_WITHOUT_WHERE);
    if update.is_none() && delete.is_none() {
        return Vec::new();
    }
    let mut findings = Vec::new();
    let lines = Lines::new(script.sql);
    let text_lines = comment_lines(script.sql);
    let update = update.filter(|_| !ignored_in_file(&text_lines, UPDATE_WITHOUT_WHERE));
    let delete = delete.filter(|_| !ignored_in_file(&text_lines, DELETE_WITHOUT_WHERE));
    // The columns each statement sees: the earlier migrations' and this script's before it.
    let mut columns = before.clone();
    columns.start_script(script.mode != Mode::NoTransaction);
    for statement in sql::lex(script.sql).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        let mut nodes: Vec<pg_query::NodeRef<'_>> =
            parsed.protobuf.nodes().into_iter().map(|n| n.0).collect();
        // libpg_query's walk does not enter a PREPARE's query: it runs at each EXECUTE.
        let prepared: Vec<&pg_query::NodeEnum> = nodes
            .iter()
            .filter_map(|n| match n {
                pg_query::NodeRef::PrepareStmt(p) => p.query.as_ref()?.node.as_ref(),
                _ => None,
            })
            .collect();
        for query in prepared {
            nodes.extend(query.nodes().into_iter().map(|n| n.0));
        }
        // Names a WITH gives: a subquery's FROM that names one does not read the table.
        let ctes = cte_names(&parsed.protobuf);
        for node in nodes {
            let (rule, severity, relation, verb, clause) = match node {
                pg_query::NodeRef::UpdateStmt(u) => (
                    UPDATE_WITHOUT_WHERE,
                    update,
                    u.relation.as_ref(),
                    "UPDATE",
                    u.where_clause.as_deref(),
                ),
                pg_query::NodeRef::DeleteStmt(d) => (
                    DELETE_WITHOUT_WHERE,
                    delete,
                    d.relation.as_ref(),
                    "DELETE",
                    d.where_clause.as_deref(),
                ),
                _ => continue,
            };
            let table = relation.map(|r| r.relname.clone());
            let message = match reach(clause, relation, &columns, &ctes) {
                Reach::Every if clause.is_some() => format!(
                    "{verb} whose WHERE is always true touches every row of {}: {EVERY_ROW_COST}",
                    table.as_deref().unwrap_or_default()
                ),
                Reach::Every => format!(
                    "{verb} without WHERE touches every row of {}: {EVERY_ROW_COST}",
                    table.as_deref().unwrap_or_default()
                ),
                Reach::EveryOrNone => format!(
                    "{verb} of {}: its WHERE does not depend on the row: it selects every row or none (every row: on a large table it runs long, locks every row until the migration commits and leaves as many dead rows)",
                    table.as_deref().unwrap_or_default()
                ),
                Reach::Some => continue,
            };
            let Some(severity) = severity else { continue };
            if ignored(&text_lines, statement.line, rule) {
                continue;
            }
            let (line, column) = lines.at(statement.offset);
            findings.push(Finding {
                file: script.path.to_owned(),
                line,
                column,
                rule: rule.to_owned(),
                severity,
                message,
                help: Some(format!(
                    "Add a WHERE clause, or move a backfill of a large table to a batched data migration. If every row is meant, say so with `-- squawk-ignore {rule}` on the line above."
                )),
            });
        }
        for raw in &parsed.protobuf.stmts {
            if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                columns.apply(node);
            }
        }
    }
    findings
}

/// The names the WITH clauses of a statement give, at any depth.
fn cte_names(parsed: &pg_query::protobuf::ParseResult) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    tree::visit(&tree::json_of(parsed), &mut |kind, f| {
        if kind == "CommonTableExpr" {
            names.insert(tree::string(f, "ctename").to_owned());
        }
    });
    names
}

const EVERY_ROW_COST: &str = "on a large table it runs long, locks every row until the migration commits and leaves as many dead rows";

/// Which rows of its table a WHERE clause lets through, as far as the statement says.
enum Reach {
    /// No WHERE, or one true whatever the row (`true`, `1 = 1`, `NOT false`, `x IS NOT
    /// DISTINCT FROM x`, an AND or OR of such).
    Every,
    /// A WHERE that reads nothing of the row (no column of the table, the whole row, a
    /// cursor's position or a volatile call): the same for every row.
    EveryOrNone,
    /// Some rows, or not known.
    Some,
}

fn reach(
    clause: Option<&pg_query::protobuf::Node>,
    table: Option<&pg_query::protobuf::RangeVar>,
    columns: &Columns,
    ctes: &BTreeSet<String>,
) -> Reach {
    let Some(clause) = clause else {
        return Reach::Every;
    };
    match constant(clause) {
        Some(true) => Reach::Every,
        Some(false) => Reach::Some,
        None if !reads_the_row(clause, table, columns, ctes) => Reach::EveryOrNone,
        None => Reach::Some,
    }
}

/// The relations of a subquery's FROM, each with its columns when the migrations say what
/// they are (`None`: a subquery, a function, a table not known, a WITH's name, columns
/// renamed by an alias).
type Known = Vec<Option<BTreeSet<String>>>;

/// Whether an expression may differ from row to row of `table`: a column reference that may
/// be the table's (an unqualified one that no subquery's FROM between it and the statement
/// is known to have, at any depth: a correlated subquery's too; or one qualified by the
/// table's name or alias), `WHERE CURRENT OF`, or a volatile call.
fn reads_the_row(
    node: &pg_query::protobuf::Node,
    table: Option<&pg_query::protobuf::RangeVar>,
    columns: &Columns,
    ctes: &BTreeSet<String>,
) -> bool {
    let Some(table) = table else {
        return true;
    };
    let mut names = vec![table.relname.as_str()];
    if let Some(alias) = &table.alias {
        names.push(alias.aliasname.as_str());
    }
    let json = serde_json::to_value(node).unwrap_or(serde_json::Value::Null);
    let mut scopes: Vec<Known> = Vec::new();
    reads_row_in(&json, &names, columns, ctes, &mut scopes)
}

fn reads_row_in(
    value: &serde_json::Value,
    names: &[&str],
    columns: &Columns,
    ctes: &BTreeSet<String>,
    scopes: &mut Vec<Known>,
) -> bool {
    use serde_json::Value;
    let map = match value {
        Value::Array(items) => {
            return items
                .iter()
                .any(|v| reads_row_in(v, names, columns, ctes, scopes))
        }
        Value::Object(map) => map,
        _ => return false,
    };
    let node = match map.get("node") {
        Some(Value::Object(node)) if node.len() == 1 => node.iter().next(),
        _ => None,
    };
    let Some((kind, Value::Object(f))) = node else {
        return map
            .values()
            .any(|v| reads_row_in(v, names, columns, ctes, scopes));
    };
    match kind.as_str() {
        "ColumnRef" => {
            let fields: Vec<Option<&str>> = f
                .get("fields")
                .and_then(Value::as_array)
                .map(|fs| {
                    fs.iter()
                        .map(|x| x.pointer("/node/String/sval").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            match fields.as_slice() {
                // `*` alone is the columns of the subquery's own FROM.
                [None] => false,
                // A column, or the whole row `t`: the innermost FROM that has such a column
                // has it; the statement's table when none is known to.
                [Some(column)] => {
                    for scope in scopes.iter().rev() {
                        if scope.is_empty() {
                            continue;
                        }
                        if scope
                            .iter()
                            .any(|r| r.as_ref().is_none_or(|c| c.contains(*column)))
                        {
                            // Known to be there, unless some relation's columns are unknown.
                            return scope.iter().any(Option::is_none);
                        }
                    }
                    true
                }
                // `x.c`, `s.x.c`, `x.*`: the table's when a qualifier names it.
                [qualifiers @ .., _] => qualifiers
                    .iter()
                    .any(|q| q.is_some_and(|q| names.contains(&q))),
                [] => true,
            }
        }
        "CurrentOfExpr" => true,
        "FuncCall" => {
            let name = f
                .get("funcname")
                .and_then(Value::as_array)
                .and_then(|n| n.last())
                .and_then(|n| n.pointer("/node/String/sval"))
                .and_then(Value::as_str);
            name.is_some_and(|n| advice::VOLATILE.contains(&n))
                || f.values()
                    .any(|v| reads_row_in(v, names, columns, ctes, scopes))
        }
        "SelectStmt" => {
            // Its FROM and WITH are read in the scopes outside it (a JOIN's ON as not
            // resolved: as reading the row); the rest in its FROM's.
            let mut scope = Known::new();
            if let Some(Value::Array(items)) = f.get("from_clause") {
                for item in items {
                    known_relations(item, columns, ctes, &mut scope);
                }
            }
            let outside = ["from_clause", "with_clause"];
            if outside.iter().any(|k| {
                f.get(*k)
                    .is_some_and(|v| reads_row_in(v, names, columns, ctes, scopes))
            }) {
                return true;
            }
            scopes.push(scope);
            let found = f
                .iter()
                .filter(|(k, _)| !outside.contains(&k.as_str()))
                .any(|(_, v)| reads_row_in(v, names, columns, ctes, scopes));
            scopes.pop();
            found
        }
        _ => f
            .values()
            .any(|v| reads_row_in(v, names, columns, ctes, scopes)),
    }
}

/// The relations of one FROM item, as JSON, with their columns where known.
fn known_relations(
    item: &serde_json::Value,
    columns: &Columns,
    ctes: &BTreeSet<String>,
    scope: &mut Known,
) {
    use serde_json::Value;
    let Some(Value::Object(node)) = item.get("node") else {
        return;
    };
    let Some((kind, Value::Object(f))) = node.iter().next() else {
        return;
    };
    match kind.as_str() {
        "RangeVar" => {
            let relname = tree::string(f, "relname");
            let schema = tree::string(f, "schemaname");
            let renamed = f.get("alias").is_some_and(|a| {
                a.get("colnames")
                    .is_some_and(|c| c.as_array().is_some_and(|c| !c.is_empty()))
            });
            let known = if renamed || (schema.is_empty() && ctes.contains(relname)) {
                None
            } else {
                let r = pg_query::protobuf::RangeVar {
                    schemaname: schema.to_owned(),
                    relname: relname.to_owned(),
                    relpersistence: "p".to_owned(),
                    ..Default::default()
                };
                columns.columns_of(&r)
            };
            scope.push(known);
        }
        "JoinExpr" => {
            for side in ["larg", "rarg"] {
                if let Some(side) = f.get(side) {
                    known_relations(side, columns, ctes, scope);
                }
            }
        }
        _ => scope.push(None),
    }
}

/// Whether two expressions are the same, wherever they are written.
fn same_expression(a: &pg_query::protobuf::Node, b: &pg_query::protobuf::Node) -> bool {
    fn without_locations(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("location");
                map.values_mut().for_each(without_locations);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(without_locations),
            _ => {}
        }
    }
    let (Ok(mut a), Ok(mut b)) = (serde_json::to_value(a), serde_json::to_value(b)) else {
        return false;
    };
    without_locations(&mut a);
    without_locations(&mut b);
    a == b
}

/// A WHERE clause's truth when no column or function decides it; `None` when one may.
fn constant(node: &pg_query::protobuf::Node) -> Option<bool> {
    use pg_query::protobuf::a_const::Val;
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::{AExprKind, BoolExprType};
    let literal = |n: &pg_query::protobuf::Node| match n.node.as_ref()? {
        N::AConst(c) if !c.isnull => c.val.clone(),
        _ => None,
    };
    match node.node.as_ref()? {
        N::AConst(c) => match c.val.as_ref()? {
            Val::Boolval(b) => Some(b.boolval),
            _ => None,
        },
        // `x IS NOT DISTINCT FROM x` (NULL too, and the whole row `t`): always true; `IS
        // DISTINCT FROM` always false. Unless a volatile call makes each side its own value.
        N::AExpr(e)
            if e.kind == AExprKind::AexprNotDistinct as i32
                || e.kind == AExprKind::AexprDistinct as i32 =>
        {
            let (l, r) = (e.lexpr.as_deref()?, e.rexpr.as_deref()?);
            let volatile = {
                let json = serde_json::to_value(l).unwrap_or_default();
                let mut found = false;
                crate::tree::visit(&json, &mut |kind, f| {
                    if kind == "FuncCall" {
                        let name = f
                            .get("funcname")
                            .and_then(serde_json::Value::as_array)
                            .and_then(|n| n.last())
                            .and_then(|n| n.pointer("/node/String/sval"))
                            .and_then(serde_json::Value::as_str);
                        // Any call: one not known to be stable may be volatile.
                        found |= name.is_some();
                    }
                });
                found
            };
            if volatile || !same_expression(l, r) {
                return None;
            }
            Some(e.kind == AExprKind::AexprNotDistinct as i32)
        }
        // `'t'::boolean`, `true::bool`
        N::TypeCast(c) => {
            let is_bool = c.type_name.as_ref().is_some_and(|t| {
                t.names.last().and_then(|n| n.node.as_ref()).is_some_and(
                    |n| matches!(n, N::String(s) if s.sval == "bool" || s.sval == "boolean"),
                )
            });
            if !is_bool {
                return None;
            }
            match literal(c.arg.as_deref()?)? {
                Val::Boolval(b) => Some(b.boolval),
                Val::Sval(s) => match s.sval.trim().to_ascii_lowercase().as_str() {
                    "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
                    "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
                    _ => None,
                },
                _ => None,
            }
        }
        N::AExpr(e) if e.kind == AExprKind::AexprOp as i32 => {
            let op = match e.name.as_slice() {
                [n] => match n.node.as_ref()? {
                    N::String(s) => s.sval.as_str(),
                    _ => return None,
                },
                _ => return None,
            };
            let (l, r) = (literal(e.lexpr.as_deref()?)?, literal(e.rexpr.as_deref()?)?);
            let same = match (&l, &r) {
                (Val::Ival(a), Val::Ival(b)) => a.ival == b.ival,
                (Val::Sval(a), Val::Sval(b)) => a.sval == b.sval,
                (Val::Boolval(a), Val::Boolval(b)) => a.boolval == b.boolval,
                _ => return None,
            };
            let order = match (&l, &r) {
                (Val::Ival(a), Val::Ival(b)) => Some(a.ival.cmp(&b.ival)),
                _ => None,
            };
            match op {
                "=" => Some(same),
                "<>" | "!=" => Some(!same),
                "<" => order.map(|o| o.is_lt()),
                ">" => order.map(|o| o.is_gt()),
                "<=" => order.map(|o| o.is_le()),
                ">=" => order.map(|o| o.is_ge()),
                _ => None,
            }
        }
        // `true IS TRUE`, `NULL IS UNKNOWN`: a test of a constant.
        N::BooleanTest(t) => {
            use pg_query::protobuf::BoolTestType as T;
            let v = truth(t.arg.as_deref()?)?;
            match T::try_from(t.booltesttype).ok()? {
                T::IsTrue => Some(v == Some(true)),
                T::IsNotTrue => Some(v != Some(true)),
                T::IsFalse => Some(v == Some(false)),
                T::IsNotFalse => Some(v != Some(false)),
                T::IsUnknown => Some(v.is_none()),
                T::IsNotUnknown => Some(v.is_some()),
                T::Undefined => None,
            }
        }
        // `NULL IS NULL`
        N::NullTest(t) => {
            use pg_query::protobuf::NullTestType as T;
            let is_null = match t.arg.as_deref()?.node.as_ref()? {
                N::AConst(c) => c.isnull,
                _ => return None,
            };
            match T::try_from(t.nulltesttype).ok()? {
                T::IsNull => Some(is_null),
                T::IsNotNull => Some(!is_null),
                T::Undefined => None,
            }
        }
        // `coalesce(true, ...)`: its first argument, when that is a constant.
        N::CoalesceExpr(c) => constant(c.args.first()?),
        // `EXISTS (SELECT 1)`: a subquery of no table and no condition has a row.
        N::SubLink(l)
            if l.sub_link_type == pg_query::protobuf::SubLinkType::ExistsSublink as i32 =>
        {
            match l.subselect.as_deref()?.node.as_ref()? {
                N::SelectStmt(q)
                    if q.from_clause.is_empty()
                        && q.where_clause.is_none()
                        && q.having_clause.is_none()
                        && q.limit_count.is_none()
                        && q.values_lists.is_empty()
                        && q.larg.is_none() =>
                {
                    Some(true)
                }
                _ => None,
            }
        }
        N::BoolExpr(b) => {
            let args: Vec<Option<bool>> = b.args.iter().map(constant).collect();
            // `x IS NULL OR x IS NOT NULL` of one column: every row.
            if BoolExprType::try_from(b.boolop).ok()? == BoolExprType::OrExpr
                && null_tests_of_one_column(&b.args)
            {
                return Some(true);
            }
            match BoolExprType::try_from(b.boolop).ok()? {
                BoolExprType::AndExpr if args.iter().all(|a| *a == Some(true)) => Some(true),
                BoolExprType::AndExpr if args.contains(&Some(false)) => Some(false),
                BoolExprType::OrExpr if args.contains(&Some(true)) => Some(true),
                BoolExprType::OrExpr if args.iter().all(|a| *a == Some(false)) => Some(false),
                BoolExprType::NotExpr => args.first().copied().flatten().map(|v| !v),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A constant's truth, NULL included: `Some(None)` for NULL, `None` when not a constant.
fn truth(node: &pg_query::protobuf::Node) -> Option<Option<bool>> {
    use pg_query::protobuf::node::Node as N;
    match node.node.as_ref()? {
        N::AConst(c) if c.isnull => Some(None),
        _ => constant(node).map(Some),
    }
}

/// Whether `args` hold both `c IS NULL` and `c IS NOT NULL` of one column `c`.
fn null_tests_of_one_column(args: &[pg_query::protobuf::Node]) -> bool {
    use pg_query::protobuf::node::Node as N;
    use pg_query::protobuf::NullTestType as T;
    let tests: Vec<(i32, Vec<String>)> = args
        .iter()
        .filter_map(|a| match a.node.as_ref()? {
            N::NullTest(t) => match t.arg.as_deref()?.node.as_ref()? {
                N::ColumnRef(c) => Some((
                    t.nulltesttype,
                    c.fields
                        .iter()
                        .filter_map(|f| match f.node.as_ref()? {
                            N::String(s) => Some(s.sval.clone()),
                            _ => None,
                        })
                        .collect(),
                )),
                _ => None,
            },
            _ => None,
        })
        .collect();
    tests.iter().any(|(kind, column)| {
        *kind == T::IsNull as i32
            && !column.is_empty()
            && tests
                .iter()
                .any(|(other, c)| *other == T::IsNotNull as i32 && c == column)
    })
}

/// The script's lines, each line that starts with `--` inside a string, a quoted identifier,
/// a dollar-quoted body or a block comment blanked: text that is not a comment is no ignore
/// comment (a `-- squawk-ignore-file` in a string silenced every rule of the file).
fn comment_lines(sql: &str) -> Vec<&str> {
    let lines: Vec<&str> = sql.lines().collect();
    let Ok(scanned) = pg_query::scan(sql) else {
        return lines;
    };
    let mut starts = Vec::with_capacity(lines.len());
    let mut at = 0;
    for piece in sql.split_inclusive('\n') {
        starts.push(at);
        at += piece.len();
    }
    let mut comment = vec![false; lines.len()];
    for token in &scanned.tokens {
        if token.token == pg_query::protobuf::Token::SqlComment as i32 {
            let line = starts.partition_point(|s| *s <= token.start as usize);
            if let Some(c) = line.checked_sub(1).and_then(|l| comment.get_mut(l)) {
                *c = true;
            }
        }
    }
    lines
        .into_iter()
        .zip(comment)
        .map(|(line, comment)| {
            if comment || !line.trim_start().starts_with("--") {
                line
            } else {
                ""
            }
        })
        .collect()
}

/// Whether a `-- squawk-ignore` comment on the lines right above `line` names `rule`, as
/// squawk reads them for its own rules.
fn ignored(lines: &[&str], line: usize, rule: &str) -> bool {
    lines[..line.saturating_sub(1).min(lines.len())]
        .iter()
        .rev()
        .map_while(|l| l.trim().strip_prefix("--").map(str::trim))
        .any(|c| {
            c.strip_prefix("squawk-ignore")
                .filter(|rest| !rest.starts_with("-file"))
                .is_some_and(|rest| !rest.trim().is_empty() && names(rest, rule))
        })
}

/// Whether a `-- squawk-ignore-file` comment (of every rule, or naming `rule`) is anywhere.
fn ignored_in_file(lines: &[&str], rule: &str) -> bool {
    lines.iter().any(|l| {
        l.trim()
            .strip_prefix("--")
            .map(str::trim)
            .and_then(|c| c.strip_prefix("squawk-ignore-file"))
            .is_some_and(|rest| names(rest, rule))
    })
}

/// Whether an ignore comment's rule list (empty: every rule) names `rule`.
fn names(rest: &str, rule: &str) -> bool {
    let rest = rest.split("--").next().unwrap_or("").trim();
    rest.is_empty() || rest.split(',').any(|r| r.trim() == rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules_found(sql: &str, mode: Mode, rules: &LintRules) -> Vec<String> {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode,
        };
        lint(&script, rules).into_iter().map(|f| f.rule).collect()
    }

    fn found(sql: &str) -> Vec<String> {
        rules_found(sql, Mode::Transactional, &LintRules::default())
    }

    #[test]
    fn update_and_delete_without_where() {
        assert_eq!(
            found("UPDATE users SET active = true;"),
            [UPDATE_WITHOUT_WHERE]
        );
        assert_eq!(found("DELETE FROM users;"), [DELETE_WITHOUT_WHERE]);
        assert!(found("UPDATE users SET active = true WHERE id < 100;").is_empty());
        assert!(found("DELETE FROM users WHERE id = 1;").is_empty());
        // Inside a CTE too.
        assert_eq!(
            found("WITH gone AS (DELETE FROM users RETURNING id) SELECT count(*) FROM gone;"),
            [DELETE_WITHOUT_WHERE]
        );
    }

    #[test]
    fn squawk_ignore_silences_our_rules() {
        assert!(found("-- squawk-ignore update-without-where\nUPDATE users SET a = 1;").is_empty());
        assert!(found("-- squawk-ignore-file\nSELECT 1;\nDELETE FROM t;").is_empty());
        assert_eq!(
            found("-- squawk-ignore ban-drop-column\nUPDATE users SET a = 1;"),
            [UPDATE_WITHOUT_WHERE]
        );
    }

    #[test]
    fn the_transaction_mode_decides_about_concurrently() {
        let sql =
            "SELECT 1;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS users_email ON users (email);";
        assert_eq!(
            rules_found(sql, Mode::Transactional, &LintRules::default()),
            ["ban-concurrent-index-creation-in-transaction"]
        );
        assert!(rules_found(sql, Mode::NoTransaction, &LintRules::default()).is_empty());
        // Outside a transaction a failed statement is retried by hand: squawk asks for
        // statements that can run twice.
        assert_eq!(
            rules_found(
                "CREATE INDEX CONCURRENTLY users_email ON users (email);",
                Mode::NoTransaction,
                &LintRules::default()
            ),
            ["prefer-robust-stmts"]
        );
    }

    #[test]
    fn rules_are_configurable() {
        let sql = "ALTER TABLE users DROP COLUMN email;";
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode: Mode::Transactional,
        };
        let default = lint(&script, &LintRules::default());
        assert_eq!(default.len(), 1);
        assert_eq!(default[0].severity, Severity::Error);

        let mut lowered = LintRules::default();
        lowered
            .set("ban-drop-column", RuleSetting::On(Severity::Warning))
            .unwrap();
        assert_eq!(lint(&script, &lowered)[0].severity, Severity::Warning);

        let mut off = LintRules::default();
        off.disable("ban-drop-column").unwrap();
        assert!(lint(&script, &off).is_empty());

        for bad in ["0", "1", "fifteen", "150"] {
            assert!(LintRules::default().set_pg_version(bad).is_err(), "{bad}");
        }
        LintRules::default().set_pg_version("9.6").unwrap();
        LintRules::default().set_pg_version("9.6.24").unwrap();
        // Before 9.6 nothing is known, and "9" alone is no version of PostgreSQL.
        for old in ["9", "9.5", "9.0", "9.60"] {
            let err = LintRules::default().set_pg_version(old).unwrap_err();
            assert!(err.contains("older than 9.6"), "{old}: {err}");
        }
        let err = LintRules::default().enable("ban-drop-colum").unwrap_err();
        assert!(err.contains("did you mean \"ban-drop-column\""), "{err}");
    }

    #[test]
    fn timeouts_are_the_runners_business_unless_asked() {
        let sql = "ALTER TABLE users ADD COLUMN note text;";
        assert!(found(sql).is_empty(), "{:?}", found(sql));
        let mut strict = LintRules::default();
        strict.enable("require-timeout-settings").unwrap();
        let rules = rules_found(sql, Mode::Transactional, &strict);
        assert!(
            rules.contains(&"require-lock-timeout".to_owned()),
            "{rules:?}"
        );
    }

    #[test]
    fn a_batch_statement_must_select_only_rows_not_done_yet() {
        let batch = |sql: &str| {
            rules_found(sql, Mode::Batch, &LintRules::default())
                .into_iter()
                .filter(|r| r == BATCH_NOT_IDEMPOTENT)
                .count()
        };
        for good in [
            "UPDATE items SET done = v * 2 WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT 1000)",
            "UPDATE public.users u SET email_lower = lower(u.email) WHERE u.id IN (SELECT id FROM public.users WHERE email_lower IS NULL LIMIT 500)",
            "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE created_at < now() - interval '1 year' LIMIT 1000)",
            "INSERT INTO archive (id) SELECT id FROM events e WHERE NOT EXISTS (SELECT 1 FROM archive a WHERE a.id = e.id) ORDER BY id LIMIT 1000",
            "WITH c AS (SELECT id FROM t WHERE NOT done ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) UPDATE t SET done = true FROM c WHERE t.id = c.id",
            "UPDATE t SET done = true FROM (SELECT id FROM t WHERE NOT done ORDER BY id LIMIT 1000) s WHERE t.id = s.id",
            "WITH src AS (SELECT id, v FROM t WHERE NOT EXISTS (SELECT 1 FROM t2 WHERE t2.id = t.id) ORDER BY id LIMIT 1000) INSERT INTO t2 (id, v) SELECT id, v FROM src",
            "WITH moved AS (DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 1000) RETURNING id, v) INSERT INTO t2 (id, v) SELECT id, v FROM moved",
        ] {
            assert_eq!(batch(good), 0, "{good}");
        }
        for bad in [
            // The filter never changes: the same first 1000 rows, again and again.
            "UPDATE items SET done = v * 2, touched = touched + 1 WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 1000)",
            "UPDATE items SET done = 1",
            "INSERT INTO archive (id) SELECT id FROM events ORDER BY id LIMIT 1000",
            // Picks the first 1000 rows every time: the second batch changes none.
            "UPDATE t SET done = true WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 1000) AND NOT done",
        ] {
            assert_eq!(batch(bad), 1, "{bad}");
            assert!(
                !rules_found(bad, Mode::Transactional, &LintRules::default())
                    .contains(&BATCH_NOT_IDEMPOTENT.to_owned()),
                "only batch migrations run again: {bad}"
            );
        }
        assert_eq!(
            batch("-- squawk-ignore batch-not-idempotent\nUPDATE items SET done = 1 WHERE id IN (SELECT id FROM items LIMIT 10)"),
            0
        );
        assert_eq!(
            LintRules::default().severity(BATCH_NOT_IDEMPOTENT),
            Some(Severity::Error)
        );
    }
}
