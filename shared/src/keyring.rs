//! Secrets at rest (docs/keys.md): every secret the hub stores is [`Sealed`] with AES-256-GCM
//! under a data key; the data keys are kept in the store wrapped by the [`MasterKey`] (a key
//! file or an environment key on `serve`, KMS on AWS), so a copy of the store alone opens
//! nothing. The [`Keyring`] unwraps each data key once per process and caches it: no call to
//! the master key per secret, and a function that never touches a secret never calls it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};

use crate::error::{HubError, Result};
use crate::ports::{KeyStore, MasterKey};

/// How a sealed value starts: the format's version, then the data key's id.
pub const SEALED_PREFIX: &str = "whenc_v1.";
/// The store entry naming the data key new secrets are sealed under.
const CURRENT_DATA_KEY: &str = "data-key";
/// The store entry of the portal's session keys (sealed).
const PORTAL_KEYS: &str = "portal";

/// A secret as stored: sealed under a data key (`whenc_v1.<key id>.<nonce and ciphertext>`),
/// or plain text written before sealing existed, which reads as it is until it is sealed (on
/// its next write, or by `webhook-hub keys seal`). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_sealed() {
            "Sealed(<sealed>)"
        } else {
            "Sealed(<plain, redacted>)"
        })
    }
}

impl Sealed {
    /// Whether it is sealed (`false`: plain text from before sealing).
    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(SEALED_PREFIX)
    }

    /// The plain text of a value stored before sealing existed; `None` once sealed.
    pub fn legacy_plain(&self) -> Option<&str> {
        (!self.is_sealed()).then_some(self.0.as_str())
    }

    /// A plain value as read from an older store (tests and the model's own defaults only: the
    /// services seal what they store).
    pub fn plain(text: impl Into<String>) -> Self {
        Sealed(text.into())
    }

    /// The id of the data key it is sealed under.
    fn data_key_id(&self) -> Option<&str> {
        self.0
            .strip_prefix(SEALED_PREFIX)?
            .split_once('.')
            .map(|(id, _)| id)
    }
}

/// One data key as the store keeps it: wrapped by one or more master keys (several while a
/// master key is being replaced).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DataKeyRecord {
    wrappings: Vec<Wrapping>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Wrapping {
    /// [`MasterKey::id`] of the master key that made it.
    master: String,
    /// The wrapped data key, base64.
    wrapped: String,
}

/// The portal's session keys: the first signs, every one verifies until its `until_ms`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PortalKeySet {
    keys: Vec<PortalKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PortalKey {
    key: Sealed,
    /// Until when (Unix ms) a retired key still verifies; `None` for the signing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until_ms: Option<i64>,
}

/// The portal's keys, opened: the signing key first.
#[derive(Clone)]
pub struct PortalKeys {
    /// Signs new sessions.
    pub signing: Vec<u8>,
    /// Verify sessions: the signing key and each retired one still in its overlap.
    pub verifying: Vec<Vec<u8>>,
}

/// Seals and opens secrets; loads, creates and rotates the data keys and the portal's keys.
pub struct Keyring {
    master: Arc<dyn MasterKey>,
    store: Arc<dyn KeyStore>,
    opened: RwLock<HashMap<String, Arc<LessSafeKey>>>,
    /// Held while a data key is unwrapped, so a batch of deliveries that all miss the cache at
    /// once makes one call to the master key, not one each.
    unwrapping: tokio::sync::Mutex<()>,
    current: tokio::sync::Mutex<Option<String>>,
    portal: tokio::sync::Mutex<Option<(PortalKeys, std::time::Instant)>>,
}

