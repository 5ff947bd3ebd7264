//! The master key on AWS (docs/keys.md): a KMS key wraps the data keys. KMS is called once per
//! data key per cold start (`Decrypt`), and once per new data key (`Encrypt`): never per secret
//! or per delivery.

use async_trait::async_trait;

use crate::adapters::aws_error;
use crate::error::Result;
use crate::ports::MasterKey;

/// Bound into every wrapping (KMS's encryption context): a ciphertext made for anything else
/// with the same key does not pass for a data key.
const CONTEXT: (&str, &str) = ("purpose", "webhook-hub data key");

/// A KMS key, by id, ARN or alias.
pub struct KmsMasterKey {
    /// Its client's configuration; the client is made on the first call (after the cold
    /// start: most invocations never call KMS).
    config: aws_sdk_kms::Config,
    client: std::sync::OnceLock<aws_sdk_kms::Client>,
    key_id: String,
    id: String,
}

impl KmsMasterKey {
    /// The key `key_id` (an id, an ARN, or `alias/…`), called with a client of `config`.
    pub fn new(config: aws_sdk_kms::Config, key_id: &str) -> Self {
        KmsMasterKey {
            config,
            client: std::sync::OnceLock::new(),
            key_id: key_id.to_string(),
            id: format!("kms:{key_id}"),
        }
    }

    fn client(&self) -> &aws_sdk_kms::Client {
        self.client
            .get_or_init(|| aws_sdk_kms::Client::from_conf(self.config.clone()))
    }

    /// Creates the key `alias/…` names unless the alias exists (`serve --create-resources`,
    /// for emulators and first runs; `template.yaml` creates the deployed one).
    pub async fn ensure(client: &aws_sdk_kms::Client, alias: &str) -> Result<()> {
        if !alias.starts_with("alias/") {
            return Ok(()); // a key named by id or ARN exists or fails on first use
        }
        let exists = client.describe_key().key_id(alias).send().await.is_ok();
        if exists {
            return Ok(());
        }
        let key = client
            .create_key()
            .description("webhook-hub: wraps the data keys that seal stored secrets")
            .send()
            .await
            .map_err(aws_error)?;
        let key_id = key
            .key_metadata()
            .map(|m| m.key_id().to_string())
            .unwrap_or_default();
        let aliased = client
            .create_alias()
            .alias_name(alias)
            .target_key_id(&key_id)
            .send()
            .await;
        match aliased {
            Ok(_) => Ok(()),
            // Another process made the alias meanwhile: use its key, drop ours.
            Err(_) if client.describe_key().key_id(alias).send().await.is_ok() => {
                let _ = client
                    .schedule_key_deletion()
                    .key_id(key_id)
                    .pending_window_in_days(7)
                    .send()
                    .await;
                Ok(())
            }
            Err(err) => Err(aws_error(err)),
        }
    }
}

#[async_trait]
impl MasterKey for KmsMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    /// KMS finds the key a ciphertext was made with by itself: any KMS wrapping is worth a
    /// `Decrypt` (the function's IAM grants decide).
    fn opens(&self, id: &str) -> bool {
        id.starts_with("kms:")
    }

    async fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .client()
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(aws_sdk_kms::primitives::Blob::new(data_key))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default())
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>> {
        let out = self
            .client()
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(wrapped))
            .encryption_context(CONTEXT.0, CONTEXT.1)
            .send()
            .await
            .map_err(aws_error)?;
        Ok(out
            .plaintext()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default())
    }
}
