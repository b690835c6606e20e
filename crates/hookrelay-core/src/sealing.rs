//! Secrets at rest: endpoint signing secrets and custom header values are sealed with
//! XChaCha20-Poly1305 under the operator's master key (`HOOKRELAY_MASTER_KEY`, base64
//! of 32 bytes) before they reach the store, and opened only when a delivery is signed
//! or the admin API shows a header.
//!
//! ```text
//!  "whsec_…" ──seal(field)──▶ "hrenc:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>"
//!                                                      │
//!  "whsec_…" ◀──open(field)───────────────────────────┘   wrong key / tampered → error
//! ```
//!
//! The associated data names the subscription and the field (`sub_…/secret`,
//! `sub_…/header/x-token`), so a sealed value copied into another row or field does not
//! open. The key id (a hash prefix of the key, not the key) is stored in clear so a
//! wrong key is reported as such rather than as corruption. Nonces are 24 random
//! bytes, safe to draw at random for any number of values under one key.
//!
//! Without a key (`store.insecure_plaintext_secrets = true`, development only) values
//! are stored as given, and a sealed value found in the store is an error rather than
//! something sent as a secret.

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The prefix of every sealed value; nothing else stored in those columns starts so.
pub const SEALED_PREFIX: &str = "hrenc:v1:";
const NONCE_LEN: usize = 24;

/// Why a master key was refused. Never carries the key's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterKeyError {
    #[error("is empty")]
    Empty,
    #[error("is not base64")]
    NotBase64,
    #[error("must decode to exactly 32 bytes (got {0}); make one with `openssl rand -base64 32`")]
    BadLength(usize),
}

/// Why a stored value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("{field} was sealed under master key {stored}, but the master key given is {given}: wrong HOOKRELAY_MASTER_KEY?")]
    WrongKey {
        field: String,
        stored: String,
        given: String,
    },
    #[error("{field} is sealed under master key {stored}, but no HOOKRELAY_MASTER_KEY is set")]
    NoKey { field: String, stored: String },
    #[error("{field} does not open under master key {key}: the value was altered or moved from another field")]
    Tampered { field: String, key: String },
    #[error("{field} is not a well-formed sealed value")]
    Malformed { field: String },
}

/// The 32-byte master key. Its `Debug` shows only the key id.
#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// Parses base64 (standard alphabet, padding optional; surrounding spaces ignored).
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(MasterKeyError::Empty);
        }
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|_| MasterKeyError::NotBase64)?;
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::BadLength(bytes.len()))?;
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        let digest = Sha256::new()
            .chain_update(b"hookrelay master key id\0")
            .chain_update(key)
            .finalize();
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
            id: hex::encode(&digest[..4]),
        }
    }

    /// A fresh random key, base64: what `HOOKRELAY_MASTER_KEY` should hold.
    pub fn generate_base64() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// 8 hex digits naming this key in stored values and messages.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext` for `field` (the associated data).
    pub fn seal(&self, plaintext: &str, field: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: field.as_bytes(),
        };
        // Encryption into a Vec only fails when the message exceeds the cipher's
        // 256 GiB limit; a secret or header value is far below it.
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}:{}", self.id, URL_SAFE_NO_PAD.encode(raw))
    }

    fn open_sealed(&self, sealed: &Sealed<'_>, field: &str) -> Result<String, OpenError> {
        if sealed.key_id != self.id {
            return Err(OpenError::WrongKey {
                field: field.to_owned(),
                stored: sealed.key_id.to_owned(),
                given: self.id.clone(),
            });
        }
        let malformed = || OpenError::Malformed {
            field: field.to_owned(),
        };
        let raw = URL_SAFE_NO_PAD
            .decode(sealed.data)
            .map_err(|_| malformed())?;
        if raw.len() < NONCE_LEN + 16 {
            return Err(malformed());
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let payload = Payload {
            msg: ciphertext,
            aad: field.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| OpenError::Tampered {
                field: field.to_owned(),
                key: self.id.clone(),
            })?;
        String::from_utf8(plain).map_err(|_| malformed())
    }
}

/// A stored value split into its parts.
struct Sealed<'a> {
    key_id: &'a str,
    data: &'a str,
}

fn parse_sealed(stored: &str) -> Option<Result<Sealed<'_>, ()>> {
    let rest = stored.strip_prefix(SEALED_PREFIX)?;
    Some(
        rest.split_once(':')
            .map(|(key_id, data)| Sealed { key_id, data })
            .ok_or(()),
    )
}

/// Is `stored` a sealed value (as opposed to plaintext)?
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_PREFIX)
}

