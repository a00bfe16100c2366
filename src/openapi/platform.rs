//! Request bodies, parameters and success responses of the registry routes, keyed by
//! (method, canonical path), and the component schemas they refer to (`Session`, `User`,
//! `Bucket`, `FileObject`, `Webhook`, `Delivery`, `ApiKey`, `Job`, …).
//!
//! Each entry mirrors what its handler really sends: the `json!` bodies and `Serialize`
//! structs of auth, storage, realtime, jobs, webhooks, monitoring and ops, and the
//! `jsonb_build_object`/`to_jsonb` rows their SQL returns (column types from `migrations/`).
//! Aliases share one entry: `/api/v1/auth/*` is described by `/auth/v1/*`,
//! `/api/v1/storage/*` by `/storage/v1/*`, `/realtime/websocket` by `/realtime/v1/websocket`
//! ([`canonical`]).
//!
//! A registry route without an entry fails `every_route_is_described`; an entry without a
//! route fails `no_entry_is_stale`. Bodies that are not JSON are explicit: [`binary`],
//! [`redirect`], [`none`] (no content).
//!
//! Must not: import handlers or their types (this file describes them; the tests in
//! `tests/clients/openapi.responses.test.mjs` check real responses against it).

use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The description of one operation.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Query and header parameters (path parameters come from the template).
    pub params: Vec<Value>,
    /// The `requestBody` object.
    pub request: Option<Value>,
    /// Status code → response object, success codes (and any specific non-range code).
    pub responses: Vec<(&'static str, Value)>,
    /// Whether the status may be anything (set by SQL through `response.status`).
    pub any_status: bool,
}

impl Spec {
    fn new() -> Self {
        Spec::default()
    }
    fn param(mut self, p: Value) -> Self {
        self.params.push(p);
        self
    }
    fn body(mut self, b: Value) -> Self {
        self.request = Some(b);
        self
    }
    fn resp(mut self, status: &'static str, r: Value) -> Self {
        self.responses.push((status, r));
        self
    }
    /// 200 with a JSON body.
    fn ok(self, description: &str, schema: Value) -> Self {
        self.resp("200", json_resp(description, schema))
    }
}

/// One (method, canonical path) entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Upper-case HTTP method.
    pub method: &'static str,
    /// Canonical OpenAPI path (`{name}` without the actix regex).
    pub path: &'static str,
    /// Its description.
    pub spec: Spec,
}

/// The canonical form of an OpenAPI path: aliases map to the path their entry is kept under.
pub fn canonical(path: &str) -> String {
    for (alias, canon) in [
        ("/api/v1/auth", "/auth/v1"),
        ("/api/v1/storage", "/storage/v1"),
        ("/realtime/websocket", "/realtime/v1/websocket"),
    ] {
        if let Some(rest) = path.strip_prefix(alias) {
            if rest.is_empty() || rest.starts_with('/') {
                return format!("{canon}{rest}");
            }
        }
    }
    path.to_string()
}

