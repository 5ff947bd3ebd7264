//! Where the services meet the [`Keyring`](crate::keyring::Keyring): a secret is sealed the
//! moment it is set and opened only where it is used (signing, the secret endpoint, receiver
//! credentials), bound to its subscription's id.

use crate::context::Hub;
use crate::error::Result;
use crate::keyring::Sealed;
use crate::model::{ReceiverAuth, RetiringSecret, Subscription};
use crate::signing::SigningAlgorithm;

/// A signing secret as it is set: sealed for the store, with what reads and the receiver see.
pub struct NewSecret {
    /// The secret, sealed.
    pub sealed: Sealed,
    /// The `whpk_` public key of an Ed25519 key (kept in the clear).
    pub public_key: Option<String>,
    /// What the receiver verifies with: the HMAC secret, or the public key (shown once).
    pub shown: String,
}

/// The opened credentials of one delivery attempt.
pub struct OpenCredentials {
    /// Every secret signing at this moment, current first.
    pub signing: Vec<String>,
    /// The one secret a single-signature legacy header is made with (`logi`, `pdk`; `None`
    /// for the standard scheme, which sends no such header).
    pub legacy: Option<String>,
    /// The receiver's credentials.
    pub receiver_auth: Option<ReceiverAuth>,
}

impl Hub {
    /// `plain` as `sub_id`'s signing secret.
    pub async fn seal_signing_secret(&self, sub_id: &str, plain: &str) -> Result<NewSecret> {
        let shown = crate::signing::verification_key(plain);
        let public_key =
            (SigningAlgorithm::of(plain) == SigningAlgorithm::Ed25519).then(|| shown.clone());
        Ok(NewSecret {
            sealed: self.keys.seal(plain, sub_id).await?,
            public_key,
            shown,
        })
    }

    /// Receiver credentials as `sub_id` stores them.
    pub async fn seal_receiver_auth(
        &self,
        sub_id: &str,
        auth: &ReceiverAuth,
    ) -> Result<ReceiverAuth<Sealed>> {
        Ok(auth.with_secret(self.keys.seal(auth.secret(), sub_id).await?))
    }

    /// What `sub`'s receiver verifies with: its public key (Ed25519), or its HMAC secret,
    /// opened.
    pub async fn verification_key(&self, sub: &Subscription) -> Result<String> {
        match sub.public_key() {
            Some(public) => Ok(public),
            None => self.keys.open(&sub.secret, &sub.id).await,
        }
    }

    /// What one attempt at `now_ms` signs and authenticates with, opened.
    pub async fn open_credentials(
        &self,
        sub: &Subscription,
        now_ms: i64,
    ) -> Result<OpenCredentials> {
        let mut signing = Vec::new();
        for sealed in sub.signing_secrets(now_ms) {
            signing.push(self.keys.open(sealed, &sub.id).await?);
        }
        let legacy = match sub.signature_scheme {
            crate::signing::SignatureScheme::Standard => None,
            _ => Some(self.keys.open(sub.legacy_secret(now_ms), &sub.id).await?),
        };
        let receiver_auth = match &sub.receiver_auth {
            Some(auth) => Some(auth.with_secret(self.keys.open(auth.secret(), &sub.id).await?)),
            None => None,
        };
        Ok(OpenCredentials {
            signing,
            legacy,
            receiver_auth,
        })
    }

    /// Seals every secret of `sub` under the current data key (plain ones from an older store,
    /// and those sealed under an earlier data key); `true` when anything changed. Every write of
    /// a subscribe, a change or a rotation passes through it, and `keys rotate` / `keys seal`
    /// for the rest.
    pub async fn reseal_subscription(&self, sub: &mut Subscription) -> Result<bool> {
        let id = sub.id.clone();
        let mut changed = false;
        let mut reseal = async |sealed: &mut Sealed| -> Result<()> {
            let fresh = self.keys.reseal(sealed, &id).await?;
            if fresh != *sealed {
                *sealed = fresh;
                changed = true;
            }
            Ok(())
        };
        // Derived while a plain Ed25519 key can still be read without opening anything.
        let public_key = sub.public_key();
        reseal(&mut sub.secret).await?;
        for RetiringSecret { secret, .. } in &mut sub.retiring_secrets {
            reseal(secret).await?;
        }
        if let Some(auth) = &mut sub.receiver_auth {
            let mut secret = auth.secret().clone();
            reseal(&mut secret).await?;
            *auth = auth.with_secret(secret);
        }
        sub.public_key = public_key;
        Ok(changed)
    }
}

/// What a key rotation did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRotation {
    /// The data key secrets are sealed under from now on.
    pub data_key: String,
    /// Subscriptions whose secrets were sealed again under it.
    pub resealed: usize,
}

impl Hub {
    /// `webhook-hub keys rotate`: a new data key (wrapped by `next_master` when the master key
    /// is being replaced, see [`crate::keyring::Keyring::rotate_data_key`]), every stored secret
    /// sealed again under it, and a new portal key (sessions already out stay valid until they
    /// end).
    pub async fn rotate_keys(
        &self,
        next_master: Option<&dyn crate::ports::MasterKey>,
        keep_old: bool,
    ) -> Result<KeyRotation> {
        let data_key = self.keys.rotate_data_key(next_master, keep_old).await?;
        let resealed = self.reseal_all().await?;
        self.rotate_portal_key().await?;
        Ok(KeyRotation { data_key, resealed })
    }

    /// Seals every stored secret under the current data key (plain ones from an older store
    /// included): `webhook-hub keys seal`, and the second step of a rotation. Returns how many
    /// subscriptions changed.
    pub async fn reseal_all(&self) -> Result<usize> {
        let mut changed = 0;
        for id in self.every_subscription_id().await? {
            loop {
                let Some(stored) = self.store.get(&id).await? else {
                    break;
                };
                let mut sub = stored.clone();
                if !self.reseal_subscription(&mut sub).await? {
                    break;
                }
                sub.version += 1;
                match self.store.save(&sub, Some(&stored)).await {
                    Ok(()) => {
                        changed += 1;
                        break;
                    }
                    // Changed meanwhile: read it again and seal what is there now.
                    Err(crate::HubError::Conflict) => continue,
                    Err(err) => return Err(err),
                }
            }
        }
        // The portal's keys are sealed in place when first read.
        self.keys.portal_keys(self.now_ms(), true).await?;
        Ok(changed)
    }

    /// The id of every stored subscription: each is due for the sweeper within one lease of
    /// now (its lapse), or overdue, so the sweep index finds them all without a table scan.
    async fn every_subscription_id(&self) -> Result<Vec<String>> {
        let now = self.now_ms();
        let ahead = now + (crate::model::MAX_LEASE_SECS + 86_400) * 1000;
        let mut ids: Vec<String> = Vec::new();
        for at in [now, ahead] {
            ids.extend(
                self.store
                    .due_for_sweep(at)
                    .await?
                    .into_iter()
                    .map(|s| s.id),
            );
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
