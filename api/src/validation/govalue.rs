//! Go's renderings of the bad values Kubernetes puts in its messages: `%q`
//! for strings and `%#v` for the maps, slices and structs it passes whole
//! (`map[string]string{"app":"web"}`, `v1.LabelSelector{...}`).

use std::fmt::Write;

use serde_json::Value;

/// strconv.Quote: a double-quoted Go string literal.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `%#v` of a `map[string]string`; keys sorted as fmt sorts them.
pub(crate) fn string_map(v: Option<&Value>) -> String {
    let Some(m) = v.and_then(Value::as_object) else {
        return "map[string]string(nil)".to_string();
    };
    let mut pairs: Vec<(&String, &str)> = m.iter().map(|(k, v)| (k, v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    let mut out = String::from("map[string]string{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{}:{}", quote(k), quote(v));
    }
    out.push('}');
    out
}

/// `%#v` of a `[]string`.
pub(crate) fn string_slice(v: Option<&Value>) -> String {
    let Some(a) = v.and_then(Value::as_array) else {
        return "[]string(nil)".to_string();
    };
    let items: Vec<String> = a.iter().map(|s| quote(s.as_str().unwrap_or(""))).collect();
    format!("[]string{{{}}}", items.join(", "))
}

/// `%#v` of an `intstr.IntOrString` held by value.
pub(crate) fn int_or_string(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}", quote(s)),
        Some(n) => format!("intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}", n.as_i64().unwrap_or(0)),
        None => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".to_string(),
    }
}

/// `%#v` of a `metav1.LabelSelector` (a `*LabelSelector` is dereferenced by
/// the error printer, so this is what `spec.selector` errors show).
pub(crate) fn label_selector(v: &Value) -> String {
    let exprs = match v.get("matchExpressions").and_then(Value::as_array) {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|e| {
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{}}}",
                        quote(e.get("key").and_then(Value::as_str).unwrap_or("")),
                        quote(e.get("operator").and_then(Value::as_str).unwrap_or("")),
                        string_slice(e.get("values"))
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!("v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{}}}", string_map(v.get("matchLabels")), exprs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quote_escapes_like_strconv() {
        assert_eq!(quote("web"), "\"web\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("a\nb\u{1}"), "\"a\\nb\\x01\"");
        assert_eq!(quote("é"), "\"é\"");
    }

    #[test]
    fn composite_values_print_as_go_syntax() {
        assert_eq!(string_map(Some(&json!({"b": "2", "a": "1"}))), "map[string]string{\"a\":\"1\", \"b\":\"2\"}");
        assert_eq!(string_map(None), "map[string]string(nil)");
        assert_eq!(string_slice(Some(&json!(["x", "y"]))), "[]string{\"x\", \"y\"}");
        assert_eq!(int_or_string(Some(&json!(0))), "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}");
        assert_eq!(int_or_string(Some(&json!("0%"))), "intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}");
        assert_eq!(
            label_selector(&json!({"matchLabels": {"app": "b"}})),
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
    }
}
