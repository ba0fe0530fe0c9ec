//! The admin secret: `--admin-token`, or else one the server creates on its
//! first start in `<data dir>/admin-token` (mode 0600) and reuses after, so
//! no install is ever open by default. The file's path is logged, never the
//! token; the CLI reads the same file when it runs beside the server.
//!
//! Nodes sharing PostgreSQL share the token too ([`resolve_shared`]): the
//! database keeps the SHA-256 of the first node's, and every node accepts it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::db::postgres::PostgresDatabase;
use crate::domain::{Secret, Token, TokenHash};

pub const FILE_NAME: &str = "admin-token";
/// Where a node on a shared database moves a token file the others do not accept.
pub const REJECTED_FILE_NAME: &str = "admin-token.rejected";

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The configured token, or the data directory's, created if missing.
pub fn resolve(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<Secret> {
    if let Some(token) = configured {
        return Ok(Secret::new(token));
    }
    let path = path_in(data_dir);
    match read(&path)? {
        Some(token) => {
            tracing::info!(path = %path.display(), "admin token read from file");
            Ok(Secret::new(&token))
        }
        None => {
            let token = Token::generate();
            create(&path, token.expose())?;
            tracing::info!(path = %path.display(), "admin token created; read it from this file");
            Ok(Secret::new(token.expose()))
        }
    }
}

/// As [`resolve`], for a node on a shared database: without a configured
/// token, the first node to start registers the hash of its data
/// directory's token (made if missing), and every node accepts that one.
/// Only nodes whose file holds it can show it; the others say where it is.
/// A configured token is registered in place of any other, with a warning
/// when it differs: nodes started with different tokens each accept only
/// their own, which an operator must hear of.
pub async fn resolve_shared(
    configured: Option<&str>,
    data_dir: &Path,
    db: &PostgresDatabase,
) -> anyhow::Result<Secret> {
    if let Some(token) = configured {
        let hash = TokenHash::of(token);
        let replaced = db.register_admin_token(&hash).await?;
        if replaced.is_some_and(|previous| previous != hash) {
            tracing::warn!(
                "this node's --admin-token replaces a different token registered on this \
                 database: the nodes started with that one (or without --admin-token) accept \
                 only it until they restart; give every node the same --admin-token"
            );
        }
        return Ok(Secret::new(token));
    }
    let path = path_in(data_dir);
    let (proposed, made) = match read(&path)? {
        Some(token) => (TokenHash::of(&token), false),
        None => {
            // On disk before it is registered: a token in force always has a holder.
            let token = Token::generate();
            create(&path, token.expose())?;
            (token.hash(), true)
        }
    };
    let shared = match db.share_admin_token(&proposed).await {
        Ok(shared) => shared,
        Err(e) => {
            if made {
                // Never registered: a later start makes another.
                let _ = std::fs::remove_file(&path);
            }
            return Err(e);
        }
    };
    if shared == proposed {
        tracing::info!(
            path = %path.display(),
            "admin token {}; every node on this database accepts it (keep this file)",
            if made { "created; read it from this file" } else { "read from file" }
        );
    } else if made {
        std::fs::remove_file(&path).with_context(|| {
            format!("removing {}, which lost to another node's", path.display())
        })?;
        tracing::info!(
            "admin token: the one another node on this database registered first; \
             read it from that node's admin-token file (this node keeps no copy)"
        );
    } else {
        // Out of the way, so the CLI beside this node does not send a token that fails.
        let rejected = data_dir.join(REJECTED_FILE_NAME);
        std::fs::rename(&path, &rejected)
            .with_context(|| format!("moving {} aside", path.display()))?;
        tracing::warn!(
            path = %rejected.display(),
            "this node's admin token is not accepted, and its file was moved aside: the nodes \
             on this database share the token of the node that registered first (in that \
             node's admin-token file)"
        );
    }
    Ok(Secret::from_hash(shared))
}

/// The token in `path`, if the file exists; a blank file is an error.
pub fn read(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            anyhow::bail!(
                "{} is empty: delete it to have a new token made, or write one in it",
                path.display()
            )
        }
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn create(path: &Path, token: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{token}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    // The file's name too must survive a crash: the token may be registered next.
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = resolve(None, dir.path()).unwrap();
        let path = path_in(dir.path());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let token = read(&path).unwrap().unwrap();
        assert!(first.matches(&token));
        let again = resolve(None, dir.path()).unwrap();
        assert!(again.matches(&token));
        assert!(
            resolve(Some("configured"), dir.path())
                .unwrap()
                .matches("configured")
        );
        std::fs::write(&path, "  \n").unwrap();
        assert!(resolve(None, dir.path()).is_err());
    }
}
