//! Which file a `sqlite:` URL opens, read from the URL alone — the way sqlx reads it, and then
//! SQLite — so the file can be examined without opening it. Opening is no way to find out: it
//! fails at times (no `-shm` file yet under a read-only link, a directory left where the `-wal`
//! file goes), and opening hoopbot's own database under another name gives it a second `-wal`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a `sqlite:` URL opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteTarget {
    /// An in-memory database: no file.
    Memory,
    /// A private temporary file SQLite makes and deletes itself (an empty file name).
    Temporary,
    /// A file, relative paths taken from the current directory as SQLite takes them.
    File(PathBuf),
}

/// A file's identity: its device and inode, the same for every path, symlink and hard link to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub device: u64,
    pub inode: u64,
}

impl FileId {
    /// The identity of the file at `path` (symlinks followed), from its metadata: the file is not
    /// opened. `Ok(None)` when there is no such file.
    pub fn of(path: &Path) -> std::io::Result<Option<FileId>> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(Some(FileId {
                device: meta.dev(),
                inode: meta.ino(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What `url` opens, or why that cannot be told (a URL sqlx or SQLite would refuse to open).
pub fn sqlite_target(url: &str) -> Result<SqliteTarget, String> {
    // sqlx: `SqliteConnectOptions::from_str`.
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (database, params) = match rest.split_once('?') {
        Some((database, params)) => (database, Some(params)),
        None => (rest, None),
    };
    if database == ":memory:" {
        return Ok(SqliteTarget::Memory);
    }
    let name = percent_decode(database.as_bytes());
    let mut wrapped = false;
    for (key, value) in form_urlencoded(params.unwrap_or_default())? {
        match (key.as_str(), value.as_str()) {
            ("mode", "memory") => return Ok(SqliteTarget::Memory),
            ("mode", "ro" | "rw" | "rwc")
            | ("cache", "private" | "shared")
            | ("immutable", "false" | "0") => {}
            // sqlx then hands SQLite a `file:` URI whose path is the name, percent-encoded whole:
            // the name is taken literally.
            ("immutable", "true" | "1") | ("vfs", _) => wrapped = true,
            _ => return Err(format!("sqlx does not take the parameter {key}={value}")),
        }
    }
    let path = match name.strip_prefix(b"file:") {
        // SQLite reads a name starting `file:` as a URI of its own (sqlx opens with SQLITE_OPEN_URI).
        Some(uri) if !wrapped => match sqlite_uri(uri)? {
            (_, true) => return Ok(SqliteTarget::Memory),
            (path, false) => path,
        },
        _ => name,
    };
    Ok(match path.as_slice() {
        b":memory:" => SqliteTarget::Memory,
        b"" => SqliteTarget::Temporary,
        _ => SqliteTarget::File(PathBuf::from(OsString::from_vec(path))),
    })
}

/// The path of a SQLite URI (what follows `file:`) and whether it asks for an in-memory
/// database (`mode=memory`), as SQLite's `sqlite3ParseUri` reads it: an authority, if any, must
/// be empty or `localhost`; `%HH` is decoded, and `%00` drops the rest of the part it is in;
/// `?` starts the parameters, `&` and `=` separate them, `#` ends it all.
fn sqlite_uri(uri: &[u8]) -> Result<(Vec<u8>, bool), String> {
    let mut rest = uri;
    if let Some(after) = rest.strip_prefix(b"//") {
        let end = after.iter().position(|&c| c == b'/').unwrap_or(after.len());
        let authority = &after[..end];
        if !authority.is_empty() && authority != b"localhost" {
            return Err(format!(
                "SQLite refuses the URI authority {:?}",
                String::from_utf8_lossy(authority)
            ));
        }
        rest = &after[end..];
    }
    let rest = rest.split(|&c| c == b'#').next().unwrap_or_default();
    let (path, query) = match rest.iter().position(|&c| c == b'?') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let mut memory = false;
    for param in query.split(|&c| c == b'&') {
        let (key, value) = match param.iter().position(|&c| c == b'=') {
            Some(at) => (&param[..at], &param[at + 1..]),
            None => (param, &b""[..]),
        };
        let (key, value) = (uri_part(key), uri_part(value));
        match (key.as_slice(), value.as_slice()) {
            (b"mode", b"memory") => memory = true,
            (b"mode", b"ro" | b"rw" | b"rwc") => {}
            (b"mode", other) => {
                return Err(format!(
                    "SQLite has no access mode {:?}",
                    String::from_utf8_lossy(other)
                ));
            }
            _ => {}
        }
    }
    Ok((uri_part(path), memory))
}

/// One part of a SQLite URI decoded: `%HH` becomes its byte, and `%00` ends the part (SQLite
/// reads it as a C string).
fn uri_part(part: &[u8]) -> Vec<u8> {
    let mut decoded = percent_decode(part);
    if let Some(end) = decoded.iter().position(|&b| b == 0) {
        decoded.truncate(end);
    }
    decoded
}

fn hex(digit: u8) -> u8 {
    (digit as char).to_digit(16).unwrap_or_default() as u8
}

/// `%HH` decoded, as the `percent-encoding` crate sqlx uses does it (no `+`, `%00` kept).
fn percent_decode(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i..] {
            [b'%', high, low, ..] if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                out.push(hex(high) << 4 | hex(low));
                i += 3;
            }
            [c, ..] => {
                out.push(c);
                i += 1;
            }
            [] => unreachable!("i < len"),
        }
    }
    out
}

/// Query parameters decoded as `url::form_urlencoded::parse` decodes them for sqlx.
fn form_urlencoded(query: &str) -> Result<Vec<(String, String)>, String> {
    serde_urlencoded::from_str(query).map_err(|e| format!("unreadable parameters: {e}"))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::{ConnectOptions, Connection};

    use super::{FileId, SqliteTarget, sqlite_target};

    /// The file SQLite itself opens for `url` (`None` for an in-memory or temporary database).
    async fn opened_by_sqlite(url: &str) -> Option<FileId> {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .unwrap()
            .disable_statement_logging()
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let file: String =
            sqlx::query_scalar("select file from pragma_database_list where name = 'main'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.unwrap();
        (!file.is_empty()).then(|| FileId::of(file.as_ref()).unwrap().unwrap())
    }

    /// Read from the URL alone, the file is the one SQLite opens, in every spelling sqlx and
    /// SQLite take.
    #[tokio::test]
    async fn the_file_read_from_a_url_is_the_one_sqlite_opens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let mut conn =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
                .await
                .unwrap();
        sqlx::query("create table t (x)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let db = db.display().to_string();
        let encoded = db.replace('a', "%61").replace('/', "%2F");
        let on_disk = [
            format!("sqlite://{db}"),
            format!("sqlite:{db}"),
            format!("sqlite://{db}?mode=ro&cache=private"),
            format!("sqlite://{}", link.display()),
            format!("sqlite://{encoded}"),
            format!("sqlite://file:{db}"),
            format!("sqlite://file://localhost{db}"),
            format!("sqlite://file://{db}"),
            format!("sqlite://file:{encoded}"),
            format!("sqlite://file:{db}%3Fmode=ro&x=1"),
            format!("sqlite://file:{db}%3Fvfs=unix-none"),
            format!("sqlite://file:{db}%2300"),
            format!("sqlite://file:{db}%2500ignored%3Fmode=ro"),
            format!("sqlite://{db}?immutable=true"),
            format!("sqlite://{db}?vfs=unix-dotfile"),
            format!("sqlite:sqlite://{db}"),
        ];
        for url in &on_disk {
            let read = match sqlite_target(url) {
                Ok(SqliteTarget::File(path)) => FileId::of(&path).unwrap(),
                other => panic!("{url}: {other:?}"),
            };
            assert!(read.is_some(), "{url}");
            assert_eq!(read, opened_by_sqlite(url).await, "{url}");
        }
        for url in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://%3Amemory%3A",
            "sqlite://?mode=memory",
            "sqlite://file::memory:",
            "sqlite://file:x.db%3Fmode=memory",
            "sqlite://file:x.db%3Fmode=memor%2579",
        ] {
            assert_eq!(sqlite_target(url), Ok(SqliteTarget::Memory), "{url}");
            assert_eq!(opened_by_sqlite(url).await, None, "{url}");
        }
        for url in ["sqlite://", "sqlite://file:", "sqlite://file:%3Fx=1"] {
            assert_eq!(sqlite_target(url), Ok(SqliteTarget::Temporary), "{url}");
            assert_eq!(opened_by_sqlite(url).await, None, "{url}");
        }
    }

    /// A URL sqlx or SQLite would refuse names no file that could be told: said, not guessed.
    #[test]
    fn a_url_sqlite_would_refuse_is_an_error() {
        for url in [
            "sqlite://a.db?bogus=1",
            "sqlite://a.db?mode=wr",
            "sqlite://file://elsewhere/a.db",
            "sqlite://file:a.db%3Fmode=wr",
        ] {
            assert!(
                sqlite_target(url).is_err(),
                "{url}: {:?}",
                sqlite_target(url)
            );
        }
    }
}
