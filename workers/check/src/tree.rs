//! A whole-tree walk of libpg_query's parse tree. pg_query's own `nodes()` visits only what it
//! needs to list tables; the version and rewrite judgements need every node (a JSON_TABLE in a
//! view's query, a NULLS NOT DISTINCT in a column's constraint), so the tree is walked as the
//! JSON its protobuf structs serialize to: `{"node": {"Kind": {fields}}}` at every node.

use serde_json::{Map, Value};

/// The parse tree as JSON; `Value::Null` if it cannot be rendered (it always can: the structs
/// are plain data).
pub(crate) fn json_of(parsed: &pg_query::protobuf::ParseResult) -> Value {
    serde_json::to_value(parsed).unwrap_or(Value::Null)
}

/// Calls `f(kind, fields)` for every node of the tree, parents before children.
pub(crate) fn visit(value: &Value, f: &mut dyn FnMut(&str, &Map<String, Value>)) {
    // An explicit stack: a statement libpg_query accepts may nest thousands of levels.
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::Object(node)) = map.get("node") {
                    if node.len() == 1 {
                        if let Some((kind, Value::Object(fields))) = node.iter().next() {
                            f(kind, fields);
                        }
                    }
                }
                stack.extend(map.values().rev());
            }
            Value::Array(items) => stack.extend(items.iter().rev()),
            _ => {}
        }
    }
}

/// A field as an integer (protobuf enums serialize as their number), 0 when absent.
pub(crate) fn int(fields: &Map<String, Value>, name: &str) -> i64 {
    fields.get(name).and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn boolean(fields: &Map<String, Value>, name: &str) -> bool {
    fields.get(name).and_then(Value::as_bool).unwrap_or(false)
}

pub(crate) fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> &'a str {
    fields.get(name).and_then(Value::as_str).unwrap_or("")
}

/// Whether a field holds something: a message, a non-empty list.
pub(crate) fn present(fields: &Map<String, Value>, name: &str) -> bool {
    match fields.get(name) {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    }
}

/// A node's `location` (a byte offset in the parsed text), when it has one.
pub(crate) fn location(fields: &Map<String, Value>) -> Option<usize> {
    fields
        .get("location")
        .and_then(Value::as_i64)
        .and_then(|l| usize::try_from(l).ok())
}

/// The `DefElem` names of a list of options (`WITH (...)`, COPY's options).
pub(crate) fn def_names(fields: &Map<String, Value>, list: &str) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(Value::Array(items)) = fields.get(list) {
        for item in items {
            if let Some(Value::Object(d)) = item.get("node").and_then(|n| n.get("DefElem")) {
                names.push(string(d, "defname").to_owned());
            }
        }
    }
    names
}
