//! The one HTTP client every delivery shares: rustls, keep-alive, no redirects, a
//! per-attempt timeout, and a resolver that refuses non-public addresses unless
//! `allow_networks` covers them (so a hostname cannot point hookrelay into the
//! operator's own network).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hookrelay_core::{config::DispatchConfig, network};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

pub fn build_client(cfg: &DispatchConfig) -> Result<reqwest::Client, ClientError> {
    Ok(reqwest::Client::builder()
        .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(cfg.per_subscription.max(4))
        .tcp_nodelay(true)
        .dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(cfg.allow_networks.clone()),
        }))
        .build()?)
}

/// Resolves with the system resolver and drops addresses hookrelay may not call.
struct GuardedResolver {
    allow: Arc<Vec<IpNet>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| network::is_allowed(a.ip(), &allow))
                .collect();
            if allowed.is_empty() {
                let msg = format!(
                    "{host} resolves only to non-public addresses ({}); add a CIDR to dispatch.allow_networks to permit it",
                    addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                );
                return Err(msg.into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
