//! The price table and the prepaid packs: data, versioned. A batch stores the unit price and
//! the table version it was created with, so a later price change never reprices it.

use super::money::Credits;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Our models, as customers name them. Which provider serves each is configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Model {
    #[serde(rename = "sora-2")]
    Sora2,
    #[serde(rename = "veo-pro")]
    VeoPro,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::Sora2, Model::VeoPro];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Sora2 => "sora-2",
            Model::VeoPro => "veo-pro",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Model {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Model::ALL.into_iter().find(|m| m.as_str() == s).ok_or(())
    }
}

/// One version of the price list.
#[derive(Clone, Copy, Debug)]
pub struct PriceTable {
    pub version: &'static str,
    sora_2: Credits,
    veo_pro: Credits,
}

impl PriceTable {
    pub fn unit_price(&self, model: Model) -> Credits {
        match model {
            Model::Sora2 => self.sora_2,
            Model::VeoPro => self.veo_pro,
        }
    }
}

/// Contract 1.4: Sora-2 $0.49 / video, Veo-Pro $5.99 / video.
pub const CURRENT_PRICES: PriceTable = PriceTable {
    version: "2026-01",
    sora_2: Credits(49),
    veo_pro: Credits(599),
};

/// Prepaid packs (contract 1.4, 8.2): paid once, credited at once, never expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pack {
    #[serde(rename = "pack_2000")]
    Pack2000,
    #[serde(rename = "pack_5000")]
    Pack5000,
    #[serde(rename = "pack_10000")]
    Pack10000,
}

impl Pack {
    pub fn id(self) -> &'static str {
        match self {
            Pack::Pack2000 => "pack_2000",
            Pack::Pack5000 => "pack_5000",
            Pack::Pack10000 => "pack_10000",
        }
    }

    /// Credits granted: ~380 / ~1,050 / ~2,300 Veo-Pro videos.
    pub fn credits(self) -> Credits {
        match self {
            Pack::Pack2000 => Credits(227_620),
            Pack::Pack5000 => Credits(628_950),
            Pack::Pack10000 => Credits(1_377_700),
        }
    }

    /// What the customer pays, in US cents (for the invoice record).
    pub fn price_usd_cents(self) -> i64 {
        match self {
            Pack::Pack2000 => 200_000,
            Pack::Pack5000 => 500_000,
            Pack::Pack10000 => 1_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_match_the_contract() {
        assert_eq!(CURRENT_PRICES.unit_price(Model::Sora2), Credits(49));
        assert_eq!(CURRENT_PRICES.unit_price(Model::VeoPro), Credits(599));
        assert_eq!("veo-pro".parse::<Model>(), Ok(Model::VeoPro));
        assert!("sora-3".parse::<Model>().is_err());
    }

    #[test]
    fn packs_grant_the_promised_veo_videos_and_discounts() {
        let veo = CURRENT_PRICES.unit_price(Model::VeoPro).value();
        // (pack, promised videos, promised discount %)
        for (pack, videos, discount) in [
            (Pack::Pack2000, 380, 12),
            (Pack::Pack5000, 1_050, 20),
            (Pack::Pack10000, 2_300, 27),
        ] {
            let credits = pack.credits().value();
            assert_eq!(credits / veo, videos, "{pack:?}");
            // discount = 1 - paid / value, in whole percent (truncated: "~20 %")
            let pct = 100 * (credits - pack.price_usd_cents()) / credits;
            assert_eq!(pct, discount, "{pack:?}");
        }
    }
}