/// How often a process may re-read the portal's keys when a session does not verify with the
/// ones it has (another process may have rotated them).
const PORTAL_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Keyring {
    /// A keyring over the data keys in `store`, wrapped by `master`.
    pub fn new(master: Arc<dyn MasterKey>, store: Arc<dyn KeyStore>) -> Self {
        Keyring {
            master,
            store,
            opened: RwLock::default(),
            unwrapping: tokio::sync::Mutex::new(()),
            current: tokio::sync::Mutex::new(None),
            portal: tokio::sync::Mutex::new(None),
        }
    }

    /// Checks at start that the master key opens this store's current data key (when it has
    /// one), without writing anything: a wrong or missing key stops the process here, with the
    /// store unchanged.
    pub async fn check(&self) -> Result<()> {
        if let Some(id) = self.store.key(CURRENT_DATA_KEY).await? {
            let id = String::from_utf8_lossy(&id).into_owned();
            self.data_key(&id).await?;
        }
        Ok(())
    }

    /// Whether this store has sealed anything yet (it has a data key).
    pub async fn has_data_key(&self) -> Result<bool> {
        Ok(self.store.key(CURRENT_DATA_KEY).await?.is_some())
    }

    /// `plain` sealed under the current data key, bound to `context` (the subscription id, or
    /// the name of the hub's own key): a sealed value copied elsewhere does not open.
    pub async fn seal(&self, plain: &str, context: &str) -> Result<Sealed> {
        let id = self.current_id().await?;
        let key = self.data_key(&id).await?;
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut sealed = plain.as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(context.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| HubError::backend("sealing a secret failed"))?;
        let mut payload = nonce_bytes.to_vec();
        payload.extend_from_slice(&sealed);
        Ok(Sealed(format!(
            "{SEALED_PREFIX}{id}.{}",
            B64URL.encode(payload)
        )))
    }

    /// The plain text of `sealed` (bound to `context`); plain text from before sealing as it is.
    pub async fn open(&self, sealed: &Sealed, context: &str) -> Result<String> {
        let Some(id) = sealed.data_key_id() else {
            return Ok(sealed.0.clone());
        };
        let key = self.data_key(id).await?;
        let payload = sealed.0[SEALED_PREFIX.len() + id.len() + 1..].to_string();
        let mut bytes = B64URL
            .decode(payload)
            .map_err(|_| HubError::backend(format!("a secret sealed under {id} is damaged")))?;
        if bytes.len() < NONCE_LEN {
            return Err(HubError::backend(format!(
                "a secret sealed under {id} is damaged"
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN])
            .map_err(|_| HubError::backend("a sealed secret's nonce is damaged"))?;
        let plain = key
            .open_within(nonce, Aad::from(context.as_bytes()), &mut bytes, NONCE_LEN..)
            .map_err(|_| {
                HubError::backend(format!(
                    "a secret sealed under data key {id} does not open (damaged, or moved from another item)"
                ))
            })?;
        String::from_utf8(plain.to_vec())
            .map_err(|_| HubError::backend("a sealed secret is not text"))
    }

    /// `sealed` sealed under the current data key (opened and sealed again unless it already
    /// is): for `keys rotate` and the sealing of plain values.
    pub async fn reseal(&self, sealed: &Sealed, context: &str) -> Result<Sealed> {
        let current = self.current_id().await?;
        if sealed.data_key_id() == Some(current.as_str()) {
            return Ok(sealed.clone());
        }
        let plain = self.open(sealed, context).await?;
        self.seal(&plain, context).await
    }

    /// The id of the data key new secrets are sealed under: read once, created (wrapped by the
    /// master key) by the first process that seals anything.
    async fn current_id(&self) -> Result<String> {
        let mut current = self.current.lock().await;
        if let Some(id) = current.as_ref() {
            return Ok(id.clone());
        }
        let id = match self.store.key(CURRENT_DATA_KEY).await? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let fresh = self.create_data_key().await?;
                let stored = self
                    .store
                    .hub_key(CURRENT_DATA_KEY, fresh.as_bytes())
                    .await?;
                String::from_utf8_lossy(&stored).into_owned()
            }
        };
        *current = Some(id.clone());
        Ok(id)
    }

    /// A new data key, wrapped by the master key and stored under its id (not yet current).
    async fn create_data_key(&self) -> Result<String> {
        let id = crate::signing::hex(&rand::random::<[u8; 8]>());
        let material: [u8; 32] = rand::random();
        let record = DataKeyRecord {
            wrappings: vec![Wrapping {
                master: self.master.id().to_string(),
                wrapped: B64.encode(self.master.wrap(&material).await?),
            }],
        };
        let json = serde_json::to_vec(&record).map_err(HubError::backend)?;
        self.store.hub_key(&data_key_name(&id), &json).await?;
        self.opened
            .write()
            .expect("keyring lock")
            .insert(id.clone(), Arc::new(aead_key(&material)?));
        Ok(id)
    }

    /// The data key `id`, unwrapped once per process by the master key.
    async fn data_key(&self, id: &str) -> Result<Arc<LessSafeKey>> {
        let cached = || self.opened.read().expect("keyring lock").get(id).cloned();
        if let Some(key) = cached() {
            return Ok(key);
        }
        let _one_at_a_time = self.unwrapping.lock().await;
        if let Some(key) = cached() {
            return Ok(key); // unwrapped while this one waited
        }
        let record = self.record(id).await?;
        self.unwrap_record(id, &record).await?;
        Ok(cached().expect("just opened"))
    }

    /// The material of data key `id` from its `record`, by the first wrapping this master key
    /// opens; kept opened in this keyring (once re-wrapped by another master key, this one
    /// could not unwrap it again, and the re-sealing that follows still needs it).
    async fn unwrap_record(&self, id: &str, record: &DataKeyRecord) -> Result<Vec<u8>> {
        let mut refusals = Vec::new();
        for wrapping in record
            .wrappings
            .iter()
            .filter(|w| self.master.opens(&w.master))
        {
            let wrapped = B64.decode(&wrapping.wrapped).map_err(HubError::backend)?;
            match self.master.unwrap(&wrapped).await {
                Ok(material) => {
                    self.opened
                        .write()
                        .expect("keyring lock")
                        .insert(id.to_string(), Arc::new(aead_key(&material)?));
                    return Ok(material);
                }
                Err(err) => refusals.push(err.to_string()),
            }
        }
        let wrapped_by: Vec<&str> = record.wrappings.iter().map(|w| w.master.as_str()).collect();
        Err(HubError::backend(format!(
            "the master key {} does not open data key {id} of this store (wrapped by {}){}; \
             start with the master key the store was sealed with",
            self.master.id(),
            wrapped_by.join(", "),
            if refusals.is_empty() {
                String::new()
            } else {
                format!(": {}", refusals.join("; "))
            }
        )))
    }

    async fn record(&self, id: &str) -> Result<DataKeyRecord> {
        let stored = self
            .store
            .key(&data_key_name(id))
            .await?
            .ok_or_else(|| HubError::backend(format!("data key {id} is not in the store")))?;
        serde_json::from_slice(&stored)
            .map_err(|e| HubError::backend(format!("data key {id} is damaged: {e}")))
    }

    /// Key rotation, step one: a new data key becomes current, wrapped by this keyring's master
    /// key and by `next_master` when the master key is being replaced; every earlier data key
    /// is wrapped by `next_master` too (and keeps the old wrapping only with `keep_old`), so
    /// what is still sealed under them opens with either key. Returns the new key's id; the
    /// caller then re-seals what is stored ([`Keyring::reseal`]).
    pub async fn rotate_data_key(
        &self,
        next_master: Option<&dyn MasterKey>,
        keep_old: bool,
    ) -> Result<String> {
        let previous = self.store.key(CURRENT_DATA_KEY).await?;
        let new_id = self.create_data_key().await?;
        let mut ids = vec![new_id.clone()];
        if let Some(prev) = &previous {
            let prev = String::from_utf8_lossy(prev).into_owned();
            ids.extend(self.known_ids(&prev).await?);
            self.store
                .hub_key(&previous_name(&new_id), prev.as_bytes())
                .await?;
        }
        if let Some(next) = next_master {
            for id in &ids {
                self.rewrap(id, next, keep_old).await?;
            }
        }
        match previous {
            Some(prev) => {
                if !self
                    .store
                    .replace_key(CURRENT_DATA_KEY, &prev, new_id.as_bytes())
                    .await?
                {
                    return Err(HubError::Conflict);
                }
            }
            None => {
                self.store
                    .hub_key(CURRENT_DATA_KEY, new_id.as_bytes())
                    .await?;
            }
        }
        *self.current.lock().await = Some(new_id.clone());
        Ok(new_id)
    }

    /// Every data key id this store has used: the chain each rotation records.
    async fn known_ids(&self, current: &str) -> Result<Vec<String>> {
        let mut ids = vec![current.to_string()];
        let mut seen = std::collections::HashSet::new();
        seen.insert(current.to_string());
        let mut at = current.to_string();
        while let Some(prev) = self.store.key(&previous_name(&at)).await? {
            let prev = String::from_utf8_lossy(&prev).into_owned();
            if !seen.insert(prev.clone()) {
                break;
            }
            ids.push(prev.clone());
            at = prev;
        }
        Ok(ids)
    }

    /// Wraps data key `id` by `next` (and only by it unless `keep_old`).
    async fn rewrap(&self, id: &str, next: &dyn MasterKey, keep_old: bool) -> Result<()> {
        let stored = self
            .store
            .key(&data_key_name(id))
            .await?
            .ok_or_else(|| HubError::backend(format!("data key {id} is not in the store")))?;
        let mut record: DataKeyRecord =
            serde_json::from_slice(&stored).map_err(HubError::backend)?;
        let material = self.unwrap_record(id, &record).await?;
        if !keep_old {
            record.wrappings.clear();
        }
        record.wrappings.retain(|w| w.master != next.id());
        record.wrappings.push(Wrapping {
            master: next.id().to_string(),
            wrapped: B64.encode(next.wrap(&material).await?),
        });
        let json = serde_json::to_vec(&record).map_err(HubError::backend)?;
        if !self
            .store
            .replace_key(&data_key_name(id), &stored, &json)
            .await?
        {
            return Err(HubError::Conflict);
        }
        Ok(())
    }

    /// The portal's session keys: read (and opened) once per process, created by the first
    /// process, sealed in place when an older store kept the key in plain; `reload` reads them
    /// again (at most every few seconds) after a session failed to verify.
    pub async fn portal_keys(&self, now_ms: i64, reload: bool) -> Result<PortalKeys> {
        let mut cached = self.portal.lock().await;
        if let Some((keys, read_at)) = cached.as_ref()
            && (!reload || read_at.elapsed() < PORTAL_RELOAD_EVERY)
        {
            return Ok(keys.clone());
        }
        let set = self.portal_set().await?;
        let mut opened = Vec::new();
        for key in set
            .keys
            .iter()
            .filter(|k| k.until_ms.is_none_or(|until| until > now_ms))
        {
            let text = self.open(&key.key, PORTAL_KEYS).await?;
            opened.push(B64.decode(text).map_err(HubError::backend)?);
        }
        let keys = PortalKeys {
            signing: opened.first().cloned().unwrap_or_default(),
            verifying: opened,
        };
        *cached = Some((keys.clone(), std::time::Instant::now()));
        Ok(keys)
    }

    /// The stored set, created or sealed in place if need be.
    async fn portal_set(&self) -> Result<PortalKeySet> {
        loop {
            let stored = match self.store.key(PORTAL_KEYS).await? {
                Some(stored) => stored,
                None => {
                    let fresh = self.new_portal_set(vec![]).await?;
                    self.store.hub_key(PORTAL_KEYS, &fresh).await?
                }
            };
            if let Ok(set) = serde_json::from_slice::<PortalKeySet>(&stored) {
                return Ok(set);
            }
            // An older store: the raw key in plain. Seal it where it is (same key, so every
            // session already out stays valid).
            let sealed = PortalKeySet {
                keys: vec![PortalKey {
                    key: self.seal(&B64.encode(&stored), PORTAL_KEYS).await?,
                    until_ms: None,
                }],
            };
            let json = serde_json::to_vec(&sealed).map_err(HubError::backend)?;
            self.store.replace_key(PORTAL_KEYS, &stored, &json).await?;
        }
    }

    async fn new_portal_set(&self, mut older: Vec<PortalKey>) -> Result<Vec<u8>> {
        let fresh: [u8; 32] = rand::random();
        let mut keys = vec![PortalKey {
            key: self.seal(&B64.encode(fresh), PORTAL_KEYS).await?,
            until_ms: None,
        }];
        keys.append(&mut older);
        serde_json::to_vec(&PortalKeySet { keys }).map_err(HubError::backend)
    }

    /// A new portal key signs from now on; the one it replaces still verifies for `overlap_ms`
    /// (the longest a session lives), so sessions already out stay valid until they end. Keys
    /// whose overlap ended are dropped; the rest are sealed under the current data key.
    pub async fn rotate_portal_key(&self, now_ms: i64, overlap_ms: i64) -> Result<()> {
        loop {
            let set = self.portal_set().await?;
            let stored = self
                .store
                .key(PORTAL_KEYS)
                .await?
                .ok_or_else(|| HubError::backend("the portal's keys vanished"))?;
            let mut older = Vec::new();
            for key in set.keys {
                let until = key.until_ms.unwrap_or(now_ms + overlap_ms);
                if until > now_ms {
                    older.push(PortalKey {
                        key: self.reseal(&key.key, PORTAL_KEYS).await?,
                        until_ms: Some(until),
                    });
                }
            }
            let json = self.new_portal_set(older).await?;
            if self.store.replace_key(PORTAL_KEYS, &stored, &json).await? {
                break;
            }
        }
        *self.portal.lock().await = None;
        Ok(())
    }
}

