//! The `integration_secret` table: each integration's tag key when the
//! configuration names none (generated once, shared by every management
//! instance through the database).

use sqlx::Row;

use crate::{query_err, Storage, StorageError};

impl Storage {
    /// The integration's tag key, creating `candidate` as the key if none is
    /// stored yet. Concurrent first starts agree on one key.
    pub async fn tag_key(
        &self,
        integration: &str,
        candidate: &str,
        now: i64,
    ) -> Result<String, StorageError> {
        sqlx::query(
            "INSERT INTO integration_secret (integration, tag_key, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (integration) DO NOTHING",
        )
        .bind(integration)
        .bind(candidate)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("storing the tag key"))?;
        let row = sqlx::query("SELECT tag_key FROM integration_secret WHERE integration = $1")
            .bind(integration)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading the tag key"))?;
        row.try_get("tag_key")
            .map_err(query_err("reading the tag key"))
    }
}
