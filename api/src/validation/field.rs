//! Field paths and the error constructors of apimachinery's `field` package:
//! `Required value`, `Invalid value: "x": ...`, `Unsupported value`, ...
//!
//! A [`Path`] is a chain of borrowed segments on the stack; it becomes a
//! string only when an error is made, so valid objects allocate nothing.

use std::fmt;

use super::govalue;
use super::FieldError;

#[derive(Clone, Copy)]
enum Seg<'a> {
    Name(&'a str),
    Index(usize),
    Key(&'a str),
}

/// A field path such as `spec.containers[0].ports[1].name`.
#[derive(Clone, Copy)]
pub(crate) struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    seg: Seg<'a>,
}

impl<'a> Path<'a> {
    pub(crate) const fn root(name: &'a str) -> Self {
        Path { parent: None, seg: Seg::Name(name) }
    }

    pub(crate) fn child<'b>(&'b self, name: &'b str) -> Path<'b> {
        Path { parent: Some(self), seg: Seg::Name(name) }
    }

    pub(crate) fn index<'b>(&'b self, i: usize) -> Path<'b> {
        Path { parent: Some(self), seg: Seg::Index(i) }
    }

    pub(crate) fn key<'b>(&'b self, k: &'b str) -> Path<'b> {
        Path { parent: Some(self), seg: Seg::Key(k) }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.parent {
            p.write(f)?;
        }
        match self.seg {
            // a named element after another is joined with a dot, as
            // field.Path.String does, even after an empty root
            Seg::Name("") => Ok(()),
            Seg::Name(n) if self.parent.is_some() => write!(f, ".{n}"),
            Seg::Name(n) => f.write_str(n),
            Seg::Index(i) => write!(f, "[{i}]"),
            Seg::Key(k) => write!(f, "[{k}]"),
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f)
    }
}

/// A bad value as ErrorBody prints it: strings quoted (`%q`), integers bare,
/// anything else already rendered the way Go's `%#v` shows it.
pub(crate) enum Bad<'a> {
    Str(&'a str),
    Int(i64),
    Go(String),
}

impl Bad<'_> {
    fn render(&self) -> String {
        match self {
            Bad::Str(s) => govalue::quote(s),
            Bad::Int(i) => i.to_string(),
            Bad::Go(s) => s.clone(),
        }
    }
}

impl<'a> From<&'a str> for Bad<'a> {
    fn from(s: &'a str) -> Self {
        Bad::Str(s)
    }
}

impl<'a> From<&'a String> for Bad<'a> {
    fn from(s: &'a String) -> Self {
        Bad::Str(s)
    }
}

impl From<i64> for Bad<'_> {
    fn from(i: i64) -> Self {
        Bad::Int(i)
    }
}

impl From<String> for Bad<'_> {
    fn from(s: String) -> Self {
        Bad::Go(s)
    }
}

fn error(reason: &'static str, p: &Path, message: String) -> FieldError {
    FieldError { reason, field: p.to_string(), message }
}

fn with_detail(head: &str, detail: &str) -> String {
    if detail.is_empty() {
        head.to_string()
    } else {
        format!("{head}: {detail}")
    }
}

pub(crate) fn required(p: &Path, detail: &str) -> FieldError {
    error("FieldValueRequired", p, with_detail("Required value", detail))
}

pub(crate) fn forbidden(p: &Path, detail: &str) -> FieldError {
    error("FieldValueForbidden", p, with_detail("Forbidden", detail))
}

pub(crate) fn invalid<'v>(p: &Path, value: impl Into<Bad<'v>>, detail: &str) -> FieldError {
    let head = format!("Invalid value: {}", value.into().render());
    error("FieldValueInvalid", p, with_detail(&head, detail))
}

/// `Unsupported value: "Foo": supported values: "A", "B"`.
pub(crate) fn not_supported<'v>(p: &Path, value: impl Into<Bad<'v>>, supported: &[&str]) -> FieldError {
    let mut m = format!("Unsupported value: {}", value.into().render());
    if !supported.is_empty() {
        m.push_str(": supported values: ");
        for (i, s) in supported.iter().enumerate() {
            if i > 0 {
                m.push_str(", ");
            }
            m.push_str(&govalue::quote(s));
        }
    }
    error("FieldValueNotSupported", p, m)
}

pub(crate) fn duplicate<'v>(p: &Path, value: impl Into<Bad<'v>>) -> FieldError {
    error("FieldValueDuplicate", p, format!("Duplicate value: {}", value.into().render()))
}

pub(crate) fn not_found<'v>(p: &Path, value: impl Into<Bad<'v>>) -> FieldError {
    error("FieldValueNotFound", p, format!("Not found: {}", value.into().render()))
}

pub(crate) fn too_long(p: &Path, max: usize) -> FieldError {
    error("FieldValueTooLong", p, format!("Too long: may not be more than {max} bytes"))
}

pub(crate) fn too_many(p: &Path, actual: usize, max: usize) -> FieldError {
    error("FieldValueTooMany", p, format!("Too many: {actual}: must have at most {max} items"))
}

/// `field.Invalid(path, value, FieldImmutableErrorMsg)`.
pub(crate) fn immutable<'v>(p: &Path, value: impl Into<Bad<'v>>) -> FieldError {
    invalid(p, value, "field is immutable")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_field_path_string() {
        let spec = Path::root("spec");
        let c = spec.child("containers");
        let c0 = c.index(0);
        let port = c0.child("ports");
        let p1 = port.index(1);
        assert_eq!(p1.child("name").to_string(), "spec.containers[0].ports[1].name");
        let data = Path::root("data");
        assert_eq!(data.key("tls.crt").to_string(), "data[tls.crt]");
        assert_eq!(Path::root("").to_string(), "");
    }

    #[test]
    fn messages_follow_error_body() {
        let p = Path::root("x");
        assert_eq!(required(&p, "").message, "Required value");
        assert_eq!(required(&p, "why").message, "Required value: why");
        assert_eq!(invalid(&p, "a\"b", "bad").message, "Invalid value: \"a\\\"b\": bad");
        assert_eq!(invalid(&p, -1i64, "neg").message, "Invalid value: -1: neg");
        assert_eq!(
            not_supported(&p, "Foo", &["Always", "Never"]).message,
            "Unsupported value: \"Foo\": supported values: \"Always\", \"Never\""
        );
        assert_eq!(duplicate(&p, "web").message, "Duplicate value: \"web\"");
        assert_eq!(not_found(&p, "v").message, "Not found: \"v\"");
        assert_eq!(forbidden(&p, "no").message, "Forbidden: no");
        assert_eq!(too_long(&p, 5).message, "Too long: may not be more than 5 bytes");
        assert_eq!(too_many(&p, 3, 2).message, "Too many: 3: must have at most 2 items");
        assert_eq!(immutable(&p, "a").message, "Invalid value: \"a\": field is immutable");
    }
}
