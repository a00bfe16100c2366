//! Typed configuration: defaults < `fluxbase.yaml` < environment < CLI flags.
//!
//! Owns loading, merging and validating the configuration. It must not start anything or
//! touch the network: `fluxbase config check` runs exactly this code.
//!
//! Layers are merged as JSON trees before one typed deserialisation, so that every layer
//! speaks the same key paths. Environment names are `FLUXBASE_` + the key path upper-cased
//! with `__` between every level (`FLUXBASE_STORAGE__S3__ENDPOINT`); list values are
//! comma-separated; `FLUXBASE_TEST_*` is reserved for the test harness and ignored.
//! Validation collects every problem before failing, so an operator fixes them in one go.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};

/// Prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "FLUXBASE_";
/// Environment variables with this prefix belong to the test harness and are never config.
pub const TEST_ENV_PREFIX: &str = "FLUXBASE_TEST_";
/// File read when `--config` is not given and the file exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "fluxbase.yaml";

/// A secret string: deserialises like a string, never shows in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Serialize for Secret {
    // Serialised form is only used to compute the default tree, where secrets are absent.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Database connection or the managed local Postgres.
    pub database: DatabaseConfig,
    /// Auth and JWT.
    pub auth: AuthConfig,
    /// The PostgREST-compatible REST engine.
    pub rest: RestConfig,
    /// Realtime websockets.
    pub realtime: RealtimeConfig,
    /// Object storage.
    pub storage: StorageConfig,
    /// Durable job queue.
    pub jobs: JobsConfig,
    /// Outgoing webhooks.
    pub webhooks: WebhooksConfig,
    /// The SSRF-guarded outbound HTTP client.
    pub outbound: OutboundConfig,
    /// Per-route-group rate limits.
    pub rate_limits: RateLimitsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Prometheus metrics.
    pub metrics: MetricsConfig,
    /// OpenTelemetry trace export.
    pub otlp: OtlpConfig,
    /// The audit log.
    pub audit: AuditConfig,
}

/// `server.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind (1-65535; 0 picks a free port, used by tests).
    pub port: u64,
    /// URL clients reach this server at; derived from host and port when empty.
    pub public_url: String,
    /// Directory for the managed Postgres, local storage and other state.
    pub data_dir: String,
    /// Largest accepted request body, bytes.
    pub body_limit_bytes: u64,
    /// HTTP worker threads; 0 = one per core.
    pub workers: u64,
    /// Seconds in-flight requests get to finish on shutdown.
    pub shutdown_timeout_secs: u64,
    /// Cross-origin resource sharing.
    pub cors: CorsConfig,
    /// TLS termination.
    pub tls: TlsConfig,
}

/// `server.tls.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key_path`, the server speaks HTTPS only.
    pub cert_path: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// `Strict-Transport-Security` max-age sent over TLS; 0 = no HSTS header.
    pub hsts_max_age_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: String::new(),
            key_path: String::new(),
            hsts_max_age_secs: 31_536_000,
        }
    }
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            public_url: String::new(),
            data_dir: "./fluxbase-data".into(),
            body_limit_bytes: 10 * 1024 * 1024,
            workers: 0,
            shutdown_timeout_secs: 30,
            cors: CorsConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// `server.cors.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins; `*` allows any (the permissive development default).
    pub allowed_origins: Vec<String>,
    /// Whether browsers may send credentials (cookies); never combined with `*`.
    pub allow_credentials: bool,
    /// Seconds browsers may cache a preflight answer.
    pub max_age_secs: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: vec!["*".into()],
            allow_credentials: false,
            max_age_secs: 3600,
        }
    }
}

/// `database.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://` URL; when empty Fluxbase runs its own managed Postgres in the data dir.
    pub url: Option<Secret>,
    /// Connections in the pool.
    pub pool_size: u64,
    /// Seconds to wait for a pooled connection (or to open a new one) before answering 503.
    pub acquire_timeout_secs: u64,
    /// Seconds `serve` keeps retrying an unreachable database at start before giving up.
    pub startup_retry_secs: u64,
    /// REST requests that need no decision after their result run on the one-`Sync`
    /// pipelining client (`db::wire`); off, they take the four-statement path of the main
    /// pool (`BEGIN`, setup, statement, `COMMIT`).
    pub wire: bool,
    /// The managed local Postgres (used when `url` is empty).
    pub managed: ManagedPgConfig,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pool_size: 16,
            acquire_timeout_secs: 3,
            startup_retry_secs: 30,
            wire: true,
            managed: ManagedPgConfig::default(),
        }
    }
}

/// `database.managed.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ManagedPgConfig {
    /// Also listen on TCP (`tcp_host`:`port`); by default only a unix socket is opened.
    pub listen_tcp: bool,
    /// TCP address when `listen_tcp` is on.
    pub tcp_host: String,
    /// Port (names the unix socket file, and the TCP port when `listen_tcp` is on).
    pub port: u64,
    /// Directory of the Postgres binaries; found automatically when empty.
    pub bin_dir: String,
    /// fsync in the managed cluster (turn off only for throwaway data).
    pub fsync: bool,
}

impl Default for ManagedPgConfig {
    fn default() -> Self {
        ManagedPgConfig {
            listen_tcp: false,
            tcp_host: "127.0.0.1".into(),
            port: 5432,
            bin_dir: String::new(),
            fsync: true,
        }
    }
}

