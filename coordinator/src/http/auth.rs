//! Who may do what on the HTTP surface.
//!
//! Three roles, each including the one before it, in the words Prometheus users know:
//! - `metrics`: scrape `/metrics`;
//! - `read`: the JSON API and the status pages as well;
//! - `operate`: start `ProbeNow` rounds as well.
//!
//! `/live` and `/ready` are open to anyone who reaches the port. Every other route names the
//! role it needs ([`require`]); the [`authenticate`] middleware decides, once per request, what
//! the client is ([`Access`]) from its address, its TLS client certificate and its
//! `Authorization` header, and the route's layer answers 401 (no credentials, or wrong ones) or
//! 403 (the credentials are right but their role is not enough).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::http::ApiState;

/// A role, each including the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Scrape `/metrics`.
    Metrics,
    /// Read the JSON API and the pages (and scrape).
    Read,
    /// Start rounds (and read, and scrape).
    Operate,
}

impl Role {
    /// Its name in configuration and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Metrics => "metrics",
            Role::Read => "read",
            Role::Operate => "operate",
        }
    }
}

/// Who made a request, as far as the coordinator could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials, from a non-loopback address (or an unknown one).
    Anonymous,
    /// No credentials, from a loopback address.
    Loopback,
    /// A configured user, by password or bearer token.
    User(String),
    /// A TLS client certificate verified against the configured client CA.
    ClientCertificate(String),
}

/// What a request may do: inserted into every request's extensions by [`authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Who.
    pub principal: Principal,
    /// The role granted, if any.
    pub role: Option<Role>,
}

impl Access {
    /// Nothing: no credentials from a non-loopback address.
    pub const ANONYMOUS: Access = Access {
        principal: Principal::Anonymous,
        role: None,
    };

    /// Whether this request may do what `need` allows.
    pub fn allows(&self, need: Role) -> bool {
        self.role.is_some_and(|r| r >= need)
    }
}

/// Decides the request's [`Access`] and stores it in the request's extensions. A request whose
/// credentials are wrong (an unknown user, a bad password or token) is answered 401 here,
/// whatever the route: a wrong password is never silently downgraded to anonymous.
pub async fn authenticate(
    State(s): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let access = match s.auth.access(peer, authorization).await {
        Ok(access) => access,
        Err(refusal) => return refusal.into_response(),
    };
    req.extensions_mut().insert(access);
    next.run(req).await
}

/// The layer of a route that needs `need`: 401 when the request carried no credentials (with
/// `WWW-Authenticate`), 403 when its credentials do not grant enough.
pub async fn require(need: Role, req: Request, next: Next) -> Response {
    let access = req
        .extensions()
        .get::<Access>()
        .cloned()
        .unwrap_or(Access::ANONYMOUS);
    if access.allows(need) {
        return next.run(req).await;
    }
    match access.principal {
        Principal::Anonymous | Principal::Loopback => {
            Refusal::Unauthenticated(need).into_response()
        }
        Principal::User(_) | Principal::ClientCertificate(_) => {
            Refusal::Forbidden(need, access.role).into_response()
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It needs a role and carried no credentials.
    Unauthenticated(Role),
    /// Its credentials were wrong (unknown user, bad password or token, malformed header).
    BadCredentials(&'static str),
    /// Its credentials are right but grant less than it needs.
    Forbidden(Role, Option<Role>),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            Refusal::Unauthenticated(need) => (
                StatusCode::UNAUTHORIZED,
                format!(
                    "this needs the {} role: send a user's password (Basic) or bearer token \
                     (see the README's Security section)",
                    need.as_str()
                ),
            ),
            Refusal::BadCredentials(why) => (
                StatusCode::UNAUTHORIZED,
                format!("credentials refused: {why}"),
            ),
            Refusal::Forbidden(need, has) => (
                StatusCode::FORBIDDEN,
                format!(
                    "this needs the {} role; these credentials grant {}",
                    need.as_str(),
                    has.map_or("none", Role::as_str)
                ),
            ),
        };
        let mut response = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cemwatch\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// Decides access from the configuration: for now, without users, loopback clients may
/// operate and everything else needs a role.
#[derive(Debug, Default)]
pub struct Authenticator {}

impl Authenticator {
    /// The access of one request from `peer`.
    pub async fn access(
        &self,
        peer: Option<SocketAddr>,
        _authorization: Option<HeaderValue>,
    ) -> Result<Access, Refusal> {
        Ok(match peer {
            Some(addr) if addr.ip().is_loopback() => Access {
                principal: Principal::Loopback,
                role: Some(Role::Operate),
            },
            _ => Access::ANONYMOUS,
        })
    }
}
