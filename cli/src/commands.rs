//! What each command does, in terms of the admin API (docs/api.md).

use std::time::{Duration, Instant};

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Client, Exit, Failure};
use crate::output::{self, pretty};
use crate::{Command, Output};

#[derive(Subcommand)]
pub enum EnvCmd {
    /// The environments the token may see.
    List,
    Get {
        key: String,
    },
    Create {
        key: String,
        /// Display name (default: the key).
        #[arg(long)]
        name: Option<String>,
    },
    /// Delete an environment (`--force`: with its flags).
    Delete {
        key: String,
        #[arg(long)]
        force: bool,
    },
    /// The keys the environment's sidecars sign decisions with (ids and dates, never secrets).
    SigningKeys {
        key: String,
    },
    /// A new signing key: it signs from now on, the previous one is still accepted.
    RotateSigningKey {
        key: String,
    },
}

#[derive(Subcommand)]
pub enum GuardCmd {
    /// Every guard of an environment: flag, state, each arm's requests and failure share.
    List { env: String },
    /// One flag's guard with its latest look and, once tripped, the figures of the trip.
    Show { env: String, flag: String },
    /// Arm a guard on a flag (or replace its guard, counted again from zero).
    Set {
        env: String,
        flag: String,
        /// The variant under rollout.
        #[arg(long)]
        rollout: String,
        /// The variant it is compared with.
        #[arg(long)]
        baseline: String,
        /// `error_rate` (5xx and unanswered share) or `latency`.
        #[arg(long, default_value = "error_rate")]
        signal: String,
        /// error_rate: the share the rollout may fail more (0.02 = 2 points); latency: how many
        /// times the baseline's percentile it may take.
        #[arg(long)]
        threshold: f64,
        /// latency only: the percentile compared (50 to 99.9).
        #[arg(long)]
        percentile: Option<f64>,
        /// Answers each arm needs before the first look.
        #[arg(long, default_value_t = 1000)]
        min_sample: u64,
        /// The chance of a false trip over the whole rollout.
        #[arg(long, default_value_t = 0.01)]
        alpha: f64,
        /// On a trip, serve this variant to everyone ...
        #[arg(long, conflicts_with = "disable", required_unless_present = "disable")]
        safe_variant: Option<String>,
        /// ... or disable the flag.
        #[arg(long)]
        disable: bool,
    },
    /// Arm a tripped guard again, from zero (the flag stays as the trip left it).
    Reset { env: String, flag: String },
    /// Remove a flag's guard.
    Delete { env: String, flag: String },
}