/// `auth.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for all JWTs; generated and stored in the database when empty.
    pub jwt_secret: Option<Secret>,
    /// Lifetime of access tokens, seconds.
    pub jwt_expiry_secs: u64,
    /// Clock skew tolerated when checking `exp`/`nbf`, seconds.
    pub jwt_leeway_secs: u64,
    /// Roles a JWT may name besides `anon`, `authenticated` and `service_role`.
    pub extra_roles: Vec<String>,
    /// Where auth emails and redirects point by default.
    pub site_url: String,
    /// Allow new sign-ups.
    pub enable_signup: bool,
    /// Confirm emails automatically (no confirmation mail).
    pub mailer_autoconfirm: bool,
    /// Allow anonymous sign-ins (`POST /auth/v1/signup` without credentials).
    pub enable_anonymous_sign_ins: bool,
    /// Shortest accepted password.
    pub password_min_length: u64,
    /// bcrypt cost of password hashes (4-31).
    pub bcrypt_cost: u64,
    /// Seconds a rotated refresh token may still be used (concurrent refreshes); reuse after
    /// that revokes the whole session.
    pub refresh_token_reuse_interval_secs: u64,
    /// Seconds mailed links and codes stay valid.
    pub otp_expiry_secs: u64,
    /// A password change (`PUT /user` with `password`) needs a reauthentication nonce
    /// (`GET /reauthenticate`) when the session is older than 24 hours, as GoTrue's
    /// `GOTRUE_SECURITY_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION`.
    pub secure_password_change: bool,
    /// An email change is confirmed from both the current and the new address, as GoTrue's
    /// `GOTRUE_MAILER_SECURE_EMAIL_CHANGE_ENABLED`; off: from the new address alone.
    pub secure_email_change: bool,
    /// A signed-in user may link another provider's identity to the account
    /// (`GET /auth/v1/user/identities/authorize`) and unlink identities
    /// (`DELETE /auth/v1/user/identities/{id}`), as GoTrue's
    /// `GOTRUE_SECURITY_MANUAL_LINKING_ENABLED`; off, both answer `manual_linking_disabled`.
    pub manual_linking_enabled: bool,
    /// Subjects and bodies of auth mail, per kind.
    pub templates: MailTemplatesConfig,
    /// Per-endpoint limits of auth requests and mail sends.
    pub rate_limit: AuthRateLimitConfig,
    /// Require an `apikey` header on `/rest/v1`, `/auth/v1` (except verify, callback,
    /// authorize, JWKS) and `/realtime/v1`, as Supabase's gateway does.
    pub require_apikey: bool,
    /// Outgoing mail; with no host, mail is written to the log (development).
    pub smtp: SmtpConfig,
    /// Phone sign-in and the SMS provider that carries its codes.
    pub sms: SmsConfig,
    /// GoTrue's sending hooks: an HTTP endpoint or a SQL function that sends SMS / mail
    /// instead of the provider / SMTP.
    pub hooks: AuthHooksConfig,
    /// URLs besides `site_url` that `redirect_to` may name (exact, a path under one, or a
    /// glob: `*` within a host label or path segment, `**` across them).
    pub redirect_allow_list: Vec<String>,
    /// OAuth2 / OIDC sign-in providers (`/auth/v1/authorize`).
    pub external: ExternalConfig,
}

/// `auth.external.*`: one fixed section per provider preset (the loader has no maps).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalConfig {
    /// GitHub (OAuth2; user and emails API).
    pub github: OAuthProviderConfig,
    /// Google (OpenID Connect).
    pub google: OAuthProviderConfig,
    /// GitLab (OAuth2 with PKCE; user API).
    pub gitlab: OAuthProviderConfig,
    /// Discord (OAuth2 with PKCE; users/@me API).
    pub discord: OAuthProviderConfig,
    /// Facebook (OAuth2; Graph API `/me`).
    pub facebook: OAuthProviderConfig,
    /// Microsoft Entra ID / Azure AD (OpenID Connect; `url` is the tenant's v2.0 authority).
    pub azure: OAuthProviderConfig,
    /// X, formerly Twitter (OAuth 2.0 with PKCE; API v2 `users/me`).
    pub x: OAuthProviderConfig,
    /// Sign in with Apple (OpenID Connect, `form_post`; `secret` is the client secret JWT).
    pub apple: OAuthProviderConfig,
    /// Keycloak (OpenID Connect; `url` is the realm URL).
    pub keycloak: OAuthProviderConfig,
    /// Any OpenID Connect provider (`url` is the issuer; discovery and JWKS).
    pub oidc: OAuthProviderConfig,
    /// Any OAuth2 provider with a userinfo endpoint (the three URLs given).
    pub custom: OAuthProviderConfig,
}

/// `auth.external.<provider>.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthProviderConfig {
    /// Offer this provider.
    pub enabled: bool,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret.
    pub secret: Option<Secret>,
    /// Our callback URL as registered at the provider; empty = `<public URL>/auth/v1/callback`.
    pub redirect_uri: String,
    /// Base URL (GitHub Enterprise, GitLab instance, Discord) or issuer (Google, Keycloak realm, OIDC).
    pub url: String,
    /// Authorization endpoint (custom; overrides the preset's elsewhere).
    pub authorize_url: String,
    /// Token endpoint (custom; overrides the preset's elsewhere).
    pub token_url: String,
    /// Userinfo endpoint (custom; overrides the preset's elsewhere).
    pub userinfo_url: String,
}

/// `auth.smtp.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// SMTP server; empty = log mailer.
    pub host: String,
    /// Port.
    pub port: u64,
    /// `starttls`, `tls` (implicit, port 465) or `none`.
    pub tls: String,
    /// Login user (empty: no authentication).
    pub username: String,
    /// Login password.
    pub password: Option<Secret>,
    /// From address.
    pub sender: String,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: String::new(),
            port: 587,
            tls: "starttls".into(),
            username: String::new(),
            password: None,
            sender: "Fluxbase <noreply@localhost>".into(),
        }
    }
}

/// The SMS providers `auth.sms.provider` may name.
pub const SMS_PROVIDERS: [&str; 6] = [
    "log",
    "twilio",
    "twilio_verify",
    "messagebird",
    "textlocal",
    "vonage",
];

/// `auth.hooks.*`: GoTrue's `GOTRUE_HOOK_SEND_SMS_*` and `GOTRUE_HOOK_SEND_EMAIL_*`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthHooksConfig {
    /// Sends every auth SMS (codes, MFA challenges, nonces) instead of `auth.sms.provider`.
    pub send_sms: HookConfig,
    /// Sends every auth mail instead of SMTP (and the templates).
    pub send_email: HookConfig,
    /// Seconds one attempt of an HTTP hook may take (3 attempts on timeouts, as GoTrue's 5 s).
    pub timeout_secs: u64,
}

impl Default for AuthHooksConfig {
    fn default() -> Self {
        AuthHooksConfig {
            send_sms: HookConfig::default(),
            send_email: HookConfig::default(),
            timeout_secs: 5,
        }
    }
}

/// `auth.hooks.<hook>.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HookConfig {
    /// Call the hook.
    pub enabled: bool,
    /// `https://…` (or `http://…`), or `pg-functions://<database>/<schema>/<function>`.
    pub uri: String,
    /// Standard Webhooks signing secrets of an HTTP hook, `v1,whsec_<base64>`; several are
    /// separated by `|` (each signs; rotate by adding the new one first).
    pub secrets: Option<Secret>,
}

