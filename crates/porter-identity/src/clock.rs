//! The wall clock as JWT claims count it. The one definition: session ends, token expiries
//! and revocation lifetimes are all compared against it.

/// Unix time now, in whole seconds (0 if the system clock is before 1970).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z: a clock reading 0 or milliseconds would fail.
        let now = now_secs();
        assert!(now > 1_704_067_200, "{now}");
        assert!(now < 1_704_067_200_000, "{now}");
    }
}
