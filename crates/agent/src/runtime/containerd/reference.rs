//! Image references, normalized the way Kubernetes and containerd do it:
//! `busybox` is `docker.io/library/busybox:latest`, `foo/bar` is
//! `docker.io/foo/bar:latest`, `localhost:5000/x` is `localhost:5000/x:latest`;
//! a digest is kept as given.

use std::fmt;

/// A parsed, fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`...
    pub domain: String,
    /// `library/busybox`, `test/busybox`...
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`.
    pub digest: Option<String>,
}

const DOCKER_HUB: &str = "docker.io";

impl Reference {
    /// Parses and normalizes `input`: adds `docker.io`, `library/` and
    /// `:latest` where Kubernetes' short-name rules say so.
    pub fn parse(input: &str) -> Result<Reference, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("empty image reference".to_string());
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest)?;
                (name, Some(digest.to_string()))
            }
            None => (input, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                validate_tag(tag, input)?;
                (&name[..last_slash + i], Some(tag.to_string()))
            }
            None => (name, None),
        };
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" { DOCKER_HUB.to_string() } else { domain };
        let path = if domain == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
        validate_path(&path, input)?;
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { domain, path, tag, digest })
    }

    /// `domain/path`, the repository without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The host to speak the registry API to (`registry-1.docker.io` for Docker Hub).
    pub fn registry_host(&self) -> &str {
        if self.domain == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.domain
        }
    }

    /// Registries on the loopback interface are spoken to over plain HTTP,
    /// as containerd does.
    pub fn is_loopback(&self) -> bool {
        let host = match self.domain.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => self.domain.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// What to ask the registry's manifest endpoint for: the digest if known, else the tag.
    pub fn object(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The normalized form of `reference`, or the input unchanged if it does not parse
/// (so that a lookup simply finds nothing).
pub fn normalize(reference: &str) -> String {
    Reference::parse(reference).map_or_else(|_| reference.to_string(), |r| r.to_string())
}

fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) => Ok(()),
        _ => Err(format!("invalid digest {digest:?} (expected sha256:<64 hex digits>)")),
    }
}

fn validate_tag(tag: &str, input: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?} in image reference {input:?}"))
    }
}

fn validate_path(path: &str, input: &str) -> Result<(), String> {
    let ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid image reference {input:?}: repository names are lowercase letters, digits and . _ - separated by /"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_follow_kubernetes_rules() {
        let cases = [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("foo/bar", "docker.io/foo/bar:latest"),
            ("docker.io/library/nginx:1", "docker.io/library/nginx:1"),
            ("index.docker.io/library/nginx", "docker.io/library/nginx:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("localhost/x:2", "localhost/x:2"),
            ("127.0.0.1:5000/test/busybox:1", "127.0.0.1:5000/test/busybox:1"),
            ("ghcr.io/a/b/c", "ghcr.io/a/b/c:latest"),
            ("skiff.local/pause:1", "skiff.local/pause:1"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn digests_are_kept() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(normalize(&format!("busybox@{d}")), format!("docker.io/library/busybox@{d}"));
        assert_eq!(normalize(&format!("busybox:1@{d}")), format!("docker.io/library/busybox:1@{d}"));
        let r = Reference::parse(&format!("localhost:5000/x@{d}")).unwrap();
        assert_eq!(r.object(), d);
        assert_eq!(r.tag, None);
    }

    #[test]
    fn invalid_references_are_errors() {
        assert!(Reference::parse("").is_err());
        assert!(Reference::parse("Busybox").is_err());
        assert!(Reference::parse("busybox@sha256:abc").is_err());
        assert!(Reference::parse("busybox:").is_err());
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(Reference::parse("localhost:5000/x").unwrap().is_loopback());
        assert!(Reference::parse("127.0.0.1:5000/x").unwrap().is_loopback());
        assert!(Reference::parse("[::1]:5000/x").unwrap().is_loopback());
        assert!(!Reference::parse("busybox").unwrap().is_loopback());
        assert!(!Reference::parse("ghcr.io/x").unwrap().is_loopback());
        assert_eq!(Reference::parse("busybox").unwrap().registry_host(), "registry-1.docker.io");
    }
}