/// `auth.sms.*`: phone sign-in as GoTrue's `GOTRUE_EXTERNAL_PHONE_ENABLED`,
/// `GOTRUE_SMS_AUTOCONFIRM` and `GOTRUE_SMS_*` configure it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Offer phone sign-up and sign-in (`/settings` `external.phone`).
    pub enabled: bool,
    /// Confirm phone numbers at sign-up without a code.
    pub autoconfirm: bool,
    /// `log` (development: the code goes to the log), `twilio`, `twilio_verify`,
    /// `messagebird`, `textlocal` or `vonage`.
    pub provider: String,
    /// Seconds a texted code stays valid.
    pub otp_exp: u64,
    /// Digits of a texted code (6-10).
    pub otp_length: u64,
    /// The message; `{{ .Code }}` is the code.
    pub template: String,
    /// Seconds before another code may go to the same number for the same purpose.
    pub max_frequency_secs: u64,
    /// Fixed codes for test numbers, `phone:code` (digits only); no SMS is sent to them.
    pub test_otp: Vec<String>,
    /// MFA phone factors (`factor_type: phone`): enroll, and challenges texted to the number.
    pub mfa_enabled: bool,
    /// Twilio Programmable Messaging.
    pub twilio: TwilioSmsConfig,
    /// Twilio Verify (`message_service_sid` is the Verify service SID, `VA…`): Twilio makes,
    /// sends and checks the code.
    pub twilio_verify: TwilioSmsConfig,
    /// MessageBird (Bird) SMS API.
    pub messagebird: MessagebirdSmsConfig,
    /// Textlocal.
    pub textlocal: TextlocalSmsConfig,
    /// Vonage (Nexmo) SMS API.
    pub vonage: VonageSmsConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            enabled: false,
            autoconfirm: false,
            provider: "log".into(),
            otp_exp: 60,
            otp_length: 6,
            template: "Your code is {{ .Code }}".into(),
            max_frequency_secs: 60,
            test_otp: Vec::new(),
            mfa_enabled: false,
            twilio: TwilioSmsConfig::default(),
            twilio_verify: TwilioSmsConfig::default(),
            messagebird: MessagebirdSmsConfig::default(),
            textlocal: TextlocalSmsConfig::default(),
            vonage: VonageSmsConfig::default(),
        }
    }
}

/// `auth.sms.twilio.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioSmsConfig {
    /// Account SID (also the Basic auth user).
    pub account_sid: String,
    /// Auth token (secret).
    pub auth_token: Option<Secret>,
    /// Messaging service SID or sender number (`From`).
    pub message_service_sid: String,
    /// API base URL; empty = `https://api.twilio.com`.
    pub api_url: String,
}

/// `auth.sms.messagebird.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MessagebirdSmsConfig {
    /// Access key (secret).
    pub access_key: Option<Secret>,
    /// Sender name or number (`originator`).
    pub originator: String,
    /// API base URL; empty = `https://rest.messagebird.com`.
    pub api_url: String,
}

/// `auth.sms.textlocal.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TextlocalSmsConfig {
    /// API key (secret).
    pub api_key: Option<Secret>,
    /// Sender name.
    pub sender: String,
    /// API base URL; empty = `https://api.textlocal.in`.
    pub api_url: String,
}

/// `auth.sms.vonage.*`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VonageSmsConfig {
    /// API key.
    pub api_key: String,
    /// API secret (secret).
    pub api_secret: Option<Secret>,
    /// Sender name or number (`from`).
    pub from: String,
    /// API base URL; empty = `https://rest.nexmo.com`.
    pub api_url: String,
}

impl SmsConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !SMS_PROVIDERS.contains(&self.provider.as_str()) {
            p.push(format!(
                "`auth.sms.provider` must be one of {}, got {:?}",
                SMS_PROVIDERS.join(", "),
                self.provider
            ));
        }
        if !(6..=10).contains(&self.otp_length) {
            p.push(format!(
                "`auth.sms.otp_length` must be between 6 and 10, got {}",
                self.otp_length
            ));
        }
        if self.otp_exp == 0 {
            p.push("`auth.sms.otp_exp` must be positive".into());
        }
        for t in &self.test_otp {
            let ok = t.split_once(':').is_some_and(|(phone, code)| {
                !phone.is_empty()
                    && !code.is_empty()
                    && phone
                        .trim_start_matches('+')
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                    && code.bytes().all(|b| b.is_ascii_digit())
            });
            if !ok {
                p.push(format!(
                    "`auth.sms.test_otp`: {t:?} is not `phone:code` (digits)"
                ));
            }
        }
        let is_url =
            |u: &str| u.is_empty() || u.starts_with("http://") || u.starts_with("https://");
        let secret_set = |s: &Option<Secret>| s.as_ref().is_some_and(|s| !s.expose().is_empty());
        for (name, url) in [
            ("twilio", &self.twilio.api_url),
            ("twilio_verify", &self.twilio_verify.api_url),
            ("messagebird", &self.messagebird.api_url),
            ("textlocal", &self.textlocal.api_url),
            ("vonage", &self.vonage.api_url),
        ] {
            if !is_url(url) {
                p.push(format!(
                    "`auth.sms.{name}.api_url` must start with http:// or https://"
                ));
            }
        }
        if self.provider == "twilio_verify" && self.mfa_enabled {
            p.push(
                "`auth.sms.mfa_enabled` is not supported with `auth.sms.provider: twilio_verify`"
                    .into(),
            );
        }
        if !self.enabled {
            return p;
        }
        let twilio = |t: &TwilioSmsConfig| -> Vec<&'static str> {
            [
                ("account_sid", !t.account_sid.is_empty()),
                ("auth_token", secret_set(&t.auth_token)),
                ("message_service_sid", !t.message_service_sid.is_empty()),
            ]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| *k)
            .collect()
        };
        let missing: Vec<&str> = match self.provider.as_str() {
            "twilio" => twilio(&self.twilio),
            "twilio_verify" => twilio(&self.twilio_verify),
            "messagebird" => [
                ("access_key", secret_set(&self.messagebird.access_key)),
                ("originator", !self.messagebird.originator.is_empty()),
            ]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| *k)
            .collect(),
            "textlocal" => [
                ("api_key", secret_set(&self.textlocal.api_key)),
                ("sender", !self.textlocal.sender.is_empty()),
            ]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| *k)
            .collect(),
            "vonage" => [
                ("api_key", !self.vonage.api_key.is_empty()),
                ("api_secret", secret_set(&self.vonage.api_secret)),
                ("from", !self.vonage.from.is_empty()),
            ]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(k, _)| *k)
            .collect(),
            _ => Vec::new(),
        };
        for key in missing {
            p.push(format!(
                "`auth.sms.{}.{key}` is required when `auth.sms.enabled` uses that provider",
                self.provider
            ));
        }
        p
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwt_secret: None,
            jwt_expiry_secs: 3600,
            jwt_leeway_secs: 30,
            extra_roles: Vec::new(),
            site_url: "http://localhost:3000".into(),
            enable_signup: true,
            mailer_autoconfirm: false,
            enable_anonymous_sign_ins: true,
            password_min_length: 6,
            bcrypt_cost: 10,
            refresh_token_reuse_interval_secs: 10,
            otp_expiry_secs: 3600,
            secure_password_change: false,
            secure_email_change: true,
            manual_linking_enabled: false,
            templates: MailTemplatesConfig::default(),
            rate_limit: AuthRateLimitConfig::default(),
            require_apikey: false,
            smtp: SmtpConfig::default(),
            sms: SmsConfig::default(),
            hooks: AuthHooksConfig::default(),
            redirect_allow_list: Vec::new(),
            external: ExternalConfig::default(),
        }
    }
}

