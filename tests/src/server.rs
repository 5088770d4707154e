//! Real peers on loopback: a rustls TLS server, an `openssl s_server` for certificates rustls
//! will not serve (RSA keys under 2048 bits), and a plain TCP listener that does not speak TLS.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::pki::Leaf;

/// A port that was free a moment ago (bound to 0 and released).
pub fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_connectable(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if StdStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing accepted connections on {addr} within {within:?}")
}

/// Which TLS versions a [`TlsServer`] offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Versions {
    /// TLS 1.2 and 1.3.
    Both,
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// A rustls TLS server on loopback serving one certificate chain; stopped on drop.
#[derive(Debug)]
pub struct TlsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    /// Serves `leaf` on a free loopback port with TLS 1.2 and 1.3.
    pub fn start(leaf: &Leaf) -> Result<Self> {
        Self::start_on("127.0.0.1:0".parse()?, leaf, Versions::Both)
    }

    /// Serves `leaf` on `addr` (port 0 for any) with the given versions.
    pub fn start_on(addr: SocketAddr, leaf: &Leaf, versions: Versions) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match versions {
            Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Versions::Tls12 => &[&rustls::version::TLS12],
            Versions::Tls13 => &[&rustls::version::TLS13],
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_single_cert(leaf.rustls_chain(), leaf.rustls_key()?)
            .context("rustls refused the test certificate")?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = StdListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((tcp, _)) = accepted else { continue };
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                if let Ok(mut tls) = acceptor.accept(tcp).await {
                                    let mut buf = [0u8; 1024];
                                    let _ = tokio::time::timeout(Duration::from_millis(50), tls.read(&mut buf)).await;
                                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                                    let _ = tls.shutdown().await;
                                }
                            });
                        }
                    }
                }
            });
        });
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `openssl s_server` at security level 0, for certificates and keys that rustls refuses to
/// serve; killed on drop.
#[derive(Debug)]
pub struct OpensslServer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl OpensslServer {
    /// Serves `leaf` on a free loopback port.
    pub fn start(leaf: &Leaf) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("chain.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, leaf.chain_pem())?;
        std::fs::write(&key, &leaf.key_pem)?;
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new("openssl")
            .args(["s_server", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(["-cipher", "DEFAULT@SECLEVEL=0", "-www", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run `openssl s_server`: install openssl")?;
        let mut server = Self {
            addr,
            child,
            _dir: dir,
        };
        if let Err(e) = wait_connectable(addr, Duration::from_secs(10)) {
            let status = server.child.try_wait().ok().flatten();
            bail!("openssl s_server did not start ({e}; exit status {status:?})");
        }
        Ok(server)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP listener that answers like a plain HTTP server: it does not speak TLS.
#[derive(Debug)]
pub struct PlainServer {
    /// Where it listens.
    pub addr: SocketAddr,
    _thread: JoinHandle<()>,
}

impl PlainServer {
    /// Starts on a free loopback port. It lives until the test process ends.
    pub fn start() -> Result<Self> {
        use std::io::{Read, Write};
        let listener = StdListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Ok(Self {
            addr,
            _thread: thread,
        })
    }
}
