//! The `deferral_nonce` table: TOK statements management has accepted, each
//! for one meeting only.

use sqlx::Row;

use crate::{query_err, Storage, StorageError};

impl Storage {
    /// Accepts a deferral statement's `nonce` for the meeting `meeting_uid`:
    /// `true` when the nonce is new (recorded now) or was already accepted for
    /// this same meeting (a re-run after a crash), `false` when another meeting
    /// used it first (a replayed or copied TOK).
    pub async fn accept_deferral_nonce(
        &self,
        nonce: &str,
        integration: &str,
        meeting_uid: &str,
        requester_id: &str,
        now: i64,
    ) -> Result<bool, StorageError> {
        sqlx::query(
            "INSERT INTO deferral_nonce (nonce, integration, meeting_uid, requester_id, accepted_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(integration)
        .bind(meeting_uid)
        .bind(requester_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(query_err("recording a deferral nonce"))?;
        let row = sqlx::query("SELECT meeting_uid FROM deferral_nonce WHERE nonce = $1")
            .bind(nonce)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("reading a deferral nonce"))?;
        let owner: String = row
            .try_get("meeting_uid")
            .map_err(query_err("reading a deferral nonce"))?;
        Ok(owner == meeting_uid)
    }
}
