//! The string formats of apimachinery's `util/validation`: DNS labels and
//! subdomains, qualified names, label values, port names, config keys and
//! environment variable names. Each `*_errors` function returns the
//! messages Kubernetes gives, and an empty (unallocated) list when valid.

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_UNDERSCORE_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '_', '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const WILDCARD_FMT: &str = "\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const HTTP_PATH_FMT: &str = "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+";
const PERCENT_FMT: &str = "[0-9]+%";
const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%'";

pub(crate) const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

/// RegexError: the message, examples, and the regular expression.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut m = String::from(msg);
    if !examples.is_empty() {
        m.push_str(" (e.g. ");
        for (i, e) in examples.iter().enumerate() {
            if i > 0 {
                m.push_str(" or ");
            }
            m.push('\'');
            m.push_str(e);
            m.push_str("', ");
        }
        m.push_str("regex used for validation is '");
    } else {
        m.push_str(" (regex used for validation is '");
    }
    m.push_str(fmt);
    m.push_str("')");
    m
}

pub(crate) fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn subdomain_chars(s: &str) -> bool {
    s.split('.').all(label_chars)
}

fn qualified_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Whether `s` is a valid RFC 1123 label (at most 63 characters).
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && label_chars(s)
}

/// Whether `s` is a valid RFC 1123 subdomain (at most 253 characters).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && subdomain_chars(s)
}

/// Whether `s` is a valid RFC 1035 label.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

pub(crate) fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 63 {
        v.push(max_len_error(63));
    }
    if !label_chars(s) {
        if subdomain_chars(s) {
            v.push("must not contain dots".to_string());
        } else {
            v.push(regex_error(DNS1123_LABEL_MSG, DNS1123_LABEL_FMT, &["my-name", "123-abc"]));
        }
    }
    v
}

pub(crate) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 253 {
        v.push(max_len_error(253));
    }
    if !subdomain_chars(s) {
        v.push(regex_error(DNS1123_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    v
}

/// IsDNS1123SubdomainWithUnderscore (relaxed DNS search paths).
pub(crate) fn dns1123_subdomain_underscore_errors(s: &str) -> Vec<String> {
    fn label(l: &str) -> bool {
        let l = l.strip_prefix('_').unwrap_or(l);
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
    }
    let mut v = Vec::new();
    if s.len() > 253 {
        v.push(max_len_error(253));
    }
    if !s.split('.').all(label) {
        v.push(regex_error(DNS1123_SUBDOMAIN_UNDERSCORE_MSG, DNS1123_SUBDOMAIN_FMT, &["example.com"]));
    }
    v
}

pub(crate) fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 63 {
        v.push(max_len_error(63));
    }
    if !(label_chars(s) && s.starts_with(|c: char| c.is_ascii_lowercase())) {
        v.push(regex_error(DNS1035_LABEL_MSG, DNS1035_LABEL_FMT, &["my-name", "abc-123"]));
    }
    v
}

pub(crate) fn wildcard_dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 253 {
        v.push(max_len_error(253));
    }
    if !s.strip_prefix("*.").is_some_and(subdomain_chars) {
        v.push(regex_error(WILDCARD_MSG, WILDCARD_FMT, &["*.example.com"]));
    }
    v
}

/// IsQualifiedName: an optional DNS subdomain prefix and '/', then a name
/// of at most 63 characters.
pub(crate) fn qualified_name_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    let name = match s.matches('/').count() {
        0 => s,
        1 => {
            let (prefix, name) = s.split_once('/').unwrap_or(("", s));
            if prefix.is_empty() {
                v.push("prefix part must be non-empty".to_string());
            } else {
                v.extend(dns1123_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            name
        }
        _ => {
            v.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return v;
        }
    };
    if name.is_empty() {
        v.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        v.push(format!("name part {}", max_len_error(63)));
    }
    if !qualified_chars(name) {
        v.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    v
}

pub(crate) fn label_value_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 63 {
        v.push(max_len_error(63));
    }
    if !(s.is_empty() || qualified_chars(s)) {
        v.push(regex_error(LABEL_VALUE_MSG, LABEL_VALUE_FMT, &["MyValue", "my_value", "12345"]));
    }
    v
}

/// IsValidPortName: an IANA_SVC_NAME.
pub(crate) fn port_name_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 15 {
        v.push(max_len_error(15));
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        v.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        v.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        v.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        v.push("must not begin or end with a hyphen".to_string());
    }
    v
}

pub(crate) fn port_num_ok(n: i64) -> bool {
    (1..=65535).contains(&n)
}

