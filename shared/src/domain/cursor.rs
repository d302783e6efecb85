//! Opaque pagination cursors: base64url of a small JSON value. Handlers rebuild the storage
//! key from the decoded value and the caller's own account, so a crafted cursor can only
//! move within the caller's data.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

const MAX_CURSOR_LEN: usize = 512;

pub fn encode<T: Serialize>(position: &T) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(position).unwrap_or_default())
}

/// `None` for anything we did not make: the caller answers 400 `invalid_cursor`.
pub fn decode<T: DeserializeOwned>(cursor: &str) -> Option<T> {
    if cursor.len() > MAX_CURSOR_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pos {
        seq: u64,
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let c = encode(&Pos { seq: 9 });
        assert_eq!(decode::<Pos>(&c), Some(Pos { seq: 9 }));
        assert_eq!(decode::<Pos>("not base64!"), None);
        assert_eq!(decode::<Pos>(&encode(&"x")), None);
        assert_eq!(decode::<Pos>(&"A".repeat(600)), None);
    }
}
