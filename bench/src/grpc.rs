//! gRPC load: flagd evaluation v2 and v1 clients (tonic, from `vexil-proto`) spread over a few
//! HTTP/2 connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tonic::transport::Channel;
use vexil_proto::flagd::evaluation::{v1, v2};
use vexil_proto::prost_types::Struct;

use crate::load::Call;

/// Which gRPC request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcKind {
    /// `flagd.evaluation.v2.Service/ResolveBoolean`.
    V2Boolean,
    /// `flagd.evaluation.v1.Service/ResolveBoolean`.
    V1Boolean,
    /// `flagd.evaluation.v1.Service/ResolveAll`.
    V1All,
}

/// A gRPC request sent round-robin over `connections` HTTP/2 connections.
#[derive(Clone)]
pub struct GrpcCall {
    kind: GrpcKind,
    channels: Arc<[Channel]>,
    next: Arc<AtomicUsize>,
    flag_key: String,
    context: Struct,
    /// Flags a resolve-all must return.
    expect_flags: usize,
}

impl GrpcCall {
    /// Connects `connections` channels to `addr`.
    pub async fn connect(
        addr: SocketAddr,
        connections: usize,
        kind: GrpcKind,
        flag_key: &str,
        context: &Value,
        expect_flags: usize,
    ) -> anyhow::Result<GrpcCall> {
        Self::connect_via(
            addr,
            None,
            connections,
            kind,
            flag_key,
            context,
            expect_flags,
        )
        .await
    }

    /// [`GrpcCall::connect`] to `addr` with `origin` (`host:port`) as every request's
    /// `:authority`: through a proxy that routes HTTP/2 with prior knowledge by authority.
    pub async fn connect_via(
        addr: SocketAddr,
        origin: Option<SocketAddr>,
        connections: usize,
        kind: GrpcKind,
        flag_key: &str,
        context: &Value,
        expect_flags: usize,
    ) -> anyhow::Result<GrpcCall> {
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let mut endpoint = Channel::from_shared(format!("http://{addr}"))?;
            if let Some(origin) = origin {
                endpoint = endpoint.origin(format!("http://{origin}").parse()?);
            }
            channels.push(endpoint.connect().await?);
        }
        let context = match context {
            Value::Object(map) => vexil_proto::convert::json_to_struct(map),
            _ => Struct::default(),
        };
        Ok(GrpcCall {
            kind,
            channels: channels.into(),
            next: Arc::new(AtomicUsize::new(0)),
            flag_key: flag_key.into(),
            context,
            expect_flags,
        })
    }

    fn channel(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[i].clone()
    }
}

impl Call for GrpcCall {
    async fn call(&self) -> anyhow::Result<()> {
        let channel = self.channel();
        let context = Some(self.context.clone());
        match self.kind {
            GrpcKind::V2Boolean => {
                let r = v2::service_client::ServiceClient::new(channel)
                    .resolve_boolean(v2::ResolveBooleanRequest {
                        flag_key: self.flag_key.clone(),
                        context,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(r.value.is_some(), "no value: {r:?}");
            }
            GrpcKind::V1Boolean => {
                let r = v1::service_client::ServiceClient::new(channel)
                    .resolve_boolean(v1::ResolveBooleanRequest {
                        flag_key: self.flag_key.clone(),
                        context,
                    })
                    .await?
                    .into_inner();
                anyhow::ensure!(!r.reason.is_empty(), "no reason: {r:?}");
            }
            GrpcKind::V1All => {
                let r = v1::service_client::ServiceClient::new(channel)
                    .resolve_all(v1::ResolveAllRequest { context })
                    .await?
                    .into_inner();
                anyhow::ensure!(
                    r.flags.len() == self.expect_flags,
                    "{} flags, expected {}",
                    r.flags.len(),
                    self.expect_flags
                );
            }
        }
        Ok(())
    }
}