/// `auth.templates.*`: one entry per kind of auth mail.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailTemplatesConfig {
    /// Signup confirmation.
    pub confirmation: MailTemplateConfig,
    /// Invitation (`POST /invite`).
    pub invite: MailTemplateConfig,
    /// Magic link / email OTP sign-in.
    pub magic_link: MailTemplateConfig,
    /// Password recovery.
    pub recovery: MailTemplateConfig,
    /// Email change (to the current and to the new address).
    pub email_change: MailTemplateConfig,
    /// Reauthentication nonce.
    pub reauthentication: MailTemplateConfig,
}

impl MailTemplatesConfig {
    /// Every kind with its config name.
    pub fn entries(&self) -> [(&'static str, &MailTemplateConfig); 6] {
        [
            ("confirmation", &self.confirmation),
            ("invite", &self.invite),
            ("magic_link", &self.magic_link),
            ("recovery", &self.recovery),
            ("email_change", &self.email_change),
            ("reauthentication", &self.reauthentication),
        ]
    }
}

/// `auth.templates.<kind>.*`: empty values keep the built-in default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MailTemplateConfig {
    /// Subject line (GoTrue template variables allowed).
    pub subject: String,
    /// HTML body, inline.
    pub content: String,
    /// HTML body read from this file when the mailer starts (wins over `content`).
    pub content_path: String,
}

/// `auth.rate_limit.*`: GoTrue's per-endpoint limits, counted per client IP (mail sends:
/// per instance), in this process only. 0 = unlimited. The service_role is never limited.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthRateLimitConfig {
    /// Auth mails sent per hour by this instance (`over_email_send_rate_limit`).
    pub email_sent_per_hour: u64,
    /// Seconds before another mail of the same kind may go to the same address.
    pub email_min_interval_secs: u64,
    /// `POST /signup` per IP per 5 minutes.
    pub signup_per_5min: u64,
    /// `POST /token` sign-ins (password, pkce, id_token) per IP per 5 minutes.
    pub token_per_5min: u64,
    /// `POST /token?grant_type=refresh_token` per IP per 5 minutes.
    pub token_refresh_per_5min: u64,
    /// `POST /otp` and `/magiclink` per IP per 5 minutes.
    pub otp_per_5min: u64,
    /// `GET|POST /verify` per IP per 5 minutes.
    pub verify_per_5min: u64,
    /// `POST /recover` per IP per 5 minutes.
    pub recover_per_5min: u64,
    /// Auth SMS sent per hour by this instance (`over_sms_send_rate_limit`).
    pub sms_sent_per_hour: u64,
}

impl Default for AuthRateLimitConfig {
    fn default() -> Self {
        AuthRateLimitConfig {
            email_sent_per_hour: 30,
            email_min_interval_secs: 60,
            signup_per_5min: 30,
            token_per_5min: 30,
            token_refresh_per_5min: 150,
            otp_per_5min: 30,
            verify_per_5min: 30,
            recover_per_5min: 30,
            sms_sent_per_hour: 30,
        }
    }
}

/// `rest.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RestConfig {
    /// Schemas exposed over REST.
    pub schemas: Vec<String>,
    /// Hard cap on rows a read returns; 0 = no cap.
    pub max_rows: u64,
    /// Allow aggregate functions in `select`.
    pub aggregates: bool,
    /// Role of REST requests that carry no token at all (PostgREST's `db-anon-role`); empty =
    /// such requests are refused with 401 `PGRST302`.
    pub anon_role: String,
    /// Answer `Accept: application/vnd.pgrst.plan[+json|+text]` with the `EXPLAIN` of the
    /// statement the request would run (PostgREST's `db-plan-enabled`); off, such a request
    /// is refused with 406 `PGRST107`. Plans reveal the schema and data sizes: keep it off
    /// in production.
    pub plan_enabled: bool,
    /// Publish `request.method`, `request.path`, `request.headers` and `request.cookies` on
    /// every request. By default each is published only when some SQL of the database names
    /// it (function bodies, policies, views, defaults, checks, triggers; found when the schema
    /// cache loads); turn this on when SQL builds those names at run time. The same scan
    /// decides whether `response.status`/`response.headers` are read back after a statement;
    /// on, they always are.
    pub request_settings_always: bool,
    /// A function called at the start of every REST request, after the role, the claims
    /// and the request settings are set and in the request's transaction (read-only for
    /// reads), as PostgREST's `db-pre-request`: `schema.function` or `function`; empty =
    /// none. It may raise to refuse the request, or set `response.headers`/`response.status`.
    pub pre_request: String,
}

impl RestConfig {
    /// The statement calling `pre_request` (`SELECT "schema"."function"()`), when set.
    pub fn pre_request_sql(&self) -> Option<String> {
        if self.pre_request.is_empty() {
            return None;
        }
        let name = self
            .pre_request
            .split('.')
            .map(crate::db::quote_ident)
            .collect::<Vec<_>>()
            .join(".");
        Some(format!("SELECT {name}()"))
    }
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            schemas: vec!["public".into()],
            max_rows: 0,
            aggregates: true,
            anon_role: "anon".into(),
            plan_enabled: false,
            request_settings_always: false,
            pre_request: String::new(),
        }
    }
}

/// `realtime.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Serve realtime websockets.
    pub enabled: bool,
    /// Most concurrent websocket connections per instance.
    pub max_connections: u64,
    /// Most channels one connection may join.
    pub max_channels_per_connection: u64,
    /// Largest websocket frame (message) accepted, in bytes.
    pub max_frame_bytes: u64,
    /// A socket that sends nothing (not even a heartbeat) for this long is closed.
    pub heartbeat_timeout_secs: u64,
    /// Most concurrent websocket connections from one client IP per instance (0 = no limit).
    pub max_connections_per_ip: u64,
    /// Most channel joins per second on one connection (bursts up to this many).
    pub max_joins_per_second: u64,
    /// Most messages (broadcast, presence, access_token, leave) per second one connection
    /// may push; heartbeats and joins are not counted here.
    pub max_messages_per_second: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig {
            enabled: true,
            max_connections: 10_000,
            max_channels_per_connection: 100,
            max_frame_bytes: 1_048_576,
            heartbeat_timeout_secs: 60,
            max_connections_per_ip: 1_000,
            max_joins_per_second: 100,
            max_messages_per_second: 500,
        }
    }
}

/// `storage.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Serve the storage API.
    pub enabled: bool,
    /// `local` (files under `local_path`) or `s3`.
    pub backend: String,
    /// Directory for the local backend; `<data_dir>/storage` when empty.
    pub local_path: String,
    /// Largest object, bytes.
    pub file_size_limit_bytes: u64,
    /// Lifetime of a signed upload URL, seconds.
    pub signed_upload_expiry_secs: u64,
    /// Minutes before unfinished upload data and replaced or deleted bytes are removed.
    pub cleanup_after_minutes: u64,
    /// How the local backend makes ETags: `mtime` (`"<ms>-<size>"` in hex, no hashing) or
    /// `md5` (of the bytes), as Supabase's `STORAGE_FILE_ETAG_ALGORITHM`.
    pub local_etag_algorithm: String,
    /// The S3-compatible backend.
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            enabled: true,
            backend: "local".into(),
            local_path: String::new(),
            file_size_limit_bytes: 50 * 1024 * 1024,
            signed_upload_expiry_secs: 7200,
            cleanup_after_minutes: 15,
            local_etag_algorithm: "mtime".into(),
            s3: S3Config::default(),
        }
    }
}

