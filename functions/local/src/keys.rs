//! The master key of the SQLite backend (where it comes from, when it is created) and
//! `webhook-hub keys rotate|seal` (docs/keys.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use hub::adapters::master_key::LocalMasterKey;
use hub::ports::MasterKey;
use hub::runtime::config::AwsResources;

use crate::cli::{Backend, DurabilityArg};

/// Where `serve` (SQLite) and `keys` find the master key.
#[derive(Debug, Clone, Args)]
pub struct MasterKeyOptions {
    /// The master key file that wraps the data keys stored secrets are sealed with (SQLite;
    /// default: the database's path with `.key` added, created 0600 on a first run)
    #[arg(long, env = "HUB_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The master key itself (`whmk_…`), instead of a key file
    #[arg(
        long,
        env = "HUB_MASTER_KEY",
        hide_env_values = true,
        conflicts_with = "key_file"
    )]
    pub master_key: Option<String>,
}

/// A master key for the database at `data`, and the key file to write once the database is
/// known to hold no sealed secret yet (a first run).
pub struct ResolvedKey {
    /// The key.
    pub key: Arc<dyn MasterKey>,
    /// A key file still to be written with the key's text (`None`: it came from a file or the
    /// environment).
    pending_file: Option<(PathBuf, String)>,
}

impl MasterKeyOptions {
    /// The key file `serve --data data` uses.
    pub fn key_file_for(&self, data: &Path) -> PathBuf {
        self.key_file.clone().unwrap_or_else(|| {
            let mut name = data.as_os_str().to_owned();
            name.push(".key");
            PathBuf::from(name)
        })
    }

    /// The master key: from the environment, else the key file; a missing key file gets a
    /// fresh key, written only by [`ResolvedKey::settle`] once the database proved to need one.
    pub fn resolve(&self, data: &Path) -> Result<ResolvedKey, String> {
        if let Some(text) = &self.master_key {
            let key = LocalMasterKey::parse(text).map_err(|e| format!("HUB_MASTER_KEY: {e}"))?;
            return Ok(ResolvedKey {
                key: Arc::new(key),
                pending_file: None,
            });
        }
        let path = self.key_file_for(data);
        Ok(match LocalMasterKey::from_file(&path)? {
            Some(key) => ResolvedKey {
                key: Arc::new(key),
                pending_file: None,
            },
            None => {
                let text = LocalMasterKey::generate_text();
                let key = LocalMasterKey::parse(&text).expect("a generated key parses");
                ResolvedKey {
                    key: Arc::new(key),
                    pending_file: Some((path, text)),
                }
            }
        })
    }
}

impl ResolvedKey {
    /// Checks the key against the database at `data` before the file is opened for writing (a
    /// read-only look at its keys): a database with sealed secrets and no key file, or a key
    /// that does not open its data key, is refused with the file untouched; a first run writes
    /// the new key file (`0600`).
    pub async fn settle(self, data: &Path) -> Result<(), String> {
        let snapshot = Arc::new(hub::adapters::sqlite::KeysSnapshot::read(data)?);
        let keys = hub::keyring::Keyring::new(self.key.clone(), snapshot);
        if let Some((path, text)) = self.pending_file {
            if keys.has_data_key().await.map_err(|e| e.to_string())? {
                return Err(format!(
                    "this database holds sealed secrets but the key file {} does not exist: \
                     start with the key file it was sealed with (--key-file, HUB_KEY_FILE) or \
                     HUB_MASTER_KEY; nothing was changed",
                    path.display()
                ));
            }
            LocalMasterKey::write_key_file(&path, &text)?;
            tracing::info!(key_file = %path.display(), "created a master key file (0600): back it up with the database; a backup opens with it only");
        }
        keys.check()
            .await
            .map_err(|e| format!("{e}; nothing was changed"))
    }
}

/// `keys` and what it does.
#[derive(Debug, Clone, Args)]
pub struct KeysOptions {
    #[command(subcommand)]
    pub action: KeysAction,
}

