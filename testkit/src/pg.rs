//! Fresh PostgreSQL databases.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::Connection as _;

/// Where test databases are created, unless `VEXIL_TEST_PG_URL` says otherwise: the URL of an
/// existing database on a server that lets this user create databases (trust auth).
pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server test databases are created on: `VEXIL_TEST_PG_URL`, else [`PG_ADMIN_URL`].
pub fn admin_url() -> String {
    std::env::var("VEXIL_TEST_PG_URL").unwrap_or_else(|_| PG_ADMIN_URL.to_string())
}

/// A fresh PostgreSQL database, dropped (with its connections) by [`PgDb::destroy`], or when this
/// is dropped.
#[derive(Debug)]
pub struct PgDb {
    name: String,
    admin_url: String,
    destroyed: bool,
}

async fn connect(url: &str) -> Result<sqlx::PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// `CREATE DATABASE name`, retried: concurrent ones can collide on `template1`.
async fn create_database(conn: &mut sqlx::PgConnection, name: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        let sql = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
        match sqlx::raw_sql(sql).execute(&mut *conn).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = e.to_string();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(format!("CREATE DATABASE {name}: {last}"))
}

impl PgDb {
    /// A fresh database named `PREFIX_RANDOM` on the test server ([`admin_url`]). When the server
    /// is unreachable: `None` after a notice, or a panic under CI (see [`crate::skip`]).
    pub async fn create(prefix: &str) -> Option<PgDb> {
        let admin_url = admin_url();
        let mut conn = match connect(&admin_url).await {
            Ok(c) => c,
            Err(why) => {
                crate::skip(format!("PostgreSQL at {admin_url} is unreachable ({why})"));
                return None;
            }
        };
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        if let Err(e) = create_database(&mut conn, &name).await {
            panic!("{e}");
        }
        let _ = conn.close().await;
        Some(PgDb {
            name,
            admin_url,
            destroyed: false,
        })
    }

    /// A fresh database `name` on the server of `admin_url` (the URL of an existing database
    /// there); `Err` says why not (without the URL, which may hold a password).
    pub async fn create_on(admin_url: &str, name: &str) -> Result<PgDb, String> {
        let mut conn = connect(admin_url)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let created = create_database(&mut conn, name).await;
        let _ = conn.close().await;
        created?;
        Ok(PgDb {
            name: name.to_string(),
            admin_url: admin_url.to_string(),
            destroyed: false,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its URL.
    pub fn url(&self) -> String {
        with_database(&self.admin_url, &self.name)
    }

    /// Its URL through another address (e.g. a TCP proxy in front of the server): same server,
    /// same database.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let url = self.url();
        url.replace(&host_port(&url), &addr.to_string())
    }

    /// `host:port` of the server.
    pub fn server_addr(&self) -> String {
        host_port(&self.url())
    }

    /// Drops the database now, closing whatever is still connected to it (best effort).
    pub async fn destroy(mut self) {
        self.destroyed = true;
        drop_database(&self.admin_url, &self.name).await;
    }
}

async fn drop_database(admin_url: &str, name: &str) {
    if let Ok(mut conn) = connect(admin_url).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.destroyed {
            return;
        }
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Its own thread and runtime: this may run inside (or outside) any runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(drop_database(&admin_url, &name));
        })
        .join();
    }
}

/// `url` with its database name replaced by `name` (and its parameters left out).
pub fn with_database(url: &str, name: &str) -> String {
    let base = url.split('?').next().unwrap_or(url);
    let root = base.rsplit_once('/').map_or(base, |(root, _)| root);
    format!("{root}/{name}")
}

/// `host:port` of a `postgres://[user@]host[:port]/db` URL (default port 5432).
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            with_database("postgres://u:p@db:6543/test?sslmode=disable", "x"),
            "postgres://u:p@db:6543/x"
        );
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1/test"),
            "127.0.0.1:5432"
        );
        assert_eq!(host_port("postgres://u:p@db:6543/test"), "db:6543");
    }
}
