//! `walcast demo`: a writer that keeps real Strapi edits flowing into the database.
//!
//! Replays the captured Strapi 5.54 editing sessions (`replay/01..50`) once, paced, then
//! keeps editing tags and categories with plain SQL (as any other service could), so the
//! watcher always has events to show. Grants the Public role `find` on the demo's content
//! types first, as an admin would in Strapi's Roles screen.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

pub struct DemoWriter {
    client: tokio_postgres::Client,
    fixtures: PathBuf,
    pace: Duration,
}

impl DemoWriter {
    pub async fn new(config: &Config, fixtures: PathBuf, pace_ms: u64) -> anyhow::Result<Self> {
        Ok(DemoWriter {
            client: crate::service::connect_sql(config).await?,
            fixtures,
            pace: Duration::from_millis(pace_ms),
        })
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        // Give the service a moment to create its slot and start streaming.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.grant_public_read().await?;
        // The captured sessions start right after Strapi's first boot (no admin registered
        // yet); on a database that went further, go straight to the SQL edits.
        let fresh: i64 = self
            .client
            .query_one("SELECT count(*) FROM admin_users", &[])
            .await?
            .get(0);
        if fresh == 0 {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&self.fixtures)
                .with_context(|| format!("reading {}", self.fixtures.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "sql")
                        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.as_bytes()[0].is_ascii_digit() && !n.starts_with("00-")
                        })
                })
                .collect();
            files.sort();
            for file in files {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                let name = file
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or("?")
                    .to_owned();
                let sql = std::fs::read_to_string(&file)?;
                if let Err(e) = self.client.batch_execute(&sql).await {
                    warn!(action = %name, error = %e, "demo: replay failed; continuing with SQL edits");
                    let _ = self
                        .client
                        .batch_execute("ROLLBACK; RESET session_replication_role;")
                        .await;
                    break;
                }
                info!(action = %name, "demo: replayed strapi action");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.pace) => {}
                }
            }
        }
        let mut n: u64 = 0;
        loop {
            n += 1;
            let document_id = format!("demo{:020}", n);
            self.client
                .execute(
                    "INSERT INTO tags (document_id, name, created_at, updated_at, published_at)
                     VALUES ($1, $2, now() at time zone 'utc', now() at time zone 'utc', now() at time zone 'utc')",
                    &[&document_id, &format!("demo tag {n}")],
                )
                .await?;
            info!(n, "demo: created a tag with plain SQL");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.pace) => {}
            }
            self.client
                .execute(
                    "UPDATE tags SET name = $2, updated_at = now() at time zone 'utc' WHERE document_id = $1",
                    &[&document_id, &format!("demo tag {n} (renamed)")],
                )
                .await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.pace) => {}
            }
            if n.is_multiple_of(3) {
                self.client
                    .execute("DELETE FROM tags WHERE document_id = $1", &[&document_id])
                    .await?;
            }
        }
    }

    async fn grant_public_read(&self) -> anyhow::Result<()> {
        // Explicit ids far above the replayed ones, so the captured sessions still apply.
        for (n, uid) in [
            "api::tag.tag",
            "api::category.category",
            "api::article.article",
            "api::comment.comment",
        ]
        .into_iter()
        .enumerate()
        {
            let id = 100_000 + n;
            self.client
                .batch_execute(&format!(
                    "DO $$ DECLARE pid int; rid int; BEGIN
                       SELECT id INTO rid FROM up_roles WHERE type = 'public';
                       IF rid IS NULL OR EXISTS (SELECT 1 FROM up_permissions p JOIN up_permissions_role_lnk l ON l.permission_id = p.id
                                                 WHERE l.role_id = rid AND p.action = '{uid}.find') THEN RETURN; END IF;
                       INSERT INTO up_permissions (id, document_id, action, created_at, updated_at, published_at)
                         VALUES ({id}, substr(md5(random()::text), 1, 24), '{uid}.find', now(), now(), now()) RETURNING id INTO pid;
                       INSERT INTO up_permissions_role_lnk (id, permission_id, role_id, permission_ord) VALUES ({id}, pid, rid, 1);
                     END $$;"
                ))
                .await
                .context("granting the Public role find permissions")?;
        }
        Ok(())
    }
}
