//! The tenancy policy: who sees, and is paged for, which measurements.
//! One place that the HTTP API, the gRPC query service, live frames and
//! replay, the UI, alert tenant selection and the correlator all ask.
//!
//! A **measurement** is a series: an agent (of its certificate's tenant,
//! the *measurer*) probing a target address. A tenant T sees it, counts
//! it in its correlation, and is paged for it when
//!
//! 1. T is the measurer: a tenant sees everything its own agents measure,
//!    whatever the target; or
//! 2. the address lies in a prefix granted to T (`[[tenant]] prefixes`)
//!    and T **trusts** the measurer: operator tenants
//!    (`access.operator-tenants`) always, and the tenants listed in T's
//!    `trust`.
//!
//! Measurements by any other tenant's agent are invisible to T: absent
//! from its views (a hidden series answers as one that does not exist),
//! its correlation and its alerts. Members (viewers, admins) of an
//! operator tenant see every tenant's data; they are paged for what their
//! routes match. Agents' certificates may not query at all.
//!
//! A prefix view (grid) is allowed when a grant overlaps it or the caller
//! sees a series in it; anything else is 403, decided from the caller's
//! own grants and series only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use sonde_proto::{Identity, Role};

use crate::config::Config;
use crate::consumers::analysis::series::Series;
use crate::store::{EventRow, Scope};

/// The policy of a config: grants, trust and operator tenants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenancy {
    operators: BTreeSet<String>,
    grants: BTreeMap<String, Vec<IpNet>>,
    trust: BTreeMap<String, BTreeSet<String>>,
}

impl Tenancy {
    pub fn of(config: &Config) -> Self {
        Self {
            operators: config.access.operator_tenants.clone(),
            grants: config
                .tenant
                .iter()
                .map(|t| (t.name.clone(), t.prefixes.clone()))
                .collect(),
            trust: config
                .tenant
                .iter()
                .map(|t| (t.name.clone(), t.trust.clone()))
                .collect(),
        }
    }

    pub fn is_operator(&self, tenant: &str) -> bool {
        self.operators.contains(tenant)
    }

    /// The prefixes granted to `tenant`.
    pub fn grants(&self, tenant: &str) -> &[IpNet] {
        self.grants.get(tenant).map_or(&[], Vec::as_slice)
    }

    /// Whether `viewer` trusts what agents of `measurer` measure in its
    /// prefixes.
    pub fn trusts(&self, viewer: &str, measurer: &str) -> bool {
        viewer == measurer
            || self.operators.contains(measurer)
            || self.trust.get(viewer).is_some_and(|t| t.contains(measurer))
    }

    /// Whether tenant `viewer` (as a tenant, not as an operator's member)
    /// sees a measurement by an agent of `measurer` of `address` (`None`:
    /// its host name did not resolve).
    pub fn sees(&self, viewer: &str, measurer: &str, address: Option<IpAddr>) -> bool {
        viewer == measurer
            || address.is_some_and(|a| {
                self.trusts(viewer, measurer) && self.grants(viewer).iter().any(|g| g.contains(&a))
            })
    }

    /// Whether tenant `viewer` sees a measurement by `measurer` about some
    /// address of `prefix` (an event naming only its /24).
    pub fn sees_in_prefix(&self, viewer: &str, measurer: &str, prefix: &IpNet) -> bool {
        viewer == measurer
            || (self.trusts(viewer, measurer)
                && self
                    .grants(viewer)
                    .iter()
                    .any(|g| g.contains(prefix) || prefix.contains(g)))
    }

    /// The tenants that see, count and are paged for a measurement by an
    /// agent of `measurer` of `address`: the measurer and every tenant
    /// granted the address that trusts it. Each has its own correlation
    /// and alerts.
    pub fn audience(&self, measurer: &str, address: Option<IpAddr>) -> BTreeSet<String> {
        let mut out = BTreeSet::from([measurer.to_owned()]);
        if let Some(a) = address {
            out.extend(
                self.grants
                    .iter()
                    .filter(|(t, g)| g.iter().any(|g| g.contains(&a)) && self.trusts(t, measurer))
                    .map(|(t, _)| t.clone()),
            );
        }
        out
    }

