//! `webhook-hub catalog export`: an account's event-type catalog as the OpenAPI 3.1 document
//! receivers generate code from (docs/catalog.md), read straight from the store: beside a
//! running `serve` (SQLite is read without opening it for writing) or from the AWS table.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use hub::runtime::config::AwsResources;

use crate::cli::Backend;

/// `catalog` and what it does.
#[derive(Debug, Clone, Args)]
pub struct CatalogOptions {
    #[command(subcommand)]
    pub action: CatalogAction,
}

/// What to do with the catalog.
#[derive(Debug, Clone, Subcommand)]
pub enum CatalogAction {
    /// Print the account's catalog as an OpenAPI 3.1 document (its `webhooks`: every live
    /// event type's delivery, signature headers and examples)
    Export {
        /// The account whose catalog it is
        #[arg(long)]
        account: String,
        /// Write it to this file instead of standard output
        #[arg(long)]
        out: Option<PathBuf>,
        /// sqlite or aws
        #[arg(long, env = "HUB_BACKEND", value_enum, default_value = "sqlite")]
        backend: Backend,
        /// With --backend sqlite: the database file
        #[arg(long, env = "HUB_DATA", default_value = "webhook-hub.db")]
        data: PathBuf,
        #[command(flatten)]
        aws: AwsResources,
    },
}

/// Runs `catalog`.
pub async fn catalog(options: CatalogOptions) -> Result<(), String> {
    let CatalogAction::Export {
        account,
        out,
        backend,
        data,
        aws,
    } = options.action;
    let stored = match backend {
        Backend::Sqlite => {
            if !data.exists() {
                return Err(format!("{} does not exist", data.display()));
            }
            hub::adapters::sqlite::catalog_snapshot(&data, &account)?
        }
        Backend::Aws => hub::runtime::aws_catalog(&aws, &account)
            .await
            .map_err(|e| format!("AWS backend: {e}"))?,
        Backend::Memory => return Err("--backend memory keeps no catalog between runs".into()),
    };
    let document = hub::catalog::openapi_document(&account, &stored.types);
    let text = serde_json::to_string_pretty(&document).expect("JSON values serialize") + "\n";
    match out {
        Some(path) => std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