#[derive(Subcommand)]
pub enum UsageCmd {
    /// Per flag, the evaluations of each variant and its share over the last days.
    Show {
        env: String,
        /// The window, in days (1 to 400).
        #[arg(long, default_value_t = 7)]
        days: u32,
    },
    /// Flags to look at for removal: not evaluated in the window (`unused`), or targeted but
    /// serving one variant all along (`constant`).
    Stale {
        env: String,
        /// The window, in days (1 to 400).
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

#[derive(Subcommand)]
pub enum ProposalCmd {
    /// Propose a new targeting rule for a live flag (`--targeting FILE`, a JsonLogic rule) or a
    /// whole definition (`--definition FILE`, the live flag's variants), `-` for standard input.
    /// Replaces the flag's proposal (sending the `ETag` just read, or `--if-match`); its
    /// comparison starts again from zero.
    Set {
        env: String,
        key: String,
        #[arg(
            long,
            conflicts_with = "definition",
            required_unless_present = "definition"
        )]
        targeting: Option<String>,
        #[arg(long)]
        definition: Option<String>,
        /// The share of the flag's decisions the sidecars evaluate it on, in (0, 1].
        #[arg(long, default_value_t = 0.01)]
        sample_ratio: f64,
        /// The `ETag` of an earlier read, instead of reading now.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// The flag's proposal.
    Show { env: String, key: String },
    /// What the proposal would change: over the last minutes, the decisions sampled, the share
    /// it would change, and each (live → proposed) pair.
    Compare {
        env: String,
        key: String,
        /// The window, in minutes (1 to 10080).
        #[arg(long, default_value_t = 60)]
        minutes: u32,
    },
    /// Publish the proposal: the flag takes its definition, in one write. Prints the comparison
    /// of the proposal published; `--if-match` names the proposal reviewed (exit 4 when it was
    /// replaced meanwhile).
    Publish {
        env: String,
        key: String,
        /// The proposal's `ETag` from an earlier read, instead of the one read now.
        #[arg(long)]
        if_match: Option<String>,
    },
    /// Drop the proposal and its counts.
    Drop { env: String, key: String },
}

#[derive(Subcommand)]
pub enum FlagCmd {
    List {
        env: String,
        /// ENABLED or DISABLED.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
    },
    Get {
        env: String,
        key: String,
    },
    /// Create or replace a flag from a file holding its flagd definition (`-`: standard input).
    /// Replacing sends the `ETag` just read (or `--if-match`), so a change made meanwhile is
    /// never overwritten: it fails with exit code 4.
    Set {
        env: String,
        key: String,
        file: String,
        /// The `ETag` of an earlier read, instead of reading now.
        #[arg(long)]
        if_match: Option<String>,
    },
    Enable {
        env: String,
        key: String,
    },
    /// The kill switch: the flag answers its callers' defaults at once.
    #[command(alias = "kill")]
    Disable {
        env: String,
        key: String,
    },
    Delete {
        env: String,
        key: String,
    },
}

#[derive(Subcommand)]
pub enum FlagsetCmd {
    /// Print (or write) the environment's flagd document.
    Export {
        env: String,
        #[arg(long, short = 'f', default_value = "-")]
        file: String,
    },
    /// Replace the environment's flag set with a flagd document, after showing the difference
    /// (`--dry-run`: only show it). Refused (exit 4) when the environment changed since the
    /// difference was computed.
    Apply {
        env: String,
        file: String,
        #[arg(long)]
        dry_run: bool,
        /// The `ETag` of an earlier read (e.g. when the difference was reviewed), instead of the
        /// one read now.
        #[arg(long)]
        if_match: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    List,
    /// Create a token; its secret is printed once.
    Create {
        name: String,
        /// admin, editor, viewer or sidecar.
        #[arg(long)]
        role: String,
        /// Limit it to these environments (repeat the option).
        #[arg(long = "env")]
        envs: Vec<String>,
    },
    /// Revoke a token by id.
    Revoke {
        id: i64,
    },
}

fn items(v: &Value) -> Vec<Value> {
    v.get("items")
        .or(Some(v))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn read_input(file: &str) -> Result<Value, Failure> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Failure::new(Exit::Error, format!("standard input: {e}")))?
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Failure::new(Exit::Error, format!("{file}: {e}")))?
    };
    serde_json::from_str(&text).map_err(|e| Failure::new(Exit::Invalid, format!("{file}: {e}")))
}

