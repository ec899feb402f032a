//! Label and field selectors with Kubernetes' syntax and semantics.

use std::collections::BTreeSet;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: BTreeSet<String>,
}

/// A parsed `labelSelector`. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Eq,
    DoubleEq,
    NotEq,
    Not,
    Comma,
    Open,
    Close,
    Gt,
    Lt,
}

fn lex(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            ',' => {
                out.push(Token::Comma);
                i += 1
            }
            '(' => {
                out.push(Token::Open);
                i += 1
            }
            ')' => {
                out.push(Token::Close);
                i += 1
            }
            '>' => {
                out.push(Token::Gt);
                i += 1
            }
            '<' => {
                out.push(Token::Lt);
                i += 1
            }
            '=' if cs.get(i + 1) == Some(&'=') => {
                out.push(Token::DoubleEq);
                i += 2
            }
            '=' => {
                out.push(Token::Eq);
                i += 1
            }
            '!' if cs.get(i + 1) == Some(&'=') => {
                out.push(Token::NotEq);
                i += 2
            }
            '!' => {
                out.push(Token::Not);
                i += 1
            }
            _ => {
                let start = i;
                while i < cs.len() && !" \t\n,()=!<>".contains(cs[i]) {
                    i += 1;
                }
                out.push(Token::Ident(cs[start..i].iter().collect()));
            }
        }
    }
    out
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "EOS".into(),
        Some(Token::Ident(s)) => s.clone(),
        Some(Token::Eq) => "=".into(),
        Some(Token::DoubleEq) => "==".into(),
        Some(Token::NotEq) => "!=".into(),
        Some(Token::Not) => "!".into(),
        Some(Token::Comma) => ",".into(),
        Some(Token::Open) => "(".into(),
        Some(Token::Close) => ")".into(),
        Some(Token::Gt) => ">".into(),
        Some(Token::Lt) => "<".into(),
    }
}

fn valid_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

fn valid_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let toks = lex(s);
        let mut p = 0;
        let mut reqs = Vec::new();
        if toks.is_empty() {
            return Ok(LabelSelector { reqs });
        }
        loop {
            let req = parse_requirement(&toks, &mut p)?;
            reqs.push(req);
            match toks.get(p) {
                None => break,
                Some(Token::Comma) => p += 1,
                other => return Err(format!("found '{}', expected: ',' or 'end of string'", describe(other))),
            }
        }
        Ok(LabelSelector { reqs })
    }

    /// Whether `labels` (a JSON object of string values, or null) matches.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match r.op {
                Op::Eq | Op::In => v.is_some_and(|v| r.values.contains(v)),
                Op::NotEq | Op::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt | Op::Lt => {
                    let want: Option<i64> = r.values.iter().next().and_then(|x| x.parse().ok());
                    match (v.and_then(|v| v.parse::<i64>().ok()), want) {
                        (Some(have), Some(want)) => {
                            if r.op == Op::Gt {
                                have > want
                            } else {
                                have < want
                            }
                        }
                        _ => false,
                    }
                }
            }
        })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

fn ident(toks: &[Token], p: &mut usize) -> Result<String, String> {
    match toks.get(*p) {
        Some(Token::Ident(s)) => {
            *p += 1;
            Ok(s.clone())
        }
        other => Err(format!("found '{}', expected: identifier", describe(other))),
    }
}

