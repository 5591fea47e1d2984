//! `AdmissionReview` v1 in and out (only the fields the webhook reads or writes).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InjectConfig;
use super::inject::{self, Skip};

/// The only review version the webhook speaks (the configuration asks for it).
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// An incoming `AdmissionReview`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// `AdmissionReview`.
    pub kind: String,
    /// The request; absent only in a malformed review.
    pub request: Option<AdmissionRequest>,
}

/// The request part of an `AdmissionReview`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The kind of the object (`""/v1/Pod`).
    pub kind: GroupVersionKind,
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    /// The namespace the object is created in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The object (a pod) as submitted.
    #[serde(default)]
    pub object: Option<Value>,
}

/// A Kubernetes group/version/kind.
#[derive(Deserialize, Debug)]
pub struct GroupVersionKind {
    /// API group (`""` for core).
    #[serde(default)]
    pub group: String,
    /// Version (`v1`).
    #[serde(default)]
    pub version: String,
    /// Kind (`Pod`).
    pub kind: String,
}

/// The outgoing `AdmissionReview`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// `AdmissionReview`.
    pub kind: &'static str,
    /// The answer.
    pub response: AdmissionResponse,
}

/// The response part of an `AdmissionReview`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Always true: the webhook never blocks a pod.
    pub allowed: bool,
    /// `JSONPatch` when there is a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSON Patch, base64 (standard, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client (`kubectl`) that created the pod.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What the webhook did with a review (the `outcome` label of its metric).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar was added.
    Injected,
    /// The pod opted out.
    OptedOut,
    /// The pod already had the sidecar.
    AlreadyInjected,
    /// Not a pod creation: nothing to do.
    Ignored,
    /// The pod asked for something the webhook cannot do (warned, not injected).
    Invalid(String),
    /// The review could not be read (warned, allowed without a patch).
    Unparseable(String),
}

impl Outcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::OptedOut => "opted_out",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::Ignored => "ignored",
            Outcome::Invalid(_) => "invalid",
            Outcome::Unparseable(_) => "unparseable",
        }
    }
}

/// A review's answer and what happened.
#[derive(Debug)]
pub struct Reviewed {
    /// The `AdmissionReview` to send back.
    pub review: AdmissionReviewResponse,
    /// What was done.
    pub outcome: Outcome,
}

/// Answers one `AdmissionReview` body. Never fails: whatever cannot be read is allowed as it is.
pub fn review(body: &[u8], config: &InjectConfig) -> Reviewed {
    let request = match parse(body) {
        Ok(request) => request,
        Err(why) => return answer(uid_of(body), None, Outcome::Unparseable(why)),
    };
    let uid = request.uid.clone();
    let is_pod_create = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == "CREATE";
    let pod = match (&request.object, is_pod_create) {
        (_, false) => return answer(uid, None, Outcome::Ignored),
        (Some(pod @ Value::Object(_)), true) => pod,
        (_, true) => {
            let why = "the pod creation carries no pod object".to_string();
            return answer(uid, None, Outcome::Unparseable(why));
        }
    };
    match inject::plan(pod, request.namespace.as_deref(), config) {
        Ok(plan) => {
            let ops = inject::patch(pod, &plan, config);
            answer(uid, Some(ops), Outcome::Injected)
        }
        Err(Skip::OptedOut) => answer(uid, None, Outcome::OptedOut),
        Err(Skip::AlreadyInjected) => answer(uid, None, Outcome::AlreadyInjected),
        Err(Skip::Invalid(why)) => answer(uid, None, Outcome::Invalid(why)),
    }
}

/// Reads the review and its request.
fn parse(body: &[u8]) -> Result<AdmissionRequest, String> {
    let review: AdmissionReview =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(format!(
            "expected {API_VERSION} AdmissionReview, got {} {}",
            review.api_version, review.kind
        ));
    }
    review
        .request
        .ok_or_else(|| "the AdmissionReview has no request".to_string())
}

/// The request uid of a body that is not a valid review, when one can be found at all.
fn uid_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/request/uid")?.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The response: allowed, with the patch when there is one, and a warning for what was refused.
fn answer(uid: String, ops: Option<Vec<Value>>, outcome: Outcome) -> Reviewed {
    let patch = ops.map(|ops| {
        let json = serde_json::to_vec(&ops).expect("a JSON value serializes");
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let warnings = match &outcome {
        Outcome::Invalid(why) => vec![format!("vexil: no sidecar injected: {why}")],
        _ => Vec::new(),
    };
    Reviewed {
        review: AdmissionReviewResponse {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: AdmissionResponse {
                uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings,
            },
        },
        outcome,
    }
}