/// What to do with the keys.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Seal every secret under a new data key, and start a new portal key (sessions already
    /// out stay valid until they end); with --new-key-file or --new-kms-key-id, the data keys
    /// are wrapped by that master key from now on
    Rotate {
        #[command(flatten)]
        target: KeysTarget,
        /// A new master key file (created 0600 if missing): start `serve` with it afterwards
        #[arg(long, conflicts_with = "new_kms_key_id")]
        new_key_file: Option<PathBuf>,
        /// With --backend aws: the KMS key that wraps the data keys from now on
        #[arg(long)]
        new_kms_key_id: Option<String>,
        /// Keep the old master key's wrapping too, so processes still on it keep working
        /// (AWS: until every function runs with the new key)
        #[arg(long)]
        keep_old_key: bool,
    },
    /// Seal what an older version stored in plain (no new key)
    Seal {
        #[command(flatten)]
        target: KeysTarget,
    },
}

/// The store whose keys are rotated.
#[derive(Debug, Clone, Args)]
pub struct KeysTarget {
    /// sqlite (stop `serve` first: it holds the file) or aws
    #[arg(long, env = "HUB_BACKEND", value_enum, default_value = "sqlite")]
    pub backend: Backend,
    /// With --backend sqlite: the database file
    #[arg(long, env = "HUB_DATA", default_value = "webhook-hub.db")]
    pub data: PathBuf,
    #[command(flatten)]
    pub master: MasterKeyOptions,
    #[command(flatten)]
    pub aws: AwsResources,
}

/// Runs `keys`.
pub async fn keys(options: KeysOptions) -> Result<(), String> {
    let target = match &options.action {
        KeysAction::Rotate { target, .. } | KeysAction::Seal { target } => target,
    };
    let settings = hub::Settings::default();
    let (hub, database) = match target.backend {
        Backend::Sqlite => {
            if !target.data.exists() {
                return Err(format!("{} does not exist", target.data.display()));
            }
            let resolved = target.master.resolve(&target.data)?;
            let key = resolved.key.clone();
            resolved.settle(&target.data).await?;
            let (hub, queues) = hub::runtime::sqlite_hub(
                settings,
                key,
                &target.data,
                hub::adapters::sqlite::Durability::from(DurabilityArg::Full),
                target.aws.queue_visibility,
            )?;
            (hub, Some(queues.db))
        }
        Backend::Aws => {
            let hub = hub::runtime::aws_hub(settings, &target.aws)
                .await
                .map_err(|e| format!("AWS backend: {e}"))?;
            hub.keys.check().await.map_err(|e| e.to_string())?;
            (hub, None)
        }
        Backend::Memory => return Err("--backend memory keeps no keys".into()),
    };
    let outcome = match &options.action {
        KeysAction::Rotate {
            new_key_file,
            new_kms_key_id,
            keep_old_key,
            ..
        } => {
            let next: Option<Arc<dyn MasterKey>> = match (new_key_file, new_kms_key_id) {
                (Some(path), _) => Some(Arc::new(
                    new_key_file_at(path).map_err(|e| format!("--new-key-file: {e}"))?,
                )),
                (None, Some(id)) if target.backend == Backend::Aws => {
                    Some(Arc::new(hub::runtime::kms_master_key(id, None).await))
                }
                (None, Some(_)) => return Err("--new-kms-key-id needs --backend aws".into()),
                (None, None) => None,
            };
            let done = hub
                .rotate_keys(next.as_deref(), *keep_old_key)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "webhook-hub: secrets of {} subscriptions sealed again under data key {}; new portal key (older sessions valid until they end){}",
                done.resealed,
                done.data_key,
                match (new_key_file, new_kms_key_id) {
                    (Some(path), _) => format!(
                        "; the data keys are wrapped by {} now: start serve with --key-file {}",
                        path.display(),
                        path.display()
                    ),
                    (None, Some(id)) => format!("; the data keys are wrapped by KMS key {id} now"),
                    _ => String::new(),
                }
            );
            Ok(())
        }
        KeysAction::Seal { .. } => {
            let changed = hub.reseal_all().await.map_err(|e| e.to_string())?;
            println!("webhook-hub: sealed the secrets of {changed} subscriptions");
            Ok(())
        }
    };
    if let Some(db) = database {
        db.flush().await.map_err(|e| e.to_string())?;
    }
    outcome
}

/// The master key in `path`, created (0600) with a fresh key if missing.
fn new_key_file_at(path: &Path) -> Result<LocalMasterKey, String> {
    if let Some(key) = LocalMasterKey::from_file(path)? {
        return Ok(key);
    }
    let text = LocalMasterKey::generate_text();
    LocalMasterKey::write_key_file(path, &text)?;
    LocalMasterKey::parse(&text)
}
