//! Channel name patterns with named captures: `private-{feature}@{object_id}`.
//!
//! A capture matches one or more channel-name characters, `-` included, so
//! `private-hotel-{hotel_slug}-guest-chat-booking-{booking_id}` captures `grand-hotel` and
//! `BK-2025-ABC123`. Matching tries the shortest capture first and backtracks, so a capture
//! followed by `@` ends at the first `@`, as the default naming scheme splits.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// The most captures one pattern may have: keeps backtracking cheap on any input.
pub const MAX_CAPTURES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("unbalanced `{{` or `}}`")]
    Unbalanced,
    #[error(
        "capture name `{0}` must be lower-case letters, digits and `_`, starting with a letter"
    )]
    BadCaptureName(String),
    #[error("captures `{0}` and `{1}` are adjacent: put a literal between them")]
    AdjacentCaptures(String, String),
    #[error("capture `{0}` appears twice")]
    DuplicateCapture(String),
    #[error("more than {MAX_CAPTURES} captures")]
    TooManyCaptures,
    #[error("literal `{0}` has characters a channel name cannot contain")]
    BadLiteral(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    segments: Vec<Segment>,
}

/// Extra conditions on captures: a capture must be one of the listed values.
pub type Constraints = BTreeMap<String, Vec<String>>;

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, PatternError> {
        if source.is_empty() {
            return Err(PatternError::Empty);
        }
        let mut segments = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(0) if rest.starts_with('}') => return Err(PatternError::Unbalanced),
                Some(0) => {
                    let close = rest.find('}').ok_or(PatternError::Unbalanced)?;
                    let name = &rest[1..close];
                    if name.contains('{') {
                        return Err(PatternError::Unbalanced);
                    }
                    if !is_capture_name(name) {
                        return Err(PatternError::BadCaptureName(name.to_owned()));
                    }
                    if let Some(Segment::Capture(previous)) = segments.last() {
                        return Err(PatternError::AdjacentCaptures(
                            previous.clone(),
                            name.to_owned(),
                        ));
                    }
                    if segments
                        .iter()
                        .any(|s| matches!(s, Segment::Capture(n) if n == name))
                    {
                        return Err(PatternError::DuplicateCapture(name.to_owned()));
                    }
                    segments.push(Segment::Capture(name.to_owned()));
                    rest = &rest[close + 1..];
                }
                Some(at) if rest.as_bytes()[at] == b'}' => return Err(PatternError::Unbalanced),
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if !literal.chars().all(crate::channel::is_channel_char) {
                        return Err(PatternError::BadLiteral(literal.to_owned()));
                    }
                    segments.push(Segment::Literal(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        let captures = segments
            .iter()
            .filter(|s| matches!(s, Segment::Capture(_)))
            .count();
        if captures > MAX_CAPTURES {
            return Err(PatternError::TooManyCaptures);
        }
        Ok(Pattern {
            source: source.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The names of the captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Capture(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches the whole channel name; returns the captures if it matches and every
    /// constraint holds.
    pub fn captures(
        &self,
        channel: &str,
        constraints: &Constraints,
    ) -> Option<BTreeMap<String, String>> {
        let mut found = Vec::with_capacity(MAX_CAPTURES);
        if self.match_from(0, channel, constraints, &mut found) {
            Some(
                found
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
            )
        } else {
            None
        }
    }

    fn match_from<'p, 'c>(
        &'p self,
        index: usize,
        input: &'c str,
        constraints: &Constraints,
        found: &mut Vec<(&'p str, &'c str)>,
    ) -> bool {
        let Some(segment) = self.segments.get(index) else {
            return input.is_empty();
        };
        match segment {
            Segment::Literal(literal) => input
                .strip_prefix(literal.as_str())
                .is_some_and(|rest| self.match_from(index + 1, rest, constraints, found)),
            Segment::Capture(name) => {
                let allowed = constraints.get(name);
                // Channel names are ASCII (validated before matching), so every byte offset
                // is a char boundary; `get` keeps this safe on any input regardless.
                for end in 1..=input.len() {
                    let (Some(value), Some(rest)) = (input.get(..end), input.get(end..)) else {
                        continue;
                    };
                    if allowed.is_some_and(|values| !values.iter().any(|v| v == value)) {
                        continue;
                    }
                    found.push((name.as_str(), value));
                    if self.match_from(index + 1, rest, constraints, found) {
                        return true;
                    }
                    found.pop();
                }
                false
            }
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_capture_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Fills `{capture}` placeholders of a template from captures and extra values.
/// Unknown placeholders are left as they are; [`template_names`] lets callers check them.
pub fn render_template(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if values.contains_key(&after[..close]) => {
                out.push_str(&values[&after[..close]]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The `{names}` a template refers to.
pub fn template_names(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                names.push(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pattern: &str, channel: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(pattern)
            .unwrap()
            .captures(channel, &Constraints::new())
            .map(|m| m.into_iter().collect())
    }

    #[test]
    fn hyphenated_captures() {
        let found = caps(
            "private-hotel-{hotel_slug}-guest-chat-booking-{booking_id}",
            "private-hotel-grand-hotel-guest-chat-booking-BK-2025-ABC123",
        )
        .unwrap();
        assert_eq!(
            found,
            vec![
                ("booking_id".into(), "BK-2025-ABC123".into()),
                ("hotel_slug".into(), "grand-hotel".into())
            ]
        );
    }

    #[test]
    fn splits_at_first_at_sign() {
        let found = caps("private-{feature}@{object_id}", "private-stream-viewer@4@2").unwrap();
        assert_eq!(found[0], ("feature".into(), "stream-viewer".into()));
        assert_eq!(found[1], ("object_id".into(), "4@2".into()));
    }

    #[test]
    fn whole_name_must_match() {
        assert!(caps("private-{feature}@{object_id}", "private-stream").is_none());
        assert!(caps("private-{feature}@{object_id}", "private-stream@").is_none());
        assert!(caps("private-x", "private-xy").is_none());
        assert!(caps("private-x", "private-x").is_some());
    }

    #[test]
    fn constraints_filter_and_backtrack() {
        let pattern = Pattern::parse("private-{feature}-{rest}").unwrap();
        let constraints = Constraints::from([("feature".into(), vec!["stream-viewer".into()])]);
        let found = pattern
            .captures("private-stream-viewer-42", &constraints)
            .unwrap();
        assert_eq!(found["feature"], "stream-viewer");
        assert_eq!(found["rest"], "42");
        assert!(pattern.captures("private-user-42", &constraints).is_none());
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Empty));
        assert_eq!(Pattern::parse("private-{a"), Err(PatternError::Unbalanced));
        assert_eq!(Pattern::parse("private-a}"), Err(PatternError::Unbalanced));
        assert_eq!(Pattern::parse("}{a}"), Err(PatternError::Unbalanced));
        assert_eq!(
            Pattern::parse("private-{a}{b}"),
            Err(PatternError::AdjacentCaptures("a".into(), "b".into()))
        );
        assert_eq!(
            Pattern::parse("private-{A}"),
            Err(PatternError::BadCaptureName("A".into()))
        );
        assert_eq!(
            Pattern::parse("private-{a}-{a}"),
            Err(PatternError::DuplicateCapture("a".into()))
        );
        assert_eq!(
            Pattern::parse("private {a}"),
            Err(PatternError::BadLiteral("private ".into()))
        );
        assert_eq!(
            Pattern::parse("p-{a}-{b}-{c}-{d}-{e}"),
            Err(PatternError::TooManyCaptures)
        );
    }

    #[test]
    fn templates_fill_known_names_only() {
        let values = BTreeMap::from([("booking_id".to_owned(), "BK-1".to_owned())]);
        assert_eq!(render_template("guest_{booking_id}", &values), "guest_BK-1");
        assert_eq!(render_template("{nope}-{", &values), "{nope}-{");
        assert_eq!(template_names("a{x}b{y}"), vec!["x", "y"]);
    }
}