fn ch_dir_prefix(s: &str, v: &mut Vec<String>) {
    if s == "." {
        v.push("must not be '.'".to_string());
    } else if s == ".." {
        v.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        v.push("must not start with '..'".to_string());
    }
}

/// IsConfigMapKey: the keys of ConfigMaps and Secrets.
pub(crate) fn config_map_key_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.len() > 253 {
        v.push(max_len_error(253));
    }
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_') {
        v.push(regex_error(CONFIG_KEY_MSG, CONFIG_KEY_FMT, &["key.name", "KEY_NAME", "key-name"]));
    }
    ch_dir_prefix(s, &mut v);
    v
}

/// IsRelaxedEnvVarName (RelaxedEnvironmentVariableValidation is on by
/// default in 1.33): printable ASCII except '='.
pub(crate) fn env_var_name_errors(s: &str) -> Vec<String> {
    let mut v = Vec::new();
    if s.is_empty() {
        v.push("environment variable name must be non-empty".to_string());
    }
    if s.chars().any(|c| !(' '..='~').contains(&c) || c == '=') {
        v.push(
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        );
    }
    v
}

/// IsValidPathSegmentName: what every name must satisfy to appear in a URL.
pub(crate) fn path_segment_errors(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    let mut v = Vec::new();
    for bad in ["/", "%"] {
        if s.contains(bad) {
            v.push(format!("may not contain '{bad}'"));
        }
    }
    v
}

pub(crate) fn is_percent(s: &str) -> bool {
    s.strip_suffix('%').is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
}

pub(crate) fn percent_error() -> String {
    regex_error(PERCENT_MSG, PERCENT_FMT, &["1%", "93%"])
}

pub(crate) fn http_path_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&c))
}

pub(crate) fn http_path_error() -> String {
    regex_error("Invalid path", HTTP_PATH_FMT, &[])
}

/// maskTrailingDash: a generateName may end with '-'.
pub(crate) fn mask_trailing_dash(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() > 1 && s.ends_with('-') {
        std::borrow::Cow::Owned(format!("{}a", &s[..s.len() - 2]))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label_errors("web-1").is_empty());
        assert_eq!(dns1123_label_errors("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            dns1123_label_errors("Web")[0],
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        );
        assert_eq!(dns1123_label_errors(&"a".repeat(64))[0], "must be no more than 63 characters");
        assert!(dns1123_subdomain_errors("a.b-c").is_empty());
        assert_eq!(
            dns1123_subdomain_errors("a..b")[0],
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        assert!(!dns1035_label_errors("1abc").is_empty());
        assert!(wildcard_dns1123_subdomain_errors("*.example.com").is_empty());
        assert!(!wildcard_dns1123_subdomain_errors("*.*.example.com").is_empty());
    }

    #[test]
    fn qualified_names() {
        assert!(qualified_name_errors("example.com/MyName").is_empty());
        assert!(qualified_name_errors("app").is_empty());
        assert_eq!(qualified_name_errors("/a"), vec!["prefix part must be non-empty"]);
        assert_eq!(qualified_name_errors("a/").len(), 2);
        assert!(qualified_name_errors("a/b/c")[0].starts_with("a qualified name must consist of"));
        assert_eq!(qualified_name_errors(&"a".repeat(64))[0], "name part must be no more than 63 characters");
    }

    #[test]
    fn port_names_are_iana_service_names() {
        assert!(port_name_errors("http-alt").is_empty());
        assert_eq!(port_name_errors("80"), vec!["must contain at least one letter (a-z)"]);
        assert_eq!(
            port_name_errors("-a--b"),
            vec!["must not contain consecutive hyphens", "must not begin or end with a hyphen"]
        );
        assert_eq!(port_name_errors("abcdefghijklmnop")[0], "must be no more than 15 characters");
        assert_eq!(port_name_errors("A")[0], "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }

    #[test]
    fn keys_env_names_and_segments() {
        assert!(config_map_key_errors("tls.crt").is_empty());
        assert_eq!(config_map_key_errors("..a"), vec!["must not start with '..'"]);
        assert_eq!(config_map_key_errors("a/b").len(), 1);
        assert!(env_var_name_errors("MY-VAR.1").is_empty());
        assert_eq!(
            env_var_name_errors("A=B"),
            vec!["a valid environment variable name must consist only of printable ASCII characters other than '='"]
        );
        assert_eq!(path_segment_errors("a/b%"), vec!["may not contain '/'", "may not contain '%'"]);
        assert_eq!(mask_trailing_dash("web-"), "wea");
    }
}
