//! The master key of `serve` (docs/keys.md): 32 random bytes in a key file (created `0600`
//! beside the database on first run) or in the environment (`HUB_MASTER_KEY`), wrapping data
//! keys with AES-256-GCM.

use std::io::Write;
use std::path::Path;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::{HubError, Result};
use crate::ports::MasterKey;

/// What a key file holds before the key: the format's name.
const KEY_FILE_PREFIX: &str = "whmk_";
/// Bound into every wrapping, so nothing else this key might encrypt passes for a data key.
const WRAP_CONTEXT: &[u8] = b"webhook-hub data key";

/// A master key held by this process.
pub struct LocalMasterKey {
    key: LessSafeKey,
    id: String,
}

impl LocalMasterKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| format!("a master key is 32 bytes, not {}", bytes.len()))?;
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"webhook-hub master key id\0".as_slice(), bytes].concat(),
        );
        Ok(LocalMasterKey {
            key: LessSafeKey::new(key),
            id: format!("local:{}", crate::signing::hex(&digest.as_ref()[..8])),
        })
    }

    /// A fresh random key (the memory backend's, which lives as long as its data).
    pub fn generate() -> Self {
        Self::from_bytes(&rand::random::<[u8; 32]>()).expect("32 bytes")
    }

    /// A key as text: `whmk_` and 32 bytes in base64 (what a key file holds and
    /// `HUB_MASTER_KEY` takes).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let text = text.trim();
        let encoded = text.strip_prefix(KEY_FILE_PREFIX).unwrap_or(text);
        let bytes = B64
            .decode(encoded)
            .map_err(|_| "a master key is `whmk_` and 32 bytes in base64".to_string())?;
        Self::from_bytes(&bytes)
    }

    /// The key in the key file at `path` (made `0600` if an older version left it readable by
    /// others); `None` when there is no such file.
    pub fn from_file(path: &Path) -> std::result::Result<Option<Self>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                crate::runtime::files::make_private(path)
                    .map_err(|e| format!("the key file {}: {e}", path.display()))?;
                Self::parse(&text)
                    .map(Some)
                    .map_err(|e| format!("the key file {}: {e}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(format!("reading the key file {}: {err}", path.display())),
        }
    }

    /// Writes `text` (a key) to a new key file at `path`, `0600`, never over anything there.
    pub fn write_key_file(path: &Path, text: &str) -> std::result::Result<(), String> {
        let mut file = crate::runtime::files::create_private(path)
            .map_err(|e| format!("creating the key file {}: {e}", path.display()))?;
        writeln!(file, "{text}")
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("writing the key file {}: {e}", path.display()))
    }

    /// A fresh key as the text a key file holds.
    pub fn generate_text() -> String {
        format!(
            "{KEY_FILE_PREFIX}{}",
            B64.encode(rand::random::<[u8; 32]>())
        )
    }
}

#[async_trait]
impl MasterKey for LocalMasterKey {
    fn id(&self) -> &str {
        &self.id
    }

    async fn wrap(&self, data_key: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = data_key.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(WRAP_CONTEXT),
                &mut sealed,
            )
            .map_err(|_| HubError::backend("wrapping a data key failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    async fn unwrap(&self, wrapped: &[u8]) -> Result<Vec<u8>> {
        let refused = || HubError::backend(format!("the master key {} does not open it", self.id));
        if wrapped.len() < NONCE_LEN {
            return Err(refused());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&wrapped[..NONCE_LEN]).map_err(|_| refused())?;
        let mut bytes = wrapped.to_vec();
        self.key
            .open_within(nonce, Aad::from(WRAP_CONTEXT), &mut bytes, NONCE_LEN..)
            .map(|plain| plain.to_vec())
            .map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_unwraps_what_it_wrapped_and_nothing_else() {
        let text = LocalMasterKey::generate_text();
        let key = LocalMasterKey::parse(&text).unwrap();
        let wrapped = key.wrap(&[9u8; 32]).await.unwrap();
        assert!(!wrapped.windows(32).any(|w| w == [9u8; 32]));
        let again = LocalMasterKey::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(again.id(), key.id(), "the id names the key");
        assert_eq!(again.unwrap(&wrapped).await.unwrap(), [9u8; 32]);
        let other = LocalMasterKey::generate();
        assert_ne!(other.id(), key.id());
        assert!(other.unwrap(&wrapped).await.is_err());
        assert!(key.unwrap(b"short").await.is_err());
        assert!(LocalMasterKey::parse("whmk_notbase64!").is_err());
        assert!(LocalMasterKey::parse("whmk_AAAA").is_err(), "32 bytes");
    }

    #[test]
    fn a_key_file_is_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("mk-{}.key", rand::random::<u64>()));
        let text = LocalMasterKey::generate_text();
        LocalMasterKey::write_key_file(&path, &text).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            LocalMasterKey::write_key_file(&path, &text).is_err(),
            "never over a file"
        );
        let read = std::fs::read_to_string(&path).unwrap();
        assert_eq!(read.trim(), text);
        std::fs::remove_file(&path).unwrap();
    }
}
