//! What a cached decision records, and when a cache hit may be served.
//!
//! The cache key is the channel's cache name (which drops `-encrypted`, as the system Porter
//! replaces did) and a scope, so two channels decided by different rules can share a key:
//! `private-encrypted-X` under a strict rule and `private-X` under a looser one. An entry
//! therefore records the rule that wrote it, as a [`RuleStamp`] of the rule's whole definition,
//! and a hit counts only when the rule that matches the channel now has the same stamp
//! ([`CachedDecision::data_for`]). A changed rule (a new policy, a rolling deploy) or another
//! rule's entry is a miss, never a grant; so is an entry in an older format.
//!
//! Architecture Invariant: a cache hit only ever stands for the decision of the rule that now
//! matches the channel: entries are written by [`CachedDecision::encode`] and read back only by
//! [`CachedDecision::data_for`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::{Policy, Rule};
use crate::wire::AuthData;

/// A short digest of a rule's whole definition (name, pattern, allow, data, cache, routing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStamp(String);

impl RuleStamp {
    /// The stamp of one rule. Built from the rule's `Debug` form, which shows every field:
    /// a build whose rule types print differently only makes the other build's entries miss.
    pub fn of(rule: &Rule) -> RuleStamp {
        let digest = Sha256::digest(format!("{rule:?}").as_bytes());
        RuleStamp(hex::encode(&digest[..12]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The stamp of every rule of a policy, computed once when the policy is loaded.
#[derive(Debug, Clone, Default)]
pub struct RuleStamps {
    by_rule: HashMap<String, RuleStamp>,
}

impl RuleStamps {
    pub fn of(policy: &Policy) -> RuleStamps {
        RuleStamps {
            by_rule: policy
                .rules()
                .iter()
                .map(|rule| (rule.name.clone(), RuleStamp::of(rule)))
                .collect(),
        }
    }

    /// The stamp of the named rule; `None` for a rule this policy does not have.
    pub fn get(&self, rule: &str) -> Option<&RuleStamp> {
        self.by_rule.get(rule)
    }
}

/// A cache entry: the rule that decided, and the data of its allow.
#[derive(Debug, Serialize, Deserialize)]
pub struct CachedDecision<'a> {
    /// The rule's name, for whoever reads the store.
    pub rule: &'a str,
    /// The rule's [`RuleStamp`].
    pub stamp: &'a str,
    pub data: AuthData,
}

impl CachedDecision<'_> {
    /// The entry of an allow by `rule`.
    pub fn encode(
        rule: &str,
        stamp: &RuleStamp,
        data: &AuthData,
    ) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            rule: &'a str,
            stamp: &'a str,
            data: &'a AuthData,
        }
        serde_json::to_string(&Entry {
            rule,
            stamp: stamp.as_str(),
            data,
        })
    }

    /// The data of a cache entry, when it was written by the rule `stamp` stands for; `None`
    /// for another rule's entry, another version of the rule, or anything unreadable.
    pub fn data_for(entry: &str, stamp: &RuleStamp) -> Option<AuthData> {
        let decision: CachedDecision<'_> = serde_json::from_str(entry).ok()?;
        (decision.stamp == stamp.as_str()).then_some(decision.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str) -> Policy {
        Policy::from_toml(&format!(
            "[[rule]]\nname = \"strict\"\npattern = \"private-encrypted-{{feature}}@{{object_id}}\"\nallow = \"owner\"\ncache = {{ scope = \"user\" }}\n\
             [[rule]]\nname = \"loose\"\npattern = \"private-{{feature}}@{{object_id}}\"\nallow = {allow}\ncache = {{ scope = \"user\" }}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_hit_stands_only_for_the_rule_that_wrote_it() {
        let policy = policy("\"authenticated\"");
        let stamps = RuleStamps::of(&policy);
        let (strict, loose) = (stamps.get("strict").unwrap(), stamps.get("loose").unwrap());
        assert_ne!(strict, loose);
        let data = AuthData {
            user_id: Some("7".into()),
            ..AuthData::default()
        };
        let entry = CachedDecision::encode("loose", loose, &data).unwrap();
        assert_eq!(CachedDecision::data_for(&entry, loose), Some(data));
        // The plain twin's allow does not open the encrypted channel.
        assert_eq!(CachedDecision::data_for(&entry, strict), None);
        // Nor does an entry of the format before stamps, or garbage.
        assert_eq!(CachedDecision::data_for(r#"{"user_id": "7"}"#, loose), None);
        assert_eq!(CachedDecision::data_for("not json", loose), None);
    }

    #[test]
    fn a_changed_rule_has_a_new_stamp() {
        let before = RuleStamps::of(&policy("\"authenticated\""));
        let after = RuleStamps::of(&policy("\"owner\""));
        assert_ne!(before.get("loose"), after.get("loose"));
        assert_eq!(before.get("strict"), after.get("strict"));
        assert!(before.get("nope").is_none());
    }
}