    /// The tenants an event concerns: its own tenant (an agent's, or the
    /// tenant whose correlation found an outage) and, for a measurement of
    /// an address (a route change names it, or only its /24), the tenants
    /// that see that measurement.
    pub fn event_audience(&self, ev: &EventRow) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if !ev.tenant.is_empty() {
            out.insert(ev.tenant.clone());
        }
        match measured_at(ev) {
            Some(At::Address(a)) => out.extend(self.audience(&ev.tenant, Some(a))),
            Some(At::Prefix(p)) => out.extend(self.audience_in_prefix(&ev.tenant, &p)),
            None => {}
        }
        out
    }

    /// Grants `prefixes` to `tenant` (building a policy by hand: tests).
    #[must_use]
    pub fn grant(mut self, tenant: &str, prefixes: &[&str]) -> Self {
        self.grants.entry(tenant.to_owned()).or_default().extend(
            prefixes
                .iter()
                .map(|p| p.parse::<IpNet>().expect("a prefix")),
        );
        self
    }

    /// `tenant` trusts `measurers`.
    #[must_use]
    pub fn trust(mut self, tenant: &str, measurers: &[&str]) -> Self {
        self.trust
            .entry(tenant.to_owned())
            .or_default()
            .extend(measurers.iter().map(|m| (*m).to_owned()));
        self
    }

    /// `tenant` is an operator tenant.
    #[must_use]
    pub fn operator(mut self, tenant: &str) -> Self {
        self.operators.insert(tenant.to_owned());
        self
    }

    /// [`Self::audience`] of a measurement known only by its prefix.
    pub fn audience_in_prefix(&self, measurer: &str, prefix: &IpNet) -> BTreeSet<String> {
        let mut out = BTreeSet::from([measurer.to_owned()]);
        out.extend(
            self.grants
                .keys()
                .filter(|t| self.sees_in_prefix(t, measurer, prefix))
                .cloned(),
        );
        out
    }
}

/// What an event measured: an address, or only its /24 (/64).
enum At {
    Address(IpAddr),
    Prefix(IpNet),
}

/// Where the measurement behind an event is: events that name a prefix
/// (route changes; outage events of older versions) and, in their
/// detail, the address.
fn measured_at(ev: &EventRow) -> Option<At> {
    let prefix = ev.prefix.as_deref()?.parse::<IpNet>().ok()?;
    Some(
        match ev.detail["address"]
            .as_str()
            .and_then(|a| a.parse::<IpAddr>().ok())
        {
            Some(a) => At::Address(a),
            None => At::Prefix(prefix),
        },
    )
}

/// Where agents of one tenant measure a prefix granted to another that
/// does not trust it: `(measurer, prefix granted, tenant granted)`, each
/// once, for the log at start and reload.
pub fn untrusted_pairs<'a>(
    tenancy: &Tenancy,
    series: impl Iterator<Item = (&'a str, IpAddr)>,
) -> BTreeSet<(String, IpNet, String)> {
    let mut out = BTreeSet::new();
    for (measurer, a) in series {
        for (t, grants) in &tenancy.grants {
            if tenancy.trusts(t, measurer) {
                continue;
            }
            for g in grants.iter().filter(|g| g.contains(&a)) {
                out.insert((measurer.to_owned(), *g, t.clone()));
            }
        }
    }
    out
}

/// Logs each pair of [`untrusted_pairs`] once.
pub fn log_untrusted(pairs: &BTreeSet<(String, IpNet, String)>) {
    for (measurer, prefix, tenant) in pairs {
        tracing::warn!(
            measurer = %measurer,
            prefix = %prefix,
            tenant = %tenant,
            "tenant {measurer}'s agents measure {prefix} granted to {tenant}, which does not trust {measurer}: not shown to {tenant} (add \"{measurer}\" to its trust to share)"
        );
    }
}

