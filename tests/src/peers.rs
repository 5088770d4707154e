//! Peers no cemwatch code wrote, as real gateways differ from cooperative test servers:
//! `openssl s_server` with arbitrary options (client-certificate requests, TLS 1.0, CBC, static
//! RSA, DHE), a rustls server whose certificate resolver pairs the real chain with another key
//! (a device replaying the gateway's public chain), and python sockets that accept a connection
//! and then reset or close it (a load balancer with no healthy backend). All on loopback;
//! stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::pki::Leaf;
use crate::server::{free_port, Versions};

fn wait_connectable(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("nothing accepted connections on {addr} within {within:?}")
}

/// `openssl s_server` serving `leaf` with the options given (`-Verify 1`, `-tls1`, `-cipher
/// AES128-SHA`, ...); killed on drop. Its standard error goes to a log file, shown when it
/// does not start.
#[derive(Debug)]
pub struct OpensslPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl OpensslPeer {
    /// Starts `openssl s_server -www` for `leaf` on a free loopback port with `options`.
    pub fn start(leaf: &Leaf, options: &[&str]) -> Result<Self> {
        let port = free_port()?;
        Self::start_at(leaf, format!("127.0.0.1:{port}").parse()?, options)
    }

    /// Starts `openssl s_server -www` for `leaf` at `addr` with `options`: several of them on
    /// one port at 127.0.0.2, 127.0.0.3 and [::1] are the nodes behind one gateway name.
    pub fn start_at(leaf: &Leaf, addr: SocketAddr, options: &[&str]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let cert = dir.path().join("chain.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, leaf.chain_pem())?;
        std::fs::write(&key, &leaf.key_pem)?;
        let log = std::fs::File::create(dir.path().join("s_server.log"))?;
        let child = Command::new("openssl")
            .args(["s_server", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(options)
            .args(["-www", "-quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot run `openssl s_server`: install openssl")?;
        let mut peer = Self { addr, child, dir };
        if let Err(e) = wait_connectable(addr, Duration::from_secs(10)) {
            let status = peer.child.try_wait().ok().flatten();
            bail!(
                "openssl s_server {options:?} did not start ({e}; exit status {status:?}): {}",
                peer.log()
            );
        }
        Ok(peer)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What s_server wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s_server.log")).unwrap_or_default()
    }

    /// A file in the peer's directory, for options that take one (`-CAfile`, `-dhparam`).
    pub fn file(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, content)?;
        Ok(path)
    }
}

impl Drop for OpensslPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finite-field DH parameters (the RFC 7919 group ffdhe2048) for `s_server -dhparam`, PEM,
/// from `openssl genpkey` (instant, unlike generating a new prime).
pub fn dh_params_pem() -> Result<Vec<u8>> {
    crate::pki::openssl(
        &[
            "genpkey",
            "-genparam",
            "-algorithm",
            "DH",
            "-pkeyopt",
            "group:ffdhe2048",
        ],
        None,
    )
}

/// Serves `chain` with a private key that is not its own, as a device on the path replaying
/// the gateway's public chain would.
#[derive(Debug)]
struct ReplayResolver {
    key: Arc<rustls::sign::CertifiedKey>,
}

impl rustls::server::ResolvesServerCert for ReplayResolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.key.clone())
    }
}

/// A rustls server presenting the real chain of `leaf` with the key of `impostor`; stopped on
/// drop.
#[derive(Debug)]
pub struct ReplayServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ReplayServer {
    /// Starts on a free loopback port with the given versions.
    pub fn start(leaf: &Leaf, impostor: &Leaf, versions: Versions) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = provider
            .key_provider
            .load_private_key(impostor.rustls_key()?)
            .context("rustls refused the impostor's key")?;
        let certified = rustls::sign::CertifiedKey::new(leaf.rustls_chain(), key);
        if certified.keys_match().is_ok() {
            bail!("the impostor's key is the leaf's own: give another key");
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match versions {
            Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
            Versions::Tls12 => &[&rustls::version::TLS12],
            Versions::Tls13 => &[&rustls::version::TLS13],
        };
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(ReplayResolver {
                key: Arc::new(certified),
            }));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
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

impl Drop for ReplayServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a [`HangUp`] server does with each connection it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangUpMode {
    /// Resets it at once (`SO_LINGER` 0, then close): a load balancer with no healthy member.
    ResetAtOnce,
    /// Reads the ClientHello, then resets it: an IPS, or a service refusing the client.
    ResetAfterHello,
    /// Reads the ClientHello, then closes it (FIN).
    CloseAfterHello,
}

const HANG_UP_PY: &str = r#"
import socket, struct, sys
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    if mode != "reset_at_once":
        c.settimeout(5)
        try:
            c.recv(4096)
        except OSError:
            pass
    if mode != "close_after_hello":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
"#;

/// A python listener on loopback that accepts and then resets or closes every connection;
/// killed on drop.
#[derive(Debug)]
pub struct HangUp {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl HangUp {
    /// Starts `python3` with the given behaviour.
    pub fn start(mode: HangUpMode) -> Result<Self> {
        use std::io::BufRead;
        let arg = match mode {
            HangUpMode::ResetAtOnce => "reset_at_once",
            HangUpMode::ResetAfterHello => "reset_after_hello",
            HangUpMode::CloseAfterHello => "close_after_hello",
        };
        let mut child = Command::new("python3")
            .args(["-c", HANG_UP_PY, arg])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run `python3`: install python3")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("python3 printed no port")?;
        let port: u16 = line
            .trim()
            .parse()
            .with_context(|| format!("python3 printed {line:?}, not a port"))?;
        Ok(Self {
            addr: format!("127.0.0.1:{port}").parse()?,
            child,
        })
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for HangUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's `http.server` serving a directory on loopback: where a CA publishes its
/// certificates (AIA caIssuers) and CRLs (distribution points), as a web server no cemwatch
/// code wrote. Killed on drop.
#[derive(Debug)]
pub struct HttpFiles {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl HttpFiles {
    /// Serves `dir` (files put there later are served too).
    pub fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run `python3 -m http.server`: install python3")?;
        let peer = Self { addr, child };
        wait_connectable(addr, Duration::from_secs(10))?;
        Ok(peer)
    }

    /// The URL of `name` in the served directory.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
