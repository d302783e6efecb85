//! Identifiers: a type prefix and 26 Crockford base32 characters of (48-bit millisecond
//! timestamp, 80 random bits), so ids are unguessable and sort by creation time (batch lists
//! page newest-first on the sort key alone).

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Builds an id from its parts; pure so that tests can pin both.
pub fn compose(prefix: &str, now_ms: u64, random: [u8; 10]) -> String {
    let mut value: u128 = u128::from(now_ms & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        let idx = ((value >> (5 * i)) & 0x1F) as usize;
        out.push(char::from(ALPHABET[idx]));
    }
    out
}

/// True when `id` has the shape [`compose`] makes with this prefix. Lets handlers answer 404
/// for garbage without a database round trip, and keeps odd bytes out of keys.
pub fn is_valid(prefix: &str, id: &str) -> bool {
    match id
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
    {
        Some(body) => body.len() == 26 && body.bytes().all(|b| ALPHABET.contains(&b)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_validate() {
        let a = compose("bat", 1_000, [0xFF; 10]);
        let b = compose("bat", 1_001, [0; 10]);
        assert!(a < b, "{a} should sort before {b}");
        assert_eq!(a.len(), 4 + 26);
        assert!(is_valid("bat", &a));
        assert!(!is_valid("acct", &a));
        assert!(!is_valid("bat", "bat_0123"));
        assert!(!is_valid("bat", "bat_0000000000000000000000000U"));
    }

    #[test]
    fn ids_with_other_random_bits_differ() {
        assert_ne!(compose("bat", 5, [1; 10]), compose("bat", 5, [2; 10]));
    }
}