/// A caller's view: a member of `tenant` under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub tenant: String,
    /// Member of an operator tenant: sees every tenant.
    pub all: bool,
    tenancy: Arc<Tenancy>,
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
        Ok(Self::of_tenant(config.tenancy(), &id.tenant))
    }

    /// The view of a member of `tenant`.
    pub fn of_tenant(tenancy: Arc<Tenancy>, tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            all: tenancy.is_operator(tenant),
            tenancy,
        }
    }

    /// The prefixes granted to the caller's tenant.
    pub fn grants(&self) -> &[IpNet] {
        self.tenancy.grants(&self.tenant)
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

    /// The tenant a new definition (a target, a check) belongs to: the
    /// caller's, or for an operator the one `requested`; the error names
    /// the `tenant` field.
    pub fn owner(&self, requested: Option<&str>, what: &str) -> Result<String, String> {
        match requested {
            Some(t) if self.all => {
                sonde_proto::identity::validate_component("tenant", t)
                    .map_err(|e| format!("tenant: {e}"))?;
                Ok(t.to_owned())
            }
            Some(t) if t != self.tenant => Err(format!(
                "tenant: you may only manage {what} of your own tenant ({}), not {t:?}",
                self.tenant
            )),
            _ => Ok(self.tenant.clone()),
        }
    }

    /// Whether `a` lies in the caller's grants (what its admins may have
    /// probed; operators: anything).
    pub fn granted(&self, a: IpAddr) -> bool {
        self.all || self.grants().iter().any(|g| g.contains(&a))
    }

    /// Whether any part of `p` is granted.
    pub fn granted_prefix(&self, p: &IpNet) -> bool {
        self.all || self.grants().iter().any(|g| g.contains(p) || p.contains(g))
    }

    /// Whether the caller sees a measurement by an agent of `measurer` of
    /// `address` (see the module docs).
    pub fn sees_measurement(&self, measurer: &str, address: Option<IpAddr>) -> bool {
        self.all || self.tenancy.sees(&self.tenant, measurer, address)
    }

    pub fn sees_series(&self, s: &Series) -> bool {
        self.sees_measurement(&s.key.tenant, s.address)
    }

    /// Whether the caller sees an event (see [`Tenancy::event_audience`]).
    pub fn sees_event(&self, ev: &EventRow) -> bool {
        self.all
            || ev.tenant == self.tenant
            || match measured_at(ev) {
                Some(At::Address(a)) => self.tenancy.sees(&self.tenant, &ev.tenant, Some(a)),
                Some(At::Prefix(p)) => self.tenancy.sees_in_prefix(&self.tenant, &ev.tenant, &p),
                None => false,
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenancy() -> Tenancy {
        Tenancy::default()
            .operator("noc")
            .grant("acme", &["127.0.0.0/24"])
            .grant("globex", &["127.0.1.0/24"])
            .grant("initech", &["127.0.1.0/24"])
            .trust("initech", &["acme"])
    }

    #[allow(clippy::unnecessary_wraps)]
    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn own_agents_are_seen_everywhere_others_only_when_trusted_and_granted() {
        let t = tenancy();
        // Own agent, any target, resolved or not.
        assert!(t.sees("acme", "acme", ip("127.0.1.5")));
        assert!(t.sees("acme", "acme", None));
        // acme's agent in globex's prefix: globex does not trust acme.
        assert!(!t.sees("globex", "acme", ip("127.0.1.5")));
        // initech trusts acme and is granted the prefix.
        assert!(t.sees("initech", "acme", ip("127.0.1.5")));
        // … but not outside its grants.
        assert!(!t.sees("initech", "acme", ip("127.0.0.5")));
        // An operator tenant's agent counts for every tenant granted.
        assert!(t.sees("globex", "noc", ip("127.0.1.5")));
        assert!(t.sees("acme", "noc", ip("127.0.0.9")));
        assert!(!t.sees("acme", "noc", ip("127.0.1.9")));
        assert_eq!(
            t.audience("acme", ip("127.0.1.5")),
            BTreeSet::from(["acme".to_owned(), "initech".to_owned()])
        );
        assert_eq!(
            t.audience("noc", ip("127.0.1.5")),
            BTreeSet::from(["noc".into(), "globex".into(), "initech".into()])
        );
    }

    #[test]
    fn events_follow_the_measurement_behind_them() {
        let t = Arc::new(tenancy());
        let change = |address: Option<&str>| EventRow {
            id: 1,
            at_ms: 0,
            tenant: "acme".into(),
            agent: "a1".into(),
            kind: crate::store::EventKind::RouteChange,
            detail: serde_json::json!({ "address": address }),
            prefix: Some("127.0.1.0/24".into()),
        };
        let by_address = change(Some("127.0.1.5"));
        let by_prefix = change(None);
        for ev in [&by_address, &by_prefix] {
            assert_eq!(
                t.event_audience(ev),
                BTreeSet::from(["acme".to_owned(), "initech".to_owned()])
            );
            assert!(!Access::of_tenant(t.clone(), "globex").sees_event(ev));
            assert!(Access::of_tenant(t.clone(), "initech").sees_event(ev));
            assert!(Access::of_tenant(t.clone(), "acme").sees_event(ev));
        }
        // An outage event (no prefix column): its own tenant's only.
        let outage = EventRow {
            prefix: None,
            tenant: "globex".into(),
            ..by_address
        };
        assert_eq!(
            t.event_audience(&outage),
            BTreeSet::from(["globex".to_owned()])
        );
        assert!(!Access::of_tenant(t.clone(), "initech").sees_event(&outage));
    }

    #[test]
    fn callers_follow_the_policy() {
        let t = Arc::new(tenancy());
        let globex = Access::of_tenant(t.clone(), "globex");
        assert!(!globex.sees_measurement("acme", ip("127.0.1.5")));
        assert!(globex.sees_measurement("globex", ip("10.9.9.9")));
        assert!(globex.sees_measurement("noc", ip("127.0.1.5")));
        assert!(!globex.sees_measurement("noc", ip("127.0.0.5")));
        assert!(globex.granted("127.0.1.200".parse().unwrap()));
        assert!(!globex.granted("127.0.0.1".parse().unwrap()));
        assert!(globex.granted_prefix(&"127.0.1.0/24".parse().unwrap()));
        assert!(!globex.granted_prefix(&"127.0.2.0/24".parse().unwrap()));
        let noc = Access::of_tenant(t.clone(), "noc");
        assert!(noc.all && noc.sees_measurement("acme", None));
        let pairs = untrusted_pairs(
            &t,
            [
                ("acme", "127.0.1.5".parse().unwrap()),
                ("acme", "127.0.1.6".parse().unwrap()),
            ]
            .into_iter(),
        );
        assert_eq!(
            pairs,
            BTreeSet::from([(
                "acme".into(),
                "127.0.1.0/24".parse().unwrap(),
                "globex".into()
            )])
        );
    }
}
