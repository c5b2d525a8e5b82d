//! Channel name patterns with named captures: `private-{feature}@{object_id}`.
//!
//! A capture matches one or more channel-name characters, `-` included, so
//! `private-hotel-{hotel_slug}-guest-chat-booking-{booking_id}` captures `grand-hotel` and
//! `BK-2025-ABC123`. Of all the ways to cut a name, the match is the one whose first capture
//! is shortest, then whose second is, and so on (what a shortest-first backtracking matcher
//! finds first), so a capture followed by `@` ends at the first `@`, as the default naming
//! scheme splits.
//!
//! Matching takes time linear in the name's length whatever the pattern: a table marks, for
//! every segment and position, whether the pattern can be there on the way to a whole match
//! (a forward pass from the start, pruned by a backward pass from the end), and a last pass
//! picks each capture's shortest end that stays on the table. The backtracking matcher this
//! replaces needed half a second for one 200-character name (issue 10, `docs/benchmarks.md`);
//! `tests/pattern_equivalence.rs` checks the two agree on which capture takes what.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

/// The most captures one pattern may have: keeps rules readable (matching is linear anyway).
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
        // Most rules fail on their fixed prefix or suffix: answer those without the tables.
        if let Some(Segment::Literal(first)) = self.segments.first()
            && !channel.starts_with(first.as_str())
        {
            return None;
        }
        if let Some(Segment::Literal(last)) = self.segments.last()
            && !channel.ends_with(last.as_str())
        {
            return None;
        }
        let table = self.completions(channel, constraints)?;
        let width = channel.len() + 1;
        let mut found = BTreeMap::new();
        let mut at = 0;
        for (index, segment) in self.segments.iter().enumerate() {
            let rest = &table[(index + 1) * width..(index + 2) * width];
            match segment {
                Segment::Literal(literal) => at += literal.len(),
                Segment::Capture(name) => {
                    // The shortest value the rest of the pattern can complete; the table says
                    // one exists.
                    let end = match constraints.get(name) {
                        None => (at + 1..width).find(|&end| rest[end])?,
                        Some(values) => values
                            .iter()
                            .filter_map(|v| value_end(channel, at, v))
                            .filter(|&end| rest[end])
                            .min()?,
                    };
                    found.insert(name.clone(), channel.get(at..end)?.to_owned());
                    at = end;
                }
            }
        }
        Some(found)
    }

    /// Entry `i * (len + 1) + p` of the table says whether segments `..i` can match
    /// `channel[..p]` and segments `i..` exactly `channel[p..]`; `None` when the pattern does
    /// not match at all. A forward pass marks what the start reaches, so the backward pass that
    /// prunes it only looks where a match can be; every cell is a char boundary, so each slice
    /// taken at one is valid.
    fn completions(&self, channel: &str, constraints: &Constraints) -> Option<Vec<bool>> {
        let width = channel.len() + 1;
        let segments = self.segments.len();
        let mut table = vec![false; (segments + 1) * width];
        table[0] = true;
        // The marked span of the current row: rows are sparse, and an empty one ends the match.
        let (mut low, mut high) = (0, 0);
        for (index, segment) in self.segments.iter().enumerate() {
            let (done, later) = table.split_at_mut((index + 1) * width);
            let here = &done[index * width..];
            let next = &mut later[..width];
            let (mut next_low, mut next_high) = (usize::MAX, 0);
            let mut mark = |end: usize| {
                next[end] = true;
                next_low = next_low.min(end);
                next_high = next_high.max(end);
            };
            let span = (low..=high).filter(|&at| here[at]);
            match segment {
                Segment::Literal(literal) => {
                    span.filter_map(|at| value_end(channel, at, literal))
                        .for_each(&mut mark);
                }
                Segment::Capture(name) => match constraints.get(name) {
                    // Any value will do: every boundary after the first marked position.
                    None => (low + 1..width)
                        .filter(|&end| channel.is_char_boundary(end))
                        .for_each(&mut mark),
                    Some(values) => {
                        for at in span {
                            values
                                .iter()
                                .filter_map(|v| value_end(channel, at, v))
                                .for_each(&mut mark);
                        }
                    }
                },
            }
            if next_low == usize::MAX {
                return None;
            }
            (low, high) = (next_low, next_high);
        }
        // Backward: a match ends at the end of the name, and a position stays marked only if
        // one of its moves lands on a marked position of the next row.
        let last = &mut table[segments * width..];
        if !last[channel.len()] {
            return None;
        }
        last[..channel.len()].fill(false);
        for (index, segment) in self.segments.iter().enumerate().rev() {
            let (done, later) = table.split_at_mut((index + 1) * width);
            let here = &mut done[index * width..];
            let next = &later[..width];
            match segment {
                Segment::Literal(literal) => {
                    for (at, cell) in here.iter_mut().enumerate() {
                        *cell =
                            *cell && value_end(channel, at, literal).is_some_and(|end| next[end]);
                    }
                }
                Segment::Capture(name) => match constraints.get(name) {
                    None => {
                        // Some end after `at` is marked: a running "any later" flag.
                        let mut later_marked = false;
                        for at in (0..width).rev() {
                            here[at] &= later_marked;
                            later_marked |= next[at];
                        }
                    }
                    Some(values) => {
                        for (at, cell) in here.iter_mut().enumerate() {
                            *cell = *cell
                                && values
                                    .iter()
                                    .filter_map(|v| value_end(channel, at, v))
                                    .any(|end| next[end]);
                        }
                    }
                },
            }
        }
        table[0].then_some(table)
    }
}

/// Where a literal or a constrained capture's `value` ends if it starts at `at`. Captures are
/// never empty, so an empty value (how an impossible pin is written) never matches.
///
/// Compares bytes: one valid UTF-8 string found in another starts and ends at char boundaries,
/// and a position past a char boundary's reach is never marked, so this never cuts a char.
fn value_end(channel: &str, at: usize, value: &str) -> Option<usize> {
    let tail = channel.as_bytes().get(at..)?;
    (!value.is_empty() && tail.starts_with(value.as_bytes())).then_some(at + value.len())
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