/// `storage.s3.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Bucket holding every object.
    pub bucket: String,
    /// Endpoint URL (empty = AWS).
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Path-style addressing (most self-hosted S3 servers need it).
    pub force_path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Option<Secret>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: String::new(),
            secret_access_key: None,
        }
    }
}

/// `jobs.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run job workers (and the cron leader) inside `serve`.
    pub enabled: bool,
    /// Concurrent jobs per queue per instance, unless `queue_concurrency` names the queue.
    pub concurrency: u64,
    /// Per-queue concurrency as `queue=N` entries.
    pub queue_concurrency: Vec<String>,
    /// Milliseconds between polls when no NOTIFY arrives (delayed jobs, lost notifications).
    pub poll_interval_ms: u64,
    /// Seconds a claimed job stays leased without a heartbeat; a dead worker's jobs run again after it.
    pub lease_secs: u64,
    /// Attempts before a job is dead-lettered (unless the job or its queue says otherwise).
    pub max_attempts: u64,
    /// Base of the exponential retry backoff, milliseconds.
    pub backoff_base_ms: u64,
    /// Largest retry delay, milliseconds.
    pub backoff_cap_ms: u64,
    /// Days succeeded and cancelled jobs are kept.
    pub retention_days: u64,
    /// Days dead letters are kept.
    pub dead_retention_days: u64,
    /// Fire cron schedules (one instance leads, chosen by an advisory lock).
    pub cron_enabled: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            concurrency: 4,
            queue_concurrency: Vec::new(),
            poll_interval_ms: 1000,
            lease_secs: 30,
            max_attempts: 5,
            backoff_base_ms: 1000,
            backoff_cap_ms: 3_600_000,
            retention_days: 7,
            dead_retention_days: 30,
            cron_enabled: true,
        }
    }
}

impl JobsConfig {
    /// Concurrency for a queue.
    pub fn concurrency_for(&self, queue: &str) -> usize {
        self.queue_concurrency
            .iter()
            .filter_map(|e| e.split_once('='))
            .find(|(q, _)| q.trim() == queue)
            .and_then(|(_, n)| n.trim().parse::<usize>().ok())
            .unwrap_or(self.concurrency as usize)
            .max(1)
    }
}

/// `outbound.*`: the one HTTP client for webhooks, OAuth and workflows.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Networks (CIDR) outbound calls may reach although they are loopback, private,
    /// link-local, multicast or unspecified; empty refuses all of them.
    pub allow_private_networks: Vec<String>,
    /// Seconds to connect.
    pub connect_timeout_secs: u64,
    /// Seconds for a whole call.
    pub timeout_secs: u64,
    /// Largest response body read, bytes.
    pub max_response_bytes: u64,
    /// Redirects followed (each one checked again).
    pub max_redirects: u64,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow_private_networks: Vec::new(),
            connect_timeout_secs: 5,
            timeout_secs: 30,
            max_response_bytes: 1024 * 1024,
            max_redirects: 5,
        }
    }
}

/// `audit.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days audit entries are kept (pruned by the maintenance job).
    pub retention_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 90 }
    }
}

/// `webhooks.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliver webhooks.
    pub enabled: bool,
    /// Seconds a delivery may take.
    pub timeout_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            timeout_secs: 10,
        }
    }
}

/// `rate_limits.*`: token buckets per process (each instance counts on its own).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Enforce rate limits.
    pub enabled: bool,
    /// Requests per minute on `/auth/v1` per user, API key or IP; 0 = unlimited.
    pub auth_per_minute: u64,
    /// Requests per minute on `/rest/v1` per user, API key or IP; 0 = unlimited.
    pub rest_per_minute: u64,
    /// Requests per minute on `/storage/v1` per user, API key or IP; 0 = unlimited.
    pub storage_per_minute: u64,
    /// Requests per minute on the other `/api/v1` routes per user, API key or IP; 0 = unlimited.
    pub api_per_minute: u64,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            enabled: true,
            auth_per_minute: 360,
            rest_per_minute: 0,
            storage_per_minute: 0,
            api_per_minute: 0,
            trust_forwarded_for: false,
        }
    }
}

/// `log.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// `auto` (pretty on a terminal, JSON otherwise), `pretty` or `json`.
    pub format: String,
    /// Request statements slower than this (milliseconds) are logged; 0 = never.
    pub slow_query_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
            slow_query_ms: 500,
        }
    }
}

/// `metrics.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve Prometheus metrics at `/metrics`.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// `otlp.*`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// OTLP/HTTP collector URL (`http://127.0.0.1:4318`; `/v1/traces` is appended unless
    /// given). Empty = no trace export.
    pub endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Extra request headers for the collector, each `name: value`.
    pub headers: Vec<String>,
    /// Percent of requests without a sampled `traceparent` that are traced (0 to 100).
    pub sample_percent: u64,
    /// Also export a span per request-transaction statement.
    pub db_spans: bool,
    /// Longest wait before queued spans are sent, ms.
    pub export_interval_ms: u64,
    /// Spans waiting for export beyond this are dropped (and counted).
    pub max_queue_spans: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            service_name: "fluxbase".into(),
            headers: Vec::new(),
            sample_percent: 100,
            db_spans: true,
            export_interval_ms: 1000,
            max_queue_spans: 8192,
        }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    /// `--host`
    pub host: Option<String>,
    /// `--port`
    pub port: Option<u16>,
    /// `--data-dir`
    pub data_dir: Option<String>,
    /// `--database-url`
    pub database_url: Option<String>,
}

/// The result of loading: the config plus warnings that do not stop start-up.
#[derive(Debug)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Unknown keys and similar notes, to be logged.
    pub warnings: Vec<String>,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Everything wrong with a configuration, listed together.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Loads the configuration from the process environment.
pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Loaded, ConfigErrors> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(file, &env, cli)
}

