//! The one HTTP client every delivery shares: rustls, keep-alive, no redirects, a
//! per-attempt timeout, and a resolver that refuses non-public addresses unless
//! `allow_networks` covers them (so a hostname cannot point hookrelay into the
//! operator's own network).
//!
//! Proxies: the environment's (`HTTP_PROXY`, `ALL_PROXY`, …) are ignored, since
//! through a proxy the resolver above only ever sees the proxy's name, and the target
//! would go unchecked. `dispatch.proxy` sets one explicitly; the proxy is the
//! operator's own and is not checked, but every target is resolved here first and
//! refused unless all its addresses pass the same rule ([`check_target`]). The proxy
//! resolves the name again, so a name that changes its answers between the two
//! lookups (DNS rebinding) can still reach a private address through a proxy that
//! does not guard itself; without a proxy the connection uses the checked addresses.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hookrelay_core::{
    config::{redact_url, DispatchConfig},
    network,
};
use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("building the HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error("config key `dispatch.proxy`: {0}")]
    Proxy(String),
}

pub fn build_client(cfg: &DispatchConfig) -> Result<reqwest::Client, ClientError> {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = if cfg.proxy.is_empty() {
        builder.dns_resolver(Arc::new(GuardedResolver {
            allow: Arc::new(cfg.allow_networks.clone()),
        }))
    } else {
        // The client then resolves only the proxy's own name (the system resolver);
        // targets are checked in `check_target` before each request.
        let proxy = reqwest::Proxy::all(cfg.proxy.as_str())
            .map_err(|e| ClientError::Proxy(format!("{:?}: {e}", redact_url(&cfg.proxy))))?;
        builder.proxy(proxy)
    };
    Ok(builder
        .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(90))
        // Keep-alive per host up to everything that may be in flight to it: several
        // subscriptions often share one host, and a per-subscription cap closed the
        // connections beyond it after each burst only to open them again (bench
        // workload 3, ten subscriptions on one receiver: 5,946 connects for 20,000
        // deliveries). Idle ones still go after 90 s.
        .pool_max_idle_per_host(cfg.workers.max(cfg.per_subscription).max(4))
        .tcp_nodelay(true)
        .build()?)
}

/// Refuses a target the address rule forbids before any byte is sent: an IP literal
/// (which never reaches a resolver) directly, and, through a proxy, a name whose
/// addresses are not all allowed. Without a proxy, names are checked by the client's
/// resolver at connect time.
pub async fn check_target(url: &reqwest::Url, cfg: &DispatchConfig) -> Result<(), String> {
    let refused = |ip: std::net::IpAddr| {
        format!("{ip} is not a public address; add a CIDR to dispatch.allow_networks to permit it")
    };
    let literal = match url.host() {
        None => return Err("endpoint url has no host".into()),
        Some(url::Host::Ipv4(v4)) => std::net::IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => std::net::IpAddr::V6(v6),
        Some(url::Host::Domain(_)) if cfg.proxy.is_empty() => return Ok(()),
        Some(url::Host::Domain(name)) => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| format!("resolving {name}: {e}"))?
                .collect();
            return match addrs
                .iter()
                .find(|a| !network::is_allowed(a.ip(), &cfg.allow_networks))
            {
                Some(bad) => Err(format!("{name} resolves to {}", refused(bad.ip()))),
                None if addrs.is_empty() => Err(format!("{name} resolves to no address")),
                None => Ok(()),
            };
        }
    };
    if network::is_allowed(literal, &cfg.allow_networks) {
        Ok(())
    } else {
        Err(refused(literal))
    }
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
