//! Credits: the platform's only unit of money. 1 credit = US$0.01, integers only.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A signed amount of Credits. Signed because ledger entries are (debits are negative).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(pub i64);

impl Credits {
    pub const ZERO: Credits = Credits(0);

    pub fn value(self) -> i64 {
        self.0
    }

    /// `count x self`, or `None` on overflow (never silently wraps).
    pub fn times(self, count: u64) -> Option<Credits> {
        i64::try_from(count)
            .ok()
            .and_then(|c| self.0.checked_mul(c))
            .map(Credits)
    }

    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        self.0.checked_add(other.0).map(Credits)
    }

    pub fn checked_sub(self, other: Credits) -> Option<Credits> {
        self.0.checked_sub(other.0).map(Credits)
    }

    /// The US dollar value as a decimal string (`-12.05`), for statements and exports.
    pub fn usd(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    }
}

// Plain integer arithmetic for amounts already bounded by the rules (a batch's hold, a
// grant): sums of them stay far from i64's range. Anything built from untrusted input goes
// through `times` and the `checked_` methods instead.
impl std::ops::Add for Credits {
    type Output = Credits;
    fn add(self, o: Credits) -> Credits {
        Credits(self.0 + o.0)
    }
}

impl std::ops::Sub for Credits {
    type Output = Credits;
    fn sub(self, o: Credits) -> Credits {
        Credits(self.0 - o.0)
    }
}

impl std::ops::Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}

impl std::ops::AddAssign for Credits {
    fn add_assign(&mut self, o: Credits) {
        self.0 += o.0;
    }
}

impl std::ops::SubAssign for Credits {
    fn sub_assign(&mut self, o: Credits) {
        self.0 -= o.0;
    }
}

impl std::iter::Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        Credits(iter.map(|c| c.0).sum())
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_formats_cents_exactly() {
        assert_eq!(Credits(0).usd(), "0.00");
        assert_eq!(Credits(49).usd(), "0.49");
        assert_eq!(Credits(599).usd(), "5.99");
        assert_eq!(Credits(227_620).usd(), "2276.20");
        assert_eq!(Credits(-1205).usd(), "-12.05");
        assert_eq!(Credits(i64::MIN).usd(), "-92233720368547758.08");
    }

    #[test]
    fn multiplication_refuses_overflow() {
        assert_eq!(Credits(599).times(10_000), Some(Credits(5_990_000)));
        assert_eq!(Credits(i64::MAX).times(2), None);
        assert_eq!(Credits(1).times(u64::MAX), None);
    }
}
