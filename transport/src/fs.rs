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

/// Writes a file atomically: a temporary file beside it with a name of its own (the file's name,
/// this process and a counter: two files written at once, a key and its certificate, never
/// share one), created exclusively with its final mode (a `private` file readable by its owner
/// only, on Unix; a leftover file's mode is never inherited), flushed, renamed over the file,
/// and the directory flushed so the rename survives a crash. On an error the temporary file is
/// removed.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), WriteError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| WriteError { path: p, source }
    };
    let written = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(if private { 0o600 } else { 0o644 });
        }
        #[cfg(not(unix))]
        let _ = private;
        let mut f = options.open(&tmp).map_err(at(&tmp))?;
        std::io::Write::write_all(&mut f, bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at(dir))?;
    }
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

    #[cfg(unix)]
    #[test]
    fn a_private_file_never_inherits_a_leftover_temporary_files_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("probe.key");
        // What an earlier writer that used `probe.tmp` for both the key and the certificate, and
        // crashed, left behind: world-readable.
        let leftover = dir.path().join("probe.tmp");
        fs::write(&leftover, b"old").expect("leftover");
        fs::set_permissions(&leftover, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&key, b"secret", true).expect("write");
        let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is private: {mode:o}");
        assert_eq!(fs::read(&key).expect("read"), b"secret");
        let crt = dir.path().join("probe.crt");
        write_atomic(&crt, b"public", false).expect("write");
        assert_eq!(
            fs::metadata(&crt).expect("crt").permissions().mode() & 0o777,
            0o644
        );
        let left: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".tmp") && n != "probe.tmp")
            .collect();
        assert!(left.is_empty(), "no temporary file left: {left:?}");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Renaming a file over a directory fails.
        let target = dir.path().join("taken");
        fs::create_dir(&target).expect("dir");
        fs::write(target.join("inside"), b"x").expect("inside");
        assert!(write_atomic(&target, b"data", false).is_err());
        let temps = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(temps, 0);
    }

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
