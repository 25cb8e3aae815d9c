//! The `sync_state` table: the EWS `SyncFolderItems` state of each watched
//! folder, per integration, so the mailbox processor resumes where it left
//! off after a restart (and starts over after [`Storage::clear_sync_states`]).

use sqlx::Row;

use crate::{query_err, Storage, StorageError};

impl Storage {
    /// The stored sync state of `folder` (a distinguished folder name or a
    /// folder id), if any.
    pub async fn sync_state(
        &self,
        integration: &str,
        folder: &str,
    ) -> Result<Option<String>, StorageError> {
        const DOING: &str = "reading a folder sync state";
        let row =
            sqlx::query("SELECT state FROM sync_state WHERE integration = $1 AND folder = $2")
                .bind(integration)
                .bind(folder)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err(DOING))?;
        row.map(|r| r.try_get("state"))
            .transpose()
            .map_err(query_err(DOING))
    }

    /// Stores (replacing) the sync state of `folder`.
    pub async fn save_sync_state(
        &self,
        integration: &str,
        folder: &str,
        state: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO sync_state (integration, folder, state, updated_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (integration, folder) DO UPDATE SET \
             state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(integration)
        .bind(folder)
        .bind(state)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("saving a folder sync state"))?;
        Ok(())
    }

    /// Forgets every sync state of the integration (the next sync starts
    /// from scratch).
    pub async fn clear_sync_states(&self, integration: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM sync_state WHERE integration = $1")
            .bind(integration)
            .execute(&self.pool)
            .await
            .map_err(query_err("clearing folder sync states"))?;
        Ok(())
    }
}
