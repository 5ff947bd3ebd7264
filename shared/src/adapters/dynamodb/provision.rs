//! Provisioning: the table with the keys, indexes, TTL and stream `template.yaml` declares, for
//! emulators and first runs, and a bulk import for migrations and restores.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};

use super::keys::{index_items, key, n, sub_pk, subscription_attributes};
use super::{ACCOUNT_INDEX, DynamoStore, OWNER_INDEX, SWEEP_INDEX};
use crate::adapters::aws_error;
use crate::error::{HubError, Result};
use crate::model::Subscription;

impl DynamoStore {
    /// Creates the table (if missing) with the keys, indexes, TTL and stream (new images, for
    /// the odometer's fold) `template.yaml` declares.
    pub async fn ensure_table(&self) -> Result<()> {
        let attr = |name: &str, kind: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()
                .map_err(HubError::backend)
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(HubError::backend)
        };
        let index = |name: &str,
                     hash: &str,
                     range: &str,
                     projection: ProjectionType|
         -> Result<GlobalSecondaryIndex> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key_el(hash, KeyType::Hash)?)
                .key_schema(key_el(range, KeyType::Range)?)
                .projection(if projection == ProjectionType::Include {
                    Projection::builder()
                        .projection_type(projection)
                        .non_key_attributes("doc")
                        .build()
                } else {
                    Projection::builder().projection_type(projection).build()
                })
                .build()
                .map_err(HubError::backend)
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(HubError::backend)?,
            )
            .attribute_definitions(attr("pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi1pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi1sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi2pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("gsi2sk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sweep_bucket", ScalarAttributeType::S)?)
            .attribute_definitions(attr("sweep_at", ScalarAttributeType::N)?)
            .key_schema(key_el("pk", KeyType::Hash)?)
            .key_schema(key_el("sk", KeyType::Range)?)
            .global_secondary_indexes(index(
                ACCOUNT_INDEX,
                "gsi1pk",
                "gsi1sk",
                ProjectionType::All,
            )?)
            .global_secondary_indexes(index(OWNER_INDEX, "gsi2pk", "gsi2sk", ProjectionType::All)?)
            .global_secondary_indexes(index(
                SWEEP_INDEX,
                "sweep_bucket",
                "sweep_at",
                ProjectionType::Include,
            )?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) =>
            {
                // A table made by an earlier version may lack the index of bound subscriptions.
                let described = self
                    .client
                    .describe_table()
                    .table_name(&self.table)
                    .send()
                    .await
                    .map_err(aws_error)?;
                let has_owner_index = described
                    .table
                    .and_then(|t| t.global_secondary_indexes)
                    .unwrap_or_default()
                    .iter()
                    .any(|i| i.index_name() == Some(OWNER_INDEX));
                if !has_owner_index {
                    let owner_index = index(OWNER_INDEX, "gsi2pk", "gsi2sk", ProjectionType::All)?;
                    let create = CreateGlobalSecondaryIndexAction::builder()
                        .index_name(OWNER_INDEX)
                        .set_key_schema(Some(owner_index.key_schema().to_vec()))
                        .set_projection(owner_index.projection().cloned())
                        .build()
                        .map_err(HubError::backend)?;
                    self.client
                        .update_table()
                        .table_name(&self.table)
                        .attribute_definitions(attr("gsi2pk", ScalarAttributeType::S)?)
                        .attribute_definitions(attr("gsi2sk", ScalarAttributeType::S)?)
                        .global_secondary_index_updates(
                            GlobalSecondaryIndexUpdate::builder().create(create).build(),
                        )
                        .send()
                        .await
                        .map_err(aws_error)?;
                }
                return Ok(());
            }
            Err(err) => return Err(aws_error(err)),
        }
        for _ in 0..100 {
            let status = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(aws_error)?
                .table
                .and_then(|t| t.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(HubError::backend)?,
            )
            .send()
            .await
            .map_err(aws_error)?;
        Ok(())
    }

    /// Writes subscriptions with their indexes in batches, without version checks: a bulk
    /// import for migrations and restores (and for seeding large tables in tests).
    pub async fn import(&self, subs: &[Subscription]) -> Result<()> {
        let mut items = Vec::new();
        for sub in subs {
            let mut item = key(sub_pk(&sub.id), "SUB");
            item.extend(
                subscription_attributes(sub)?
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v)),
            );
            item.insert("odometer".into(), n(sub.odometer as i64));
            if let Some(at) = sub.last_delivered_ms {
                item.insert("last_delivered".into(), n(at));
            }
            items.push(item);
            items.extend(index_items(sub)?);
        }
        self.batch_put(items).await
    }
}
