//! Files the hub creates hold secrets or data about its customers: each is created readable
//! and writable by its owner alone (`0600`), never through a symlink and never over an
//! existing file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file the hub creates.
pub const PRIVATE_MODE: u32 = 0o600;

/// Creates `path` as a new file, `0600`: fails if anything is there already, a symlink
/// included (`O_CREAT | O_EXCL` never follows one).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_MODE)
        .open(path)
}

/// Makes an existing file `0600` (a file created by an older version, or by SQLite with the
/// process's umask); a missing file is fine.
pub fn make_private(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta)
            if meta.file_type().is_file() && meta.permissions().mode() & 0o777 != PRIVATE_MODE =>
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_MODE))
        }
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}
