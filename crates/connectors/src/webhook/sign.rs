//! Standard Webhooks signing: the [`WebhookSecret`], [`sign`] for senders and [`verify`] for
//! receivers.
//!
//! The scheme (<https://www.standardwebhooks.com/>): the signed content is
//! `"{webhook-id}.{webhook-timestamp}.{body}"` over the exact body bytes sent; the signature is
//! `v1,` followed by the base64 of its HMAC-SHA256 under the secret's key; the
//! `webhook-signature` header holds one or more such signatures separated by spaces.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::ConnectorError;

/// The header carrying the message id, stable across retries: the receiver's idempotency key.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header carrying the attempt's time in unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header carrying the space-separated signatures.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";

/// The prefix every Standard Webhooks secret starts with.
const PREFIX: &str = "whsec_";
/// How a secret is shown in `Debug` and `Serialize`.
const REDACTED: &str = "whsec_***";
/// Key lengths the Standard Webhooks spec allows, in bytes.
const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Decodes secrets with or without `=` padding: both forms circulate.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// A Standard Webhooks signing secret: `whsec_` followed by the base64 of 24 to 64 random bytes.
///
/// Parsing validates the form; `Debug` and `Serialize` show `whsec_***`, never the key, and there
/// is deliberately no `Display`.
///
/// ```
/// use ferrule_connectors::webhook::WebhookSecret;
///
/// let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(whsec_***)");
/// assert!("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse::<WebhookSecret>().is_err());
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Box<[u8]>,
}

impl WebhookSecret {
    /// A secret from its raw key bytes (24 to 64 of them).
    pub fn from_key(key: &[u8]) -> Result<Self, ConnectorError> {
        if !KEY_BYTES.contains(&key.len()) {
            return Err(secret_error(format!(
                "the key is {} bytes; Standard Webhooks keys are 24 to 64 bytes",
                key.len()
            )));
        }
        Ok(WebhookSecret { key: key.into() })
    }

    /// An HMAC-SHA256 over `{id}.{timestamp}.` ready to take the body.
    fn mac(&self, id: &str, timestamp: &str) -> HmacSha256 {
        // HMAC accepts keys of any length, so this never fails; the fallback keeps it panic-free.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac
    }
}

fn secret_error(reason: impl Into<std::borrow::Cow<'static, str>>) -> ConnectorError {
    ConnectorError::InvalidSecret {
        field: "secret".into(),
        reason: reason.into(),
    }
}

impl FromStr for WebhookSecret {
    type Err = ConnectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| secret_error("must start with `whsec_`"))?;
        let key = LENIENT
            .decode(encoded)
            .map_err(|_| secret_error("the part after `whsec_` is not valid base64"))?;
        WebhookSecret::from_key(&key)
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = ConnectorError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookSecret({REDACTED})")
    }
}

