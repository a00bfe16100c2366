//! JWT verification and signing: the only place tokens are checked.
//!
//! HS256 with the project secret; `exp` is required, a small leeway is allowed, and the `role`
//! claim must be on the allow-list (anon, authenticated, service_role and `auth.extra_roles`) —
//! never the connection owner. Tokens without a role claim act as `anon`, as in PostgREST.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};
use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

/// Role used when a request carries no token, or a token without a `role` claim.
pub const ANON_ROLE: &str = "anon";
/// The role that bypasses RLS and may use admin routes.
pub const SERVICE_ROLE: &str = "service_role";

/// Verified claims of a token.
pub type Claims = Map<String, Value>;

/// Why a token was refused. The messages go to clients, so they say what, not how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Signature, structure or algorithm wrong.
    Invalid(String),
    /// `exp` passed.
    Expired,
    /// No `exp` claim.
    MissingExp,
    /// The role claim is not allowed.
    RoleNotAllowed(String),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Invalid(m) => write!(f, "{m}"),
            JwtError::Expired => f.write_str("JWT expired"),
            JwtError::MissingExp => f.write_str("JWT has no exp claim"),
            JwtError::RoleNotAllowed(r) => write!(f, "JWT role {r:?} is not allowed"),
        }
    }
}

/// Signs and verifies the project's tokens.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    allowed_roles: Vec<String>,
    leeway: i64,
    verified: Arc<Mutex<HashMap<String, Verified, TailHash>>>,
}

/// Bytes of a token the verified-token cache hashes: its end, the HMAC signature.
const TAIL: usize = 32;

/// Hashes only the last `TAIL` bytes of each key (keyed SipHash, as std's). A token ends in its
/// signature, which is what tells verified tokens apart; hashing all of a user's ~1 KB access
/// token on every request bought nothing but instructions. Equality still compares whole
/// tokens, and only verified tokens are inserted, so nobody can make up keys that share a
/// tail to crowd one bucket.
#[derive(Clone, Default)]
struct TailHash(RandomState);

impl BuildHasher for TailHash {
    type Hasher = TailHasher;
    fn build_hasher(&self) -> TailHasher {
        TailHasher(self.0.build_hasher())
    }
}

struct TailHasher(DefaultHasher);

impl Hasher for TailHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.write(&bytes[bytes.len().saturating_sub(TAIL)..]);
    }
    fn finish(&self) -> u64 {
        self.0.finish()
    }
}

/// A token that passed verification: clients send the same token (the anon key, a session's
/// access token) on every request, and HMAC + JSON decoding is most of a request's CPU, so
/// results are kept (keyed by the whole token) until the token's `exp`.
#[derive(Clone)]
struct Verified {
    claims: Arc<Claims>,
    role: String,
    claims_json: Arc<str>,
    exp: i64,
    nbf: Option<i64>,
}

/// Verified tokens kept; the cache is emptied when it reaches this size.
const VERIFIED_CACHE_MAX: usize = 10_000;

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("allowed_roles", &self.allowed_roles)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys for an HS256 secret.
    pub fn new(secret: &str, leeway_secs: u64, allowed_roles: Vec<String>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Supabase's anon/service keys carry no `aud`; user tokens carry "authenticated".
        // Like PostgREST without `jwt-aud`, any audience is accepted.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            allowed_roles,
            leeway: leeway_secs as i64,
            verified: Arc::new(Mutex::new(HashMap::default())),
        }
    }

    /// Verifies a token and returns its claims and role.
    pub fn verify(&self, token: &str) -> Result<(Claims, String), JwtError> {
        self.verify_cached(token)
            .map(|(c, r, _)| (Arc::unwrap_or_clone(c), r))
    }

    /// Like `verify`, plus the claims as JSON text (what the request transaction publishes),
    /// served from the cache of verified tokens when possible. `exp` and `nbf` are checked on
    /// every call, cached or not.
    pub fn verify_cached(&self, token: &str) -> Result<(Arc<Claims>, String, Arc<str>), JwtError> {
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.verified.lock() {
            if let Some(v) = cache.get(token) {
                if now > v.exp + self.leeway {
                    return Err(JwtError::Expired);
                }
                if v.nbf.is_some_and(|nbf| now + self.leeway < nbf) {
                    return Err(JwtError::Invalid("JWT is not valid yet (nbf)".into()));
                }
                return Ok((v.claims.clone(), v.role.clone(), v.claims_json.clone()));
            }
        }
        let (claims, role) = self.verify_uncached(token)?;
        let claims_json: Arc<str> = Value::Object(claims.clone()).to_string().into();
        let claims = Arc::new(claims);
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CACHE_MAX {
                cache.clear();
            }
            cache.insert(
                token.to_string(),
                Verified {
                    claims: claims.clone(),
                    role: role.clone(),
                    claims_json: claims_json.clone(),
                    exp,
                    nbf,
                },
            );
        }
        Ok((claims, role, claims_json))
    }

    fn verify_uncached(&self, token: &str) -> Result<(Claims, String), JwtError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => JwtError::Expired,
                ErrorKind::MissingRequiredClaim(c) if c == "exp" => JwtError::MissingExp,
                ErrorKind::InvalidSignature => {
                    JwtError::Invalid("JWT signature does not match".into())
                }
                ErrorKind::InvalidAlgorithm => {
                    JwtError::Invalid("JWT algorithm is not accepted".into())
                }
                ErrorKind::ImmatureSignature => {
                    JwtError::Invalid("JWT is not valid yet (nbf)".into())
                }
                _ => JwtError::Invalid("JWT is malformed".into()),
            })?;
        let claims = data.claims;
        let role = match claims.get("role") {
            None => ANON_ROLE.to_string(),
            Some(Value::String(r)) => r.clone(),
            Some(_) => return Err(JwtError::Invalid("JWT role claim must be a string".into())),
        };
        if !self.allowed_roles.iter().any(|r| r == &role) {
            return Err(JwtError::RoleNotAllowed(role));
        }
        Ok((claims, role))
    }

    /// Signs claims with HS256.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    /// The long-lived API key JWT for `role` (`anon` or `service_role`), as Supabase issues
    /// them: `{iss, role, iat, exp}`. Deterministic for a given `issued_at`, so every instance
    /// and every `keys show` prints the same key.
    pub fn api_key(
        &self,
        role: &str,
        issued_at: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut c = Claims::new();
        c.insert("iss".into(), Value::from("fluxbase"));
        c.insert("role".into(), Value::from(role));
        c.insert("iat".into(), Value::from(issued_at));
        c.insert("exp".into(), Value::from(issued_at + API_KEY_LIFETIME_SECS));
        self.sign(&c)
    }
}

