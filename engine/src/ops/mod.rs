//! flagd's custom JsonLogic operators: `fractional` (with its hashing) and `sem_ver`.
//! (`starts_with` and `ends_with` are one line each and live with the evaluator.)

pub(crate) mod fractional;
pub(crate) mod hash;
pub(crate) mod semver;
