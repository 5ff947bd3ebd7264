//! Benchmark and test instrumentation: an AWS SDK interceptor that counts calls by operation.

/// Counts the AWS API calls made through a client, by operation, and the items its queries
/// read: an SDK interceptor, so no call can be missed. The cost figures and the sweeper's read
/// bound are computed from it. Clone it into the clients to count (see
/// [`crate::runtime::aws_clients`]).
#[derive(Debug, Default, Clone)]
pub struct CallCounter {
    inner: std::sync::Arc<CounterState>,
}

#[derive(Debug, Default)]
struct CounterState {
    calls: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    items_read: std::sync::atomic::AtomicU64,
}

impl CallCounter {
    /// Calls so far, by operation (`Query`, `SendMessageBatch`, …).
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
        self.inner
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls of one operation so far.
    pub fn count(&self, operation: &str) -> u64 {
        self.snapshot().get(operation).copied().unwrap_or(0)
    }

    /// Items returned by DynamoDB queries so far.
    pub fn items_read(&self) -> u64 {
        self.inner
            .items_read
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl aws_sdk_dynamodb::config::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "webhook-hub call counter"
    }

    fn read_before_serialization(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Some(meta) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() {
            let mut calls = self.inner.calls.lock().unwrap_or_else(|p| p.into_inner());
            *calls.entry(meta.name().to_string()).or_default() += 1;
        }
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::AfterDeserializationInterceptorContextRef<
            '_,
        >,
        _components: &aws_sdk_dynamodb::config::RuntimeComponents,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Ok(output) = context.output_or_error()
            && let Some(query) =
                output.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>()
        {
            self.inner
                .items_read
                .fetch_add(query.count as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}