/// Every entry, indexed by (method, canonical path).
pub fn index() -> HashMap<(&'static str, &'static str), Spec> {
    entries()
        .into_iter()
        .map(|e| ((e.method, e.path), e.spec))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers.

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn arr(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

fn json_resp(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A response without a body (204, 202, 101, 304, HEAD).
pub fn none(description: &str) -> Value {
    json!({"description": description})
}

/// A response whose body is bytes of any media type (object downloads).
pub fn binary(description: &str) -> Value {
    json!({"description": description, "content": {"*/*": {"schema": {"description": "The bytes"}}}})
}

/// A redirect: no body, a `Location` header.
pub fn redirect(description: &str) -> Value {
    json!({"description": description, "headers": {"Location": {
        "required": true, "schema": {"type": "string"}, "description": "Where to go"}}})
}

fn json_body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

fn query_required(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": true, "schema": schema, "description": description})
}

fn header(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "schema": schema, "description": description})
}

fn x_upsert() -> Value {
    header(
        "x-upsert",
        json!({"type": "string", "enum": ["true", "false"]}),
        "`true` replaces an existing object",
    )
}

fn s() -> Value {
    json!({"type": "string"})
}
fn opt_s() -> Value {
    json!({"type": ["string", "null"]})
}
fn int() -> Value {
    json!({"type": "integer"})
}
fn opt_int() -> Value {
    json!({"type": ["integer", "null"]})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn uuid() -> Value {
    json!({"type": "string", "format": "uuid"})
}
fn opt_uuid() -> Value {
    json!({"type": ["string", "null"], "format": "uuid"})
}
fn ts() -> Value {
    json!({"type": "string", "format": "date-time"})
}
fn opt_ts() -> Value {
    json!({"type": ["string", "null"], "format": "date-time"})
}
fn obj() -> Value {
    json!({"type": "object"})
}
fn any() -> Value {
    json!({})
}

/// An object schema: `props` in order, `required` named.
fn object(props: &[(&str, Value)], required: &[&str]) -> Value {
    let p: Map<String, Value> = props
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({"type": "object", "properties": p, "required": required})
}

/// An object whose every property is always present.
fn record(props: &[(&str, Value)]) -> Value {
    let names: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
    object(props, &names)
}

/// `{message}` bodies of storage writes.
fn message() -> Value {
    r("StorageMessage")
}

// ---------------------------------------------------------------------------------------
// Component schemas.

/// Component schemas of the registry routes (JSON Schema 2020-12, the OpenAPI 3.1 dialect).
pub fn schemas() -> Vec<(&'static str, Value)> {
    let scopes = json!({"type": "string", "enum": ["rest:read", "rest:write", "storage:read", "storage:write", "realtime", "admin"]});
    vec![
        // -------------------------------------------------------------- auth (GoTrue)
        ("User", {
            let mut u = object(
                &[
                    ("id", uuid()),
                    ("aud", s()),
                    ("role", s()),
                    (
                        "email",
                        json!({"type": "string", "description": "`\"\"` when the user has none"}),
                    ),
                    (
                        "phone",
                        json!({"type": "string", "description": "`\"\"` when the user has none"}),
                    ),
                    ("email_confirmed_at", opt_ts()),
                    ("phone_confirmed_at", opt_ts()),
                    ("confirmed_at", opt_ts()),
                    ("confirmation_sent_at", opt_ts()),
                    ("recovery_sent_at", opt_ts()),
                    ("new_email", s()),
                    ("email_change_sent_at", ts()),
                    ("last_sign_in_at", opt_ts()),
                    (
                        "app_metadata",
                        object(&[("provider", s()), ("providers", arr(s()))], &[]),
                    ),
                    (
                        "user_metadata",
                        json!({"description": "What the user (or an admin) stored; an object unless a non-object `data` was sent"}),
                    ),
                    ("identities", arr(r("Identity"))),
                    ("factors", arr(r("Factor"))),
                    ("created_at", opt_ts()),
                    ("updated_at", opt_ts()),
                    ("banned_until", ts()),
                    ("deleted_at", ts()),
                    ("invited_at", ts()),
                    ("is_anonymous", boolean()),
                ],
                &[
                    "id",
                    "aud",
                    "role",
                    "email",
                    "phone",
                    "email_confirmed_at",
                    "phone_confirmed_at",
                    "confirmed_at",
                    "confirmation_sent_at",
                    "recovery_sent_at",
                    "last_sign_in_at",
                    "app_metadata",
                    "user_metadata",
                    "identities",
                    "created_at",
                    "updated_at",
                    "is_anonymous",
                ],
            );
            u["description"] = json!("A GoTrue user. `new_email`, `email_change_sent_at`, `invited_at`, `factors`, `banned_until` and `deleted_at` are left out when unset, as GoTrue does.");
            u
        }),
        (
            "Identity",
            record(&[
                ("identity_id", uuid()),
                (
                    "id",
                    json!({"type": "string", "description": "The provider's id of the user"}),
                ),
                ("user_id", uuid()),
                ("identity_data", obj()),
                ("provider", s()),
                ("last_sign_in_at", opt_ts()),
                ("created_at", ts()),
                ("updated_at", ts()),
                ("email", opt_s()),
            ]),
        ),
        (
            "Factor",
            record(&[
                ("id", uuid()),
                ("friendly_name", opt_s()),
                ("factor_type", json!({"type": "string", "enum": ["totp"]})),
                (
                    "status",
                    json!({"type": "string", "enum": ["unverified", "verified"]}),
                ),
                ("created_at", ts()),
                ("updated_at", ts()),
            ]),
        ),
        ("Session", {
            let mut s = record(&[
                (
                    "access_token",
                    json!({"type": "string", "description": "A JWT"}),
                ),
                ("token_type", json!({"const": "bearer"})),
                (
                    "expires_in",
                    json!({"type": "integer", "minimum": 0, "description": "Seconds"}),
                ),
                (
                    "expires_at",
                    json!({"type": "integer", "description": "Unix seconds"}),
                ),
                ("refresh_token", s()),
                ("user", r("User")),
            ]);
            // OAuth sessions (PKCE code exchange) also carry the provider's tokens.
            s["properties"]["provider_token"] = json!({"type": "string"});
            s["properties"]["provider_refresh_token"] = json!({"type": "string"});
            s["description"] = json!("A GoTrue session (AccessTokenResponse).");
            s
        }),
        (
            "SessionOrUser",
            json!({
                "description": "Sign-up answer: a Session when no confirmation is needed (autoconfirm, anonymous), else the unconfirmed User (a confirmation mail was queued).",
                "anyOf": [r("Session"), r("User")]
            }),
        ),
        (
            "AuthSettings",
            record(&[
                (
                    "external",
                    object(
                        &[
                            ("email", boolean()),
                            ("phone", boolean()),
                            ("anonymous_users", boolean()),
                            ("github", boolean()),
                            ("google", boolean()),
                            ("gitlab", boolean()),
                            ("discord", boolean()),
                            ("facebook", boolean()),
                            ("azure", boolean()),
                            ("x", boolean()),
                            ("apple", boolean()),
                            ("keycloak", boolean()),
                            ("oidc", boolean()),
                            ("custom", boolean()),
                        ],
                        &["email", "phone", "anonymous_users"],
                    ),
                ),
                ("disable_signup", boolean()),
                ("mailer_autoconfirm", boolean()),
                ("phone_autoconfirm", boolean()),
                ("sms_provider", s()),
                ("saml_enabled", boolean()),
                ("passkeys_enabled", boolean()),
            ]),
        ),
        ("Jwks", record(&[("keys", arr(obj()))])),
        (
            "EmptyObject",
            json!({"type": "object", "additionalProperties": false, "description": "`{}`"}),
        ),
        (
            "UserList",
            record(&[("users", arr(r("User"))), ("aud", s())]),
        ),
        (
            "TotpEnrollment",
            record(&[
                ("id", uuid()),
                ("type", json!({"const": "totp"})),
                ("friendly_name", s()),
                (
                    "totp",
                    record(&[
                        (
                            "qr_code",
                            json!({"type": "string", "description": "data:image/svg+xml URL"}),
                        ),
                        ("secret", json!({"type": "string", "description": "Base32"})),
                        (
                            "uri",
                            json!({"type": "string", "description": "otpauth:// URI"}),
                        ),
                    ]),
                ),
            ]),
        ),
        (
            "MfaChallenge",
            record(&[
                ("id", uuid()),
                ("type", json!({"const": "totp"})),
                (
                    "expires_at",
                    json!({"type": "integer", "description": "Unix seconds"}),
                ),
            ]),
        ),
        ("FactorId", record(&[("id", uuid())])),
        (
            "SignupInput",
            object(
                &[
                    ("email", json!({"type": "string", "format": "email"})),
                    (
                        "phone",
                        json!({"type": "string", "description": "Refused: phone sign-ups are off"}),
                    ),
                    ("password", s()),
                    (
                        "data",
                        json!({"type": "object", "description": "user_metadata"}),
                    ),
                    ("code_challenge", s()),
                    (
                        "code_challenge_method",
                        json!({"type": "string", "enum": ["s256", "S256", "plain"]}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "TokenInput",
            object(
                &[
                    ("email", s()),
                    ("phone", s()),
                    (
                        "password",
                        json!({"type": "string", "description": "grant_type=password"}),
                    ),
                    (
                        "refresh_token",
                        json!({"type": "string", "description": "grant_type=refresh_token"}),
                    ),
                    (
                        "auth_code",
                        json!({"type": "string", "description": "grant_type=pkce"}),
                    ),
                    (
                        "code_verifier",
                        json!({"type": "string", "description": "grant_type=pkce"}),
                    ),
                    (
                        "provider",
                        json!({"type": "string", "description": "grant_type=id_token: an enabled OpenID Connect preset (google, apple, azure, keycloak, oidc)"}),
                    ),
                    (
                        "id_token",
                        json!({"type": "string", "description": "grant_type=id_token: the provider's id_token"}),
                    ),
                    (
                        "nonce",
                        json!({"type": "string", "description": "grant_type=id_token: the raw nonce; the token's `nonce` claim must be its SHA-256 hex"}),
                    ),
                    (
                        "access_token",
                        json!({"type": "string", "description": "grant_type=id_token: the provider's access token, checked against the token's `at_hash`"}),
                    ),
                    (
                        "client_id",
                        json!({"type": "string", "description": "grant_type=id_token: with `issuer`, instead of `provider`"}),
                    ),
                    (
                        "link_identity",
                        json!({"type": "boolean", "description": "grant_type=id_token: link the token's identity to the user of the bearer token instead of signing in"}),
                    ),
                    (
                        "issuer",
                        json!({"type": "string", "description": "grant_type=id_token: the issuer of an enabled OIDC preset, instead of `provider`"}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "EmailInput",
            object(
                &[
                    ("email", json!({"type": "string", "format": "email"})),
                    ("phone", s()),
                    (
                        "data",
                        json!({"type": "object", "description": "user_metadata of a user created by /otp"}),
                    ),
                    ("create_user", boolean()),
                    (
                        "type",
                        json!({"type": "string", "description": "/resend: `signup` or `email_change`"}),
                    ),
                    ("code_challenge", s()),
                    (
                        "code_challenge_method",
                        json!({"type": "string", "enum": ["s256", "S256", "plain"]}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "VerifyInput",
            object(
                &[
                    (
                        "type",
                        json!({"type": "string", "enum": ["signup", "invite", "magiclink", "email", "recovery", "email_change"]}),
                    ),
                    ("token_hash", s()),
                    (
                        "token",
                        json!({"type": "string", "description": "The mailed code (with `email`)"}),
                    ),
                    ("email", s()),
                ],
                &[],
            ),
        ),
        (
            "UserUpdateInput",
            object(
                &[
                    (
                        "email",
                        json!({"type": "string", "format": "email", "description": "A new address: confirmed by mail before it takes effect"}),
                    ),
                    ("password", s()),
                    (
                        "nonce",
                        json!({"type": "string", "description": "The code mailed by GET /reauthenticate (needed with auth.secure_password_change on sessions older than 24 hours)"}),
                    ),
                    (
                        "data",
                        json!({"type": "object", "description": "Merged into user_metadata"}),
                    ),
                    ("code_challenge", s()),
                    (
                        "code_challenge_method",
                        json!({"type": "string", "enum": ["s256", "S256", "plain"]}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "InviteInput",
            object(
                &[
                    ("email", json!({"type": "string", "format": "email"})),
                    (
                        "data",
                        json!({"type": "object", "description": "user_metadata of the invited user"}),
                    ),
                ],
                &["email"],
            ),
        ),
        (
            "GenerateLinkInput",
            object(
                &[
                    (
                        "type",
                        json!({"type": "string", "enum": ["signup", "invite", "magiclink", "recovery", "email_change_current", "email_change_new"]}),
                    ),
                    ("email", json!({"type": "string", "format": "email"})),
                    (
                        "password",
                        json!({"type": "string", "description": "type=signup"}),
                    ),
                    (
                        "new_email",
                        json!({"type": "string", "format": "email", "description": "type=email_change_*"}),
                    ),
                    (
                        "data",
                        json!({"type": "object", "description": "user_metadata (signup, invite)"}),
                    ),
                    ("redirect_to", s()),
                ],
                &["type", "email"],
            ),
        ),
        (
            "GenerateLinkResponse",
            json!({
                "description": "GoTrue's GenerateLinkResponse: the User's fields and the link's",
                "allOf": [
                    r("User"),
                    record(&[
                        ("action_link", s()),
                        ("email_otp", json!({"type": "string", "description": "The 6-digit code"})),
                        ("hashed_token", json!({"type": "string", "description": "Verifies as token_hash; the link's token"})),
                        (
                            "verification_type",
                            json!({"type": "string", "enum": ["signup", "invite", "magiclink", "recovery", "email_change_current", "email_change_new"]}),
                        ),
                        ("redirect_to", s()),
                    ]),
                ]
            }),
        ),
        (
            "EmailChangeAccepted",
            json!({
                "description": "The first half of a secure email change was confirmed; the other address must confirm too",
                "type": "object",
                "properties": {"msg": s(), "code": json!({"type": "string", "enum": ["200"]})},
                "required": ["msg", "code"]
            }),
        ),
        (
            "AdminUserInput",
            object(
                &[
                    ("email", json!({"type": "string", "format": "email"})),
                    ("password", s()),
                    ("email_confirm", boolean()),
                    ("user_metadata", obj()),
                    ("app_metadata", obj()),
                    ("role", s()),
                    (
                        "ban_duration",
                        json!({"type": "string", "description": "`none` or a duration such as `24h`, `30m`, `10s` (update only)"}),
                    ),
                ],
                &[],
            ),
        ),
        (
            "FactorInput",
            object(
                &[
                    ("factor_type", json!({"type": "string", "enum": ["totp"]})),
                    ("friendly_name", s()),
                    ("issuer", s()),
                ],
                &["factor_type"],
            ),
        ),
        (
            "FactorVerifyInput",
            object(
                &[("challenge_id", uuid()), ("code", s())],
                &["challenge_id", "code"],
            ),
        ),
        // -------------------------------------------------------------- storage
        (
            "Bucket",
            record(&[
                ("id", s()),
                ("name", s()),
                (
                    "owner",
                    json!({"type": "string", "description": "The creator's id, `\"\"` when none"}),
                ),
                ("public", boolean()),
                ("file_size_limit", opt_int()),
                (
                    "allowed_mime_types",
                    json!({"type": ["array", "null"], "items": {"type": "string"}}),
                ),
                ("created_at", ts()),
                ("updated_at", ts()),
            ]),
        ),
        (
            "BucketInput",
            object(
                &[
                    ("id", s()),
                    ("name", s()),
                    ("public", boolean()),
                    (
                        "file_size_limit",
                        json!({"type": ["integer", "string", "null"], "description": "Bytes, or a size such as `20MB`"}),
                    ),
                    (
                        "allowed_mime_types",
                        json!({"type": ["array", "null"], "items": {"type": "string"}}),
                    ),
                ],
                &[],
            ),
        ),
        ("BucketName", record(&[("name", s())])),
        ("StorageMessage", record(&[("message", s())])),
        (
            "ObjectMetadata",
            json!({
                "type": ["object", "null"],
                "description": "System metadata of an object (null for folders)",
                "properties": {
                    "eTag": {"type": "string"},
                    "size": {"type": "integer"},
                    "mimetype": {"type": "string"},
                    "cacheControl": {"type": "string"},
                    "lastModified": {"type": "string", "format": "date-time"},
                    "contentLength": {"type": "integer"},
                    "httpStatusCode": {"type": "integer"}
                }
            }),
        ),
        ("FileObject", {
            let mut f = object(
                &[
                    ("name", s()),
                    ("id", opt_uuid()),
                    ("bucket_id", s()),
                    ("owner", opt_uuid()),
                    ("owner_id", opt_s()),
                    ("version", opt_s()),
                    ("created_at", opt_ts()),
                    ("updated_at", opt_ts()),
                    ("last_accessed_at", opt_ts()),
                    ("metadata", r("ObjectMetadata")),
                    ("user_metadata", json!({"type": ["object", "null"]})),
                ],
                &[
                    "name",
                    "id",
                    "created_at",
                    "updated_at",
                    "last_accessed_at",
                    "metadata",
                ],
            );
            f["description"] = json!("An object or (in listings, with `id: null`) a folder. Deleted rows also carry bucket_id, owner, owner_id, version and user_metadata.");
            f
        }),
        (
            "ObjectInfo",
            record(&[
                ("id", uuid()),
                ("version", opt_s()),
                ("name", s()),
                ("bucket_id", s()),
                ("created_at", ts()),
                ("updated_at", ts()),
                ("last_accessed_at", ts()),
                ("size", opt_int()),
                ("cache_control", opt_s()),
                ("content_type", opt_s()),
                ("etag", opt_s()),
                ("last_modified", opt_s()),
                (
                    "metadata",
                    json!({"type": ["object", "null"], "description": "User metadata"}),
                ),
            ]),
        ),
        (
            "ObjectKey",
            record(&[
                ("Id", uuid()),
                (
                    "Key",
                    json!({"type": "string", "description": "bucket/name"}),
                ),
            ]),
        ),
        (
            "SignedUrl",
            record(&[(
                "signedURL",
                json!({"type": "string", "description": "Relative to /storage/v1"}),
            )]),
        ),
        (
            "SignedUrls",
            arr(record(&[
                ("error", opt_s()),
                ("path", s()),
                ("signedURL", opt_s()),
            ])),
        ),
        (
            "SignedUpload",
            record(&[
                (
                    "url",
                    json!({"type": "string", "description": "Relative to /storage/v1"}),
                ),
                ("token", s()),
            ]),
        ),
        (
            "ListInput",
            json!({
                "type": "object",
                "properties": {
                    "prefix": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                    "offset": {"type": "integer", "minimum": 0, "default": 0},
                    "sortBy": {"type": "object", "properties": {
                        "column": {"type": "string", "enum": ["name", "created_at", "updated_at", "last_accessed_at"]},
                        "order": {"type": "string", "enum": ["asc", "desc"]}
                    }},
                    "search": {"type": "string"}
                }
            }),
        ),
        (
            "ListV2Input",
            json!({
                "type": "object",
                "properties": {
                    "prefix": {"type": "string"},
                    "limit": {"type": "integer", "minimum": 1, "default": 1000, "description": "Capped at 1000"},
                    "cursor": {"type": "string", "description": "`nextCursor` of the previous page"},
                    "with_delimiter": {"type": "boolean", "default": false, "description": "Only the entries directly under the prefix, folders apart"},
                    "sortBy": {"type": "object", "properties": {
                        "column": {"type": "string", "enum": ["name", "created_at", "updated_at"]},
                        "order": {"type": "string", "enum": ["asc", "desc"]}
                    }}
                }
            }),
        ),
        (
            "ObjectListV2",
            object(
                &[
                    ("hasNext", boolean()),
                    (
                        "nextCursor",
                        json!({"type": "string", "description": "Present when hasNext"}),
                    ),
                    (
                        "nextCursorKey",
                        json!({"type": "string", "description": "The last entry's full name (present when hasNext)"}),
                    ),
                    (
                        "folders",
                        arr(record(&[
                            (
                                "key",
                                json!({"type": "string", "description": "The folder's own segment"}),
                            ),
                            (
                                "name",
                                json!({"type": "string", "description": "Full path, ending in `/`"}),
                            ),
                        ])),
                    ),
                    (
                        "objects",
                        arr(object(
                            &[
                                ("id", uuid()),
                                (
                                    "name",
                                    json!({"type": "string", "description": "Full path"}),
                                ),
                                (
                                    "key",
                                    json!({"type": "string", "description": "The last segment (with_delimiter only)"}),
                                ),
                                ("updated_at", ts()),
                                ("created_at", ts()),
                                ("last_accessed_at", ts()),
                                ("metadata", r("ObjectMetadata")),
                            ],
                            &[
                                "id",
                                "name",
                                "updated_at",
                                "created_at",
                                "last_accessed_at",
                                "metadata",
                            ],
                        )),
                    ),
                ],
                &["hasNext", "folders", "objects"],
            ),
        ),
        (
            "MoveInput",
            object(
                &[
                    ("bucketId", s()),
                    ("sourceKey", s()),
                    ("destinationKey", s()),
                    ("destinationBucket", s()),
                ],
                &["bucketId", "sourceKey", "destinationKey"],
            ),
        ),
        (
            "SignInput",
            object(
                &[
                    (
                        "expiresIn",
                        json!({"type": "integer", "minimum": 1, "description": "Seconds"}),
                    ),
                    (
                        "paths",
                        json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000, "description": "POST /object/sign/{bucket} only"}),
                    ),
                ],
                &["expiresIn"],
            ),
        ),
        (
            "RemoveInput",
            object(
                &[(
                    "prefixes",
                    json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000}),
                )],
                &["prefixes"],
            ),
        ),
        // -------------------------------------------------------------- realtime
        (
            "BroadcastInput",
            json!({
                "type": "object",
                "description": "Realtime broadcast messages.",
                "properties": {
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "properties": {
                                "topic": {"type": "string", "minLength": 1},
                                "event": {"type": "string", "minLength": 1},
                                "payload": {},
                                "private": {"type": "boolean"}
                            },
                            "required": ["topic", "event"]
                        }
                    }
                },
                "required": ["messages"]
            }),
        ),
        (
            "RealtimeStats",
            record(&[
                ("connections", int()),
                ("channels", int()),
                ("topics", int()),
                ("subscriptions", int()),
                (
                    "messages",
                    record(&[
                        ("broadcast", int()),
                        ("presence", int()),
                        ("postgres_changes", int()),
                    ]),
                ),
                (
                    "messages_in",
                    record(&[
                        ("heartbeat", int()),
                        ("join", int()),
                        ("leave", int()),
                        ("broadcast", int()),
                        ("presence", int()),
                        ("access_token", int()),
                        ("other", int()),
                        ("malformed", int()),
                    ]),
                ),
                ("slow_disconnects", int()),
            ]),
        ),
        (
            "RealtimeTable",
            record(&[
                ("schema", s()),
                ("table", s()),
                (
                    "trigger",
                    json!({"type": "boolean", "description": "The change trigger is installed"}),
                ),
            ]),
        ),
        (
            "RealtimeTableState",
            record(&[("schema", s()), ("table", s()), ("enabled", boolean())]),
        ),
        // -------------------------------------------------------------- jobs
        (
            "Job",
            record(&[
                ("id", json!({"type": "integer", "format": "int64"})),
                ("queue", s()),
                ("payload", any()),
                (
                    "status",
                    json!({"type": "string", "enum": ["pending", "running", "succeeded", "dead", "cancelled"]}),
                ),
                ("priority", int()),
                ("run_at", ts()),
                ("attempts", int()),
                ("max_attempts", opt_int()),
                ("idempotency_key", opt_s()),
                ("locked_by", opt_s()),
                ("locked_until", opt_ts()),
                ("last_error", opt_s()),
                ("result", any()),
                ("created_at", ts()),
                ("updated_at", ts()),
                ("started_at", opt_ts()),
                ("finished_at", opt_ts()),
            ]),
        ),
        (
            "Enqueued",
            record(&[
                ("id", json!({"type": "integer", "format": "int64"})),
                (
                    "created",
                    json!({"type": "boolean", "description": "False when a job with the same idempotency key was returned"}),
                ),
            ]),
        ),
        (
            "QueueStats",
            record(&[
                ("queue", s()),
                ("pending", int()),
                ("ready", int()),
                ("running", int()),
                ("succeeded", int()),
                ("dead", int()),
                ("cancelled", int()),
                ("oldest_ready_age_secs", json!({"type": "number"})),
            ]),
        ),
        (
            "Schedule",
            record(&[
                ("id", json!({"type": "integer", "format": "int64"})),
                ("name", s()),
                ("cron", s()),
                ("timezone", s()),
                ("queue", s()),
                ("payload", any()),
                ("enabled", boolean()),
                ("next_run_at", ts()),
                ("last_run_at", opt_ts()),
                ("created_at", ts()),
                ("updated_at", ts()),
            ]),
        ),
        (
            "JobInput",
            json!({
                "type": "object",
                "description": "A job to enqueue (unknown fields are refused).",
                "properties": {
                    "queue": {"type": "string", "minLength": 1, "maxLength": 200},
                    "payload": {},
                    "run_at": {"type": ["string", "null"], "format": "date-time"},
                    "priority": {"type": "integer", "format": "int32"},
                    "max_attempts": {"type": ["integer", "null"], "format": "int32", "minimum": 1},
                    "idempotency_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 500}
                },
                "required": ["queue"],
                "additionalProperties": false
            }),
        ),
        (
            "ScheduleInput",
            json!({
                "type": "object",
                "description": "A cron schedule, upserted by name (unknown fields are refused).",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "cron": {"type": "string", "description": "5 or 6 fields"},
                    "timezone": {"type": "string", "default": "UTC"},
                    "queue": {"type": "string", "minLength": 1},
                    "payload": {},
                    "enabled": {"type": "boolean", "default": true}
                },
                "required": ["name", "cron", "queue"],
                "additionalProperties": false
            }),
        ),
        // -------------------------------------------------------------- audit, admin
        (
            "AuditEntry",
            record(&[
                ("id", json!({"type": "integer", "format": "int64"})),
                ("at", ts()),
                ("actor", opt_s()),
                ("actor_role", opt_s()),
                ("action", s()),
                ("target", opt_s()),
                ("ip", opt_s()),
                ("user_agent", opt_s()),
                ("request_id", opt_s()),
                ("details", any()),
            ]),
        ),
        (
            "AdminInfo",
            record(&[
                ("version", s()),
                ("uptime_secs", json!({"type": "integer", "minimum": 0})),
                ("managed_database", boolean()),
                (
                    "database",
                    record(&[
                        ("server_version", s()),
                        ("database", s()),
                        ("size_bytes", int()),
                        ("migrations", int()),
                        ("last_migration", opt_s()),
                    ]),
                ),
            ]),
        ),
        // -------------------------------------------------------------- api keys
        (
            "ApiKey",
            record(&[
                ("id", uuid()),
                ("name", s()),
                (
                    "prefix",
                    json!({"type": "string", "description": "The key's first 12 characters"}),
                ),
                ("role", s()),
                ("scopes", arr(scopes.clone())),
                ("user_id", opt_uuid()),
                ("expires_at", opt_ts()),
                ("last_used_at", opt_ts()),
                ("revoked_at", opt_ts()),
                (
                    "rate_limit_per_minute",
                    json!({"type": ["integer", "null"], "minimum": 1, "description": "The key's own limit, counted per key on every route instead of the route group's limit; null: none"}),
                ),
                ("created_at", ts()),
                ("updated_at", ts()),
            ]),
        ),
        (
            "ApiKeyCreated",
            json!({
                "description": "A new key: the only time `key` is shown.",
                "allOf": [r("ApiKey"), {"type": "object", "properties": {"key": {"type": "string", "pattern": "^fbk_"}}, "required": ["key"]}]
            }),
        ),
        (
            "ApiKeyInput",
            json!({
                "type": "object",
                "description": "Create (name required) or update (name, scopes, expires_at, rate_limit_per_minute) an API key; unknown fields are refused.",
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "role": {"type": "string", "description": "anon, authenticated, service_role or a configured role (create only)"},
                    "scopes": {"type": "array", "items": scopes},
                    "user_id": {"type": "string", "format": "uuid", "description": "create only"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "rate_limit_per_minute": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000000, "description": "Requests per minute for this key, counted per key (429 beyond); null removes it"}
                },
                "additionalProperties": false
            }),
        ),
        // -------------------------------------------------------------- webhooks
        (
            "Webhook",
            object(
                &[
                    ("id", uuid()),
                    ("name", s()),
                    ("url", s()),
                    ("events", arr(s())),
                    (
                        "headers",
                        json!({"type": "object", "additionalProperties": {"type": "string"}}),
                    ),
                    ("timeout_ms", int()),
                    ("max_attempts", int()),
                    (
                        "retry",
                        object(
                            &[
                                ("max_attempts", int()),
                                (
                                    "backoff_base_ms",
                                    json!({"type": ["integer", "null"], "description": "null: the job queue's jobs.backoff_base_ms"}),
                                ),
                                (
                                    "backoff_cap_ms",
                                    json!({"type": ["integer", "null"], "description": "null: the job queue's jobs.backoff_cap_ms"}),
                                ),
                            ],
                            &["max_attempts", "backoff_base_ms", "backoff_cap_ms"],
                        ),
                    ),
                    ("enabled", boolean()),
                    ("created_at", ts()),
                    ("updated_at", ts()),
                ],
                &[
                    "id",
                    "name",
                    "url",
                    "events",
                    "headers",
                    "timeout_ms",
                    "max_attempts",
                    "retry",
                    "enabled",
                    "created_at",
                    "updated_at",
                ],
            ),
        ),
        (
            "WebhookCreated",
            json!({
                "description": "A new webhook: the only time `secret` is shown.",
                "allOf": [r("Webhook"), {"type": "object", "properties": {"secret": {"type": "string", "pattern": "^whsec_"}}, "required": ["secret"]}]
            }),
        ),
        (
            "WebhookInput",
            json!({
                "type": "object",
                "description": "Create (url and events required) or update a webhook (unknown fields are refused).",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 200},
                    "url": {"type": "string", "format": "uri", "description": "http(s) with a host"},
                    "events": {"type": "array", "minItems": 1, "items": {"type": "string"}, "description": "e.g. `public.orders:INSERT`, `auth.user.created`"},
                    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "secret": {"type": "string", "pattern": "^whsec_", "description": "whsec_ + base64 of 24 to 64 bytes; generated when absent"},
                    "timeout_ms": {"type": "integer", "format": "int32", "minimum": 100, "maximum": 120000},
                    "retry": {
                        "type": "object",
                        "properties": {
                            "max_attempts": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 50},
                            "backoff_base_ms": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 3600000},
                            "backoff_cap_ms": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 86400000}
                        },
                        "additionalProperties": false
                    },
                    "enabled": {"type": "boolean"}
                },
                "additionalProperties": false
            }),
        ),
        (
            "Delivery",
            record(&[
                ("id", json!({"type": "integer", "format": "int64"})),
                ("webhook_id", uuid()),
                ("event", s()),
                (
                    "status",
                    json!({"type": "string", "enum": ["pending", "succeeded", "failed", "cancelled"]}),
                ),
                ("attempts", int()),
                ("response_status", opt_int()),
                (
                    "response_body",
                    json!({"type": ["string", "null"], "description": "Truncated"}),
                ),
                ("duration_ms", opt_int()),
                ("error", opt_s()),
                ("payload", any()),
                ("created_at", ts()),
                ("updated_at", ts()),
                ("delivered_at", opt_ts()),
            ]),
        ),
        // -------------------------------------------------------------- monitoring, ops
        (
            "Check",
            json!({
                "type": "object",
                "description": "One dependency: `ok`, and as it applies `latency_ms`, `error`, `enabled`, `configured` and its own figures.",
                "properties": {
                    "ok": {"type": "boolean"},
                    "latency_ms": {"type": "number"},
                    "error": {"type": "string"},
                    "enabled": {"type": "boolean"},
                    "configured": {"type": "boolean"},
                    "backend": {"type": "string"},
                    "ready_jobs": {"type": "integer"},
                    "lag_secs": {"type": "number"},
                    "listening": {"type": "boolean"},
                    "connections": {"type": "integer"}
                },
                "required": ["ok"]
            }),
        ),
        (
            "Health",
            record(&[
                (
                    "status",
                    json!({"type": "string", "enum": ["ok", "degraded"]}),
                ),
                ("version", s()),
                ("uptime_secs", json!({"type": "integer", "minimum": 0})),
                (
                    "checks",
                    record(&[
                        ("database", r("Check")),
                        ("job_queue", r("Check")),
                        ("storage", r("Check")),
                        ("smtp", r("Check")),
                        ("realtime", r("Check")),
                    ]),
                ),
            ]),
        ),
        (
            "MetricFamily",
            record(&[
                ("name", s()),
                ("help", s()),
                (
                    "type",
                    json!({"type": "string", "enum": ["counter", "gauge", "histogram", "summary", "untyped"]}),
                ),
                (
                    "samples",
                    arr(object(
                        &[
                            (
                                "labels",
                                json!({"type": "object", "additionalProperties": {"type": "string"}}),
                            ),
                            (
                                "value",
                                json!({"type": "number", "description": "counters and gauges"}),
                            ),
                            (
                                "count",
                                json!({"type": "integer", "description": "histograms"}),
                            ),
                            (
                                "sum",
                                json!({"type": "number", "description": "histograms"}),
                            ),
                        ],
                        &["labels"],
                    )),
                ),
            ]),
        ),
        (
            "LogLine",
            record(&[
                ("timestamp", ts()),
                (
                    "level",
                    json!({"type": "string", "enum": ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]}),
                ),
                (
                    "target",
                    json!({"type": "string", "description": "The module"}),
                ),
                ("message", s()),
                (
                    "fields",
                    json!({"type": "object", "description": "Other fields (request_id, status, …)"}),
                ),
            ]),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Entries.

fn e(method: &'static str, path: &'static str, spec: Spec) -> Entry {
    Entry { method, path, spec }
}

/// The REST surface (tables, views, functions): bodies come from the schema cache, so the
/// registry templates describe them generically; the generated `/rest/v1/{name}` paths
/// describe each relation exactly.
fn rest_entries(out: &mut Vec<Entry>, path: &'static str, methods: &[&'static str]) {
    let rows = json!({
        "application/json": {"schema": {"description": "Rows (an array), a function's result, or with Accept: application/vnd.pgrst.object+json one row"}},
        "application/vnd.pgrst.object+json": {"schema": {"type": "object"}},
        "text/csv": {"schema": {"type": "string"}}
    });
    let read = json!({"description": "Rows or a function's result", "content": rows.clone()});
    let body = json!({"required": false, "content": {
        "application/json": {"schema": {"description": "A row, an array of rows, or a function's arguments"}},
        "text/csv": {"schema": {"type": "string"}},
        "application/x-www-form-urlencoded": {"schema": {"type": "object"}}
    }});
    for &m in methods {
        let mut spec = Spec {
            any_status: true,
            ..Spec::default()
        };
        spec = match m {
            "GET" => {
                let mut s = spec.resp("200", read.clone()).resp("206", read.clone());
                if path == "/rest/v1/{tail}" {
                    // `GET /rest/v1/` is PostgREST's own Swagger 2.0 description.
                    s.responses[0].1["content"]["application/openapi+json"] =
                        json!({"schema": {"type": "object"}});
                }
                s
            }
            "HEAD" => spec
                .resp("200", none("Headers only"))
                .resp("206", none("Headers only")),
            "OPTIONS" => spec.resp("200", none("The methods allowed, in `Allow`")),
            "POST" => spec
                .body(body.clone())
                .resp("200", read.clone())
                .resp(
                    "201",
                    none("Created; the rows with Prefer: return=representation"),
                )
                .resp("204", none("Done (return=minimal, or a void function)")),
            "PUT" => spec
                .body(body.clone())
                .resp("200", read.clone())
                .resp(
                    "201",
                    none("Created; the row with Prefer: return=representation"),
                )
                .resp("204", none("Done")),
            _ => {
                let s = if m == "PATCH" {
                    spec.body(body.clone())
                } else {
                    spec
                };
                s.resp("200", read.clone()).resp("204", none("Done"))
            }
        };
        out.push(e(m, path, spec));
    }
}

/// Every described operation.
pub fn entries() -> Vec<Entry> {
    let mut v = Vec::new();
    let json_in = |name: &str| json_body(r(name));
    let download = || {
        Spec::new()
            .param(query(
                "download",
                s(),
                "Send Content-Disposition: attachment (with this file name, or the object's)",
            ))
            .param(header("range", s(), "bytes=start-end"))
            .param(header("if-none-match", s(), "An ETag"))
            .resp("200", binary("The object's bytes, in its content type"))
            .resp("206", binary("The requested range"))
            .resp("304", none("Not modified (If-None-Match)"))
            .resp("416", json_resp("Range not satisfiable", r("StorageError")))
    };
    let head = || {
        Spec::new()
            .param(header("range", s(), "bytes=start-end"))
            .param(header("if-none-match", s(), "An ETag"))
            .resp("200", none("Headers of the object"))
            .resp("206", none("Headers of the range"))
            .resp("304", none("Not modified"))
            .resp("416", none("Range not satisfiable"))
    };
    let upload_body = || {
        json!({"required": true, "content": {
            "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream",
                "description": "The bytes; any Content-Type is taken as the object's type"}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "cacheControl": {"type": "string", "description": "Seconds, or a Cache-Control value"},
                "metadata": {"type": "string", "contentMediaType": "application/json", "description": "User metadata (a JSON object)"},
                "file": {"type": "string", "contentMediaType": "application/octet-stream", "description": "The bytes (the first part not named cacheControl or metadata)"}
            }, "required": ["file"]}}
        }})
    };
    let upload_headers = |s: Spec| {
        s.param(header("cache-control", self::s(), "Stored Cache-Control"))
            .param(header(
                "x-metadata",
                self::s(),
                "Base64 of a JSON object: user metadata",
            ))
    };
    let token = || query_required("token", s(), "The signed URL's token");

    // ------------------------------------------------------------------ ops
    v.push(e(
        "GET",
        "/health",
        Spec::new().ok("Alive", record(&[("status", json!({"const": "ok"}))])),
    ));
    v.push(e(
        "GET",
        "/ready",
        Spec::new().ok(
            "Database reachable and migrated",
            record(&[("status", json!({"const": "ready"}))]),
        ),
    ));
    v.push(e(
        "GET",
        "/metrics",
        Spec::new().resp(
            "200",
            json!({"description": "Prometheus text exposition format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        ),
    ));
    v.push(e(
        "GET",
        "/openapi.json",
        Spec::new().ok(
            "This document (OpenAPI 3.1)",
            object(
                &[("openapi", s()), ("info", obj()), ("paths", obj())],
                &["openapi", "info", "paths"],
            ),
        ),
    ));
    v.push(e(
        "GET",
        "/api/v1/admin/info",
        Spec::new().ok("Server and database facts", r("AdminInfo")),
    ));

    // ------------------------------------------------------------------ REST
    let all = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"];
    rest_entries(&mut v, "/rest/v1/{tail}", &all);
    rest_entries(&mut v, "/api/v1/tables/{schema}/{table}", &all);
    rest_entries(&mut v, "/api/v1/rpc/{function}", &["GET", "HEAD", "POST"]);

    // ------------------------------------------------------------------ auth
    let redirect_to = || {
        query(
            "redirect_to",
            s(),
            "Where the mailed link leads (under the site URL)",
        )
    };
    v.push(e(
        "GET",
        "/auth/v1/settings",
        Spec::new().ok("Public auth settings", r("AuthSettings")),
    ));
    v.push(e(
        "GET",
        "/auth/v1/.well-known/jwks.json",
        Spec::new().ok("The public signing keys", r("Jwks")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/signup",
        Spec::new()
            .param(redirect_to())
            .body(json_in("SignupInput"))
            .ok(
                "A session, or the user when a confirmation mail was sent",
                r("SessionOrUser"),
            ),
    ));
    v.push(e(
        "POST",
        "/auth/v1/token",
        Spec::new()
            .param(query_required(
                "grant_type",
                json!({"type": "string", "enum": ["password", "refresh_token", "pkce", "id_token"]}),
                "How to sign in",
            ))
            .body(json_in("TokenInput"))
            .ok("A new session", r("Session")),
    ));
    v.push(e(
        "GET",
        "/auth/v1/user",
        Spec::new().ok("The signed-in user", r("User")),
    ));
    v.push(e(
        "PUT",
        "/auth/v1/user",
        Spec::new()
            .body(json_in("UserUpdateInput"))
            .ok("The updated user", r("User")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/factors",
        Spec::new()
            .body(json_in("FactorInput"))
            .ok("A new unverified TOTP factor", r("TotpEnrollment")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/factors/{id}/challenge",
        Spec::new().ok(
            "A challenge to verify within its lifetime",
            r("MfaChallenge"),
        ),
    ));
    v.push(e(
        "POST",
        "/auth/v1/factors/{id}/verify",
        Spec::new()
            .body(json_in("FactorVerifyInput"))
            .ok("The session, now aal2, with new tokens", r("Session")),
    ));
    v.push(e(
        "DELETE",
        "/auth/v1/factors/{id}",
        Spec::new().ok("The removed factor's id", r("FactorId")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/logout",
        Spec::new()
            .param(query(
                "scope",
                json!({"type": "string", "enum": ["global", "local", "others"], "default": "global"}),
                "Which sessions end",
            ))
            .resp("204", none("Signed out")),
    ));
    for p in [
        "/auth/v1/otp",
        "/auth/v1/magiclink",
        "/auth/v1/recover",
        "/auth/v1/resend",
    ] {
        v.push(e(
            "POST",
            p,
            Spec::new()
                .param(redirect_to())
                .body(json_in("EmailInput"))
                .ok(
                    "Sent (the same answer whether or not the address exists)",
                    r("EmptyObject"),
                ),
        ));
    }
    v.push(e(
        "POST",
        "/auth/v1/verify",
        Spec::new().body(json_in("VerifyInput")).ok(
            "A session (or, for the first half of a secure email change, its acceptance)",
            json!({"anyOf": [r("Session"), r("EmailChangeAccepted")]}),
        ),
    ));
    v.push(e(
        "GET",
        "/auth/v1/verify",
        Spec::new()
            .param(query_required("token", s(), "The mailed token hash"))
            .param(query_required(
                "type",
                json!({"type": "string", "enum": ["signup", "invite", "magiclink", "email", "recovery", "email_change"]}),
                "What the token is for",
            ))
            .param(redirect_to())
            .resp(
                "303",
                redirect("To redirect_to (or the site URL): `#access_token=…` (implicit), `?code=…` (PKCE), `#message=…` (first half of a secure email change), or `#error=…&error_code=…&error_description=…`"),
            ),
    ));
    v.push(e(
        "GET",
        "/auth/v1/reauthenticate",
        Spec::new().ok("The nonce was mailed", r("EmptyObject")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/invite",
        Spec::new()
            .param(redirect_to())
            .body(json_in("InviteInput"))
            .ok("The invited user", r("User")),
    ));
    v.push(e(
        "POST",
        "/auth/v1/admin/generate_link",
        Spec::new()
            .param(redirect_to())
            .body(json_in("GenerateLinkInput"))
            .ok(
                "The user and the link (no mail is sent)",
                r("GenerateLinkResponse"),
            ),
    ));
    // `/authorize` and its manual-linking twin read the same query.
    let oauth_start = |spec: Spec| {
        spec.param(query_required(
            "provider",
            json!({"type": "string", "enum": crate::auth::oauth::provider::NAMES}),
            "The OAuth provider (an enabled `auth.external` preset)",
        ))
        .param(query(
            "redirect_to",
            s(),
            "Where the callback sends the browser (the site URL, under it, or on `auth.redirect_allow_list`; otherwise the site URL)",
        ))
        .param(query("scopes", s(), "Scopes besides the preset's, space-separated"))
        .param(query("code_challenge", s(), "PKCE challenge (43-128 characters): the callback then ends in `?code=`"))
        .param(query(
            "code_challenge_method",
            json!({"type": "string", "enum": ["s256", "plain"]}),
            "PKCE method",
        ))
        .param(query("skip_http_redirect", boolean(), "Answer `{url}` instead of redirecting"))
        .resp("302", redirect("To the provider's authorization endpoint"))
        .ok(
            "With skip_http_redirect=true: the provider URL",
            record(&[("url", s())]),
        )
    };
    v.push(e("GET", "/auth/v1/authorize", oauth_start(Spec::new())));
    v.push(e(
        "GET",
        "/auth/v1/user/identities/authorize",
        oauth_start(Spec::new()),
    ));
    v.push(e(
        "DELETE",
        "/auth/v1/user/identities/{id}",
        Spec::new().ok(
            "The identity (`identity_id` in the User's `identities`) is unlinked",
            r("EmptyObject"),
        ),
    ));
    for method in ["GET", "POST"] {
        v.push(e(
            method,
            "/auth/v1/callback",
            Spec::new()
                .param(query("state", s(), "The state /authorize sent to the provider"))
                .param(query("code", s(), "The provider's authorization code"))
                .param(query("error", s(), "The provider's error (consent denied …)"))
                .param(query("error_description", s(), "The provider's error text"))
                .resp(
                    "302",
                    redirect("To redirect_to (or the site URL): `#access_token=…&provider_token=…` (implicit), `?code=…` (PKCE), or `?error=…&error_code=…&error_description=…` (also in the fragment)"),
                ),
        ));
    }
    v.push(e(
        "GET",
        "/auth/v1/admin/users",
        Spec::new()
            .param(query("page", json!({"type": "integer", "minimum": 1, "default": 1}), "Page (from 1)"))
            .param(query("per_page", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}), "Users per page"))
            .resp(
                "200",
                json!({
                    "description": "A page of users",
                    "headers": {
                        "X-Total-Count": {"schema": {"type": "integer"}, "description": "All users"},
                        "Link": {"schema": {"type": "string"}, "description": "`rel=\"next\"` and `rel=\"last\"` pages"}
                    },
                    "content": {"application/json": {"schema": r("UserList")}}
                }),
            ),
    ));
    v.push(e(
        "POST",
        "/auth/v1/admin/users",
        Spec::new()
            .body(json_in("AdminUserInput"))
            .ok("The new user", r("User")),
    ));
    v.push(e(
        "GET",
        "/auth/v1/admin/users/{id}",
        Spec::new().ok("The user", r("User")),
    ));
    v.push(e(
        "PUT",
        "/auth/v1/admin/users/{id}",
        Spec::new()
            .body(json_in("AdminUserInput"))
            .ok("The updated user", r("User")),
    ));
    v.push(e(
        "DELETE",
        "/auth/v1/admin/users/{id}",
        Spec::new().ok("Deleted", r("EmptyObject")),
    ));
    v.push(e(
        "POST",
        "/api/v1/admin/users/{id}/impersonate",
        Spec::new().ok(
            "A session of that user (claims say `impersonated`)",
            r("Session"),
        ),
    ));

    // ------------------------------------------------------------------ realtime
    v.push(e(
        "GET",
        "/realtime/v1/websocket",
        Spec::new()
            .param(query("apikey", s(), "The key (a JWT or an fbk_ key)"))
            .param(query(
                "vsn",
                json!({"type": "string", "enum": ["1.0.0", "2.0.0"]}),
                "Serializer version",
            ))
            .resp(
                "101",
                none("Switching to the WebSocket protocol (Phoenix channels)"),
            ),
    ));
    v.push(e(
        "POST",
        "/realtime/v1/api/broadcast",
        Spec::new()
            .body(json_in("BroadcastInput"))
            .resp("202", none("Published")),
    ));
    v.push(e(
        "POST",
        "/realtime/v1/api/broadcast/{topic}/events/{event}",
        Spec::new()
            .param(query("private", boolean(), "A private channel (RLS on realtime.messages decides)"))
            .body(json!({"required": true, "content": {
                "application/json": {"schema": {"description": "The payload (any JSON)"}},
                "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
            }}))
            .resp("202", none("Published")),
    ));
    v.push(e(
        "GET",
        "/api/v1/realtime/stats",
        Spec::new().ok("This instance's figures", r("RealtimeStats")),
    ));
    v.push(e(
        "GET",
        "/api/v1/realtime/tables",
        Spec::new().ok("Tables in supabase_realtime", arr(r("RealtimeTable"))),
    ));
    for m in ["POST", "DELETE"] {
        v.push(e(
            m,
            "/api/v1/realtime/tables/{schema}/{table}",
            Spec::new().ok("The table's state", r("RealtimeTableState")),
        ));
    }

    // ------------------------------------------------------------------ jobs
    let job_id = "Job";
    v.push(e(
        "GET",
        "/api/v1/jobs",
        Spec::new()
            .param(query("queue", s(), "Only this queue"))
            .param(query(
                "status",
                json!({"type": "string", "enum": ["pending", "running", "succeeded", "dead", "cancelled"]}),
                "Only this status",
            ))
            .param(query("limit", json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}), "At most"))
            .param(query("offset", json!({"type": "integer", "minimum": 0, "default": 0}), "Skip"))
            .ok("Jobs, newest first", arr(r(job_id))),
    ));
    v.push(e(
        "POST",
        "/api/v1/jobs",
        Spec::new()
            .body(json_in("JobInput"))
            .resp("201", json_resp("Enqueued", r("Enqueued")))
            .ok(
                "An existing job with the same idempotency key",
                r("Enqueued"),
            ),
    ));
    v.push(e(
        "GET",
        "/api/v1/jobs/stats",
        Spec::new().ok("Per-queue counts", arr(r("QueueStats"))),
    ));
    v.push(e(
        "GET",
        "/api/v1/jobs/schedules",
        Spec::new().ok("Schedules by name", arr(r("Schedule"))),
    ));
    v.push(e(
        "POST",
        "/api/v1/jobs/schedules",
        Spec::new()
            .body(json_in("ScheduleInput"))
            .ok("The schedule as stored", r("Schedule")),
    ));
    v.push(e(
        "DELETE",
        "/api/v1/jobs/schedules/{name}",
        Spec::new().resp("204", none("Deleted")),
    ));
    v.push(e(
        "GET",
        "/api/v1/jobs/{id}",
        Spec::new().ok("The job", r(job_id)),
    ));
    v.push(e(
        "POST",
        "/api/v1/jobs/{id}/retry",
        Spec::new().ok("The job, pending again", r(job_id)),
    ));
    v.push(e(
        "POST",
        "/api/v1/jobs/{id}/cancel",
        Spec::new().ok("The job, cancelled", r(job_id)),
    ));

    // ------------------------------------------------------------------ audit
    v.push(e(
        "GET",
        "/api/v1/audit",
        Spec::new()
            .param(query(
                "action",
                s(),
                "An action, or a prefix ending in `*` (`jobs.*`)",
            ))
            .param(query("actor", s(), "Only this actor"))
            .param(query("target", s(), "Only this target"))
            .param(query("since", ts(), "From (inclusive)"))
            .param(query("until", ts(), "To (exclusive)"))
            .param(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                "At most",
            ))
            .param(query(
                "offset",
                json!({"type": "integer", "minimum": 0, "default": 0}),
                "Skip",
            ))
            .ok("Entries, newest first", arr(r("AuditEntry"))),
    ));

    // ------------------------------------------------------------------ api keys
    v.push(e(
        "GET",
        "/api/v1/api-keys",
        Spec::new().ok("Keys (never the secrets)", arr(r("ApiKey"))),
    ));
    v.push(e(
        "POST",
        "/api/v1/api-keys",
        Spec::new().body(json_in("ApiKeyInput")).resp(
            "201",
            json_resp("Created; `key` is shown once", r("ApiKeyCreated")),
        ),
    ));
    v.push(e(
        "GET",
        "/api/v1/api-keys/{id}",
        Spec::new().ok("The key", r("ApiKey")),
    ));
    v.push(e(
        "PATCH",
        "/api/v1/api-keys/{id}",
        Spec::new()
            .body(json_in("ApiKeyInput"))
            .ok("The updated key", r("ApiKey")),
    ));
    v.push(e(
        "DELETE",
        "/api/v1/api-keys/{id}",
        Spec::new().resp("204", none("Deleted")),
    ));
    v.push(e(
        "POST",
        "/api/v1/api-keys/{id}/revoke",
        Spec::new().resp("204", none("Revoked")),
    ));

    // ------------------------------------------------------------------ webhooks
    v.push(e(
        "GET",
        "/api/v1/webhooks",
        Spec::new().ok("Webhooks (never their secrets)", arr(r("Webhook"))),
    ));
    v.push(e(
        "POST",
        "/api/v1/webhooks",
        Spec::new().body(json_in("WebhookInput")).resp(
            "201",
            json_resp("Created; `secret` is shown once", r("WebhookCreated")),
        ),
    ));
    v.push(e(
        "GET",
        "/api/v1/webhooks/{id}",
        Spec::new().ok("The webhook", r("Webhook")),
    ));
    v.push(e(
        "PATCH",
        "/api/v1/webhooks/{id}",
        Spec::new()
            .body(json_in("WebhookInput"))
            .ok("The updated webhook", r("Webhook")),
    ));
    v.push(e(
        "DELETE",
        "/api/v1/webhooks/{id}",
        Spec::new().resp("204", none("Deleted; pending deliveries cancelled")),
    ));
    v.push(e(
        "POST",
        "/api/v1/webhooks/{id}/test",
        Spec::new().ok("The test delivery, attempted once", r("Delivery")),
    ));
    v.push(e(
        "GET",
        "/api/v1/webhooks/{id}/deliveries",
        Spec::new()
            .param(query(
                "status",
                json!({"type": "string", "enum": ["pending", "succeeded", "failed", "cancelled"]}),
                "Only this status",
            ))
            .param(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                "At most",
            ))
            .ok("Deliveries, newest first", arr(r("Delivery"))),
    ));
    v.push(e(
        "POST",
        "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
        Spec::new().resp("202", json_resp("Queued again", r("Delivery"))),
    ));

    // ------------------------------------------------------------------ monitoring
    v.push(e(
        "GET",
        "/api/v1/monitoring/health",
        Spec::new()
            .ok("Every dependency is ok", r("Health"))
            .resp("503", json_resp("Degraded: some check failed", r("Health"))),
    ));
    v.push(e(
        "GET",
        "/api/v1/monitoring/metrics",
        Spec::new().ok(
            "The Prometheus figures as JSON",
            record(&[("metrics", arr(r("MetricFamily")))]),
        ),
    ));
    v.push(e(
        "GET",
        "/api/v1/monitoring/logs",
        Spec::new()
            .param(query(
                "level",
                json!({"type": "string", "enum": ["error", "warn", "info", "debug", "trace"]}),
                "This level and more severe",
            ))
            .param(query("module", s(), "Module prefix (`fluxbase::realtime`)"))
            .param(query("request_id", s(), "One request's lines"))
            .param(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "default": 200}),
                "At most (capped at the ring size)",
            ))
            .ok(
                "Recent log lines, oldest first",
                record(&[("lines", arr(r("LogLine")))]),
            ),
    ));

    // ------------------------------------------------------------------ storage
    v.push(e(
        "GET",
        "/storage/v1/bucket",
        Spec::new()
            .param(query(
                "limit",
                json!({"type": "integer", "minimum": 0}),
                "At most",
            ))
            .param(query(
                "offset",
                json!({"type": "integer", "minimum": 0}),
                "Skip",
            ))
            .param(query("search", s(), "Name contains"))
            .ok("Buckets by name", arr(r("Bucket"))),
    ));
    v.push(e(
        "POST",
        "/storage/v1/bucket",
        Spec::new()
            .body(json_in("BucketInput"))
            .ok("Created", r("BucketName")),
    ));
    v.push(e(
        "POST",
        "/storage/v1/bucket/{id}/empty",
        Spec::new().ok("Emptied", message()),
    ));
    v.push(e(
        "GET",
        "/storage/v1/bucket/{id}",
        Spec::new().ok("The bucket", r("Bucket")),
    ));
    v.push(e(
        "PUT",
        "/storage/v1/bucket/{id}",
        Spec::new()
            .body(json_in("BucketInput"))
            .ok("Updated", message()),
    ));
    v.push(e(
        "DELETE",
        "/storage/v1/bucket/{id}",
        Spec::new().ok("Deleted", message()),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/list/{bucket}",
        Spec::new().body(json_in("ListInput")).ok(
            "Objects and folders directly under the prefix",
            arr(r("FileObject")),
        ),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/list-v2/{bucket}",
        Spec::new().body(json_in("ListV2Input")).ok(
            "One page of objects and folders, by cursor",
            r("ObjectListV2"),
        ),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/move",
        Spec::new()
            .body(json_in("MoveInput"))
            .ok("Moved", message()),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/copy",
        Spec::new()
            .param(x_upsert())
            .body(json_in("MoveInput"))
            .ok("The copy", r("ObjectKey")),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/sign/{bucket}",
        Spec::new()
            .body(json_in("SignInput"))
            .ok("One entry per path, in order", r("SignedUrls")),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/sign/{bucket}/{name}",
        Spec::new()
            .body(json_in("SignInput"))
            .ok("The signed download URL", r("SignedUrl")),
    ));
    v.push(e(
        "GET",
        "/storage/v1/object/sign/{bucket}/{name}",
        download().param(token()),
    ));
    v.push(e(
        "HEAD",
        "/storage/v1/object/sign/{bucket}/{name}",
        head().param(token()),
    ));
    v.push(e(
        "POST",
        "/storage/v1/object/upload/sign/{bucket}/{name}",
        Spec::new()
            .param(x_upsert())
            .ok("A signed upload URL", r("SignedUpload")),
    ));
    v.push(e(
        "PUT",
        "/storage/v1/object/upload/sign/{bucket}/{name}",
        upload_headers(Spec::new().param(token()))
            .body(upload_body())
            .ok("Stored", r("ObjectKey")),
    ));
    for p in [
        "/storage/v1/object/info/public/{bucket}/{name}",
        "/storage/v1/object/info/authenticated/{bucket}/{name}",
        "/storage/v1/object/info/{bucket}/{name}",
    ] {
        v.push(e(
            "GET",
            p,
            Spec::new().ok("The object's row", r("ObjectInfo")),
        ));
    }
    for p in [
        "/storage/v1/object/public/{bucket}/{name}",
        "/storage/v1/object/authenticated/{bucket}/{name}",
        "/storage/v1/object/{bucket}/{name}",
    ] {
        v.push(e("GET", p, download()));
        v.push(e("HEAD", p, head()));
    }
    v.push(e(
        "POST",
        "/storage/v1/object/{bucket}/{name}",
        upload_headers(Spec::new().param(x_upsert()))
            .body(upload_body())
            .ok("Stored", r("ObjectKey")),
    ));
    v.push(e(
        "PUT",
        "/storage/v1/object/{bucket}/{name}",
        upload_headers(Spec::new())
            .body(upload_body())
            .ok("Stored (replacing any existing object)", r("ObjectKey")),
    ));
    v.push(e(
        "DELETE",
        "/storage/v1/object/{bucket}/{name}",
        Spec::new().ok("Deleted", message()),
    ));
    v.push(e(
        "DELETE",
        "/storage/v1/object/{bucket}",
        Spec::new().body(json_in("RemoveInput")).ok(
            "The deleted objects (names the caller may not delete are left out)",
            arr(r("FileObject")),
        ),
    ));

    // ------------------------------------------------------------------ storage: TUS
    // Every TUS answer carries `Tus-Resumable: 1.0.0`; errors keep their real status (412,
    // 404, 409, 410, 413, 415) with the Storage error body.
    let tus_resumable = || {
        json!({"name": "Tus-Resumable", "in": "header", "required": true,
               "schema": {"type": "string", "enum": ["1.0.0"]}, "description": "The protocol version"})
    };
    let hdr = |d: &str| json!({"schema": {"type": "string"}, "description": d});
    let offset_stream = |required: bool| {
        json!({"required": required, "content": {"application/offset+octet-stream": {"schema": {
            "type": "string", "contentMediaType": "application/octet-stream"}}}})
    };
    for p in [
        "/storage/v1/upload/resumable",
        "/storage/v1/upload/resumable/{id}",
    ] {
        v.push(e(
            "OPTIONS",
            p,
            Spec::new().resp(
                "204",
                json!({"description": "What the server supports", "headers": {
                    "Tus-Version": hdr("1.0.0"),
                    "Tus-Extension": hdr("creation, creation-with-upload, termination, expiration …"),
                    "Tus-Max-Size": hdr("Bytes")
                }}),
            ),
        ));
    }
    v.push(e(
        "POST",
        "/storage/v1/upload/resumable",
        Spec::new()
            .param(tus_resumable())
            .param(json!({"name": "Upload-Length", "in": "header", "required": true,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "Total bytes"}))
            .param(json!({"name": "Upload-Metadata", "in": "header", "required": true,
                "schema": {"type": "string"},
                "description": "Comma-separated `key base64(value)`: bucketName and objectName (required), contentType, cacheControl, metadata"}))
            .param(x_upsert())
            .body(offset_stream(false))
            .resp(
                "201",
                json!({"description": "Created (with its first bytes when the body was application/offset+octet-stream)", "headers": {
                    "Location": {"required": true, "schema": {"type": "string"}, "description": "The upload's URL"},
                    "Upload-Expires": hdr("HTTP date"),
                    "Upload-Offset": hdr("Bytes received (creation-with-upload)")
                }}),
            ),
    ));
    v.push(e(
        "HEAD",
        "/storage/v1/upload/resumable/{id}",
        Spec::new().param(tus_resumable()).resp(
            "200",
            json!({"description": "Where the upload stands", "headers": {
                "Upload-Offset": {"required": true, "schema": {"type": "string"}, "description": "Bytes received"},
                "Upload-Length": hdr("Total bytes"),
                "Upload-Expires": hdr("HTTP date")
            }}),
        ),
    ));
    v.push(e(
        "PATCH",
        "/storage/v1/upload/resumable/{id}",
        Spec::new()
            .param(tus_resumable())
            .param(json!({"name": "Upload-Offset", "in": "header", "required": true,
                "schema": {"type": "string", "pattern": "^[0-9]+$"}, "description": "Where these bytes start"}))
            .body(offset_stream(true))
            .resp(
                "204",
                json!({"description": "Received; the object is stored once the offset reaches the length", "headers": {
                    "Upload-Offset": {"required": true, "schema": {"type": "string"}, "description": "Bytes received"},
                    "Upload-Expires": hdr("HTTP date"),
                    "Tus-Complete": hdr("`1` when the upload is complete")
                }}),
            ),
    ));
    v.push(e(
        "DELETE",
        "/storage/v1/upload/resumable/{id}",
        Spec::new()
            .param(tus_resumable())
            .resp("204", none("Terminated")),
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::openapi_path;

    /// What the next person adding a route must do; printed when a route is undescribed.
    const HOW: &str = "Describe each in src/openapi/platform.rs `entries()`: \
        e(\"METHOD\", \"/canonical/path\", Spec::new()…) with its request body (json_in(\"XInput\") or \
        upload_body()), its query/header parameters, and every success status with what the handler \
        really sends: .ok(desc, schema) / .resp(\"201\", json_resp(desc, r(\"X\"))) for JSON, \
        none(desc) for no content (204, 202, HEAD), binary(desc) for bytes, redirect(desc) for 3xx. \
        Alias mounts (/api/v1/auth, /api/v1/storage) share the canonical entry. Expected soon: the TUS \
        resumable uploads (/storage/v1/upload/resumable…: POST → 201 none + Location/Upload-Offset \
        headers, HEAD → 200 none with Upload-Offset/Upload-Length, PATCH (application/offset+octet-stream) \
        → 204 none with Upload-Offset, DELETE → 204 none, OPTIONS → 204 none) and \
        POST /storage/v1/object/list-v2/{bucket} (its JSON body and listing shape, read from the handler).";

    #[test]
    fn every_route_is_described() {
        let idx = index();
        let missing: Vec<String> = crate::app::registry()
            .routes()
            .iter()
            .filter(|r| {
                let p = canonical(&openapi_path(r.path));
                !idx.keys().any(|(m, q)| *m == r.method.as_str() && *q == p)
            })
            .map(|r| format!("{} {}", r.method, openapi_path(r.path)))
            .collect();
        assert!(
            missing.is_empty(),
            "routes without a request/response description:\n  {}\n{HOW}",
            missing.join("\n  ")
        );
    }

    #[test]
    fn no_entry_is_stale() {
        let routes: Vec<(String, String)> = crate::app::registry()
            .routes()
            .iter()
            .map(|r| (r.method.to_string(), canonical(&openapi_path(r.path))))
            .collect();
        for e in entries() {
            assert!(
                routes.iter().any(|(m, p)| m == e.method && p == e.path),
                "{} {} is described but no such route is registered",
                e.method,
                e.path
            );
        }
        let mut seen = std::collections::HashSet::new();
        for e in entries() {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
        }
    }

    #[test]
    fn every_entry_has_a_status_and_known_refs() {
        let names: Vec<&str> = schemas().iter().map(|(n, _)| *n).collect();
        let mut refs = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.clone());
                    }
                    m.values().for_each(|v| walk(v, out));
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        for e in entries() {
            assert!(!e.spec.responses.is_empty(), "{} {}", e.method, e.path);
            for (code, resp) in &e.spec.responses {
                assert!(code.len() == 3 && code.parse::<u16>().is_ok(), "{code}");
                assert!(
                    resp["description"].is_string(),
                    "{} {} {code}",
                    e.method,
                    e.path
                );
                walk(resp, &mut refs);
            }
            if let Some(b) = &e.spec.request {
                walk(b, &mut refs);
            }
        }
        for (_, s) in schemas() {
            walk(&s, &mut refs);
        }
        for r in refs {
            let n = r.trim_start_matches("#/components/schemas/");
            assert!(
                names.contains(&n)
                    || ["StorageError", "GoTrueError", "PostgrestError"].contains(&n),
                "{r}"
            );
        }
    }

    #[test]
    fn aliases_share_entries() {
        assert_eq!(canonical("/api/v1/auth/token"), "/auth/v1/token");
        assert_eq!(
            canonical("/api/v1/storage/object/{bucket}/{name}"),
            "/storage/v1/object/{bucket}/{name}"
        );
        assert_eq!(canonical("/realtime/websocket"), "/realtime/v1/websocket");
        assert_eq!(canonical("/api/v1/authx"), "/api/v1/authx");
        assert_eq!(
            canonical("/api/v1/admin/users/{id}/impersonate"),
            "/api/v1/admin/users/{id}/impersonate"
        );
    }
}