fn data_key_name(id: &str) -> String {
    format!("data-key.{id}")
}

fn previous_name(id: &str) -> String {
    format!("data-key.{id}.previous")
}

fn aead_key(material: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, material)
        .map(LessSafeKey::new)
        .map_err(|_| HubError::backend("a data key is not 32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::master_key::LocalMasterKey;
    use crate::adapters::memory::MemoryStore;

    fn keyring(master: LocalMasterKey, store: &Arc<MemoryStore>) -> Keyring {
        Keyring::new(Arc::new(master), store.clone())
    }

    /// A keyring on the same master key with nothing opened yet (another process).
    fn keyring_sharing(keys: &Keyring, store: &Arc<MemoryStore>) -> Keyring {
        Keyring::new(keys.master.clone(), store.clone())
    }

    #[tokio::test]
    async fn a_sealed_secret_opens_only_where_it_was_sealed() {
        let store = Arc::new(MemoryStore::default());
        let keys = keyring(LocalMasterKey::generate(), &store);
        let sealed = keys.seal("whsec_c2VjcmV0", "sub_a").await.unwrap();
        assert!(sealed.is_sealed());
        assert!(!format!("{sealed:?}").contains("c2VjcmV0"));
        assert_eq!(keys.open(&sealed, "sub_a").await.unwrap(), "whsec_c2VjcmV0");
        assert!(
            keys.open(&sealed, "sub_b").await.is_err(),
            "bound to its item"
        );
        let mut damaged = sealed.0.clone();
        damaged.replace_range(damaged.len() - 3.., "AAA");
        assert!(keys.open(&Sealed(damaged), "sub_a").await.is_err());
        // A value from before sealing reads as it is.
        assert_eq!(
            keys.open(&Sealed::plain("old"), "sub_a").await.unwrap(),
            "old"
        );
    }

    #[tokio::test]
    async fn another_master_key_opens_nothing_and_writes_nothing() {
        let store = Arc::new(MemoryStore::default());
        let keys = keyring(LocalMasterKey::generate(), &store);
        let sealed = keys.seal("s", "sub_a").await.unwrap();
        let stranger = keyring(LocalMasterKey::generate(), &store);
        assert!(stranger.check().await.is_err());
        assert!(stranger.open(&sealed, "sub_a").await.is_err());
        assert!(keys.open(&sealed, "sub_a").await.is_ok());
    }

    #[tokio::test]
    async fn a_rotation_seals_under_a_new_key_and_the_old_still_opens() {
        let store = Arc::new(MemoryStore::default());
        let keys = keyring(LocalMasterKey::generate(), &store);
        let before = keys.seal("s", "sub_a").await.unwrap();
        // A later process (nothing opened yet) replaces the master key and re-seals.
        let keys = keyring_sharing(&keys, &store);
        let next_text = LocalMasterKey::generate_text();
        let next = LocalMasterKey::parse(&next_text).unwrap();
        let new_id = keys.rotate_data_key(Some(&next), false).await.unwrap();
        let after = keys.reseal(&before, "sub_a").await.unwrap();
        assert_ne!(before.data_key_id(), after.data_key_id());
        assert_eq!(after.data_key_id(), Some(new_id.as_str()));
        // A process on the new master key opens both; one on the old opens neither key.
        let fresh = keyring(LocalMasterKey::parse(&next_text).unwrap(), &store);
        assert_eq!(fresh.open(&before, "sub_a").await.unwrap(), "s");
        assert_eq!(fresh.open(&after, "sub_a").await.unwrap(), "s");
        let stale = keyring(LocalMasterKey::generate(), &store);
        assert!(stale.check().await.is_err());
    }

    #[tokio::test]
    async fn a_retired_portal_key_verifies_until_its_overlap_ends() {
        let store = Arc::new(MemoryStore::default());
        let keys = keyring(LocalMasterKey::generate(), &store);
        let first = keys.portal_keys(1_000, false).await.unwrap();
        keys.rotate_portal_key(1_000, 500).await.unwrap();
        let rotated = keys.portal_keys(1_000, false).await.unwrap();
        assert_ne!(rotated.signing, first.signing);
        assert!(rotated.verifying.contains(&first.signing));
        let later = keyring(LocalMasterKey::generate(), &store);
        assert!(
            later.portal_keys(1_600, false).await.is_err(),
            "another master key"
        );
        keys.rotate_portal_key(1_600, 500).await.unwrap();
        let after = keys.portal_keys(1_600, false).await.unwrap();
        assert!(
            !after.verifying.contains(&first.signing),
            "its overlap ended"
        );
        assert!(after.verifying.contains(&rotated.signing));
    }

    #[tokio::test]
    async fn a_plain_portal_key_is_sealed_in_place_and_keeps_its_sessions() {
        let store = Arc::new(MemoryStore::default());
        store.hub_key(PORTAL_KEYS, &[7u8; 32]).await.unwrap();
        let keys = keyring(LocalMasterKey::generate(), &store);
        assert_eq!(keys.portal_keys(0, false).await.unwrap().signing, [7u8; 32]);
        let stored = store.key(PORTAL_KEYS).await.unwrap().unwrap();
        assert!(!stored.windows(32).any(|w| w == [7u8; 32]));
        assert!(String::from_utf8_lossy(&stored).contains(SEALED_PREFIX));
    }
}