/// Loads with an explicit environment (tests pass their own).
pub fn load_from(
    file: Option<&Path>,
    env: &[(String, String)],
    cli: &CliOverrides,
) -> Result<Loaded, ConfigErrors> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let defaults = default_tree();

    let (path, explicit) = match file {
        Some(p) => (Some(p.to_path_buf()), true),
        None => {
            let p = PathBuf::from(DEFAULT_CONFIG_FILE);
            (p.exists().then_some(p), false)
        }
    };
    let mut tree = Value::Object(Map::new());
    if let Some(p) = &path {
        match std::fs::read_to_string(p) {
            Ok(text) => match parse_yaml(&text) {
                Ok(v) => tree = v,
                Err(e) => problems.push(format!("{}: {e}", p.display())),
            },
            Err(e) if explicit || e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("cannot read {}: {e}", p.display()))
            }
            Err(_) => {}
        }
    }

    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if name.starts_with(TEST_ENV_PREFIX) || rest.is_empty() {
            continue;
        }
        let segs: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        match lookup(&defaults, &segs) {
            Some(def) => set_path(&mut tree, &segs, env_value(def, raw)),
            // FLUXBASE_CONFIG and similar process-level names are not keys.
            None if segs.len() == 1 && segs[0] == "config" => {}
            None => warnings.push(format!("unknown environment variable {name} (ignored)")),
        }
    }

    let mut set = |segs: &[&str], v: Value| {
        let segs: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        set_path(&mut tree, &segs, v);
    };
    if let Some(h) = &cli.host {
        set(&["server", "host"], Value::String(h.clone()));
    }
    if let Some(p) = cli.port {
        set(&["server", "port"], Value::from(p));
    }
    if let Some(d) = &cli.data_dir {
        set(&["server", "data_dir"], Value::String(d.clone()));
    }
    if let Some(u) = &cli.database_url {
        set(&["database", "url"], Value::String(u.clone()));
    }

    // Unknown keys are reported as warnings and dropped, so one typo never stops start-up.
    let mut unknown = Vec::new();
    prune_unknown(&mut tree, &defaults, &mut Vec::new(), &mut unknown);
    for k in unknown {
        warnings.push(format!("unknown config key `{k}` (ignored)"));
    }
    check_types(&tree, &defaults, &mut Vec::new(), &mut problems);
    if !problems.is_empty() {
        return Err(ConfigErrors(problems));
    }
    let config: Config = match serde_json::from_value(tree) {
        Ok(c) => c,
        Err(e) => return Err(ConfigErrors(vec![e.to_string()])),
    };
    problems.extend(config.validate());
    if problems.is_empty() {
        Ok(Loaded {
            config,
            warnings,
            file: path,
        })
    } else {
        Err(ConfigErrors(problems))
    }
}

fn parse_yaml(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let v: Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    match v {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(v),
        _ => Err("the top level must be a mapping of sections".into()),
    }
}

/// The defaults as a JSON tree; secrets and optional values appear as `null`.
pub fn default_tree() -> Value {
    // Serialising plain structs of strings, numbers, bools and lists cannot fail.
    serde_json::to_value(Config::default()).unwrap_or(Value::Null)
}

/// Every leaf key path of the configuration with its env name, in declaration order.
pub fn key_paths() -> Vec<(String, String)> {
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => out.push((
                path.join("."),
                format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase()),
            )),
        }
    }
    let mut out = Vec::new();
    walk(&default_tree(), &mut Vec::new(), &mut out);
    out
}

fn lookup<'a>(tree: &'a Value, segs: &[String]) -> Option<&'a Value> {
    let mut cur = tree;
    for s in segs {
        cur = cur.as_object()?.get(s)?;
    }
    // Only leaves are settable from the environment.
    (!cur.is_object()).then_some(cur)
}

fn set_path(tree: &mut Value, segs: &[String], v: Value) {
    let mut cur = tree;
    for (i, s) in segs.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        if i + 1 == segs.len() {
            m.insert(s.clone(), v);
            return;
        }
        cur = m
            .entry(s.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Converts an env string to the JSON type the default has, so the type check sees a
/// number where a number belongs (and reports the key when the text is not one).
fn env_value(default: &Value, raw: &str) -> Value {
    match default {
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "off" => Value::Bool(false),
            _ => Value::String(raw.to_string()),
        },
        Value::Number(_) => raw
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| raw.trim().parse::<i64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(raw.to_string())),
        _ => Value::String(raw.to_string()),
    }
}

fn prune_unknown(
    tree: &mut Value,
    defaults: &Value,
    path: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    let (Value::Object(m), Value::Object(d)) = (tree, defaults) else {
        return;
    };
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        path.push(k.clone());
        match d.get(&k) {
            None => {
                out.push(path.join("."));
                m.remove(&k);
            }
            Some(dv) if dv.is_object() => {
                if let Some(child) = m.get_mut(&k) {
                    prune_unknown(child, dv, path, out);
                }
            }
            Some(_) => {}
        }
        path.pop();
    }
}

fn check_types(tree: &Value, defaults: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    let key = path.join(".");
    match (tree, defaults) {
        (Value::Object(m), Value::Object(d)) => {
            for (k, v) in m {
                if let Some(dv) = d.get(k) {
                    path.push(k.clone());
                    check_types(v, dv, path, out);
                    path.pop();
                }
            }
        }
        (v, Value::Object(_)) => out.push(format!("`{key}` must be a mapping, got {}", kind(v))),
        // A null in the file means "use the default".
        (Value::Null, _) => {}
        (Value::Bool(_), Value::Bool(_)) => {}
        (v, Value::Bool(_)) => out.push(format!("`{key}` must be true or false, got {}", show(v))),
        (Value::Number(n), Value::Number(_)) if n.is_u64() => {}
        (v, Value::Number(_)) => out.push(format!(
            "`{key}` must be a non-negative integer, got {}",
            show(v)
        )),
        (Value::Array(items), Value::Array(_)) => {
            if items.iter().any(|i| !i.is_string()) {
                out.push(format!("`{key}` must be a list of strings"));
            }
        }
        (v, Value::Array(_)) => out.push(format!("`{key}` must be a list, got {}", show(v))),
        (Value::String(_), _) => {}
        (v, _) => out.push(format!("`{key}` must be a string, got {}", show(v))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) | Value::Object(_) => kind(v).to_string(),
        other => other.to_string(),
    }
}

impl ExternalConfig {
    /// The provider sections with their names, in a fixed order.
    pub fn providers(&self) -> [(&'static str, &OAuthProviderConfig); 11] {
        [
            ("github", &self.github),
            ("google", &self.google),
            ("gitlab", &self.gitlab),
            ("discord", &self.discord),
            ("facebook", &self.facebook),
            ("azure", &self.azure),
            ("x", &self.x),
            ("apple", &self.apple),
            ("keycloak", &self.keycloak),
            ("oidc", &self.oidc),
            ("custom", &self.custom),
        ]
    }

    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        for (name, c) in self.providers() {
            for (key, v) in [
                ("redirect_uri", &c.redirect_uri),
                ("url", &c.url),
                ("authorize_url", &c.authorize_url),
                ("token_url", &c.token_url),
                ("userinfo_url", &c.userinfo_url),
            ] {
                if !v.is_empty() && !is_url(v) {
                    p.push(format!(
                        "`auth.external.{name}.{key}` must start with http:// or https://"
                    ));
                }
            }
            if !c.enabled {
                continue;
            }
            if c.client_id.is_empty() {
                p.push(format!(
                    "`auth.external.{name}.client_id` is required when enabled"
                ));
            }
            let needs: &[(&str, &String)] = match name {
                "keycloak" | "oidc" => &[("url", &c.url)],
                "custom" => &[
                    ("authorize_url", &c.authorize_url),
                    ("token_url", &c.token_url),
                    ("userinfo_url", &c.userinfo_url),
                ],
                _ => &[],
            };
            for (key, v) in needs {
                if v.is_empty() {
                    p.push(format!(
                        "`auth.external.{name}.{key}` is required when enabled"
                    ));
                }
            }
        }
        p
    }
}

