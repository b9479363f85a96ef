//! Rendering for the terminal: tables (from the server's `Table` form, as kubectl does), YAML,
//! JSON and names.

use serde_json::Value;

/// How `get` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The table, with more columns.
    Wide,
    Yaml,
    Json,
    /// `kind/name` per line.
    Name,
}

/// Columns lined up, separated by three spaces (as kubectl prints them).
pub fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 3;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A value as one line of terminal text: strings as they are, control characters escaped.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => clean_line(s),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether a character must not reach a terminal as it is: control characters (escape
/// sequences, carriage returns), and the invisible ones that reorder or break text (bidi
/// overrides, line separators), with which a message could disguise itself.
fn unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// `s` with the characters `escape` picks shown escaped (`\u{1b}`).
fn escaped(s: &str, escape: impl Fn(char) -> bool) -> String {
    s.chars()
        .map(|c| {
            if escape(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Text from the server made safe for one line of a terminal: every control character
/// (escape sequences, carriage returns, newlines that would forge extra lines) is shown
/// escaped, never sent to the terminal.
pub fn clean_line(s: &str) -> String {
    if s.chars().any(unsafe_for_terminal) {
        escaped(s, unsafe_for_terminal)
    } else {
        s.to_string()
    }
}

/// Strips terminal control characters from every string of a server response, keeping
/// newlines and tabs (which YAML and JSON output show faithfully, and tables escape).
pub fn clean_value(v: &mut Value) {
    let unsafe_in_text = |c: char| unsafe_for_terminal(c) && c != '\n' && c != '\t';
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.chars().any(unsafe_in_text) => *s = escaped(s, unsafe_in_text),
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(m) => {
                // Keys too: a label key is printed as it is.
                let dirty: Vec<String> = m
                    .keys()
                    .filter(|k| k.chars().any(unsafe_for_terminal))
                    .cloned()
                    .collect();
                for k in dirty {
                    if let Some(v) = m.remove(&k) {
                        m.insert(clean_line(&k), v);
                    }
                }
                stack.extend(m.values_mut());
            }
            _ => {}
        }
    }
}

/// Extra columns computed by the CLI, appended before AGE (e.g. usage counts for classes).
pub type Extra = Vec<(String, Box<dyn Fn(&Value) -> String>)>;

/// The rows (headers first) of a server `Table`.
pub fn table_rows(
    table: &Value,
    wide: bool,
    all_namespaces: bool,
    extra: &Extra,
) -> Vec<Vec<String>> {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let age_at = shown
        .iter()
        .position(|i| defs[*i]["name"] == "Age")
        .unwrap_or(shown.len());
    let mut header: Vec<String> = Vec::new();
    if all_namespaces {
        header.push("NAMESPACE".into());
    }
    for (n, i) in shown.iter().enumerate() {
        if n == age_at {
            header.extend(extra.iter().map(|(h, _)| h.clone()));
        }
        header.push(defs[*i]["name"].as_str().unwrap_or_default().to_uppercase());
    }
    if age_at == shown.len() {
        header.extend(extra.iter().map(|(h, _)| h.clone()));
    }
    let mut rows = vec![header];
    for row in table["rows"].as_array().into_iter().flatten() {
        let cells = row["cells"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        if all_namespaces {
            out.push(cell(&row["object"]["metadata"]["namespace"]));
        }
        for (n, i) in shown.iter().enumerate() {
            if n == age_at {
                out.extend(extra.iter().map(|(_, f)| f(&row["object"])));
            }
            out.push(cells.get(*i).map(cell).unwrap_or_default());
        }
        if age_at == shown.len() {
            out.extend(extra.iter().map(|(_, f)| f(&row["object"])));
        }
        rows.push(out);
    }
    rows
}

pub fn yaml(v: &Value) -> String {
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

pub fn json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_three_spaces() {
        let out = align(&[
            vec!["NAME".into(), "STATUS".into()],
            vec!["data".into(), "Bound".into()],
            vec!["a-longer-name".into(), "Pending".into()],
        ]);
        assert_eq!(
            out,
            "NAME            STATUS\ndata            Bound\na-longer-name   Pending\n"
        );
    }
}
