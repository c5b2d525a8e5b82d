//! The linear pattern matcher finds exactly the captures the backtracking matcher it replaced
//! found (issue 10, finding 3): same match or no match, and the same cut of the name when
//! separators repeat, with and without `where` constraints.
//!
//! The reference below is that backtracking matcher, kept as the specification of which capture
//! takes what: captures are tried shortest first, left to right, and the first complete match
//! wins. It reads the pattern's source itself, so it shares no code with the crate's matcher.

use std::collections::BTreeMap;

use porter_core::pattern::{Constraints, Pattern};
use proptest::prelude::*;

enum Piece {
    Literal(String),
    Capture(String),
}

/// Splits a pattern the crate accepted into literals and captures.
fn pieces(source: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = source;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let close = after.find('}').expect("an accepted pattern is balanced");
            out.push(Piece::Capture(after[..close].to_owned()));
            rest = &after[close + 1..];
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            out.push(Piece::Literal(rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// The matcher Porter used before issue 10, unchanged in behaviour.
fn backtrack<'c>(
    pieces: &[Piece],
    input: &'c str,
    constraints: &Constraints,
    found: &mut Vec<(String, &'c str)>,
) -> bool {
    let Some((piece, later)) = pieces.split_first() else {
        return input.is_empty();
    };
    match piece {
        Piece::Literal(literal) => input
            .strip_prefix(literal.as_str())
            .is_some_and(|rest| backtrack(later, rest, constraints, found)),
        Piece::Capture(name) => {
            let allowed = constraints.get(name);
            for end in 1..=input.len() {
                let (Some(value), Some(rest)) = (input.get(..end), input.get(end..)) else {
                    continue;
                };
                if allowed.is_some_and(|values| !values.iter().any(|v| v == value)) {
                    continue;
                }
                found.push((name.clone(), value));
                if backtrack(later, rest, constraints, found) {
                    return true;
                }
                found.pop();
            }
            false
        }
    }
}

fn reference(
    source: &str,
    input: &str,
    constraints: &Constraints,
) -> Option<BTreeMap<String, String>> {
    let mut found = Vec::new();
    backtrack(&pieces(source), input, constraints, &mut found).then(|| {
        found
            .into_iter()
            .map(|(name, value)| (name, value.to_owned()))
            .collect()
    })
}

/// Patterns over a tiny alphabet, so separators repeat and captures compete for them.
fn pattern_source() -> impl Strategy<Value = String> {
    let literal = "[-@a]{1,3}";
    (
        literal,
        proptest::collection::vec(("[-@a]{1,3}", any::<bool>()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(head, middles, open_end)| {
            let mut source = head;
            let names = ["a", "b", "c", "d"];
            for (i, (literal, _)) in middles.iter().enumerate() {
                source.push_str(&format!("{{{}}}", names[i]));
                source.push_str(literal);
            }
            if open_end && middles.len() < 4 {
                source.push_str(&format!("{{{}}}", names[middles.len()]));
            }
            source
        })
}

/// Constraints on some of the captures, values from the same alphabet (empty ones included:
/// that is how an impossible pin is written).
fn constraints() -> impl Strategy<Value = Constraints> {
    proptest::collection::btree_map(
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d"), Just("z")].prop_map(str::to_owned),
        proptest::collection::vec("[-@a]{0,3}", 0..4),
        0..3,
    )
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[-@a]{0,14}",
        "[-@ab]{0,10}",
        // Multi-byte characters: both matchers cut only at char boundaries.
        "[-@a\u{e9}]{0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn linear_matcher_agrees_with_backtracking(
        source in pattern_source(),
        input in name(),
        constraints in constraints(),
    ) {
        let pattern = Pattern::parse(&source).expect("generated patterns are valid");
        prop_assert_eq!(
            pattern.captures(&input, &constraints),
            reference(&source, &input, &constraints),
            "pattern {:?} on {:?} with {:?}", source, input, constraints
        );
    }
}

#[test]
fn repeated_separators_cut_as_before() {
    let cases = [
        (
            "private-{a}-{b}",
            "private-x-y-z",
            Some(&[("a", "x"), ("b", "y-z")][..]),
        ),
        (
            "private-{a}-{b}-end",
            "private---end-end",
            Some(&[("a", "-"), ("b", "end")][..]),
        ),
        ("p@{a}@{b}", "p@@@@", Some(&[("a", "@"), ("b", "@")][..])),
        ("private-{a}-{b}-{c}-{d}-end", "private-------", None),
    ];
    for (source, input, expected) in cases {
        let found = Pattern::parse(source)
            .unwrap()
            .captures(input, &Constraints::new());
        let expected = expected.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        });
        assert_eq!(found, expected, "{source} on {input}");
        assert_eq!(
            found,
            reference(source, input, &Constraints::new()),
            "{source}"
        );
    }
}

#[test]
fn worst_case_name_does_not_match() {
    // The benchmark's name (`benches/core.rs`): every position is a separator, and the end is
    // not `-end`. The backtracking matcher needed seconds for it in a debug build.
    let pattern = Pattern::parse("private-{a}-{b}-{c}-{d}-end").unwrap();
    let name = format!("private-{}", "-".repeat(192));
    assert_eq!(pattern.captures(&name, &Constraints::new()), None);
    let matching = format!("{name}-end");
    let found = pattern.captures(&matching, &Constraints::new()).unwrap();
    assert_eq!(found["a"], "-");
    assert_eq!(found["d"].len(), 192 - 6);
}
