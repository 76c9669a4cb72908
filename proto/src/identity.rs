//! Who a certificate speaks for.
//!
//! The only source of identity in sonde is a certificate's URI SAN of the
//! form `sonde://TENANT/ROLE/NAME`. Payload fields are never trusted for it.
//! This module owns the format: the dev PKI writes it, the collector reads it.

use std::fmt;
use std::str::FromStr;

/// URI scheme prefix of a sonde identity.
pub const SCHEME: &str = "sonde://";

/// Longest tenant or name we accept, in bytes.
pub const MAX_COMPONENT_LEN: usize = 64;

/// What a certificate holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A monitored host: may open `AgentService/Session`, nothing else.
    Agent,
    /// A person or script reading its tenant's data.
    Viewer,
    /// A viewer who may also change its tenant's settings.
    Admin,
}

impl Role {
    /// The role as written in the URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may read tenant data through the query APIs.
    pub fn can_view(self) -> bool {
        matches!(self, Role::Viewer | Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Role::Agent),
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(IdentityError::BadRole(other.to_owned())),
        }
    }
}

/// A verified caller: tenant, role and name from the certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub tenant: String,
    pub role: Role,
    pub name: String,
}

/// Why a string is not a sonde identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("URI {0:?} does not start with {SCHEME}")]
    NotSonde(String),
    #[error("URI {0:?} is not of the form sonde://TENANT/ROLE/NAME")]
    Shape(String),
    #[error("role {0:?} is not one of agent, viewer, admin")]
    BadRole(String),
    #[error(
        "{what} {value:?} must be 1-{MAX_COMPONENT_LEN} characters of a-z, A-Z, 0-9, '-', '_', '.' and not start with '.' or '-'"
    )]
    BadComponent { what: &'static str, value: String },
    #[error("certificate has no sonde:// URI SAN")]
    Missing,
    #[error("certificate has {0} sonde:// URI SANs; exactly one is allowed")]
    Ambiguous(usize),
}

/// Checks a tenant or agent name against the allowed alphabet.
pub fn validate_component(what: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_COMPONENT_LEN
        && !value.starts_with(['.', '-'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadComponent {
            what,
            value: value.to_owned(),
        })
    }
}

impl Identity {
    /// Builds an identity after validating its parts.
    pub fn new(
        tenant: impl Into<String>,
        role: Role,
        name: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let (tenant, name) = (tenant.into(), name.into());
        validate_component("tenant", &tenant)?;
        validate_component("name", &name)?;
        Ok(Self { tenant, role, name })
    }

    /// The URI SAN for this identity.
    pub fn to_uri(&self) -> String {
        format!("{SCHEME}{}/{}/{}", self.tenant, self.role, self.name)
    }

    /// Parses `sonde://TENANT/ROLE/NAME`.
    pub fn parse_uri(uri: &str) -> Result<Self, IdentityError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSonde(uri.to_owned()))?;
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(tenant), Some(role), Some(name), None) => {
                Identity::new(tenant, role.parse()?, name)
            }
            _ => Err(IdentityError::Shape(uri.to_owned())),
        }
    }

    /// Picks the one sonde identity out of a certificate's URI SANs. Other
    /// URI SANs (e.g. SPIFFE IDs) are ignored; zero or several sonde URIs are
    /// an error, as is a malformed one.
    pub fn from_uri_sans<'a>(
        uris: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, IdentityError> {
        let sonde: Vec<&str> = uris.into_iter().filter(|u| u.starts_with(SCHEME)).collect();
        match sonde.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => Identity::parse_uri(one),
            many => Err(IdentityError::Ambiguous(many.len())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = Identity::new("acme", Role::Viewer, "alice").unwrap();
        assert_eq!(id.to_uri(), "sonde://acme/viewer/alice");
        assert_eq!(Identity::parse_uri(&id.to_uri()).unwrap(), id);
    }

    #[test]
    fn rejects_malformed() {
        for (uri, want) in [
            ("https://acme/agent/a", "does not start"),
            ("sonde://acme/agent", "not of the form"),
            ("sonde://acme/agent/a/b", "not of the form"),
            ("sonde://acme/root/a", "role \"root\""),
            ("sonde:///agent/a", "tenant \"\""),
            ("sonde://acme/agent/a b", "name \"a b\""),
            ("sonde://acme/agent/..", "name \"..\""),
        ] {
            let err = Identity::parse_uri(uri).unwrap_err().to_string();
            assert!(err.contains(want), "{uri}: {err}");
        }
    }

    #[test]
    fn picks_the_single_sonde_uri() {
        let id = Identity::from_uri_sans(["spiffe://x/y", "sonde://t/agent/n"]).unwrap();
        assert_eq!(id.name, "n");
        assert_eq!(
            Identity::from_uri_sans(["spiffe://x/y"]),
            Err(IdentityError::Missing)
        );
        assert_eq!(
            Identity::from_uri_sans(["sonde://t/agent/a", "sonde://t/admin/b"]),
            Err(IdentityError::Ambiguous(2))
        );
    }
}
