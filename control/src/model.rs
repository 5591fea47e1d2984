//! The control plane's records, as stored and as the API shows them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Unix time in milliseconds.
pub type Millis = i64;

/// The current time.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// RFC 3339 text of a time, for API responses.
pub fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Whether `key` is a valid environment key: lowercase letters, digits, `-` and `_`, starting with a
/// letter or digit, at most 63 characters (so it also fits a Kubernetes label value).
pub fn is_valid_environment_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && key.as_bytes()[0].is_ascii_alphanumeric()
}

/// An environment (e.g. `production`): its own flags, evaluators and revision counter.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Environment {
    /// Stable identifier, used in URLs.
    pub key: String,
    /// Display name.
    pub name: String,
    /// Revision of the environment's flag set; +1 for every committed change, never a gap.
    pub revision: i64,
    /// This incarnation of the environment: 32 hex digits, new when the environment is created
    /// (again, under the same key) or rotated after a restore. A revision means something only
    /// with it.
    pub incarnation: String,
    /// Flag-set metadata (flagd's top-level `metadata`).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// A stored flag.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FlagRecord {
    /// Flag key.
    pub key: String,
    /// `ENABLED` or `DISABLED`.
    pub state: String,
    /// The flagd definition (`state`, `variants`, `defaultVariant`, `targeting`, `metadata`).
    #[schema(value_type = Object)]
    pub definition: Value,
    /// The JSON Schema every variant must match, when the flag has one (set with
    /// `PUT .../flags/{key}/schema`; kept in control, never sent to sidecars).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Incremented on every write; the `ETag` is derived from it.
    pub version: i64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// A stored shared rule (`$evaluators` entry; a segment).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EvaluatorRecord {
    /// Evaluator name, referenced with `{"$ref": name}`.
    pub key: String,
    /// The JsonLogic rule.
    #[schema(value_type = Object)]
    pub definition: Value,
    /// Incremented on every write; the `ETag` is derived from it.
    pub version: i64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

/// What an API token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Flags, evaluators, evaluation previews, reading the audit log.
    Editor,
    /// Read only.
    Viewer,
    /// Only the sync protocol, only for its environments.
    Sidecar,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::Sidecar => "sidecar",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "editor" => Role::Editor,
            "viewer" => Role::Viewer,
            "sidecar" => Role::Sidecar,
            _ => return None,
        })
    }
}

/// A stored API token (never its secret: only the SHA-256 of it is kept).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TokenRecord {
    /// Token id.
    pub id: i64,
    /// Who or what it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Environments it is limited to; empty means all.
    pub environments: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it was last used (RFC 3339), if ever.
    pub last_used_at: Option<String>,
    /// When it was revoked (RFC 3339), if it was.
    pub revoked_at: Option<String>,
    #[serde(skip)]
    pub(crate) hash: String,
    /// The incarnation of each of `environments` when the token was created: the token applies to
    /// an environment only while it still has that incarnation (not to one created again under the
    /// same key).
    #[serde(skip)]
    pub incarnations: std::collections::BTreeMap<String, String>,
}

impl TokenRecord {
    /// True once revoked.
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// True when the token may act on environment `env`.
    pub fn allows_environment(&self, env: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == env)
    }
}

/// One audited change.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    /// Entry id (increasing).
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: the token name, or `jwt:<subject>`.
    pub actor: String,
    /// What, e.g. `flag.update`, `environment.create`, `token.revoke`.
    pub action: String,
    /// The environment concerned, if any.
    pub environment: Option<String>,
    /// The flag, evaluator or token concerned, if any.
    pub target: Option<String>,
    /// The state before (null on creation).
    #[schema(value_type = Object)]
    pub before: Value,
    /// The state after (null on deletion).
    #[schema(value_type = Object)]
    pub after: Value,
    /// The request that made the change (`x-request-id`).
    pub request_id: Option<String>,
    /// Why, when the change says: a guard's trip holds the figures that tripped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub note: Option<Value>,
}

/// One committed change of an environment, as recorded in the change log.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// The revision this change produced.
    pub revision: i64,
    /// What kind of thing changed.
    pub kind: ChangeKind,
    /// The flag or evaluator key (none for a whole-set change).
    pub key: Option<String>,
    /// The new definition: a flag's or evaluator's, or the whole document for a set change;
    /// `None` for a deletion.
    pub definition: Option<Value>,
}

/// What a change touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// One flag.
    Flag,
    /// One evaluator.
    Evaluator,
    /// The whole flag set (import, promotion, metadata).
    FlagSet,
    /// The environment's signing keys were rotated: sidecars get a `Full` carrying the new keys
    /// (the change-log row holds no secret).
    #[serde(rename = "signing_keys")]
    SigningKeys,
    /// A guard was armed or removed: sidecars get a `Full` carrying the guarded flags.
    #[serde(rename = "guards")]
    Guards,
    /// A flag's proposal was set, dropped or published (shadow evaluation): sidecars get a `Full`
    /// carrying the environment's proposals (the change-log row holds no definition).
    Proposals,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Flag => "flag",
            ChangeKind::Evaluator => "evaluator",
            ChangeKind::FlagSet => "flagset",
            ChangeKind::SigningKeys => "signing_keys",
            ChangeKind::Guards => "guards",
            ChangeKind::Proposals => "proposals",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "flag" => ChangeKind::Flag,
            "evaluator" => ChangeKind::Evaluator,
            "flagset" => ChangeKind::FlagSet,
            "signing_keys" => ChangeKind::SigningKeys,
            "guards" => ChangeKind::Guards,
            "proposals" => ChangeKind::Proposals,
            _ => return None,
        })
    }
}

/// A page of a list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}
