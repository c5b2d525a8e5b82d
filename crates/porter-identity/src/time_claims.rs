//! A token's time claims (`exp`, `nbf`, `iat`), read as RFC 7519's NumericDate: any JSON number
//! of seconds since the epoch, integer or not, however large. The one reader of them, so that the
//! token's own check, its session's end and its revocation's lifetime agree on what it says.
//!
//! jsonwebtoken cannot be the authority here: it skips an `nbf` it cannot read as a `u64` (a
//! string, a negative number, one past `u64`), so `"nbf": "tomorrow"` would pass as "no `nbf`",
//! and it ignores `iat`. [`check`] runs on every verified token and refuses a time claim that
//! is present but not a number, and checks `exp` and `nbf` for every number.
//!
//! A fraction is kept as the two whole seconds around it, and each use takes the side that errs
//! safe: a token is good until the earlier second of its `exp` and from the later second of its
//! `nbf`, while a revocation lasts until the later second of its `exp`. Values past `i64`
//! saturate, so a huge `exp` reads as "as late as can be", never as "unknown".

use serde_json::{Map, Value};
use thiserror::Error;

/// A NumericDate in whole Unix seconds: the seconds at or before it and at or after it (equal
/// for an integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericDate {
    floor: i64,
    ceil: i64,
}

/// Why a token's time claims refuse it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeClaimError {
    #[error("the token's `{0}` is not a number")]
    NotANumber(&'static str),
    #[error("the token has no `exp` claim")]
    NoExpiry,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
}

impl NumericDate {
    /// A whole second.
    pub fn from_secs(secs: i64) -> NumericDate {
        NumericDate {
            floor: secs,
            ceil: secs,
        }
    }

    /// A JSON value as a NumericDate; `None` when it is not a number.
    pub fn of(value: &Value) -> Option<NumericDate> {
        let Value::Number(number) = value else {
            return None;
        };
        if let Some(secs) = number.as_i64() {
            return Some(NumericDate::from_secs(secs));
        }
        if number.as_u64().is_some() {
            // Past i64::MAX: later than any clock can read.
            return Some(NumericDate::from_secs(i64::MAX));
        }
        // `as` saturates at i64's bounds; JSON has no NaN or infinity.
        let secs = number.as_f64()?;
        Some(NumericDate {
            floor: secs.floor() as i64,
            ceil: secs.ceil() as i64,
        })
    }

    /// The whole second at or before it.
    pub fn floor_secs(self) -> i64 {
        self.floor
    }

    /// The whole second at or after it.
    pub fn ceil_secs(self) -> i64 {
        self.ceil
    }
}

/// The time claim `name` of `claims`: `None` when absent, an error when present but not a
/// number (never read as absent).
pub fn claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<NumericDate>, TimeClaimError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => NumericDate::of(value)
            .map(Some)
            .ok_or(TimeClaimError::NotANumber(name)),
    }
}

/// Checks a token's time claims at `now` (Unix seconds) with `leeway` seconds of clock skew:
/// `exp` required, `exp`, `nbf` and `iat` numbers when present, `exp` not passed and `nbf`
/// reached, each with the leeway.
pub fn check(claims: &Map<String, Value>, now: i64, leeway: i64) -> Result<(), TimeClaimError> {
    let exp = claim(claims, "exp")?;
    let nbf = claim(claims, "nbf")?;
    // Nothing is decided on `iat`, but a token that carries a non-number there is malformed.
    claim(claims, "iat")?;
    let exp = exp.ok_or(TimeClaimError::NoExpiry)?;
    if exp.floor_secs().saturating_add(leeway) < now {
        return Err(TimeClaimError::Expired);
    }
    if let Some(nbf) = nbf
        && nbf.ceil_secs() > now.saturating_add(leeway)
    {
        return Err(TimeClaimError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn every_json_number_is_a_numeric_date() {
        let read = |value: Value| NumericDate::of(&value).map(|d| (d.floor_secs(), d.ceil_secs()));
        assert_eq!(
            read(json!(1_767_225_600)),
            Some((1_767_225_600, 1_767_225_600))
        );
        assert_eq!(
            read(json!(1_767_225_600.5)),
            Some((1_767_225_600, 1_767_225_601))
        );
        assert_eq!(read(json!(-1.5)), Some((-2, -1)));
        // Past i64::MAX, as an integer or a float: as late as can be, not unknown.
        assert_eq!(read(json!(u64::MAX)), Some((i64::MAX, i64::MAX)));
        assert_eq!(read(json!(1e300)), Some((i64::MAX, i64::MAX)));
        assert_eq!(read(json!(-1e300)), Some((i64::MIN, i64::MIN)));
        for not_a_number in [
            json!("1767225600"),
            json!("tomorrow"),
            json!(null),
            json!([1]),
        ] {
            assert_eq!(read(not_a_number.clone()), None, "{not_a_number}");
        }
    }

    #[test]
    fn a_time_claim_that_is_not_a_number_refuses_the_token() {
        let now = 1_000;
        for name in ["exp", "nbf", "iat"] {
            let mut token = claims(json!({"exp": now + 60}));
            token.insert(name.into(), json!("tomorrow"));
            assert_eq!(
                check(&token, now, 0),
                Err(TimeClaimError::NotANumber(name)),
                "{name}"
            );
        }
        assert_eq!(
            check(&claims(json!({"nbf": now})), now, 0),
            Err(TimeClaimError::NoExpiry)
        );
    }

    #[test]
    fn exp_and_nbf_hold_for_every_number_with_the_leeway() {
        let now = 1_000;
        let at = |exp: Value, nbf: Value| check(&claims(json!({"exp": exp, "nbf": nbf})), now, 5);
        assert_eq!(at(json!(now), json!(now)), Ok(()));
        assert_eq!(at(json!(now - 5), json!(now + 5)), Ok(()));
        assert_eq!(at(json!(now - 6), json!(now)), Err(TimeClaimError::Expired));
        // A fraction counts to the safe side: gone after its earlier second, valid from
        // its later one.
        assert_eq!(at(json!(994.9), json!(now)), Err(TimeClaimError::Expired));
        assert_eq!(
            at(json!(now), json!(1005.1)),
            Err(TimeClaimError::NotYetValid)
        );
        assert_eq!(
            at(json!(now), json!(now + 6)),
            Err(TimeClaimError::NotYetValid)
        );
        // Huge values, which jsonwebtoken cannot read as u64: an `nbf` beyond any clock is
        // not yet valid, an `exp` beyond any clock has not expired.
        assert_eq!(
            at(json!(now), json!(1e300)),
            Err(TimeClaimError::NotYetValid)
        );
        assert_eq!(at(json!(1e300), json!(-1e300)), Ok(()));
        assert_eq!(at(json!(u64::MAX), json!(-1)), Ok(()));
    }
}