const LOG_LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
const LOG_FORMATS: [&str; 3] = ["auto", "pretty", "json"];
const STORAGE_BACKENDS: [&str; 2] = ["local", "s3"];

impl Config {
    /// Semantic checks; every problem is returned, none stops the others.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.port > 65535 {
            p.push(format!(
                "`server.port` must be between 0 and 65535, got {}",
                self.server.port
            ));
        }
        if self.server.host.trim().is_empty() {
            p.push("`server.host` must not be empty".into());
        }
        let url = &self.server.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            p.push("`server.public_url` must start with http:// or https://".into());
        }
        if self.server.tls.cert_path.is_empty() != self.server.tls.key_path.is_empty() {
            p.push("`server.tls.cert_path` and `server.tls.key_path` go together".into());
        }
        if self.server.body_limit_bytes == 0 {
            p.push("`server.body_limit_bytes` must be positive".into());
        }
        if self.server.cors.allow_credentials
            && self.server.cors.allowed_origins.iter().any(|o| o == "*")
        {
            p.push("`server.cors.allow_credentials` cannot be combined with the `*` origin".into());
        }
        if let Some(url) = &self.database.url {
            let u = url.expose();
            if !(u.is_empty() || u.starts_with("postgres://") || u.starts_with("postgresql://")) {
                p.push("`database.url` must start with postgres:// or postgresql://".into());
            }
        }
        if self.database.pool_size == 0 || self.database.pool_size > 1000 {
            p.push(format!(
                "`database.pool_size` must be between 1 and 1000, got {}",
                self.database.pool_size
            ));
        }
        if self.database.acquire_timeout_secs == 0 {
            p.push("`database.acquire_timeout_secs` must be positive".into());
        }
        if self.database.managed.port == 0 || self.database.managed.port > 65535 {
            p.push(format!(
                "`database.managed.port` must be between 1 and 65535, got {}",
                self.database.managed.port
            ));
        }
        if let Some(s) = &self.auth.jwt_secret {
            if !s.expose().is_empty() && s.expose().len() < 32 {
                p.push("`auth.jwt_secret` must be at least 32 characters".into());
            }
        }
        if !["starttls", "tls", "none"].contains(&self.auth.smtp.tls.as_str()) {
            p.push(format!(
                "`auth.smtp.tls` must be starttls, tls or none, got {:?}",
                self.auth.smtp.tls
            ));
        }
        if !self.auth.smtp.host.is_empty()
            && self
                .auth
                .smtp
                .sender
                .parse::<lettre::message::Mailbox>()
                .is_err()
        {
            p.push(format!(
                "`auth.smtp.sender` is not a mail address: {:?}",
                self.auth.smtp.sender
            ));
        }
        // Each template is read and parsed as the mailer will: a malformed one is named here.
        p.extend(crate::auth::mail::templates::Templates::check(
            &self.auth.templates,
        ));
        if !(4..=31).contains(&self.auth.bcrypt_cost) {
            p.push(format!(
                "`auth.bcrypt_cost` must be between 4 and 31, got {}",
                self.auth.bcrypt_cost
            ));
        }
        p.extend(self.auth.external.validate());
        p.extend(self.auth.sms.validate());
        for (name, h) in [
            ("send_sms", &self.auth.hooks.send_sms),
            ("send_email", &self.auth.hooks.send_email),
        ] {
            if let Err(e) = crate::auth::hooks::Hook::from_config(name, h) {
                p.push(e);
            }
        }
        if self.auth.hooks.timeout_secs == 0 {
            p.push("`auth.hooks.timeout_secs` must be positive".into());
        }
        if self.auth.jwt_expiry_secs == 0 {
            p.push("`auth.jwt_expiry_secs` must be positive".into());
        }
        for r in &self.auth.extra_roles {
            if !valid_role_name(r) {
                p.push(format!(
                    "`auth.extra_roles`: `{r}` is not a valid role name"
                ));
            }
        }
        if self.rest.schemas.is_empty() {
            p.push("`rest.schemas` must name at least one schema".into());
        }
        if !self.rest.pre_request.is_empty() {
            let parts: Vec<&str> = self.rest.pre_request.split('.').collect();
            if parts.len() > 2 || parts.iter().any(|p| p.is_empty() || p.contains('"')) {
                p.push(format!(
                    "`rest.pre_request` must be `schema.function` or `function`, got {:?}",
                    self.rest.pre_request
                ));
            }
        }
        if !self.rest.anon_role.is_empty() && !self.allowed_roles().contains(&self.rest.anon_role) {
            p.push(format!(
                "`rest.anon_role` must be empty or one of {} (`auth.extra_roles` adds roles), got {:?}",
                self.allowed_roles().join(", "),
                self.rest.anon_role
            ));
        }
        if !LOG_LEVELS.contains(&self.log.level.to_ascii_lowercase().as_str()) {
            p.push(format!(
                "`log.level` must be one of {}, got {:?}",
                LOG_LEVELS.join(", "),
                self.log.level
            ));
        }
        if !LOG_FORMATS.contains(&self.log.format.as_str()) {
            p.push(format!(
                "`log.format` must be one of {}, got {:?}",
                LOG_FORMATS.join(", "),
                self.log.format
            ));
        }
        if self.otlp.sample_percent > 100 {
            p.push(format!(
                "`otlp.sample_percent` must be between 0 and 100, got {}",
                self.otlp.sample_percent
            ));
        }
        let otlp = self.otlp.endpoint.trim();
        if !otlp.is_empty()
            && !url::Url::parse(otlp).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            p.push(format!(
                "`otlp.endpoint` must be an http(s) URL, got {otlp:?}"
            ));
        }
        if !otlp.is_empty() && !cfg!(feature = "otlp") {
            p.push(
                "`otlp.endpoint` is set, but this build has no OTLP export (cargo feature `otlp`)"
                    .into(),
            );
        }
        for h in &self.otlp.headers {
            if h.split_once(':').is_none_or(|(k, _)| k.trim().is_empty()) {
                p.push(format!("`otlp.headers`: {h:?} is not `name: value`"));
            }
        }
        if !STORAGE_BACKENDS.contains(&self.storage.backend.as_str()) {
            p.push(format!(
                "`storage.backend` must be one of {}, got {:?}",
                STORAGE_BACKENDS.join(", "),
                self.storage.backend
            ));
        }
        if !["md5", "mtime"].contains(&self.storage.local_etag_algorithm.as_str()) {
            p.push(format!(
                "`storage.local_etag_algorithm` must be md5 or mtime, got {:?}",
                self.storage.local_etag_algorithm
            ));
        }
        if self.storage.backend == "s3" && self.storage.s3.bucket.is_empty() {
            p.push("`storage.s3.bucket` is required when `storage.backend` is s3".into());
        }
        if self.jobs.concurrency == 0 {
            p.push("`jobs.concurrency` must be positive".into());
        }
        for e in &self.jobs.queue_concurrency {
            let ok = e.split_once('=').is_some_and(|(q, n)| {
                !q.trim().is_empty() && n.trim().parse::<u32>().is_ok_and(|n| n > 0)
            });
            if !ok {
                p.push(format!(
                    "`jobs.queue_concurrency`: {e:?} must look like `queue=N` with N > 0"
                ));
            }
        }
        if self.jobs.lease_secs < 2 {
            p.push("`jobs.lease_secs` must be at least 2".into());
        }
        if self.jobs.max_attempts == 0 {
            p.push("`jobs.max_attempts` must be positive".into());
        }
        if self.jobs.backoff_cap_ms < self.jobs.backoff_base_ms {
            p.push("`jobs.backoff_cap_ms` must not be below `jobs.backoff_base_ms`".into());
        }
        for n in &self.outbound.allow_private_networks {
            if n.parse::<ipnet::IpNet>().is_err() && n.parse::<std::net::IpAddr>().is_err() {
                p.push(format!(
                    "`outbound.allow_private_networks`: {n:?} is not a CIDR network or address"
                ));
            }
        }
        if self.outbound.timeout_secs == 0 || self.outbound.connect_timeout_secs == 0 {
            p.push(
                "`outbound.timeout_secs` and `outbound.connect_timeout_secs` must be positive"
                    .into(),
            );
        }
        p
    }

    /// The database URL when one is configured (empty strings count as none).
    pub fn database_url(&self) -> Option<&str> {
        self.database
            .url
            .as_ref()
            .map(Secret::expose)
            .filter(|u| !u.is_empty())
    }

    /// The data directory as a path.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.server.data_dir)
    }

    /// Roles a JWT may select.
    pub fn allowed_roles(&self) -> Vec<String> {
        let mut r: Vec<String> = ["anon", "authenticated", "service_role"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        r.extend(self.auth.extra_roles.iter().cloned());
        r
    }
}

