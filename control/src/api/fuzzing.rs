//! The admin API's request-body checks without HTTP, for the fuzz targets of `vexil-fuzz` (and their
//! replay tests). Not a stable API. Each body is decoded and checked exactly as its handler does
//! before it reaches the store (the store's own lookups, such as whether an environment exists,
//! are left out).

use serde_json::{Value, json};
use vexil_engine::{EvaluationContext, FlagSet, Limits};

use super::Problem;
use super::admin::NewToken;
use super::environments::{EnvironmentUpdate, NewEnvironment, Promotion, check_key, check_name};
use super::evaluators::check_evaluator_key;
use super::extract::decode_json;
use super::flags::{EvaluateRequest, StatePatch, check_flag_key};
use crate::store::{check_state, validate_document};

/// Which request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminBody {
    /// `PUT .../flags/{key}`: a flagd flag definition.
    Flag,
    /// `PATCH .../flags/{key}`: the kill switch.
    FlagState,
    /// `PUT .../evaluators/{key}`: a JsonLogic rule.
    Evaluator,
    /// `PUT .../flagset`: a whole flagd document.
    FlagSet,
    /// `POST .../evaluate`: a context and an optional flag.
    Evaluate,
    /// `POST /environments`.
    NewEnvironment,
    /// `PATCH /environments/{env}`.
    EnvironmentUpdate,
    /// `POST /environments/{env}/promote`.
    Promotion,
    /// `POST /tokens`.
    NewToken,
}

impl AdminBody {
    /// Every body.
    pub const ALL: [AdminBody; 9] = [
        AdminBody::Flag,
        AdminBody::FlagState,
        AdminBody::Evaluator,
        AdminBody::FlagSet,
        AdminBody::Evaluate,
        AdminBody::NewEnvironment,
        AdminBody::EnvironmentUpdate,
        AdminBody::Promotion,
        AdminBody::NewToken,
    ];
}

/// Decodes and checks `bytes` as `body` for the item `key` (a flag or evaluator key, from the path)
/// with `limits`; `Evaluate` resolves against `set`. `Ok` when the handler would go on to the
/// store, else the problem it answers with.
pub fn check_body(
    body: AdminBody,
    key: &str,
    bytes: &[u8],
    limits: Limits,
    set: &FlagSet,
) -> Result<(), Problem> {
    match body {
        AdminBody::Flag => {
            check_flag_key(key)?;
            let definition: Value = decode_json(bytes)?;
            validate_document(&json!({"flags": {key: definition}}), limits)?;
        }
        AdminBody::FlagState => {
            let patch: StatePatch = decode_json(bytes)?;
            check_state(&patch.state)?;
        }
        AdminBody::Evaluator => {
            check_evaluator_key(key)?;
            let definition: Value = decode_json(bytes)?;
            validate_document(
                &json!({"flags": {}, "$evaluators": {key: definition}}),
                limits,
            )?;
        }
        AdminBody::FlagSet => {
            let doc: Value = decode_json(bytes)?;
            validate_document(&doc, limits)?;
        }
        AdminBody::Evaluate => {
            let request: EvaluateRequest = decode_json(bytes)?;
            let ctx = EvaluationContext::from_value(request.context)
                .map_err(|_| Problem::bad_request("context: must be a JSON object"))?;
            match &request.flag {
                Some(key) => {
                    let _ = set.resolve(key, &ctx).to_json(key);
                }
                None => set.resolve_all(&ctx).for_each(|(f, r)| {
                    let _ = r.to_json(f.key());
                }),
            }
        }
        AdminBody::NewEnvironment => {
            let env: NewEnvironment = decode_json(bytes)?;
            check_key(&env.key)?;
            check_name(&env.name)?;
        }
        AdminBody::EnvironmentUpdate => {
            let update: EnvironmentUpdate = decode_json(bytes)?;
            check_name(&update.name)?;
        }
        AdminBody::Promotion => {
            let _: Promotion = decode_json(bytes)?;
        }
        AdminBody::NewToken => {
            let token: NewToken = decode_json(bytes)?;
            token.check()?;
        }
    }
    Ok(())
}
