//! The rendered table in nft's own syntax: what the transactions send to
//! `nft -f -` (rules, set declarations), and, close to what `nft list table`
//! prints, how the unit tests state their expectations and what a person
//! reads in a log. Covers the statements and expressions `render` uses.

use std::fmt::Write;

use serde_json::Value;

use super::render::{Fragment, SetDecl, TABLE};
use super::Family;

pub(crate) fn table(family: Family, all: &Fragment) -> String {
    let mut out = format!("table {} {TABLE} {{\n", family.nft());
    for (name, decl) in &all.sets {
        let kind = if decl.is_map { "map" } else { "set" };
        let _ = writeln!(out, "\t{kind} {name} {{");
        let key = key_type(&decl.key);
        match (&decl.type_of, &decl.data) {
            // as nft lists it, and as it must be declared
            (Some(t), _) => {
                let _ = writeln!(out, "\t\ttypeof {t}");
            }
            (None, data) => match data {
                Some(d) => {
                    let _ = writeln!(out, "\t\ttype {key} : {d}");
                }
                None => {
                    let _ = writeln!(out, "\t\ttype {key}");
                }
            },
        }
        if !decl.flags.is_empty() {
            let _ = writeln!(out, "\t\tflags {}", decl.flags.join(","));
        }
        if let Some(t) = decl.timeout {
            let _ = writeln!(out, "\t\ttimeout {t}s");
        }
        let elems: Vec<String> = all
            .elements
            .iter()
            .filter(|((s, _), _)| s == name)
            .map(|((_, k), d)| match d {
                Some(d) => format!("{} : {}", k.text(), d.text()),
                None => k.text(),
            })
            .collect();
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t     "));
        }
        out.push_str("\t}\n");
    }
    for (name, chain) in &all.chains {
        let _ = writeln!(out, "\tchain {name} {{");
        if let Some(b) = chain.base {
            let _ = writeln!(out, "\t\ttype {} hook {} priority {}; policy accept;", b.kind, b.hook, b.prio);
        }
        for r in &chain.rules {
            let _ = writeln!(out, "\t\t{}", rule(r));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}

/// A rule's statements as nft writes them.
pub(crate) fn rule(stmts: &[Value]) -> String {
    stmts.iter().map(stmt).collect::<Vec<_>>().join(" ")
}

/// The body of `add set|map …`: `{ type … ; flags … ; timeout … ; }`.
pub(crate) fn set_spec(decl: &SetDecl) -> String {
    let mut out = String::from("{ ");
    match &decl.type_of {
        Some(t) => {
            let _ = write!(out, "typeof {t} ; ");
        }
        None => {
            let _ = write!(out, "type {}", key_type(&decl.key));
            if let Some(d) = &decl.data {
                let _ = write!(out, " : {d}");
            }
            out.push_str(" ; ");
        }
    }
    if !decl.flags.is_empty() {
        let _ = write!(out, "flags {} ; ", decl.flags.join(","));
    }
    if let Some(t) = decl.timeout {
        let _ = write!(out, "timeout {t}s ; ");
    }
    out.push('}');
    out
}

fn key_type(key: &Value) -> String {
    match key {
        Value::Array(parts) => parts.iter().map(|p| p.as_str().unwrap_or("?")).collect::<Vec<_>>().join(" . "),
        other => other.as_str().unwrap_or("?").to_string(),
    }
}

fn stmt(v: &Value) -> String {
    let Some((k, body)) = v.as_object().and_then(|o| o.iter().next()) else {
        return expr(v);
    };
    match k.as_str() {
        "match" => {
            let left = expr(&body["left"]);
            let right = expr(&body["right"]);
            let masked = body["left"].as_object().is_some_and(|o| o.contains_key("&"));
            let right = match body["right"].as_u64() {
                Some(n) if masked => format!("== {n:#x}"),
                _ => right,
            };
            match body["op"].as_str().unwrap_or("==") {
                "==" | "in" => format!("{left} {right}"),
                op => format!("{left} {op} {right}"),
            }
        }
        "mangle" => format!("{} set {}", expr(&body["key"]), expr(&body["value"])),
        "dnat" => {
            let mut s = String::from("dnat");
            if body["family"].is_string() {
                let _ = write!(s, " {}", body["family"].as_str().unwrap_or_default());
            }
            let addr = expr(&body["addr"]);
            if body["port"].is_null() {
                let _ = write!(s, " to {addr}");
            } else if body["addr"].as_str().is_some_and(|a| a.contains(':')) {
                // an IPv6 address with a port
                let _ = write!(s, " to [{addr}]:{}", expr(&body["port"]));
            } else {
                let _ = write!(s, " to {addr}:{}", expr(&body["port"]));
            }
            s
        }
        "masquerade" => match body["flags"].as_str() {
            Some(f) => format!("masquerade {f}"),
            None => "masquerade".into(),
        },
        "reject" => match (body["type"].as_str(), body["expr"].as_str()) {
            (Some("tcp reset"), _) => "reject with tcp reset".into(),
            (Some(t), Some(e)) => format!("reject with {t} {e}"),
            _ => "reject".into(),
        },
        "vmap" => format!("{} vmap {}", expr(&body["key"]), expr(&body["data"])),
        "set" => format!("{} {} {{ {} }}", body["op"].as_str().unwrap_or("?"), expr(&body["set"]), expr(&body["elem"])),
        _ => expr(v),
    }
}

fn expr(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => a.iter().map(expr).collect::<Vec<_>>().join(", "),
        Value::Object(o) => {
            let Some((k, body)) = o.iter().next() else { return String::new() };
            match k.as_str() {
                "payload" => {
                    format!("{} {}", body["protocol"].as_str().unwrap_or("?"), body["field"].as_str().unwrap_or("?"))
                }
                "meta" => format!("meta {}", body["key"].as_str().unwrap_or("?")),
                "ct" => format!("ct {}", body["key"].as_str().unwrap_or("?")),
                "fib" => {
                    let flags: Vec<String> = body["flags"].as_array().into_iter().flatten().map(expr).collect();
                    format!("fib {} {}", flags.join(" . "), body["result"].as_str().unwrap_or("?"))
                }
                "numgen" => {
                    let mut s = format!("numgen {} mod {}", body["mode"].as_str().unwrap_or("?"), body["mod"]);
                    if body["offset"].as_u64().is_some_and(|o| o != 0) {
                        let _ = write!(s, " offset {}", body["offset"]);
                    }
                    s
                }
                "concat" => body.as_array().into_iter().flatten().map(expr).collect::<Vec<_>>().join(" . "),
                "prefix" => format!("{}/{}", expr(&body["addr"]), body["len"]),
                "&" | "|" | "^" => {
                    let parts: Vec<String> = body
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| match p.as_u64() {
                            Some(n) => format!("{n:#x}"),
                            None => expr(p),
                        })
                        .collect();
                    parts.join(&format!(" {k} "))
                }
                "set" => format!(
                    "{{ {} }}",
                    body.as_array().into_iter().flatten().map(set_elem).collect::<Vec<_>>().join(", ")
                ),
                "map" => format!("{} map {}", expr(&body["key"]), expr(&body["data"])),
                "jump" | "goto" => format!("{k} {}", body["target"].as_str().unwrap_or("?")),
                "accept" | "drop" | "return" | "continue" => k.clone(),
                _ => v.to_string(),
            }
        }
    }
}

fn set_elem(v: &Value) -> String {
    match v.as_array() {
        Some(pair) if pair.len() == 2 => format!("{} : {}", expr(&pair[0]), expr(&pair[1])),
        _ => expr(v),
    }
}
