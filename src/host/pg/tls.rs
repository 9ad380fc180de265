//! TLS for PostgreSQL connections with rustls, following libpq's `sslmode` rules:
//! `prefer`/`require` encrypt without checking the certificate unless a root certificate is
//! given (then `require` checks the chain, as libpq does), `verify-ca` checks the chain,
//! `verify-full` the chain and the host name.

use super::target::SslMode;
use crate::host::HostError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Where Debian keeps the system's trusted roots, for libpq's `sslrootcert=system`.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

pub fn connector(mode: SslMode, rootcert: Option<&Path>) -> Result<MakeRustlsConnect, HostError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::Failed(format!("cannot set up TLS: {e}")))?;
    let rootcert = rootcert
        .map(Path::to_path_buf)
        .or_else(|| default_rootcert(mode));
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, rootcert) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(HostError::Invalid(format!(
                "sslmode={} needs the CA certificate: add sslrootcert=/path/to/ca.pem (or sslrootcert=system) to the URL",
                mode.as_str()
            )));
        }
        (SslMode::Disable | SslMode::Allow | SslMode::Prefer, _) | (SslMode::Require, None) => {
            Arc::new(AnyCertificate(provider))
        }
        (mode, Some(path)) => {
            let system = path.as_os_str() == "system";
            let roots = load_roots(if system {
                Path::new(SYSTEM_ROOTS)
            } else {
                &path
            })?;
            let webpki =
                rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| HostError::Failed(format!("cannot set up TLS: {e}")))?;
            if mode == SslMode::VerifyFull || system {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// libpq reads `~/.postgresql/root.crt` when the URL names no root certificate.
fn default_rootcert(mode: SslMode) -> Option<PathBuf> {
    if !matches!(
        mode,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
    ) {
        return None;
    }
    let path = PathBuf::from(std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.exists().then_some(path)
}

fn load_roots(path: &Path) -> Result<RootCertStore, HostError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            HostError::Invalid(format!(
                "cannot read the CA certificate {} (sslrootcert): {e}",
                path.display()
            ))
        })?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(HostError::Invalid(format!(
            "{} (sslrootcert) holds no usable certificate",
            path.display()
        )));
    }
    Ok(roots)
}

/// `sslmode=require` without a root certificate: encrypted, but any certificate is accepted,
/// exactly as libpq behaves. Handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to the given root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