impl Serialize for WebhookSecret {
    /// Serialises as `whsec_***`: a serialised configuration is for showing, not for storing.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        // The message never repeats the secret.
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `webhook-signature` value for one message: `v1,` + base64(HMAC-SHA256).
///
/// `timestamp` is the `webhook-timestamp` value (unix seconds) and `body` the exact bytes sent.
///
/// ```
/// use ferrule_connectors::webhook::{WebhookSecret, sign};
///
/// // The reference example of the Standard Webhooks specification.
/// let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// let signature = sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
/// assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
pub fn sign(secret: &WebhookSecret, id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = secret.mac(id, &timestamp.to_string());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Why [`verify`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A required header is absent.
    #[error("missing `{0}` header")]
    MissingHeader(&'static str),
    /// A header is present but malformed (not text, or a timestamp that is not a number).
    #[error("malformed `{0}` header")]
    InvalidHeader(&'static str),
    /// The timestamp is further from `now` than the tolerance allows (a replay, or a clock off).
    #[error("`webhook-timestamp` is {skew:?} away from now; at most {tolerance:?} is accepted")]
    Timestamp {
        /// How far the timestamp is from `now`, either way.
        skew: Duration,
        /// The tolerance that was exceeded.
        tolerance: Duration,
    },
    /// No `v1` signature in the header matches the content.
    #[error("no signature matches")]
    NoMatchingSignature,
}

/// Checks a received webhook: its timestamp is within `tolerance` of `now`, and one of the `v1`
/// signatures in `webhook-signature` is the HMAC of `{id}.{timestamp}.{body}` under `secret`.
///
/// Signatures are compared in constant time. Entries of other versions are skipped, so a
/// header that also carries e.g. an asymmetric `v1a` signature still verifies. The
/// specification suggests a tolerance of five minutes.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::{HeaderMap, HeaderValue};
/// use ferrule_connectors::webhook::{VerifyError, WebhookSecret, verify};
///
/// let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse()?;
/// let mut headers = HeaderMap::new();
/// headers.insert("webhook-id", HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"));
/// headers.insert("webhook-timestamp", HeaderValue::from_static("1614265330"));
/// headers.insert(
///     "webhook-signature",
///     HeaderValue::from_static("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
/// );
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1614265330 + 10);
/// let five_minutes = Duration::from_secs(300);
/// let body = br#"{"test": 2432232314}"#;
/// assert_eq!(verify(&secret, &headers, body, now, five_minutes), Ok(()));
/// assert_eq!(
///     verify(&secret, &headers, b"{}", now, five_minutes),
///     Err(VerifyError::NoMatchingSignature)
/// );
/// # Ok::<(), ferrule_connectors::ConnectorError>(())
/// ```
pub fn verify(
    secret: &WebhookSecret,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let text = |name: &'static str| {
        headers
            .get(name)
            .ok_or(VerifyError::MissingHeader(name))?
            .to_str()
            .map_err(|_| VerifyError::InvalidHeader(name))
    };
    let id = text(WEBHOOK_ID)?;
    let timestamp = text(WEBHOOK_TIMESTAMP)?;
    let signatures = text(WEBHOOK_SIGNATURE)?;

    let seconds: u64 = timestamp
        .parse()
        .map_err(|_| VerifyError::InvalidHeader(WEBHOOK_TIMESTAMP))?;
    let sent = SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_secs(seconds))
        .ok_or(VerifyError::InvalidHeader(WEBHOOK_TIMESTAMP))?;
    let skew = match now.duration_since(sent) {
        Ok(age) => age,
        Err(ahead) => ahead.duration(),
    };
    if skew > tolerance {
        return Err(VerifyError::Timestamp { skew, tolerance });
    }

    let mut mac = secret.mac(id, timestamp);
    mac.update(body);
    let matched = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|candidate| mac.clone().verify_slice(&candidate).is_ok());
    if matched {
        Ok(())
    } else {
        Err(VerifyError::NoMatchingSignature)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// The reference example of the Standard Webhooks specification.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: u64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn secret() -> WebhookSecret {
        SECRET.parse().unwrap()
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn headers(id: &str, timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (WEBHOOK_ID, id),
            (WEBHOOK_TIMESTAMP, timestamp),
            (WEBHOOK_SIGNATURE, signature),
        ] {
            headers.insert(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn signs_the_reference_vector() {
        assert_eq!(sign(&secret(), ID, TIMESTAMP, BODY), SIGNATURE);
    }

    #[test]
    fn verifies_the_reference_vector_and_refuses_tampering() {
        let ts = TIMESTAMP.to_string();
        let good = headers(ID, &ts, SIGNATURE);
        assert_eq!(
            verify(&secret(), &good, BODY, at(TIMESTAMP), FIVE_MINUTES),
            Ok(())
        );
        // Any change to body, id or timestamp breaks the signature.
        let no = Err(VerifyError::NoMatchingSignature);
        assert_eq!(
            verify(
                &secret(),
                &good,
                b"{\"test\":2432232314}",
                at(TIMESTAMP),
                FIVE_MINUTES
            ),
            no
        );
        let other_id = headers("msg_other", &ts, SIGNATURE);
        assert_eq!(
            verify(&secret(), &other_id, BODY, at(TIMESTAMP), FIVE_MINUTES),
            no
        );
        let other_ts = headers(ID, &(TIMESTAMP + 1).to_string(), SIGNATURE);
        assert_eq!(
            verify(&secret(), &other_ts, BODY, at(TIMESTAMP), FIVE_MINUTES),
            no
        );
        // A different key.
        let other: WebhookSecret = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".parse().unwrap();
        assert_eq!(verify(&other, &good, BODY, at(TIMESTAMP), FIVE_MINUTES), no);
    }

    #[test]
    fn accepts_one_matching_signature_among_several() {
        let ts = TIMESTAMP.to_string();
        let list = format!("v1,bm90IGl0 v1a,c29tZXRoaW5nIGVsc2U= v2,x {SIGNATURE}");
        let h = headers(ID, &ts, &list);
        assert_eq!(
            verify(&secret(), &h, BODY, at(TIMESTAMP), FIVE_MINUTES),
            Ok(())
        );
        let h = headers(ID, &ts, "v1,bm90IGl0 v1,!!!");
        assert_eq!(
            verify(&secret(), &h, BODY, at(TIMESTAMP), FIVE_MINUTES),
            Err(VerifyError::NoMatchingSignature)
        );
    }

    #[test]
    fn enforces_the_timestamp_tolerance_both_ways() {
        let h = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
        assert_eq!(
            verify(&secret(), &h, BODY, at(TIMESTAMP + 300), FIVE_MINUTES),
            Ok(())
        );
        assert_eq!(
            verify(&secret(), &h, BODY, at(TIMESTAMP - 300), FIVE_MINUTES),
            Ok(())
        );
        assert_eq!(
            verify(&secret(), &h, BODY, at(TIMESTAMP + 301), FIVE_MINUTES),
            Err(VerifyError::Timestamp {
                skew: Duration::from_secs(301),
                tolerance: FIVE_MINUTES
            })
        );
        assert!(matches!(
            verify(&secret(), &h, BODY, at(TIMESTAMP - 301), FIVE_MINUTES),
            Err(VerifyError::Timestamp { .. })
        ));
    }

    #[test]
    fn reports_missing_and_malformed_headers() {
        let now = at(TIMESTAMP);
        let mut h = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
        h.remove(WEBHOOK_SIGNATURE);
        assert_eq!(
            verify(&secret(), &h, BODY, now, FIVE_MINUTES),
            Err(VerifyError::MissingHeader(WEBHOOK_SIGNATURE))
        );
        for bad in ["", "-1", "1.5", "soon", "99999999999999999999999"] {
            let h = headers(ID, bad, SIGNATURE);
            assert_eq!(
                verify(&secret(), &h, BODY, now, FIVE_MINUTES),
                Err(VerifyError::InvalidHeader(WEBHOOK_TIMESTAMP)),
                "{bad:?}"
            );
        }
        let mut h = headers(ID, &TIMESTAMP.to_string(), SIGNATURE);
        h.insert(WEBHOOK_ID, HeaderValue::from_bytes(b"\xff").unwrap());
        assert_eq!(
            verify(&secret(), &h, BODY, now, FIVE_MINUTES),
            Err(VerifyError::InvalidHeader(WEBHOOK_ID))
        );
    }

    #[test]
    fn secret_validation() {
        let field = |s: &str| {
            let err = s.parse::<WebhookSecret>().unwrap_err();
            assert!(matches!(err, ConnectorError::InvalidSecret { .. }), "{s}");
            // The message names the field and never repeats the secret.
            let encoded = s.trim_start_matches(PREFIX);
            assert!(
                encoded.is_empty() || !err.to_string().contains(encoded),
                "{err}"
            );
            err.field().map(str::to_owned)
        };
        assert_eq!(
            field("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").as_deref(),
            Some("secret")
        );
        assert_eq!(field("whsec_not base64!").as_deref(), Some("secret"));
        // 16 bytes: too short; 65 bytes: too long.
        let short = format!("whsec_{}", STANDARD.encode([7u8; 16]));
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert_eq!(field(&short).as_deref(), Some("secret"));
        assert_eq!(field(&long).as_deref(), Some("secret"));
        assert_eq!(field("whsec_").as_deref(), Some("secret"));
        // 24 and 64 bytes, padded or not.
        for len in [24, 32, 64] {
            let padded = format!("whsec_{}", STANDARD.encode(vec![9u8; len]));
            assert!(padded.parse::<WebhookSecret>().is_ok(), "{len}");
            let unpadded = padded.trim_end_matches('=').to_owned();
            assert!(unpadded.parse::<WebhookSecret>().is_ok(), "{len}");
        }
    }

    #[test]
    fn secret_is_redacted() {
        let s = secret();
        assert_eq!(format!("{s:?}"), "WebhookSecret(whsec_***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"whsec_***\"");
        let parsed: WebhookSecret = serde_json::from_str(&format!("\"{SECRET}\"")).unwrap();
        assert_eq!(parsed, s);
        let err = serde_json::from_str::<WebhookSecret>("\"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "{err}");
    }
}
