//! The HTTP listener's own accept loop, so that its limits are ours and not a default:
//! - at most `http.max_connections` connections at once (one more is closed at accept and
//!   counted);
//! - HTTPS when `http.tls_cert` is set, with client certificates verified against
//!   `http.client_ca` when that is set; the TLS handshake must finish within
//!   `http.header_read_timeout`;
//! - a request's header must arrive within `http.header_read_timeout` of the connection's
//!   start (hyper's timer; slowloris), and a connection lives at most [`MAX_CONNECTION_AGE`]
//!   (then it is closed gracefully after its current request), which bounds how long an idle
//!   keep-alive connection holds its slot;
//! - every request carries its peer address ([`ConnectInfo`]) and, over mTLS, the verified
//!   [`ClientCertificate`] into the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::http::{HttpConfig, HttpTls};
use crate::http::auth::ClientCertificate;
use crate::telemetry::Metrics;

/// The longest a connection is kept: long enough for many keep-alive scrapes, short enough
/// that `max_connections` idle connections free their slots within it.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(120);

/// Why the HTTPS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        what: String,
    },
    /// rustls refused the combination.
    #[error("http.tls_cert / http.tls_key / http.client_ca: {0}")]
    Rustls(String),
}

fn file_err(path: &std::path::Path, what: impl Into<String>) -> TlsSetupError {
    TlsSetupError::File {
        path: path.display().to_string(),
        what: what.into(),
    }
}

/// The TLS acceptor for `tls`: its certificate chain and key, and the client CA when set.
pub fn acceptor(tls: &HttpTls) -> Result<TlsAcceptor, TlsSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| file_err(&tls.cert, format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(&tls.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(&tls.cert, "holds no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| {
        file_err(
            &tls.key,
            format!("cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = cemwatch_transport::tls::provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| file_err(ca, format!("cannot read the client CA: {e}")))?
            {
                let cert = cert.map_err(|e| file_err(ca, format!("not a PEM certificate: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| file_err(ca, format!("not a usable CA certificate: {e}")))?;
            }
            if roots.is_empty() {
                return Err(file_err(ca, "holds no CERTIFICATE block"));
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The name of a verified client certificate: its subject's CN, else the whole subject.
fn client_name(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let subject = cert.subject();
            subject
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| subject.to_string())
        }
        Err(_) => "unparsable certificate".to_string(),
    }
}

/// Serves `router` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpConfig,
    metrics: Metrics,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let header_timeout = limits.header_read_timeout;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, mostly: wait instead of spinning.
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.http_refused("connections");
            tracing::debug!(%peer, "HTTP connection refused: http.max_connections reached");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, peer, None, router, header_timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| ClientCertificate(client_name(c)));
                            connection(stream, peer, cert, router, header_timeout).await
                        }
                        Ok(Err(e)) => {
                            metrics.http_refused("tls");
                            tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                        }
                        Err(_) => {
                            metrics.http_refused("tls");
                            tracing::debug!(%peer, "HTTPS handshake not finished in time");
                        }
                    }
                }
            }
        });
    }
}

async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    cert: Option<ClientCertificate>,
    router: Router,
    header_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(cert) = &cert {
            req.extensions_mut().insert(cert.clone());
        }
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        }
    }
}
