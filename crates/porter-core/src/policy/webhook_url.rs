//! Webhook URL templates: `http://app.internal/porter/{object_id}`.
//!
//! Captures come from the channel name, which the caller picks, so they may only ever fill the
//! URL's path, one segment's worth each: the parser refuses a template with a capture in the
//! scheme, the authority (where `{x}` could add userinfo or change the host), the query or the
//! fragment, and rendering percent-encodes every value as path-segment text and refuses a value
//! that is a dot segment (`.` or `..` would walk the path). The only way to a URL from a
//! template is [`WebhookUrl::render`], so no caller can forget either step.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// Why a webhook URL template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebhookUrlError {
    #[error("must start with http:// or https://")]
    Scheme,
    #[error("has no host")]
    NoHost,
    #[error("has a space or control character")]
    BadCharacter,
    #[error(
        "has a `{{…}}` in its {0}: captures may only appear in the path, where they are percent-encoded"
    )]
    CaptureOutsidePath(&'static str),
    #[error("has an unbalanced `{{` or `}}`")]
    Unbalanced,
    #[error(
        "refers to `{{{0}}}`, which is neither a capture of the pattern nor a route parameter of an endpoint serving the rule"
    )]
    UnknownCapture(String),
}

/// Why a template could not be rendered for a task: the task is refused, never sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("capture `{0}` is missing")]
    Missing(String),
    #[error("capture `{0}` is empty or a dot segment (`.` or `..`)")]
    DotSegment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Capture(String),
}

/// A checked webhook URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    source: String,
    parts: Vec<Part>,
}

impl WebhookUrl {
    /// Checks a template whose captures may be any of `names`.
    pub fn parse(source: &str, names: &[&str]) -> Result<WebhookUrl, WebhookUrlError> {
        if source.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(WebhookUrlError::BadCharacter);
        }
        let after_scheme = ["http://", "https://"]
            .iter()
            .find_map(|scheme| source.strip_prefix(scheme))
            .ok_or(WebhookUrlError::Scheme)?;
        let authority_end = after_scheme
            .find(['/', '?', '#'])
            .unwrap_or(after_scheme.len());
        let authority = &after_scheme[..authority_end];
        if authority.is_empty() {
            return Err(WebhookUrlError::NoHost);
        }
        if authority.contains(['{', '}']) {
            return Err(WebhookUrlError::CaptureOutsidePath("authority"));
        }
        let rest = &after_scheme[authority_end..];
        let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
        if rest[path_end..].contains(['{', '}']) {
            return Err(WebhookUrlError::CaptureOutsidePath("query or fragment"));
        }
        let head_len = source.len() - rest.len();
        let mut parts = vec![Part::Literal(source[..head_len].to_owned())];
        let mut path = &rest[..path_end];
        while let Some(open) = path.find(['{', '}']) {
            if path.as_bytes()[open] == b'}' {
                return Err(WebhookUrlError::Unbalanced);
            }
            let after = &path[open + 1..];
            let close = after.find('}').ok_or(WebhookUrlError::Unbalanced)?;
            let name = &after[..close];
            if name.contains('{') {
                return Err(WebhookUrlError::Unbalanced);
            }
            if !names.contains(&name) {
                return Err(WebhookUrlError::UnknownCapture(name.to_owned()));
            }
            parts.push(Part::Literal(path[..open].to_owned()));
            parts.push(Part::Capture(name.to_owned()));
            path = &after[close + 1..];
        }
        parts.push(Part::Literal(format!("{path}{}", &rest[path_end..])));
        parts.retain(|p| !matches!(p, Part::Literal(l) if l.is_empty()));
        Ok(WebhookUrl {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The URL for a task's captures, each percent-encoded as path-segment text.
    pub fn render(&self, captures: &BTreeMap<String, String>) -> Result<String, RenderError> {
        let mut url = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Literal(literal) => url.push_str(literal),
                Part::Capture(name) => {
                    let value = captures
                        .get(name)
                        .ok_or_else(|| RenderError::Missing(name.clone()))?;
                    if value.is_empty() || value == "." || value == ".." {
                        return Err(RenderError::DotSegment(name.clone()));
                    }
                    encode_segment(value, &mut url);
                }
            }
        }
        Ok(url)
    }
}

impl fmt::Display for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters: a value can then neither
/// end its segment (`/`), start a query or fragment (`?`, `#`) nor smuggle an escape (`%`).
fn encode_segment(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captures(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn captures_are_encoded_as_path_segments() {
        let url = WebhookUrl::parse("http://app/porter/{verdict}/{id}?x=1#f", &["verdict", "id"])
            .unwrap();
        assert_eq!(
            url.render(&captures(&[("verdict", "allow"), ("id", "a@b=c,d;e")]))
                .unwrap(),
            "http://app/porter/allow/a%40b%3Dc%2Cd%3Be?x=1#f"
        );
        assert_eq!(
            url.render(&captures(&[("verdict", "../admin"), ("id", "%2e%2e")]))
                .unwrap(),
            "http://app/porter/..%2Fadmin/%252e%252e?x=1#f"
        );
        assert_eq!(
            url.render(&captures(&[("verdict", "..."), ("id", "1")]))
                .unwrap(),
            "http://app/porter/.../1?x=1#f"
        );
    }

    #[test]
    fn dot_segments_and_missing_captures_are_refused() {
        let url = WebhookUrl::parse("https://app/{id}", &["id"]).unwrap();
        for value in [".", "..", ""] {
            assert_eq!(
                url.render(&captures(&[("id", value)])),
                Err(RenderError::DotSegment("id".into())),
                "{value:?}"
            );
        }
        assert_eq!(
            url.render(&BTreeMap::new()),
            Err(RenderError::Missing("id".into()))
        );
    }

    #[test]
    fn captures_outside_the_path_are_refused() {
        let names = ["id", "host"];
        for (source, error) in [
            (
                "http://{host}/x",
                WebhookUrlError::CaptureOutsidePath("authority"),
            ),
            (
                "http://user{id}@app/x",
                WebhookUrlError::CaptureOutsidePath("authority"),
            ),
            (
                "http://app:{id}/x",
                WebhookUrlError::CaptureOutsidePath("authority"),
            ),
            (
                "http://app/x?id={id}",
                WebhookUrlError::CaptureOutsidePath("query or fragment"),
            ),
            (
                "http://app/x#{id}",
                WebhookUrlError::CaptureOutsidePath("query or fragment"),
            ),
            ("{id}://app/x", WebhookUrlError::Scheme),
            ("ftp://app/x", WebhookUrlError::Scheme),
            ("http:///x", WebhookUrlError::NoHost),
            (
                "http://app/{nope}",
                WebhookUrlError::UnknownCapture("nope".into()),
            ),
            ("http://app/{id", WebhookUrlError::Unbalanced),
            ("http://app/id}", WebhookUrlError::Unbalanced),
            ("http://app/a b", WebhookUrlError::BadCharacter),
        ] {
            assert_eq!(WebhookUrl::parse(source, &names), Err(error), "{source}");
        }
    }

    #[test]
    fn a_template_without_captures_renders_as_written() {
        let url = WebhookUrl::parse("http://127.0.0.1:9/decide?v=2", &[]).unwrap();
        assert_eq!(url.render(&BTreeMap::new()).unwrap(), url.as_str());
        assert_eq!(url.to_string(), "http://127.0.0.1:9/decide?v=2");
    }
}
