//! Label selectors: the `labelSelector` query string (`app=db,tier in (a,b),!legacy`) and the
//! structured `LabelSelector` of PVC specs, both reduced to one [`Selector`] that matches labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::validation::{FieldErrors, Path, label_value, qualified_name};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !value.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                match (v.parse::<i64>(), bound.parse::<i64>()) {
                    (Ok(v), Ok(bound)) if self.op == Operator::GreaterThan => v > bound,
                    (Ok(v), Ok(bound)) => v < bound,
                    _ => false,
                }
            }
        }
    }
}

/// A conjunction of requirements. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
    /// A selector that can match nothing (a nil `LabelSelector` in contexts where nil selects none).
    pub matches_nothing: bool,
}

impl Selector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty() && !self.matches_nothing
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.matches_nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Like [`Selector::matches`], for objects whose labels may be absent.
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.matches(labels.unwrap_or(&EMPTY))
    }

    /// Parses the query-string syntax.
    pub fn parse(input: &str) -> Result<Self, String> {
        let mut parser = Parser {
            tokens: tokenize(input)?,
            pos: 0,
        };
        let mut requirements = Vec::new();
        if parser.tokens.is_empty() {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => continue,
                Some(t) => {
                    return Err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        t.text()
                    ));
                }
            }
        }
        for r in &requirements {
            validate_requirement(r)?;
        }
        Ok(Selector {
            requirements,
            matches_nothing: false,
        })
    }

    /// Converts a structured selector. Invalid selectors are reported against `path`.
    pub fn from_label_selector(sel: &LabelSelector, path: &Path, errs: &mut FieldErrors) -> Self {
        let mut requirements = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            let p = path.child("matchLabels");
            errs.syntax(&p, k, qualified_name(k));
            errs.syntax(&p, v, label_value(v));
            requirements.push(Requirement {
                key: k.clone(),
                op: Operator::Equals,
                values: vec![v.clone()],
            });
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let p = path.child("matchExpressions").index(i);
            errs.syntax(&p.child("key"), &e.key, qualified_name(&e.key));
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    errs.not_supported(
                        &p.child("operator"),
                        other,
                        &["DoesNotExist", "Exists", "In", "NotIn"],
                    );
                    continue;
                }
            };
            match op {
                Operator::In | Operator::NotIn if values.is_empty() => errs.required(
                    &p.child("values"),
                    "must be specified when `operator` is 'In' or 'NotIn'",
                ),
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.forbidden(
                    &p.child("values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ),
                _ => {}
            }
            for (j, v) in values.iter().enumerate() {
                errs.syntax(&p.child("values").index(j), v, label_value(v));
            }
            requirements.push(Requirement {
                key: e.key.clone(),
                op,
                values,
            });
        }
        Selector {
            requirements,
            matches_nothing: false,
        }
    }
}

