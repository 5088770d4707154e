//! Files written so that a crash leaves either the old or the new content, never a torn one,
//! and PEM encoding for the certificates both ends write.

use std::fs;
use std::path::{Path, PathBuf};

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

/// Writes a file atomically (temporary file beside it, flushed, then renamed over it); a
/// `private` file is created readable by its owner only (Unix).
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), WriteError> {
    let tmp = path.with_extension("tmp");
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| WriteError { path: p, source }
    };
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = options.open(&tmp).map_err(at(&tmp))?;
        std::io::Write::write_all(&mut f, bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(at(path))?;
    Ok(())
}

/// PEM-encodes DER (RFC 7468: base64 in 64-column lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                B64[((v >> (18 - 6 * i)) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn pem_round_trips() {
        for len in [1usize, 2, 3, 47, 48, 49, 100] {
            let der: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            let text = pem("CERTIFICATE", &der);
            let items: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<CertificateDer<'static>>, _>>()
                .expect("parse");
            assert_eq!(items[0].as_ref(), der.as_slice(), "{len}");
        }
    }
}