/// Lifetime of the anon and service_role keys: ten years, as Supabase's.
pub const API_KEY_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(
            "0123456789abcdef0123456789abcdef",
            5,
            vec!["anon".into(), "authenticated".into(), "service_role".into()],
        )
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn token(k: &JwtKeys, pairs: &[(&str, Value)]) -> String {
        let mut c = Claims::new();
        for (a, b) in pairs {
            c.insert(a.to_string(), b.clone());
        }
        k.sign(&c).unwrap()
    }

    #[test]
    fn accepts_valid_and_reads_role() {
        let k = keys();
        let t = token(
            &k,
            &[
                ("role", "authenticated".into()),
                ("exp", (now() + 60).into()),
                ("sub", "u1".into()),
            ],
        );
        let (c, role) = k.verify(&t).unwrap();
        assert_eq!(role, "authenticated");
        assert_eq!(c["sub"], "u1");
        let t = token(&k, &[("exp", (now() + 60).into())]);
        assert_eq!(k.verify(&t).unwrap().1, "anon");
    }

    #[test]
    fn refuses_bad_tokens() {
        let k = keys();
        let expired = token(&k, &[("role", "anon".into()), ("exp", (now() - 60).into())]);
        assert_eq!(k.verify(&expired).unwrap_err(), JwtError::Expired);
        let no_exp = token(&k, &[("role", "anon".into())]);
        assert_eq!(k.verify(&no_exp).unwrap_err(), JwtError::MissingExp);
        let owner = token(
            &k,
            &[("role", "postgres".into()), ("exp", (now() + 60).into())],
        );
        assert_eq!(
            k.verify(&owner).unwrap_err(),
            JwtError::RoleNotAllowed("postgres".into())
        );
        let other = JwtKeys::new("another-secret-another-secret-xx", 0, vec!["anon".into()]);
        let forged = token(
            &other,
            &[("role", "anon".into()), ("exp", (now() + 60).into())],
        );
        assert!(matches!(k.verify(&forged), Err(JwtError::Invalid(_))));
        assert!(matches!(k.verify("not.a.jwt"), Err(JwtError::Invalid(_))));
        // alg=none must never pass.
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(&format!(
                r#"{{"role":"service_role","exp":{}}}"#,
                now() + 60
            ))
        );
        assert!(k.verify(&none).is_err());
    }

    #[test]
    fn cached_tokens_still_expire() {
        let k = JwtKeys::new("0123456789abcdef0123456789abcdef", 0, vec!["anon".into()]);
        let t = token(&k, &[("role", "anon".into()), ("exp", (now() + 1).into())]);
        assert!(k.verify(&t).is_ok());
        assert!(k.verify(&t).is_ok(), "from the cache");
        std::thread::sleep(std::time::Duration::from_millis(2100));
        assert_eq!(
            k.verify(&t).unwrap_err(),
            JwtError::Expired,
            "the cache honours exp"
        );
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(
            k.verify(&forged).is_err(),
            "a different token is verified, not looked up"
        );
    }

    #[test]
    fn api_keys_are_deterministic() {
        let k = keys();
        let a = k.api_key("anon", 1_700_000_000).unwrap();
        assert_eq!(a, k.api_key("anon", 1_700_000_000).unwrap());
        let s = k.api_key("service_role", now()).unwrap();
        assert_eq!(k.verify(&s).unwrap().1, "service_role");
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