fn valid_role_name(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 63
        && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !r.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn load_yaml(yaml: &str, e: &[(&str, &str)]) -> Result<Loaded, ConfigErrors> {
        let dir = std::env::temp_dir().join(format!("fbcfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("fluxbase.yaml");
        std::fs::write(&f, yaml).unwrap();
        let r = load_from(Some(&f), &env(e), &CliOverrides::default());
        std::fs::remove_dir_all(&dir).ok();
        r
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Config::default().validate().is_empty());
        let l = load_from(None, &[], &CliOverrides::default());
        // Working directory may hold the shipped fluxbase.yaml, which equals the defaults.
        assert_eq!(l.unwrap().config, Config::default());
    }

    #[test]
    fn layers_apply_in_order() {
        let cli = CliOverrides {
            port: Some(9000),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("fbcfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "server:\n  port: 7000\n  host: 0.0.0.0\nlog:\n  level: debug\n",
        )
        .unwrap();
        let l = load_from(
            Some(&f),
            &env(&[
                ("FLUXBASE_SERVER__PORT", "7500"),
                ("FLUXBASE_LOG__LEVEL", "warn"),
                ("FLUXBASE_REST__SCHEMAS", "public, api"),
                ("FLUXBASE_STORAGE__S3__ENDPOINT", "http://s3.local"),
                ("FLUXBASE_TEST_DATABASE_URL", "ignored"),
                ("FLUXBASE_DATABASE__MANAGED__LISTEN_TCP", "true"),
            ]),
            &cli,
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(l.config.server.port, 9000, "CLI beats env and file");
        assert_eq!(l.config.server.host, "0.0.0.0", "file beats default");
        assert_eq!(l.config.log.level, "warn", "env beats file");
        assert_eq!(l.config.rest.schemas, vec!["public", "api"]);
        assert_eq!(l.config.storage.s3.endpoint, "http://s3.local");
        assert!(l.config.database.managed.listen_tcp);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }

    #[test]
    fn every_problem_is_reported() {
        let e = load_yaml(
            "server:\n  port: 70000\n  workers: many\nlog:\n  level: loud\ndatabase:\n  pool_size: -1\n",
            &[("FLUXBASE_JOBS__CONCURRENCY", "lots")],
        )
        .unwrap_err();
        let all = e.0.join("\n");
        assert!(all.contains("server.workers"), "{all}");
        assert!(all.contains("database.pool_size"), "{all}");
        assert!(all.contains("jobs.concurrency"), "{all}");
        assert_eq!(e.0.len(), 3, "type problems first: {all}");

        let e = load_yaml(
            "server:\n  port: 70000\nlog:\n  level: loud\n  format: xml\n",
            &[],
        )
        .unwrap_err();
        let all = e.0.join("\n");
        assert!(all.contains("server.port"), "{all}");
        assert!(all.contains("log.level"), "{all}");
        assert!(all.contains("log.format"), "{all}");
    }

    #[test]
    fn unknown_keys_warn() {
        let l = load_yaml(
            "server:\n  prot: 1\nsurprise: {}\n",
            &[("FLUXBASE_NOPE__X", "1")],
        )
        .unwrap();
        let w = l.warnings.join("\n");
        assert!(w.contains("server.prot"), "{w}");
        assert!(w.contains("surprise"), "{w}");
        assert!(w.contains("FLUXBASE_NOPE__X"), "{w}");
    }

    #[test]
    fn secrets_are_redacted() {
        let l = load_yaml(
            "database:\n  url: postgres://u:hunter2@h/db\nauth:\n  jwt_secret: averyveryverylongsecretthatislongenough\n",
            &[],
        )
        .unwrap();
        let dbg = format!("{:?}", l.config);
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("averyvery"), "{dbg}");
        assert_eq!(l.config.database_url(), Some("postgres://u:hunter2@h/db"));
    }

    #[test]
    fn shipped_example_lists_every_key_with_its_default() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("fluxbase.yaml")).unwrap();
        let docs = std::fs::read_to_string(root.join("docs/config.md")).unwrap();
        let l = load_from(
            Some(&root.join("fluxbase.yaml")),
            &[],
            &CliOverrides::default(),
        )
        .unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(
            l.config,
            Config::default(),
            "fluxbase.yaml must show the defaults"
        );
        for (key, envname) in key_paths() {
            assert!(text.contains(&envname), "fluxbase.yaml lacks {envname}");
            assert!(
                docs.contains(&format!("`{key}`")),
                "docs/config.md lacks `{key}`"
            );
            assert!(docs.contains(&envname), "docs/config.md lacks {envname}");
        }
    }
}