fn parse_requirement(toks: &[Token], p: &mut usize) -> Result<Requirement, String> {
    let unable = |e: String| format!("unable to parse requirement: {e}");
    if toks.get(*p) == Some(&Token::Not) {
        *p += 1;
        let key = ident(toks, p).map_err(unable)?;
        check_key(&key)?;
        return Ok(Requirement { key, op: Op::DoesNotExist, values: BTreeSet::new() });
    }
    let key = ident(toks, p).map_err(unable)?;
    check_key(&key)?;
    let op = match toks.get(*p) {
        None | Some(Token::Comma) => return Ok(Requirement { key, op: Op::Exists, values: BTreeSet::new() }),
        Some(Token::Eq) | Some(Token::DoubleEq) => Op::Eq,
        Some(Token::NotEq) => Op::NotEq,
        Some(Token::Gt) => Op::Gt,
        Some(Token::Lt) => Op::Lt,
        Some(Token::Ident(w)) if w == "in" => Op::In,
        Some(Token::Ident(w)) if w == "notin" => Op::NotIn,
        other => return Err(unable(format!("found '{}', expected: in, notin, =, ==, !=, gt, lt", describe(other)))),
    };
    *p += 1;
    let mut values = BTreeSet::new();
    if matches!(op, Op::In | Op::NotIn) {
        if toks.get(*p) != Some(&Token::Open) {
            return Err(unable(format!("found '{}', expected: '('", describe(toks.get(*p)))));
        }
        *p += 1;
        loop {
            match toks.get(*p) {
                Some(Token::Ident(v)) => {
                    values.insert(v.clone());
                    *p += 1;
                }
                Some(Token::Comma) if values.is_empty() => {
                    values.insert(String::new());
                }
                _ => {}
            }
            match toks.get(*p) {
                Some(Token::Comma) => *p += 1,
                Some(Token::Close) => {
                    *p += 1;
                    break;
                }
                other => return Err(unable(format!("found '{}', expected: ',', ')' or identifier", describe(other)))),
            }
        }
    } else {
        match toks.get(*p) {
            Some(Token::Ident(v)) => {
                values.insert(v.clone());
                *p += 1;
            }
            // `a=` selects the empty value
            None | Some(Token::Comma) if matches!(op, Op::Eq | Op::NotEq) => {
                values.insert(String::new());
            }
            other => return Err(unable(format!("found '{}', expected: identifier", describe(other)))),
        }
        if matches!(op, Op::Gt | Op::Lt) && values.iter().any(|v| v.parse::<i64>().is_err()) {
            return Err(unable("for 'Gt', 'Lt' operators, the value must be an integer".into()));
        }
    }
    for v in &values {
        if !matches!(op, Op::Gt | Op::Lt) && !valid_label_value(v) {
            return Err(format!("values[0][{key}]: Invalid value: \"{v}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
        }
    }
    Ok(Requirement { key, op, values })
}

fn check_key(key: &str) -> Result<(), String> {
    if valid_label_key(key) {
        Ok(())
    } else {
        Err(format!("key: Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
    }
}

/// A parsed `fieldSelector`: `a=b,c!=d` terms on dotted field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parse, allowing only `fields` (plus metadata.name/namespace).
    pub fn parse(s: &str, supported: &[&str]) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, neq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" && !supported.contains(&field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), neq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// Read each label in `paths` (`(label, dotted path)`) from that path
    /// of the object instead (`source` is `source.component` of an Event).
    pub fn with_paths(mut self, paths: &[(&str, &str)]) -> Self {
        for (field, _, _) in &mut self.terms {
            if let Some((_, path)) = paths.iter().find(|(label, _)| label == field) {
                *field = (*path).to_string();
            }
        }
        self
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(field, neq, want)| {
            let have = field_value(obj, field);
            (have == *want) != *neq
        })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// The string value of a dotted field path; absent fields read as "".
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selector_operators() {
        let l = json!({"app": "web", "tier": "fe", "n": "5"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(Some(&l));
        assert!(m("app=web"));
        assert!(m("app==web,tier!=db"));
        assert!(!m("app=db"));
        assert!(m("tier in (fe, be)"));
        assert!(!m("tier notin (fe)"));
        assert!(m("app"));
        assert!(m("!missing"));
        assert!(!m("!app"));
        assert!(m("n>3"));
        assert!(!m("n<3"));
        assert!(m(""));
        assert!(LabelSelector::parse("a in b").unwrap_err().contains("expected: '('"));
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("metadata.name=p,spec.nodeName!=n2", &["spec.nodeName"]).unwrap();
        assert!(f.matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=", &["spec.nodeName"]).unwrap().matches(&json!({})));
        assert_eq!(FieldSelector::parse("spec.x=1", &[]).unwrap_err(), "field label not supported: spec.x");
        let ev = json!({"source": {"component": "kubelet"}});
        let f = FieldSelector::parse("source=kubelet", &["source"]).unwrap();
        assert!(!f.clone().matches(&ev));
        assert!(f.with_paths(&[("source", "source.component")]).matches(&ev));
    }
}