fn write_output(file: &str, text: &str) -> Result<(), Failure> {
    if file == "-" {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(file, format!("{text}\n"))
        .map_err(|e| Failure::new(Exit::Error, format!("{file}: {e}")))
}

pub async fn run(c: &Client, command: Command, out: Output) -> Result<(), Failure> {
    match command {
        Command::Env(cmd) => env(c, cmd, out).await,
        Command::Flag(cmd) => flag(c, cmd, out).await,
        Command::Flagset(cmd) => flagset(c, cmd, out).await,
        Command::Promote {
            from,
            to,
            dry_run,
            if_match,
        } => {
            let source = c.get(&format!("/environments/{from}/flagset")).await?.body;
            let target = c.get(&format!("/environments/{to}/flagset")).await?;
            print_diff(&diff(&target.body, &source), out);
            if dry_run {
                return Ok(());
            }
            // If-Match: the target's revision the difference was computed against.
            let a = c
                .call(
                    Method::POST,
                    &format!("/environments/{from}/promote"),
                    Some(&json!({"to": to})),
                    if_match.as_deref().or(target.etag.as_deref()),
                )
                .await
                .map_err(|f| changed_meanwhile(f, &to))?;
            output::done(out, &a.body, &format!("promoted {from} to {to}"));
            Ok(())
        }
        Command::Bootstrap { env, file } => {
            let a = c.get(&format!("/environments/{env}/bootstrap")).await?;
            write_output(&file, a.text.trim_end())
        }
        Command::Token(cmd) => token(c, cmd, out).await,
        Command::Audit {
            env,
            flag,
            actor,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            for (k, v) in [("environment", env), ("flag", flag), ("actor", actor)] {
                if let Some(v) = v {
                    query.push(format!("{k}={v}"));
                }
            }
            let a = c.get(&format!("/audit?{}", query.join("&"))).await?;
            let columns = ["id", "at", "actor", "action", "environment", "target"];
            output::list(out, &a.body, &items(&a.body), &columns);
            Ok(())
        }
        Command::Sidecars { env } => {
            let path = match &env {
                Some(env) => format!("/sidecars?environment={env}"),
                None => "/sidecars".to_string(),
            };
            let a = c.get(&path).await?;
            let list: Vec<Value> = items(&a.body)
                .into_iter()
                .filter(|s| env.as_deref().is_none_or(|e| s["environment"] == e))
                .collect();
            let columns = [
                "id",
                "environment",
                "connected",
                "acked_revision",
                "lag",
                "version",
                "connected_since",
                "disconnected_at",
            ];
            output::list(out, &json!({"items": list}), &list, &columns);
            Ok(())
        }
        Command::Usage(cmd) => usage(c, cmd, out).await,
        Command::Guard(cmd) => guard(c, cmd, out).await,
        Command::Proposal(cmd) => proposal(c, cmd, out).await,
        Command::Wait {
            env,
            revision,
            min_sidecars,
            timeout_secs,
        } => wait(c, &env, revision, min_sidecars, timeout_secs, out).await,
        Command::Completions { .. } => Ok(()), // handled before a client exists
    }
}

async fn guard(c: &Client, cmd: GuardCmd, out: Output) -> Result<(), Failure> {
    let path = |env: &str, flag: &str| format!("/environments/{env}/flags/{flag}/guard");
    match cmd {
        GuardCmd::List { env } => {
            let a = c.get(&format!("/environments/{env}/guards")).await?;
            let rows: Vec<Value> = items(&a.body)
                .iter()
                .map(|g| {
                    let share = |arm: &Value| {
                        format!(
                            "{} ({:.1}%)",
                            arm["requests"],
                            arm["failure_share"].as_f64().unwrap_or(0.0) * 100.0
                        )
                    };
                    json!({"flag": g["flag"], "state": g["state"],
                        "rollout": format!("{} {}", g["guard"]["rollout"].as_str().unwrap_or(""), share(&g["rollout"])),
                        "baseline": format!("{} {}", g["guard"]["baseline"].as_str().unwrap_or(""), share(&g["baseline"])),
                        "looks": g["looks"], "signal": g["guard"]["signal"]})
                })
                .collect();
            let columns = ["flag", "state", "signal", "rollout", "baseline", "looks"];
            output::list(out, &a.body, &rows, &columns);
            Ok(())
        }
        GuardCmd::Show { env, flag } => {
            output::one(out, &c.get(&path(&env, &flag)).await?.body);
            Ok(())
        }
        GuardCmd::Set {
            env,
            flag,
            rollout,
            baseline,
            signal,
            threshold,
            percentile,
            min_sample,
            alpha,
            safe_variant,
            disable,
        } => {
            let mut body = json!({"rollout": rollout, "baseline": baseline, "signal": signal,
                "threshold": threshold, "min_sample": min_sample, "alpha": alpha,
                "action": if disable { "disable" } else { "set_variant" }});
            if let Some(p) = percentile {
                body["percentile"] = json!(p);
            }
            if let Some(v) = safe_variant {
                body["safe_variant"] = json!(v);
            }
            let a = c
                .call(Method::PUT, &path(&env, &flag), Some(&body), None)
                .await?;
            output::done(out, &a.body, &format!("guard of {flag} in {env}: armed"));
            Ok(())
        }
        GuardCmd::Reset { env, flag } => {
            let p = format!("{}/reset", path(&env, &flag));
            let a = c.call(Method::POST, &p, None, None).await?;
            output::done(
                out,
                &a.body,
                &format!("guard of {flag} in {env}: armed again"),
            );
            Ok(())
        }
        GuardCmd::Delete { env, flag } => {
            let a = c
                .call(Method::DELETE, &path(&env, &flag), None, None)
                .await?;
            output::done(out, &a.body, &format!("guard of {flag} in {env}: removed"));
            Ok(())
        }
    }
}

async fn usage(c: &Client, cmd: UsageCmd, out: Output) -> Result<(), Failure> {
    match cmd {
        UsageCmd::Show { env, days } => {
            let a = c
                .get(&format!("/environments/{env}/usage?days={days}"))
                .await?;
            // A row per flag and variant; a flag never evaluated is one row without a variant.
            let mut rows = Vec::new();
            for flag in items(&a.body["flags"]) {
                let variants = items(&flag["variants"]);
                let row = |variant: &Value, evaluations: &Value, share: Option<f64>| {
                    json!({
                        "flag": flag["flag"],
                        "targeted": flag["targeted"],
                        "variant": if variant.is_null() && share.is_some() {
                            json!("(no value)")
                        } else {
                            variant.clone()
                        },
                        "evaluations": evaluations,
                        "share": share.map(|s| format!("{:.1}%", s * 100.0)),
                        "last_evaluated": flag["last_evaluated"],
                    })
                };
                if variants.is_empty() {
                    rows.push(row(&Value::Null, &json!(0), None));
                }
                for v in &variants {
                    rows.push(row(&v["variant"], &v["evaluations"], v["share"].as_f64()));
                }
            }
            let columns = [
                "flag",
                "targeted",
                "variant",
                "evaluations",
                "share",
                "last_evaluated",
            ];
            output::list(out, &a.body, &rows, &columns);
            Ok(())
        }
        UsageCmd::Stale { env, days } => {
            let a = c
                .get(&format!("/environments/{env}/usage/stale?days={days}"))
                .await?;
            let mut rows = Vec::new();
            for f in items(&a.body["unused"]) {
                rows.push(json!({"kind": "unused", "flag": f["flag"],
                    "created_at": f["created_at"], "last_evaluated": f["last_evaluated"]}));
            }
            for f in items(&a.body["constant"]) {
                let variant = if f["variant"].is_null() {
                    json!("(no value)")
                } else {
                    f["variant"].clone()
                };
                rows.push(
                    json!({"kind": "constant", "flag": f["flag"], "variant": variant,
                    "evaluations": f["evaluations"]}),
                );
            }
            let columns = [
                "kind",
                "flag",
                "variant",
                "evaluations",
                "last_evaluated",
                "created_at",
            ];
            output::list(out, &a.body, &rows, &columns);
            Ok(())
        }
    }
}

/// Prints a comparison: its sentence, then a row per (live → proposed) pair.
fn print_comparison(out: Output, comparison: &Value) {
    if out == Output::Table {
        println!("{}", comparison["summary"].as_str().unwrap_or_default());
    }
    let name = |v: &Value| {
        if v.is_null() {
            json!("(no value)")
        } else {
            v.clone()
        }
    };
    let rows: Vec<Value> = items(&comparison["transitions"])
        .iter()
        .map(|t| {
            json!({"from": name(&t["from"]), "to": name(&t["to"]), "changed": t["changed"],
                "evaluations": t["evaluations"],
                "share": t["share"].as_f64().map(|s| format!("{:.1}%", s * 100.0))})
        })
        .collect();
    if out == Output::Json || !rows.is_empty() {
        output::list(
            out,
            comparison,
            &rows,
            &["from", "to", "changed", "evaluations", "share"],
        );
    }
}

async fn proposal(c: &Client, cmd: ProposalCmd, out: Output) -> Result<(), Failure> {
    let path = |env: &str, key: &str| format!("/environments/{env}/flags/{key}/proposal");
    match cmd {
        ProposalCmd::Set {
            env,
            key,
            targeting,
            definition,
            sample_ratio,
            if_match,
        } => {
            let mut body = json!({"sample_ratio": sample_ratio});
            match (targeting, definition) {
                (Some(file), _) => body["targeting"] = read_input(&file)?,
                (None, Some(file)) => body["definition"] = read_input(&file)?,
                (None, None) => unreachable!("clap requires one"),
            }
            let path = path(&env, &key);
            let tag = match if_match {
                Some(tag) => Some(tag),
                None => match c.get(&path).await {
                    Ok(a) => a.etag,
                    Err(f) if f.exit == Exit::NotFound => None,
                    Err(f) => return Err(f),
                },
            };
            let a = c
                .call(Method::PUT, &path, Some(&body), tag.as_deref())
                .await?;
            output::done(
                out,
                &a.body,
                &format!(
                    "proposal {} for flag {key} in {env}: evaluated on {}% of its decisions",
                    a.body["id"].as_str().unwrap_or("?"),
                    sample_ratio * 100.0
                ),
            );
        }
        ProposalCmd::Show { env, key } => output::one(out, &c.get(&path(&env, &key)).await?.body),
        ProposalCmd::Compare { env, key, minutes } => {
            let a = c
                .get(&format!(
                    "{}/comparison?minutes={minutes}",
                    path(&env, &key)
                ))
                .await?;
            print_comparison(out, &a.body);
        }
        ProposalCmd::Publish { env, key, if_match } => {
            let path = path(&env, &key);
            let tag = match if_match {
                Some(tag) => tag,
                None => c.get(&path).await?.etag.unwrap_or_default(),
            };
            let comparison = c.get(&format!("{path}/comparison")).await?;
            if out == Output::Table {
                println!(
                    "{}",
                    comparison.body["summary"].as_str().unwrap_or_default()
                );
            }
            let a = c
                .call(Method::POST, &format!("{path}/publish"), None, Some(&tag))
                .await?;
            output::done(
                out,
                &a.body,
                &format!("published the proposal for flag {key} in {env}"),
            );
        }
        ProposalCmd::Drop { env, key } => {
            let a = c
                .call(Method::DELETE, &path(&env, &key), None, None)
                .await?;
            output::done(
                out,
                &a.body,
                &format!("dropped the proposal for flag {key} in {env}"),
            );
        }
    }
    Ok(())
}

async fn env(c: &Client, cmd: EnvCmd, out: Output) -> Result<(), Failure> {
    match cmd {
        EnvCmd::List => {
            let a = c.get("/environments").await?;
            output::list(
                out,
                &a.body,
                &items(&a.body),
                &["key", "name", "revision", "updated_at"],
            );
        }
        EnvCmd::Get { key } => {
            output::one(out, &c.get(&format!("/environments/{key}")).await?.body)
        }
        EnvCmd::Create { key, name } => {
            let body = json!({"key": key, "name": name.unwrap_or_else(|| key.clone())});
            let a = c
                .call(Method::POST, "/environments", Some(&body), None)
                .await?;
            output::done(out, &a.body, &format!("created environment {key}"));
        }
        EnvCmd::Delete { key, force } => {
            let path = format!(
                "/environments/{key}{}",
                if force { "?force=true" } else { "" }
            );
            let a = c.call(Method::DELETE, &path, None, None).await?;
            output::done(out, &a.body, &format!("deleted environment {key}"));
        }
        EnvCmd::SigningKeys { key } => {
            let a = c.get(&format!("/environments/{key}/signing-keys")).await?;
            output::list(
                out,
                &a.body,
                a.body["keys"].as_array().map_or(&[][..], Vec::as_slice),
                &["id", "created_at", "current"],
            );
        }
        EnvCmd::RotateSigningKey { key } => {
            let path = format!("/environments/{key}/signing-keys/rotate");
            let a = c.call(Method::POST, &path, None, None).await?;
            let id = a.body["keys"][0]["id"].as_str().unwrap_or("?").to_string();
            output::done(
                out,
                &a.body,
                &format!("environment {key} signs with key {id} from now on"),
            );
        }
    }
    Ok(())
}

async fn flag(c: &Client, cmd: FlagCmd, out: Output) -> Result<(), Failure> {
    match cmd {
        FlagCmd::List { env, state, prefix } => {
            let mut query = Vec::new();
            if let Some(s) = state {
                query.push(format!("state={s}"));
            }
            if let Some(p) = prefix {
                query.push(format!("prefix={p}"));
            }
            let mut path = format!("/environments/{env}/flags?{}", query.join("&"));
            let mut all = Vec::new();
            loop {
                let a = c.get(&path).await?;
                all.extend(items(&a.body));
                match a.body["next_cursor"].as_str() {
                    Some(cursor) => {
                        path = format!(
                            "/environments/{env}/flags?{}&cursor={cursor}",
                            query.join("&")
                        )
                    }
                    None => break,
                }
            }
            output::list(
                out,
                &json!({"items": all}),
                &all,
                &["key", "state", "version", "updated_at"],
            );
        }
        FlagCmd::Get { env, key } => output::one(
            out,
            &c.get(&format!("/environments/{env}/flags/{key}"))
                .await?
                .body,
        ),
        FlagCmd::Set {
            env,
            key,
            file,
            if_match,
        } => {
            let definition = read_input(&file)?;
            let path = format!("/environments/{env}/flags/{key}");
            let tag = match if_match {
                Some(tag) => Some(tag),
                None => match c.get(&path).await {
                    Ok(a) => a.etag,
                    Err(f) if f.exit == Exit::NotFound => None,
                    Err(f) => return Err(f),
                },
            };
            let a = c
                .call(Method::PUT, &path, Some(&definition), tag.as_deref())
                .await?;
            let verb = if tag.is_some() { "replaced" } else { "created" };
            output::done(out, &a.body, &format!("{verb} flag {key} in {env}"));
        }
        FlagCmd::Enable { env, key } => state(c, &env, &key, "ENABLED", out).await?,
        FlagCmd::Disable { env, key } => state(c, &env, &key, "DISABLED", out).await?,
        FlagCmd::Delete { env, key } => {
            let path = format!("/environments/{env}/flags/{key}");
            let a = c.call(Method::DELETE, &path, None, None).await?;
            output::done(out, &a.body, &format!("deleted flag {key} in {env}"));
        }
    }
    Ok(())
}

async fn state(c: &Client, env: &str, key: &str, state: &str, out: Output) -> Result<(), Failure> {
    let path = format!("/environments/{env}/flags/{key}");
    let a = c
        .call(Method::PATCH, &path, Some(&json!({"state": state})), None)
        .await?;
    output::done(out, &a.body, &format!("{key} in {env}: {state}"));
    Ok(())
}

async fn flagset(c: &Client, cmd: FlagsetCmd, out: Output) -> Result<(), Failure> {
    match cmd {
        FlagsetCmd::Export { env, file } => {
            let a = c.get(&format!("/environments/{env}/flagset")).await?;
            write_output(&file, &pretty(&a.body))
        }
        FlagsetCmd::Apply {
            env,
            file,
            dry_run,
            if_match,
        } => {
            let wanted = read_input(&file)?;
            let path = format!("/environments/{env}/flagset");
            let current = c.get(&path).await?;
            let changes = diff(&current.body, &wanted);
            print_diff(&changes, out);
            if dry_run || changes.is_empty() {
                return Ok(());
            }
            // If-Match: the revision the difference was computed against, so a change made
            // meanwhile is refused (412, exit 4) by control, inside the write, never overwritten.
            let a = c
                .call(
                    Method::PUT,
                    &path,
                    Some(&wanted),
                    if_match.as_deref().or(current.etag.as_deref()),
                )
                .await
                .map_err(|f| changed_meanwhile(f, &env))?;
            output::done(out, &a.body, &format!("applied {file} to {env}"));
            Ok(())
        }
    }
}

/// A `412` on a whole-set write: the environment changed after the difference was shown.
fn changed_meanwhile(f: Failure, env: &str) -> Failure {
    if f.exit == Exit::Conflict && f.message.contains("412") {
        Failure::new(
            Exit::Conflict,
            format!(
                "{env} changed since the difference was computed; nothing was written, run again\n  ({})",
                f.message
            ),
        )
    } else {
        f
    }
}

async fn token(c: &Client, cmd: TokenCmd, out: Output) -> Result<(), Failure> {
    match cmd {
        TokenCmd::List => {
            let a = c.get("/tokens").await?;
            let columns = [
                "id",
                "name",
                "role",
                "environments",
                "last_used_at",
                "revoked_at",
            ];
            output::list(out, &a.body, &items(&a.body), &columns);
        }
        TokenCmd::Create { name, role, envs } => {
            let body = json!({"name": name, "role": role, "environments": envs});
            let a = c.call(Method::POST, "/tokens", Some(&body), None).await?;
            let secret = a.body["token"].as_str().unwrap_or_default();
            output::done(
                out,
                &a.body,
                &format!("{secret}\n(shown once: store it now)"),
            );
        }
        TokenCmd::Revoke { id } => {
            let a = c
                .call(Method::DELETE, &format!("/tokens/{id}"), None, None)
                .await?;
            output::done(out, &a.body, &format!("revoked token {id}"));
        }
    }
    Ok(())
}

async fn wait(
    c: &Client,
    env: &str,
    revision: Option<i64>,
    min_sidecars: usize,
    timeout_secs: u64,
    out: Output,
) -> Result<(), Failure> {
    let revision = match revision {
        Some(r) => r,
        None => c.get(&format!("/environments/{env}")).await?.body["revision"]
            .as_i64()
            .unwrap_or(0),
    };
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        let a = c.get(&format!("/sidecars?environment={env}")).await?;
        // The fleet lists disconnected sessions too; a control without the field lists only
        // connected ones.
        let sidecars: Vec<Value> = items(&a.body)
            .into_iter()
            .filter(|s| s["environment"] == env && s["connected"] != false)
            .collect();
        let lagging: Vec<&Value> = sidecars
            .iter()
            .filter(|s| s["acked_revision"].as_i64().unwrap_or(-1) < revision)
            .collect();
        if sidecars.len() >= min_sidecars && lagging.is_empty() {
            let summary =
                json!({"environment": env, "revision": revision, "sidecars": sidecars.len()});
            output::done(
                out,
                &summary,
                &format!(
                    "{} sidecar(s) of {env} hold revision {revision}",
                    sidecars.len()
                ),
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = lagging
                .iter()
                .map(|s| {
                    format!(
                        "{} (at {})",
                        s["id"].as_str().unwrap_or("?"),
                        s["acked_revision"]
                    )
                })
                .collect();
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "after {timeout_secs} s: {} sidecar(s) of {env} connected (at least {min_sidecars} wanted), \
                     not at revision {revision}: {}",
                    sidecars.len(),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What applying `to` over `from` (two flagd documents) changes: `+ flag a`, `- flag b`,
/// `~ flag c`, the same for evaluators, and `~ metadata`.
pub fn diff(from: &Value, to: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (section, label) in [("flags", "flag"), ("$evaluators", "evaluator")] {
        let empty = serde_json::Map::new();
        let a = from[section].as_object().unwrap_or(&empty);
        let b = to[section].as_object().unwrap_or(&empty);
        for (k, v) in b {
            match a.get(k) {
                None => out.push(format!("+ {label} {k}")),
                Some(old) if old != v => out.push(format!("~ {label} {k}")),
                Some(_) => {}
            }
        }
        for k in a.keys().filter(|k| !b.contains_key(*k)) {
            out.push(format!("- {label} {k}"));
        }
    }
    let meta = |d: &Value| d.get("metadata").cloned().unwrap_or(json!({}));
    if meta(from) != meta(to) {
        out.push("~ metadata".into());
    }
    out
}

fn print_diff(changes: &[String], out: Output) {
    match out {
        Output::Json => println!("{}", pretty(&json!({"changes": changes}))),
        Output::Table if changes.is_empty() => println!("no changes"),
        Output::Table => changes.iter().for_each(|c| println!("{c}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_added_removed_and_changed_flags_and_evaluators() {
        let from = json!({"flags": {"a": {"state": "ENABLED"}, "b": {}, "c": {}},
                          "$evaluators": {"x": {}}, "metadata": {"v": 1}});
        let to = json!({"flags": {"a": {"state": "DISABLED"}, "c": {}, "d": {}},
                        "$evaluators": {"x": {}, "y": {}}, "metadata": {"v": 2}});
        assert_eq!(
            diff(&from, &to),
            [
                "~ flag a",
                "+ flag d",
                "- flag b",
                "+ evaluator y",
                "~ metadata"
            ]
        );
        assert!(diff(&from, &from).is_empty());
    }
}
