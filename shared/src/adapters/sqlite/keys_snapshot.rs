//! The keys of a database file, read without opening it for writing: `serve` checks its master
//! key against them before it takes the file (a wrong key must leave the file byte for byte as
//! it was, and a writing open may checkpoint the WAL into it).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{HubError, Result};
use crate::ports::KeyStore;

/// The `hub_keys` table of a file as it is now, read-only.
pub struct KeysSnapshot {
    conn: std::sync::Mutex<Option<Connection>>,
}

impl KeysSnapshot {
    /// The keys of the database at `path`; an empty snapshot when there is no file yet (or no
    /// keys table: a database from before keys existed).
    pub fn read(path: &Path) -> std::result::Result<Self, String> {
        let has_data = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let conn = if has_data {
            let conn = super::schema::open_read_only(path)?;
            let has_table: bool = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'hub_keys'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n > 0)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            has_table.then_some(conn)
        } else {
            None
        };
        Ok(KeysSnapshot {
            conn: std::sync::Mutex::new(conn),
        })
    }
}

#[async_trait]
impl KeyStore for KeysSnapshot {
    async fn key(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let conn = self.conn.lock().expect("snapshot lock");
        let Some(conn) = conn.as_ref() else {
            return Ok(None);
        };
        conn.query_row("SELECT key FROM hub_keys WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| HubError::backend(format!("sqlite: {e}")))
    }

    async fn hub_key(&self, _name: &str, _fresh: &[u8]) -> Result<Vec<u8>> {
        Err(HubError::backend("a keys snapshot is read-only"))
    }

    async fn replace_key(&self, _name: &str, _expected: &[u8], _value: &[u8]) -> Result<bool> {
        Err(HubError::backend("a keys snapshot is read-only"))
    }
}