fn validate_requirement(r: &Requirement) -> Result<(), String> {
    if let Some(e) = qualified_name(&r.key).into_iter().next() {
        return Err(format!("invalid label key \"{}\": {e}", r.key));
    }
    match r.op {
        Operator::In | Operator::NotIn if r.values.is_empty() => {
            return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
        }
        Operator::GreaterThan | Operator::LessThan
            if r.values.len() != 1 || r.values[0].parse::<i64>().is_err() =>
        {
            return Err(format!(
                "for 'Gt', 'Lt' operators, the value must be an integer, got {:?}",
                r.values
            ));
        }
        _ => {}
    }
    if !matches!(r.op, Operator::GreaterThan | Operator::LessThan) {
        for v in &r.values {
            if let Some(e) = label_value(v).into_iter().next() {
                return Err(format!("invalid label value: \"{v}\": {e}"));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Comma,
    Open,
    Close,
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
}

impl Token {
    fn text(&self) -> &str {
        match self {
            Token::Ident(s) => s,
            Token::Comma => ",",
            Token::Open => "(",
            Token::Close => ")",
            Token::Bang => "!",
            Token::Eq => "=",
            Token::DoubleEq => "==",
            Token::NotEq => "!=",
            Token::Gt => ">",
            Token::Lt => "<",
        }
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            ',' => {
                tokens.push(Token::Comma);
                i += 1
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1
            }
            '!' if next == Some('=') => {
                tokens.push(Token::NotEq);
                i += 2
            }
            '!' => {
                tokens.push(Token::Bang);
                i += 1
            }
            '=' if next == Some('=') => {
                tokens.push(Token::DoubleEq);
                i += 2
            }
            '=' => {
                tokens.push(Token::Eq);
                i += 1
            }
            '>' => {
                tokens.push(Token::Gt);
                i += 1
            }
            '<' => {
                tokens.push(Token::Lt);
                i += 1
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && !matches!(chars[i], ',' | '(' | ')' | '!' | '=' | '>' | '<')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if !word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                {
                    return Err(format!(
                        "unable to parse requirement: found invalid characters in '{word}'"
                    ));
                }
                tokens.push(Token::Ident(word));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.ident("identifier after '!'")?;
            return Ok(Requirement {
                key,
                op: Operator::DoesNotExist,
                values: vec![],
            });
        }
        let key = self.ident("identifier")?;
        let op = match self.peek() {
            None | Some(Token::Comma) => {
                return Ok(Requirement {
                    key,
                    op: Operator::Exists,
                    values: vec![],
                });
            }
            Some(_) => self.next(),
        };
        let single = |parser: &mut Parser, op: Operator| -> Result<Requirement, String> {
            let value = match parser.peek() {
                Some(Token::Ident(_)) => parser.ident("value")?,
                // `key=` selects the empty value.
                None | Some(Token::Comma) => String::new(),
                Some(t) => return Err(format!("found '{}', expected: identifier", t.text())),
            };
            Ok(Requirement {
                key: String::new(),
                op,
                values: vec![value],
            })
        };
        let mut req = match op {
            Some(Token::Eq) | Some(Token::DoubleEq) => single(self, Operator::Equals)?,
            Some(Token::NotEq) => single(self, Operator::NotEquals)?,
            Some(Token::Gt) => single(self, Operator::GreaterThan)?,
            Some(Token::Lt) => single(self, Operator::LessThan)?,
            Some(Token::Ident(w)) if w == "in" || w == "notin" => {
                let op = if w == "in" {
                    Operator::In
                } else {
                    Operator::NotIn
                };
                if self.next() != Some(Token::Open) {
                    return Err("found something else, expected: '('".to_string());
                }
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Ident(v)) => {
                            values.push(v);
                            match self.next() {
                                Some(Token::Comma) => continue,
                                Some(Token::Close) => break,
                                _ => return Err("expected ',' or ')' in value set".to_string()),
                            }
                        }
                        Some(Token::Close) if values.is_empty() => break,
                        Some(Token::Comma) => values.push(String::new()),
                        _ => return Err("unterminated value set".to_string()),
                    }
                }
                Requirement {
                    key: String::new(),
                    op,
                    values,
                }
            }
            Some(t) => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.text()
                ));
            }
            None => unreachable!("peeked a token"),
        };
        req.key = key;
        Ok(req)
    }

    fn ident(&mut self, what: &str) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(s)) => Ok(s),
            Some(t) => Err(format!("found '{}', expected: {what}", t.text())),
            None => Err(format!("found 'end of string', expected: {what}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_based_selectors_match() {
        let s = Selector::parse("app=db, tier!=cache").unwrap();
        assert!(s.matches(&labels(&[("app", "db")])));
        assert!(s.matches(&labels(&[("app", "db"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "cache")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert!(
            Selector::parse("app==db")
                .unwrap()
                .matches(&labels(&[("app", "db")]))
        );
    }

    #[test]
    fn set_based_selectors_match() {
        let s = Selector::parse("env in (prod, staging),!legacy,team").unwrap();
        assert!(s.matches(&labels(&[("env", "prod"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("env", "dev"), ("team", "a")])));
        assert!(!s.matches(&labels(&[("env", "prod"), ("team", "a"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        let notin = Selector::parse("env notin (prod)").unwrap();
        assert!(notin.matches(&labels(&[])));
        assert!(!notin.matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn numeric_comparisons_need_integers() {
        let s = Selector::parse("size>5").unwrap();
        assert!(s.matches(&labels(&[("size", "10")])));
        assert!(!s.matches(&labels(&[("size", "2")])));
        assert!(Selector::parse("size>big").is_err());
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[("x", "y")])));
        assert!(Selector::parse("  ").unwrap().is_everything());
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in [
            "app=",
            "=db",
            "app in prod",
            "app in (a",
            "app in ()",
            "app=d b",
            "a=b,,",
            "Bad Key=x",
            "app=@",
            "app=-x",
        ] {
            // `app=` is legal in Kubernetes (empty value); everything else must fail.
            if bad == "app=" {
                assert!(Selector::parse(bad).is_ok());
                continue;
            }
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
