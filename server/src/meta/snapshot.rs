//! A consistent copy of the embedded store while the server runs: every table read in one
//! read transaction (redb's snapshot isolation) and written to a new database file, for
//! `quire admin backup`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::{db, Meta, MetaError, ALL_TABLES};

impl Meta {
    /// Writes every table as of one moment to a new database at `to` (which must not
    /// exist); returns how many rows were copied.
    pub fn snapshot(&self, to: &Path) -> Result<u64, MetaError> {
        if to.exists() {
            return Err(MetaError::Exists(to.display().to_string()));
        }
        let read = self.db.begin_read().map_err(db)?;
        let copy = Database::create(to).map_err(db)?;
        let write = copy.begin_write().map_err(db)?;
        let mut rows = 0u64;
        for table in ALL_TABLES {
            let from = read.open_table(table).map_err(db)?;
            let mut into = write.open_table(table).map_err(db)?;
            for item in from.iter().map_err(db)? {
                let (k, v) = item.map_err(db)?;
                into.insert(k.value(), v.value()).map_err(db)?;
                rows += 1;
            }
        }
        write.commit().map_err(db)?;
        Ok(rows)
    }
}
