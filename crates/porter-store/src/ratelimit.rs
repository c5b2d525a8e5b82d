//! Rate limits by GCRA (the generic cell rate algorithm), shared by every gateway replica.
//!
//! A quota of `count` requests per `period` allows a burst of `count` at once and then one
//! request every `period / count`. GCRA keeps one number per bucket, the theoretical arrival
//! time (TAT) of the next request, so a check is one read and one write. In Redis all the
//! buckets of a request (user, client id, IP) are checked and charged by ONE Lua script
//! ([`GCRA_SCRIPT`]), atomically and with Redis's own clock, so replicas with skewed clocks
//! still share one budget. A request refused by any bucket charges none of them.
//!
//! [`gcra`] is the same arithmetic in Rust, for the in-memory store of `porter dev` and for
//! unit tests of the algorithm.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// `count` requests per `period`, with a burst of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub count: u32,
    pub period: Duration,
}

/// A quota that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "invalid rate `{0}`: use COUNT/PERIOD with PERIOD one of s, m, h or a number of seconds (at most a day), e.g. 20/s, 600/m, 100/10s"
)]
pub struct QuotaError(String);

impl Quota {
    /// Microseconds between two requests at the sustained rate (at least 1).
    pub fn interval_us(&self) -> u64 {
        (self.period.as_micros() as u64 / u64::from(self.count.max(1))).max(1)
    }

    /// How far ahead of now the TAT may run: the whole burst.
    pub fn tolerance_us(&self) -> u64 {
        self.interval_us() * u64::from(self.count.max(1))
    }
}

impl FromStr for Quota {
    type Err = QuotaError;

    /// `20/s`, `600/m`, `1000/h`, `100/10s`.
    fn from_str(text: &str) -> Result<Quota, QuotaError> {
        let error = || QuotaError(text.to_owned());
        let (count, period) = text.trim().split_once('/').ok_or_else(error)?;
        let count: u32 = count.trim().parse().map_err(|_| error())?;
        let period = period.trim();
        let (number, unit) = match period.find(|c: char| !c.is_ascii_digit()) {
            Some(at) => period.split_at(at),
            None => (period, "s"),
        };
        let number: u64 = if number.is_empty() {
            1
        } else {
            number.parse().map_err(|_| error())?
        };
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(error()),
        };
        // At most a day: longer periods make no sense for request rates and could overflow.
        let period = number.checked_mul(seconds).filter(|s| *s <= 24 * 3600);
        match period {
            Some(period) if count > 0 && period > 0 => Ok(Quota {
                count,
                period: Duration::from_secs(period),
            }),
            _ => Err(error()),
        }
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}s", self.count, self.period.as_secs())
    }
}

/// One bucket to check: its name under the rate-limit prefix (e.g. `user:7`) and its quota.
#[derive(Debug, Clone, Copy)]
pub struct RateCheck<'a> {
    pub bucket: &'a str,
    pub quota: Quota,
}

/// The verdict on a request over all its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Refused; `bucket` is the index of the first check that refused.
    Limited {
        bucket: usize,
        retry_after: Duration,
    },
}

/// One bucket's GCRA step: `Ok(new_tat)` when allowed, `Err(retry_after_us)` when not.
pub fn gcra(now_us: u64, tat_us: Option<u64>, quota: Quota) -> Result<u64, u64> {
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat + quota.interval_us();
    let allow_at = new_tat.saturating_sub(quota.tolerance_us());
    if now_us < allow_at {
        Err(allow_at - now_us)
    } else {
        Ok(new_tat)
    }
}

/// KEYS = one key per bucket; ARGV = interval and tolerance (µs) per bucket, in key order.
/// Returns `{0, 0}` when allowed (every bucket charged) or `{index (1-based), retry_after_us}`
/// of the first bucket that refused (nothing charged).
///
/// The keys of one request may hash to different slots: on Redis Cluster this script needs
/// the buckets under one hash tag, which Porter does not set (it targets one Redis).
pub const GCRA_SCRIPT: &str = r#"
-- Redis < 5 replicates scripts verbatim; reading TIME before a write needs effects mode.
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - tolerance
  if now < allow_at then
    return {i, allow_at - now}
  end
  tats[i] = new_tat
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((tats[i] - now) / 1000)
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl_ms)
end
return {0, 0}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse() {
        assert_eq!(
            "20/s".parse(),
            Ok(Quota {
                count: 20,
                period: Duration::from_secs(1)
            })
        );
        assert_eq!("600/m".parse::<Quota>().unwrap().period.as_secs(), 60);
        assert_eq!("5/h".parse::<Quota>().unwrap().period.as_secs(), 3600);
        assert_eq!("100/10s".parse::<Quota>().unwrap().period.as_secs(), 10);
        assert_eq!("3/10".parse::<Quota>().unwrap().period.as_secs(), 10);
        for bad in [
            "",
            "10",
            "0/s",
            "10/0s",
            "x/s",
            "10/d",
            "-1/s",
            "1/25h",
            "1/99999999999999999h",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_is_allowed_then_one_per_interval() {
        let quota: Quota = "3/s".parse().unwrap();
        let now = 1_000_000_000;
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(gcra(now, tat, quota).expect("within the burst"));
        }
        let retry = gcra(now, tat, quota).expect_err("past the burst");
        assert_eq!(retry, quota.interval_us());
        // One interval later exactly one more request passes.
        let later = now + quota.interval_us();
        let tat = Some(gcra(later, tat, quota).expect("refilled"));
        assert!(gcra(later, tat, quota).is_err());
    }

    #[test]
    fn an_idle_bucket_refills_to_the_burst_and_no_further() {
        let quota: Quota = "2/s".parse().unwrap();
        let mut tat = None;
        for _ in 0..2 {
            tat = Some(gcra(0, tat, quota).unwrap());
        }
        let much_later = 3_600_000_000;
        for _ in 0..2 {
            tat = Some(gcra(much_later, tat, quota).unwrap());
        }
        assert!(gcra(much_later, tat, quota).is_err());
    }
}
