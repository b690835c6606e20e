//! Standard Webhooks signing: `v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>`,
//! one entry per valid secret, space-separated, so receivers keep verifying through a
//! secret rotation.

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A decoded signing secret (the bytes after `whsec_`).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must start with \"whsec_\"")]
    MissingPrefix,
    #[error("the part after \"whsec_\" must be base64")]
    NotBase64,
    #[error("must decode to between 24 and 64 bytes (got {0})")]
    BadLength(usize),
}

impl SigningKey {
    /// Parses `whsec_<base64>`.
    pub fn from_secret(secret: &str) -> Result<Self, SecretError> {
        let b64 = secret
            .strip_prefix(PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let bytes = STANDARD.decode(b64).map_err(|_| SecretError::NotBase64)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SecretError::BadLength(bytes.len()));
        }
        Ok(Self(bytes))
    }

    /// A fresh secret string, 32 random bytes.
    pub fn generate_secret() -> String {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        format!("{PREFIX}{}", STANDARD.encode(bytes))
    }

    /// Base64 of the HMAC of `"<id>.<timestamp>.<body>"`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        STANDARD.encode(mac.finalize().into_bytes())
    }
}

/// The `webhook-signature` header value for every key, space-separated.
pub fn signature_header(keys: &[SigningKey], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut out = String::with_capacity(keys.len() * 48);
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str("v1,");
        out.push_str(&key.sign(msg_id, timestamp, body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn header_lists_one_signature_per_key() {
        let a = SigningKey::from_secret(&SigningKey::generate_secret()).unwrap();
        let b = SigningKey::from_secret(&SigningKey::generate_secret()).unwrap();
        let header = signature_header(&[a.clone(), b.clone()], "evt_1", 10, b"{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(
            parts,
            [
                format!("v1,{}", a.sign("evt_1", 10, b"{}")),
                format!("v1,{}", b.sign("evt_1", 10, b"{}"))
            ]
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_checked() {
        let cases = [
            ("abc", Err(SecretError::MissingPrefix)),
            ("whsec_!!!", Err(SecretError::NotBase64)),
            ("whsec_AAAA", Err(SecretError::BadLength(3))),
        ];
        for (secret, want) in cases {
            assert_eq!(
                SigningKey::from_secret(secret).map(|_| ()),
                want,
                "{secret}"
            );
        }
        assert!(SigningKey::from_secret(&SigningKey::generate_secret()).is_ok());
    }
}
