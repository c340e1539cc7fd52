//! HTTPS served directly with rustls (the `ring` provider; no OpenSSL), from a PEM
//! certificate chain and private key, reloaded without a restart.
//!
//! The certificate in use sits behind a [`ReloadingCertificate`] resolver that every new
//! handshake asks; [`watch_for_changes`] swaps it on SIGHUP and when either file's
//! modification time or size changes (checked every `tls_reload_poll_secs`). Connections
//! already open keep the session they negotiated, so requests in flight finish. A file
//! that cannot be loaded (unreadable, not PEM, key not matching the certificate: for
//! example half-written) keeps the previous certificate in use and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the expected kind.
    #[error("{path} holds no PEM {what}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the key or the pair.
    #[error("unusable certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the PEM certificate chain and private key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Modification time and size of both files, to notice a change.
    fn stamp(&self) -> Option<[(SystemTime, u64); 2]> {
        let of = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Some([of(&self.cert)?, of(&self.key)?])
    }

    /// Reads and checks the pair.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let pem_error = |path: &Path, what, reason: String| TlsError::Pem {
            path: path.to_owned(),
            what,
            reason,
        };
        let cert_pem = read(&self.cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(&self.cert, "certificate", e.to_string()))?;
        if chain.is_empty() {
            return Err(pem_error(
                &self.cert,
                "certificate",
                "no CERTIFICATE block".into(),
            ));
        }
        let key_pem = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| pem_error(&self.key, "private key", e.to_string()))?;
        let signing_key = provider.key_provider.load_private_key(key)?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified.keys_match()?;
        Ok(certified)
    }
}

/// The certificate every new handshake gets; swapped by [`Tls::reload`].
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// The server's TLS set-up: the files, the resolver over them and the acceptor that
/// uses it.
pub struct Tls {
    files: TlsFiles,
    /// The files' stamp taken just before they were first read.
    loaded: Option<[(SystemTime, u64); 2]>,
    provider: Arc<CryptoProvider>,
    certificate: Arc<ReloadingCertificate>,
    acceptor: TlsAcceptor,
}

impl Tls {
    /// Loads `files` and builds an acceptor (TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = files.stamp();
        let certificate = Arc::new(ReloadingCertificate {
            current: RwLock::new(Arc::new(files.load(&provider)?)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            files,
            loaded,
            provider,
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The acceptor for new connections (it always offers the current certificate).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Loads the files again and, when they are usable, serves them to every new
    /// handshake from now on; otherwise keeps the certificate in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = Arc::new(self.files.load(&self.provider)?);
        *self
            .certificate
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = certified;
        Ok(())
    }
}

/// Reloads `tls` on SIGHUP and whenever its files change (checked every `poll`). Runs
/// until dropped.
pub async fn watch_for_changes(tls: Arc<Tls>, poll: Duration) {
    let mut hangup = hangup_signal();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // From the stamp of the files as loaded: a change made since is not missed.
    let mut seen = tls.loaded;
    loop {
        let why = tokio::select! {
            () = next_hangup(&mut hangup) => "SIGHUP",
            _ = tick.tick() => {
                let now = tls.files.stamp();
                if now == seen {
                    continue;
                }
                seen = now;
                "the files changed"
            }
        };
        match tls.reload() {
            Ok(()) => {
                tracing::info!(cert = %tls.files.cert.display(), why, "reloaded the TLS certificate")
            }
            Err(error) => {
                tracing::error!(%error, why, "cannot reload the TLS certificate; keeping the one in use")
            }
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the certificate reloads when its files change");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

/// The next SIGHUP (never, where there is none).
async fn next_hangup(hangup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        if signal.recv().await.is_some() {
            return;
        }
    }
    let _ = hangup;
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` written as PEM files in `dir`, named
    /// by `name`; returns the files and the certificate's DER.
    fn write_pair(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, cert.der().to_vec())
    }

    fn served(tls: &Tls) -> Vec<u8> {
        tls.certificate.current.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_reload_serves_the_new_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = write_pair(dir.path(), "first");
        let tls = Tls::load(files.clone()).unwrap();
        assert_eq!(served(&tls), first);

        let (other, second) = write_pair(dir.path(), "second");
        std::fs::copy(&other.cert, &files.cert).unwrap();
        // The new certificate with the old key does not pair: nothing changes.
        assert!(matches!(tls.reload(), Err(TlsError::Rustls(_))));
        assert_eq!(served(&tls), first);
        std::fs::copy(&other.key, &files.key).unwrap();
        tls.reload().unwrap();
        assert_eq!(served(&tls), second);
    }

    #[test]
    fn missing_and_non_pem_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = write_pair(dir.path(), "pair");
        let missing = TlsFiles {
            cert: dir.path().join("nope.crt"),
            key: files.key.clone(),
        };
        let error = Tls::load(missing).err().unwrap().to_string();
        assert!(error.contains("nope.crt"), "{error}");
        std::fs::write(&files.key, "not a key").unwrap();
        let error = Tls::load(files).err().unwrap().to_string();
        assert!(error.contains("private key"), "{error}");
    }
}
