//! The policy file (`porter_core::policy::Policy::from_toml`): operator input that the CLI,
//! the gateway and the workers all read, and then match every channel against.
//!
//! The input's first line is a channel name, the rest the TOML. Invariants: parsing never
//! panics, whatever the TOML (bad input is an error, not a crash); a parsed policy has rules,
//! each findable by its name, with task durations in (0, `MAX_DURATION`] and cache TTLs of at
//! least a second; matching the channel never panics, and a match is of a rule of the policy
//! and of a channel that parses.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use porter_core::channel::Channel;
use porter_core::policy::{MAX_DURATION, Policy};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (channel, source) = text.split_once('\n').unwrap_or(("private-x", text));
    let policy = match Policy::from_toml(source) {
        Ok(policy) => policy,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert!(!policy.rules().is_empty());
    for rule in policy.rules() {
        assert!(policy.rule(&rule.name).is_some());
        for duration in [rule.route.time_limit, rule.route.expires] {
            assert!(
                duration > Duration::ZERO && duration <= MAX_DURATION,
                "{rule:?}"
            );
        }
        if let Some(cache) = rule.cache {
            assert!(cache.ttl >= Duration::from_secs(1), "{rule:?}");
        }
    }
    if let Ok(found) = policy.match_name(channel) {
        assert!(Channel::parse(channel).is_ok());
        assert!(policy.rules().iter().any(|rule| rule == found.rule));
    }
});
