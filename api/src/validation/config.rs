//! Secrets and ConfigMaps: their keys, their size, the keys each Secret
//! type requires, and immutability.

use serde_json::Value;

use super::field::{self, Path};
use super::meta::{self, NameRule};
use super::names;
use super::{semantic_eq, str_of, FieldError};

/// core.MaxSecretSize, which ConfigMaps share.
const MAX_SIZE: usize = 1024 * 1024;

/// The length of the bytes a base64 string decodes to.
fn decoded_len(b64: &str) -> usize {
    let n = b64.bytes().filter(|c| !c.is_ascii_whitespace()).count();
    let pad = b64.bytes().rev().filter(|c| !c.is_ascii_whitespace()).take_while(|c| *c == b'=').count();
    let partial = match n % 4 {
        2 => 1,
        3 => 2,
        _ => 0,
    };
    ((n / 4) * 3 + partial).saturating_sub(pad.min(2))
}

/// Standard base64, as JSON carries `[]byte`.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

/// json.Unmarshal into a `map[string]interface{}`: Go's error, or None.
fn json_object_error(bytes: &[u8]) -> Option<String> {
    let Some(&first) = bytes.iter().find(|c| !c.is_ascii_whitespace()) else {
        return Some("unexpected end of JSON input".to_string());
    };
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(_) | Value::Null) => None,
        Ok(v) => {
            let kind = match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Some(format!("json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"))
        }
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".to_string()),
        Err(_) if !b"{[\"-0123456789tfn".contains(&first) => {
            Some(format!("invalid character '{}' looking for beginning of value", char::from(first)))
        }
        Err(e) => Some(format!("invalid character in JSON: {e}")),
    }
}

fn data_keys(data: Option<&Value>, p: &Path, out: &mut Vec<FieldError>) -> usize {
    let mut total = 0;
    for (k, v) in data.and_then(Value::as_object).into_iter().flatten() {
        for msg in names::config_map_key_errors(k) {
            out.push(field::invalid(&p.key(k), k.as_str(), &msg));
        }
        total += decoded_len(v.as_str().unwrap_or(""));
    }
    total
}

/// ValidateSecret.
pub(crate) fn validate_secret(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let dp = Path::root("data");
    let data = obj.get("data").filter(|d| !d.is_null());
    if data_keys(data, &dp, out) > MAX_SIZE {
        out.push(field::too_long(&dp, MAX_SIZE));
    }
    let has = |k: &str| data.and_then(|d| d.get(k)).filter(|v| !v.is_null());
    let json_key = |k: &str, out: &mut Vec<FieldError>| match has(k) {
        None => out.push(field::required(&dp.key(k), "")),
        Some(v) => {
            let bytes = decode_base64(v.as_str().unwrap_or("")).unwrap_or_default();
            if let Some(e) = json_object_error(&bytes) {
                out.push(field::invalid(&dp.key(k), "<secret contents redacted>", &e));
            }
        }
    };
    match str_of(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            let named = obj.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str);
            if named.is_none_or(str::is_empty) {
                let mp = Path::root("metadata");
                let ap = mp.child("annotations");
                out.push(field::required(&ap.key(key), ""));
            }
        }
        "kubernetes.io/dockercfg" => json_key(".dockercfg", out),
        "kubernetes.io/dockerconfigjson" => json_key(".dockerconfigjson", out),
        "kubernetes.io/basic-auth" if has("username").is_none() && has("password").is_none() => {
            out.push(field::required(&dp.key("username"), ""));
            out.push(field::required(&dp.key("password"), ""));
        }
        "kubernetes.io/ssh-auth" if has("ssh-privatekey").and_then(Value::as_str).is_none_or(str::is_empty) => {
            out.push(field::required(&dp.key("ssh-privatekey"), ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if has(k).is_none() {
                    out.push(field::required(&dp.key(k), ""));
                }
            }
        }
        _ => {}
    }
}

/// ValidateConfigMap.
pub(crate) fn validate_config_map(obj: &Value, out: &mut Vec<FieldError>) {
    meta::object_meta(obj, NameRule::Subdomain, true, out);
    let binary = obj.get("binaryData").and_then(Value::as_object);
    let dp = Path::root("data");
    let mut total = 0;
    for (k, v) in obj.get("data").and_then(Value::as_object).into_iter().flatten() {
        let kp = dp.key(k);
        for msg in names::config_map_key_errors(k) {
            out.push(field::invalid(&kp, k.as_str(), &msg));
        }
        if binary.is_some_and(|b| b.contains_key(k)) {
            out.push(field::invalid(&kp, k.as_str(), "duplicate of key present in binaryData"));
        }
        total += v.as_str().map_or(0, str::len);
    }
    total += data_keys(obj.get("binaryData"), &Path::root("binaryData"), out);
    if total > MAX_SIZE {
        out.push(field::too_long(&Path::root(""), MAX_SIZE));
    }
}

/// The update rules of both: a Secret's type is immutable, and once
/// `immutable` is set, the data and the flag itself are.
pub(crate) fn update(kind: &str, old: &Value, new: &Value, out: &mut Vec<FieldError>) {
    if kind == "Secret" {
        let (ot, nt) = (str_of(old, "type"), str_of(new, "type"));
        if ot != nt {
            out.push(field::immutable(&Path::root("type"), nt));
        }
    }
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        out.push(field::forbidden(&Path::root("immutable"), WHY));
    }
    let keys: &[&str] = if kind == "Secret" { &["data"] } else { &["data", "binaryData"] };
    for k in keys {
        if !semantic_eq(old.get(*k), new.get(*k)) {
            out.push(field::forbidden(&Path::root(k), WHY));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths_and_decoding() {
        assert_eq!(decoded_len("aGVsbG8="), 5);
        assert_eq!(decoded_len("aGVsbG8h"), 6);
        assert_eq!(decoded_len(""), 0);
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("e30="), Some(b"{}".to_vec()));
    }

    #[test]
    fn go_json_errors() {
        assert_eq!(json_object_error(b"{}"), None);
        assert_eq!(json_object_error(b""), Some("unexpected end of JSON input".into()));
        assert_eq!(json_object_error(b"x"), Some("invalid character 'x' looking for beginning of value".into()));
        assert_eq!(
            json_object_error(b"[]"),
            Some("json: cannot unmarshal array into Go value of type map[string]interface {}".into())
        );
    }
}