/// How secrets are kept in the store: sealed under a master key, or (development only)
/// in plaintext.
#[derive(Debug, Clone, Default)]
pub enum Secrets {
    Sealed(MasterKey),
    /// `store.insecure_plaintext_secrets = true` without a key.
    #[default]
    Plaintext,
}

impl Secrets {
    /// What to store for `plaintext` in `field`.
    pub fn seal(&self, plaintext: &str, field: &str) -> String {
        match self {
            Secrets::Sealed(key) => key.seal(plaintext, field),
            Secrets::Plaintext => plaintext.to_owned(),
        }
    }

    /// The plaintext of a stored value. Plaintext rows (written before encryption was
    /// switched on, and not yet migrated) are returned as they are.
    pub fn open(&self, stored: &str, field: &str) -> Result<String, OpenError> {
        let Some(sealed) = parse_sealed(stored) else {
            return Ok(stored.to_owned());
        };
        let sealed = sealed.map_err(|()| OpenError::Malformed {
            field: field.to_owned(),
        })?;
        match self {
            Secrets::Sealed(key) => key.open_sealed(&sealed, field),
            Secrets::Plaintext => Err(OpenError::NoKey {
                field: field.to_owned(),
                stored: sealed.key_id.to_owned(),
            }),
        }
    }

    pub fn key(&self) -> Option<&MasterKey> {
        match self {
            Secrets::Sealed(key) => Some(key),
            Secrets::Plaintext => None,
        }
    }
}

/// The associated data of a subscription's signing secrets (current and previous: a
/// rotation moves the sealed value from one column to the other as it is).
pub fn secret_field(subscription_id: &str) -> String {
    format!("{subscription_id}/secret")
}

/// The associated data of a subscription's endpoint URL (it often carries a token).
pub fn url_field(subscription_id: &str) -> String {
    format!("{subscription_id}/url")
}

/// The associated data of one custom header's value (name lower-cased).
pub fn header_field(subscription_id: &str, header: &str) -> String {
    format!("{subscription_id}/header/{}", header.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> MasterKey {
        MasterKey::from_bytes([n; 32])
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_field() {
        let k = Secrets::Sealed(key(1));
        let field = secret_field("sub_1");
        let sealed = k.seal("whsec_abc", &field);
        assert!(is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_ne!(sealed, k.seal("whsec_abc", &field), "fresh nonce each time");
        assert_eq!(k.open(&sealed, &field).unwrap(), "whsec_abc");

        let other = Secrets::Sealed(key(2));
        assert!(matches!(
            other.open(&sealed, &field),
            Err(OpenError::WrongKey { .. })
        ));
        assert!(matches!(
            k.open(&sealed, &secret_field("sub_2")),
            Err(OpenError::Tampered { .. })
        ));
        assert!(matches!(
            Secrets::Plaintext.open(&sealed, &field),
            Err(OpenError::NoKey { .. })
        ));
        // One flipped character of the ciphertext.
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        assert!(matches!(
            k.open(&flipped, &field),
            Err(OpenError::Tampered { .. } | OpenError::Malformed { .. })
        ));
    }

    #[test]
    fn plaintext_passes_through_and_errors_name_no_secret() {
        let k = Secrets::Sealed(key(1));
        assert_eq!(k.open("whsec_plain", "f").unwrap(), "whsec_plain");
        assert_eq!(Secrets::Plaintext.seal("v", "f"), "v");
        for bad in ["hrenc:v1:", "hrenc:v1:abcd", "hrenc:v1:nope:!!!"] {
            let err = k.open(bad, "sub_1/secret").unwrap_err();
            assert!(err.to_string().contains("sub_1/secret"), "{err}");
        }
        let err = Secrets::Sealed(key(2))
            .open(&k.seal("whsec_zzz", "f"), "f")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key(1).id()) && err.contains(key(2).id()),
            "{err}"
        );
        assert!(!err.contains("zzz"));
    }

    #[test]
    fn master_keys_parse_strictly() {
        let good = MasterKey::generate_base64();
        assert!(MasterKey::from_base64(&good).is_ok());
        assert!(MasterKey::from_base64(&format!(" {good}\n")).is_ok());
        let cases = [
            ("", MasterKeyError::Empty),
            ("not-base64!!", MasterKeyError::NotBase64),
            (&STANDARD.encode([0u8; 5]), MasterKeyError::BadLength(5)),
            (&STANDARD.encode([0u8; 33]), MasterKeyError::BadLength(33)),
        ];
        for (text, want) in cases {
            assert_eq!(MasterKey::from_base64(text).unwrap_err(), want, "{text:?}");
        }
        assert_eq!(
            format!("{:?}", key(7)),
            format!("MasterKey({})", key(7).id())
        );
        assert_ne!(key(1).id(), key(2).id());
    }
}
