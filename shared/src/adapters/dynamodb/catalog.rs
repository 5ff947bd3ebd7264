//! The event-type catalog on DynamoDB: one partition per account, read whole by one strongly
//! consistent query (docs/catalog.md).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | event type | `CAT#{account}` | `TYPE#{topic}` |
//! | catalog settings | `CAT#{account}` | `SETTINGS` |

use async_trait::async_trait;

use super::DynamoStore;
use super::keys::{account_part, get_s, key, s};
use crate::adapters::aws_error;
use crate::catalog::{CatalogSettings, EventType, StoredCatalog};
use crate::error::{HubError, Result};
use crate::ports::CatalogStore;

fn catalog_pk(account: &str) -> String {
    format!("CAT#{}", account_part(account))
}

const TYPE_SK_PREFIX: &str = "TYPE#";
const SETTINGS_SK: &str = "SETTINGS";

impl DynamoStore {
    async fn put_doc(&self, account: &str, sk: String, doc: String) -> Result<()> {
        let mut item = key(catalog_pk(account), sk);
        item.insert("doc".into(), s(doc));
        self.put(item).await
    }
}

#[async_trait]
impl CatalogStore for DynamoStore {
    async fn catalog(&self, account: &str) -> Result<StoredCatalog> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(catalog_pk(account)))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut catalog = StoredCatalog::default();
        while let Some(page) = pages.next().await {
            for item in page.map_err(aws_error)?.items.unwrap_or_default() {
                let (Some(sk), Some(doc)) = (get_s(&item, "sk"), get_s(&item, "doc")) else {
                    continue;
                };
                if sk == SETTINGS_SK {
                    catalog.settings = Some(serde_json::from_str(doc).map_err(HubError::backend)?);
                } else if sk.starts_with(TYPE_SK_PREFIX) {
                    catalog
                        .types
                        .push(serde_json::from_str(doc).map_err(HubError::backend)?);
                }
            }
        }
        Ok(catalog)
    }

    async fn put_event_type(&self, account: &str, event_type: &EventType) -> Result<()> {
        let doc = serde_json::to_string(event_type).map_err(HubError::backend)?;
        self.put_doc(
            account,
            format!("{TYPE_SK_PREFIX}{}", event_type.topic),
            doc,
        )
        .await
    }

    async fn put_catalog_settings(&self, account: &str, settings: &CatalogSettings) -> Result<()> {
        let doc = serde_json::to_string(settings).map_err(HubError::backend)?;
        self.put_doc(account, SETTINGS_SK.to_string(), doc).await
    }
}
