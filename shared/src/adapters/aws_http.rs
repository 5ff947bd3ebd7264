//! The AWS SDK's configuration, with an HTTP client whose trust roots load beside the cold
//! start rather than in it (`docs/design.md`, "Cold start").
//!
//! The SDK's default client builds its TLS connector when each client is constructed, so that
//! the system's root certificates (a bundle file and, on Debian-like systems, a directory of a
//! hundred and more files) are read before the function asks Lambda for its first event: most
//! of a function's init. This client is the SDK's own (rustls on aws-lc, the proxy settings of
//! the environment), except that the connector is built on first use, and a thread started
//! with the config reads the roots meanwhile. The first AWS call waits for that thread only if
//! it comes first.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

/// The AWS configuration from the standard environment (region, credentials, endpoint), with
/// the deferred HTTP client. Every AWS client of the hub is built from it.
pub async fn sdk_config() -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).http_client(deferred_https_client());
    // Where the environment holds the region and the credentials (Lambda sets both), the
    // default chains would take them from there first anyway: given directly, the chains (an
    // STS client, IMDS and ECS providers, profile files) are not built.
    let region = std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION"));
    if let Ok(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some()
    {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// The SDK's default HTTPS client, its connector built on first use, the trust roots read on a
/// thread of their own from now on.
pub fn deferred_https_client() -> SharedHttpClient {
    std::thread::spawn(|| {
        // Building one connector reads and caches the roots for every later one.
        drop(ConnectorBuilder::default().tls_provider(RUSTLS).build());
    });
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(RUSTLS);
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    Deferred(client).into_shared()
}

/// The SDK's default TLS: rustls on aws-lc.
const RUSTLS: tls::Provider = tls::Provider::Rustls(CryptoMode::AwsLc);

/// An HTTP client that skips the eager connector build the SDK does when a client is
/// constructed (`validate_base_client_config`); the connector is built on the first request.
#[derive(Debug)]
struct Deferred(SharedHttpClient);

impl HttpClient for Deferred {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}
