//! Who may see what, derived from the caller's certificate and the
//! collector config. One place for every query (HTTP API and gRPC).
//!
//! - Members (viewer or admin) of an **operator tenant** see everything.
//! - Others see their own tenant's **agents**, and the **targets** (series)
//!   whose address lies in a prefix granted to their tenant by a
//!   `[[tenant]]` entry — whichever agent measures them, since a prefix may
//!   be granted to several tenants. A series without an address (its host
//!   name did not resolve) is visible to its agent's tenant.
//! - A prefix view is allowed when a grant overlaps it; its cells outside
//!   the grants are shown as not monitored. Anything else is 403.
//! - Agents' certificates may not query at all.

use std::net::IpAddr;

use ipnet::IpNet;
use sonde_proto::{Identity, Role};

use crate::analysis::series::Series;
use crate::config::Config;
use crate::store::Scope;

/// A caller's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub tenant: String,
    /// Member of an operator tenant: sees every tenant.
    pub all: bool,
    pub grants: Vec<IpNet>,
}

/// The caller's role may not query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("certificate role {0} may not use the API (viewer or admin required)")]
pub struct RoleRefused(pub Role);

impl Access {
    pub fn of(config: &Config, id: &Identity) -> Result<Self, RoleRefused> {
        if !id.role.can_view() {
            return Err(RoleRefused(id.role));
        }
        Ok(Self {
            tenant: id.tenant.clone(),
            all: config.access.operator_tenants.contains(&id.tenant),
            grants: config.grants(&id.tenant).to_vec(),
        })
    }

    /// The store scope for agent-keyed tables (agents, events).
    pub fn scope(&self) -> Scope {
        if self.all {
            Scope::All
        } else {
            Scope::Tenant(self.tenant.clone())
        }
    }

    pub fn sees_tenant(&self, tenant: &str) -> bool {
        self.all || tenant == self.tenant
    }

    pub fn sees_address(&self, a: IpAddr) -> bool {
        self.all || self.grants.iter().any(|g| g.contains(&a))
    }

    pub fn sees_series(&self, s: &Series) -> bool {
        match s.address {
            Some(a) => self.sees_address(a),
            None => self.sees_tenant(&s.key.tenant),
        }
    }

    /// Whether any part of `p` is granted.
    pub fn sees_prefix(&self, p: &IpNet) -> bool {
        self.all || self.grants.iter().any(|g| g.contains(p) || p.contains(g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_decide_addresses_and_prefixes() {
        let a = Access {
            tenant: "acme".into(),
            all: false,
            grants: vec![
                "10.1.2.0/24".parse().unwrap(),
                "10.9.0.0/16".parse().unwrap(),
            ],
        };
        assert!(a.sees_address("10.1.2.200".parse().unwrap()));
        assert!(!a.sees_address("10.1.3.1".parse().unwrap()));
        assert!(a.sees_prefix(&"10.9.4.0/24".parse().unwrap()));
        assert!(a.sees_prefix(&"10.1.2.0/24".parse().unwrap()));
        assert!(!a.sees_prefix(&"10.1.3.0/24".parse().unwrap()));
        assert!(a.sees_tenant("acme") && !a.sees_tenant("globex"));
        let op = Access { all: true, ..a };
        assert!(op.sees_address("192.0.2.1".parse().unwrap()) && op.sees_tenant("globex"));
    }
}
