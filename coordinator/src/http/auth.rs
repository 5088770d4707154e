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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use crate::model::access::Role;

use crate::config::http::{HttpConfig, HttpUser};
use crate::http::ApiState;

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
    let client_cert = req.extensions().get::<ClientCertificate>().cloned();
    let config = s.hub.config.borrow().clone();
    let access = match s
        .auth
        .access(&config.http, peer, authorization, client_cert)
        .await
    {
        Ok(access) => access,
        Err(refusal) => {
            s.hub.metrics.http_refused("credentials");
            tracing::info!(peer = ?peer, why = ?refusal, "HTTP credentials refused");
            return refusal.into_response();
        }
    };
    req.extensions_mut().insert(access);
    next.run(req).await
}

/// The layer of a route that needs `need`: 401 when the request carried no credentials (with
/// `WWW-Authenticate`), 403 when its credentials do not grant enough.
pub async fn require(s: Arc<ApiState>, need: Role, req: Request, next: Next) -> Response {
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
            s.hub.metrics.http_refused("unauthenticated");
            Refusal::Unauthenticated(need).into_response()
        }
        Principal::User(_) | Principal::ClientCertificate(_) => {
            s.hub.metrics.http_refused("forbidden");
            Refusal::Forbidden(need, access.role).into_response()
        }
    }
}

/// What a refusal said, carried on its response for a layer that answers browsers with a page.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

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
        response.extensions_mut().insert(Refused(message));
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cemwatch\", charset=\"UTF-8\""),
            );
        }
        response
    }
}

/// A TLS client certificate the listener verified against `http.client_ca`: its subject's
/// common name (or the whole subject when it has none). Inserted by the listener into every
/// request of that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

/// How long a verified password is remembered (as a SHA-256 of user, password and hash), so
/// that a scraper sending Basic credentials every 15 s costs one bcrypt verification per
/// [`VERIFIED_TTL`], not one per scrape.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);
/// Verified passwords remembered at most (32 bytes and an instant each: 48 KiB).
pub const VERIFIED_MAX: usize = 1024;
/// Largest `Authorization` header looked at: a user name, a password and base64's third.
pub const MAX_AUTHORIZATION: usize = 1024;

/// Decides what each request may do from the `[http]` configuration: the users' hashed
/// passwords and tokens, the verified client certificate, and whether it comes from loopback.
///
/// bcrypt is slow on purpose (about 0.25 s at cost 12 in a release build); verifications run
/// one at a time on a blocking thread, so wrong passwords sent in a loop cost at most one core
/// and never the async workers that drive QUIC ingest; right ones are remembered.
#[derive(Debug)]
pub struct Authenticator {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    bcrypt: Arc<Semaphore>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self {
            verified: Mutex::new(HashMap::new()),
            bcrypt: Arc::new(Semaphore::new(1)),
        }
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Constant-time equality of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The SHA-256 of a bearer token, as `token_sha256` holds it.
pub fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

const WRONG: &str = "unknown user or wrong password";

impl Authenticator {
    /// The access of one request from `peer` carrying `authorization` over a connection whose
    /// client certificate (if any) was verified as `client_cert`.
    pub async fn access(
        &self,
        http: &HttpConfig,
        peer: Option<SocketAddr>,
        authorization: Option<HeaderValue>,
        client_cert: Option<ClientCertificate>,
    ) -> Result<Access, Refusal> {
        let cert_role = client_cert
            .as_ref()
            .and_then(|_| http.tls.as_ref().and_then(|t| t.client_cert_role));
        if let Some(value) = authorization {
            let user = self.user(http, &value).await?;
            return Ok(Access {
                principal: Principal::User(user.name.clone()),
                role: Some(user.role).max(cert_role),
            });
        }
        if let Some(ClientCertificate(name)) = client_cert {
            return Ok(Access {
                principal: Principal::ClientCertificate(name),
                role: cert_role,
            });
        }
        Ok(match peer {
            Some(addr) if addr.ip().to_canonical().is_loopback() => Access {
                principal: Principal::Loopback,
                role: http.loopback_role,
            },
            _ => Access::ANONYMOUS,
        })
    }

    /// The user an `Authorization` header proves, or why not.
    async fn user<'a>(
        &self,
        http: &'a HttpConfig,
        value: &HeaderValue,
    ) -> Result<&'a HttpUser, Refusal> {
        if value.len() > MAX_AUTHORIZATION {
            return Err(Refusal::BadCredentials(
                "the Authorization header is too long",
            ));
        }
        let text = value
            .to_str()
            .map_err(|_| Refusal::BadCredentials("the Authorization header is not text"))?;
        let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let digest = token_digest(rest);
            // Every user is compared, so the time does not tell which one matched.
            let mut found = None;
            for u in &http.users {
                if u.token_sha256.is_some_and(|t| same(&t, &digest)) {
                    found = Some(u);
                }
            }
            return found.ok_or(Refusal::BadCredentials("unknown token"));
        }
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Refusal::BadCredentials(
                "use Basic (user and password) or Bearer (token)",
            ));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Refusal::BadCredentials("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| Refusal::BadCredentials("Basic credentials are not UTF-8"))?;
        let (name, password) = decoded.split_once(':').ok_or(Refusal::BadCredentials(
            "Basic credentials are not user:password",
        ))?;
        let user = http
            .users
            .iter()
            .find(|u| u.name == name && u.password_bcrypt.is_some());
        // An unknown user costs a verification against a configured hash all the same, so
        // that the time does not tell which names exist.
        let Some(hash) = user
            .and_then(|u| u.password_bcrypt.as_deref())
            .or_else(|| http.users.iter().find_map(|u| u.password_bcrypt.as_deref()))
        else {
            return Err(Refusal::BadCredentials(WRONG));
        };
        let key = sha256(&[name.as_bytes(), password.as_bytes(), hash.as_bytes()]);
        let now = Instant::now();
        if user.is_some() {
            let mut verified = self.verified.lock();
            if let Some(at) = verified.get(&key) {
                if now.duration_since(*at) < VERIFIED_TTL {
                    return user.ok_or(Refusal::BadCredentials(WRONG));
                }
                verified.remove(&key);
            }
        }
        let permit = self
            .bcrypt
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Refusal::BadCredentials(WRONG))?;
        let (password, hash_owned) = (password.to_string(), hash.to_string());
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(password, &hash_owned).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        match user {
            Some(u) if ok => {
                let mut verified = self.verified.lock();
                if verified.len() >= VERIFIED_MAX {
                    verified.retain(|_, at| now.duration_since(*at) < VERIFIED_TTL);
                    if verified.len() >= VERIFIED_MAX {
                        verified.clear();
                    }
                }
                verified.insert(key, now);
                Ok(u)
            }
            _ => Err(Refusal::BadCredentials(WRONG)),
        }
    }
}
