//! Admin page sessions (`admin_session`, migration 0010): who signed in to `/admin/`, under
//! which admin token label, with which CSRF token, until when.
//!
//! They live in the database, not in one process, so every management instance on the
//! database honours a sign-in made on another (a load balancer without affinity works) and a
//! restart signs nobody out. The caller hands in the SHA-256 of the session id, never the id
//! itself: the table alone signs nobody in. Expired rows are deleted when a session starts,
//! and at most [`MAX_ADMIN_SESSIONS`] are kept (the oldest go first).

use sqlx::Row;

use crate::{query_err, Storage, StorageError};

/// Most sessions kept at once.
pub const MAX_ADMIN_SESSIONS: i64 = 10_000;

/// A signed-in admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    /// The admin token's label: the user the audit log names.
    pub label: String,
    /// The token every POST form of this session must carry.
    pub csrf: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms; the session is over from then on.
    pub expires_at: i64,
}

impl Storage {
    /// Records a new session under the SHA-256 (hex) of its id; deletes expired sessions
    /// and, beyond [`MAX_ADMIN_SESSIONS`], the oldest.
    pub async fn start_admin_session(
        &self,
        id_sha256: &str,
        session: &AdminSession,
    ) -> Result<(), StorageError> {
        const DOING: &str = "starting an admin session";
        let mut tx = self.pool.begin().await.map_err(query_err(DOING))?;
        sqlx::query("DELETE FROM admin_session WHERE expires_at <= $1")
            .bind(session.created_at)
            .execute(&mut *tx)
            .await
            .map_err(query_err(DOING))?;
        sqlx::query(
            "INSERT INTO admin_session (id_sha256, label, csrf, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_sha256)
        .bind(&session.label)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(query_err(DOING))?;
        // The creation time of the newest session that may stay; older ones go. NULL (fewer
        // sessions than the cap) deletes nothing.
        sqlx::query(
            "DELETE FROM admin_session WHERE created_at < (SELECT created_at FROM admin_session \
             ORDER BY created_at DESC LIMIT 1 OFFSET $1)",
        )
        .bind(MAX_ADMIN_SESSIONS - 1)
        .execute(&mut *tx)
        .await
        .map_err(query_err(DOING))?;
        tx.commit().await.map_err(query_err(DOING))
    }

    /// The session whose id hashes to `id_sha256`, if it has not expired at `now`.
    pub async fn admin_session(
        &self,
        id_sha256: &str,
        now: i64,
    ) -> Result<Option<AdminSession>, StorageError> {
        const DOING: &str = "reading an admin session";
        let row = sqlx::query(
            "SELECT label, csrf, created_at, expires_at FROM admin_session \
             WHERE id_sha256 = $1 AND expires_at > $2",
        )
        .bind(id_sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err(DOING))?;
        row.map(|r| {
            Ok(AdminSession {
                label: r.try_get("label")?,
                csrf: r.try_get("csrf")?,
                created_at: r.try_get("created_at")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
        .map_err(query_err(DOING))
    }

    /// Ends the session (sign-out); nothing happens if it is gone already.
    pub async fn end_admin_session(&self, id_sha256: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM admin_session WHERE id_sha256 = $1")
            .bind(id_sha256)
            .execute(&self.pool)
            .await
            .map_err(query_err("ending an admin session"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(label: &str, created_at: i64, ttl: i64) -> AdminSession {
        AdminSession {
            label: label.to_owned(),
            csrf: format!("csrf-{label}"),
            created_at,
            expires_at: created_at + ttl,
        }
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_hash_until_it_expires_or_ends() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("vmr-sessions-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let storage = Storage::open(&url, 2).await.expect("open sqlite");
        let alice = session("alice", 1_000, 500);
        storage
            .start_admin_session("h-alice", &alice)
            .await
            .expect("start");
        // A second handle on the same file: another instance sees the sign-in.
        let other = Storage::open(&url, 2).await.expect("open again");
        assert_eq!(
            other.admin_session("h-alice", 1_499).await.expect("read"),
            Some(alice.clone())
        );
        assert_eq!(
            other.admin_session("h-bob", 1_200).await.expect("read"),
            None
        );
        assert_eq!(
            other.admin_session("h-alice", 1_500).await.expect("read"),
            None
        );
        // Ended on one instance, gone on the other.
        storage
            .start_admin_session("h-carol", &session("carol", 1_000, 10_000))
            .await
            .expect("start");
        other.end_admin_session("h-carol").await.expect("end");
        other.end_admin_session("h-carol").await.expect("end again");
        assert_eq!(
            storage.admin_session("h-carol", 1_100).await.expect("read"),
            None
        );
        // Starting a session deletes the expired ones.
        storage
            .start_admin_session("h-dave", &session("dave", 2_000, 500))
            .await
            .expect("start");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_session")
            .fetch_one(&storage.pool)
            .await
            .expect("count");
        assert_eq!(rows, 1, "alice's expired session was not deleted");
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn beyond_the_cap_the_oldest_sessions_go() {
        sqlx::any::install_default_drivers();
        let path = std::env::temp_dir().join(format!("vmr-sessions-{}.db", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", path.display());
        let storage = Storage::open(&url, 2).await.expect("open sqlite");
        let cap = MAX_ADMIN_SESSIONS;
        let mut tx = storage.pool.begin().await.expect("begin");
        for i in 0..cap {
            sqlx::query(
                "INSERT INTO admin_session (id_sha256, label, csrf, created_at, expires_at) \
                 VALUES ($1, 'x', 'y', $2, $3)",
            )
            .bind(format!("h{i}"))
            .bind(1_000 + i)
            .bind(1_000_000_000 + i)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
        storage
            .start_admin_session("h-new", &session("new", 1_000 + cap, 1_000_000))
            .await
            .expect("start");
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM admin_session")
            .fetch_one(&storage.pool)
            .await
            .expect("count");
        assert_eq!(rows, cap);
        assert!(storage
            .admin_session("h0", 2_000)
            .await
            .expect("read")
            .is_none());
        assert!(storage
            .admin_session("h1", 2_000)
            .await
            .expect("read")
            .is_some());
        assert!(storage
            .admin_session("h-new", 2_000)
            .await
            .expect("read")
            .is_some());
        let _ = std::fs::remove_file(&path);
    }
}
