//! `walcast check`: pre-flight checks of everything walcast needs from Postgres and Strapi.
//!
//! One line per finding (`ok`, `warning`, `BLOCKER`); exit code 1 when anything blocks
//! running. Reads only; changes nothing (that is `walcast setup`'s job).

use crate::config::Config;
use crate::replication::{ConnectParams, probe_connection, slot};
use crate::service::connect_sql;
use crate::strapi::StrapiModel;

/// What to run when `wal_level` is not `logical`.
pub const WAL_LEVEL_FIX: &str =
    "run `ALTER SYSTEM SET wal_level = logical;` as a superuser, then restart Postgres";

/// An error and its causes on one line (`a: b: c`), so a finding says why.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(&format!(": {e}"));
        next = e.source();
    }
    text
}

/// The finding for the server's `wal_level`.
pub fn wal_level_finding(level: &str) -> Result<String, String> {
    if level == "logical" {
        Ok("wal_level is logical".into())
    } else {
        Err(format!(
            "wal_level is {level:?}, logical replication needs `logical`: {WAL_LEVEL_FIX}"
        ))
    }
}

/// The finding for the slot's retained WAL against `replication.lag_budget_bytes`.
pub fn slot_lag_finding(
    slot: &str,
    lag: &slot::SlotLag,
    budget_bytes: u64,
) -> Result<String, String> {
    let state = if lag.active { "in use" } else { "idle" };
    if lag.retained_bytes > budget_bytes {
        Err(format!(
            "slot {slot} ({state}) retains {} bytes of WAL, over replication.lag_budget_bytes = {budget_bytes}: \
             if walcast is stopped, start it (it catches up from the slot); if the slot is abandoned, drop it with \
             SELECT pg_drop_replication_slot('{slot}'); bound the WAL kept with max_slot_wal_keep_size",
            lag.retained_bytes
        ))
    } else {
        Ok(format!(
            "slot {slot} exists ({state}; {} bytes behind, {} bytes of WAL retained, budget {budget_bytes})",
            lag.confirmed_bytes, lag.retained_bytes
        ))
    }
}

/// `walcast check`: one line per finding; exit 1 when anything blocks running.
/// Whether the cluster's Redis answers over RESP3 and is recent enough (7+: the adapter's
/// RESP3 push messages, `PEXPIRE … NX`).
async fn redis_finding(config: &Config, url: &str) -> Result<String, String> {
    let shown = crate::config::redact_url(url);
    let prefix = config.redis.prefix_for(&config.replication.slot);
    let cluster = crate::cluster::Cluster::new(url, &prefix)
        .map_err(|e| format!("redis.url {shown}: {}", error_chain(&e)))?;
    let mut conn = cluster.connection(false).await.map_err(|e| {
        format!(
            "cannot reach Redis at {shown} over RESP3: {} (is it Redis 7+, and does the URL end in ?protocol=resp3?)",
            error_chain(&e)
        )
    })?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("Redis at {shown}: INFO failed: {e}"))?;
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(format!(
            "Redis at {shown} is version {version}; clustering needs Redis 7 or later"
        ));
    }
    let held: usize = redis::cmd("XLEN")
        .arg(cluster.key("deliveries"))
        .query_async(&mut conn)
        .await
        .unwrap_or(0);
    Ok(format!(
        "Redis {version} at {shown} answers over RESP3; cluster prefix {prefix:?}, {held} deliveries in its stream"
    ))
}

pub async fn check(config: &Config) -> std::process::ExitCode {
    let mut blockers = 0;
    let mut report = |ok: Result<String, String>| match ok {
        Ok(line) => println!("ok       {line}"),
        Err(line) => {
            blockers += 1;
            println!("BLOCKER  {line}");
        }
    };
    report(Ok("configuration is valid".into()));
    let client = match connect_sql(config).await {
        Ok(c) => {
            let encryption = match c
                .query_opt(
                    "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
            {
                Ok(Some(row)) if row.get::<_, bool>(0) => {
                    format!(
                        "over TLS ({})",
                        row.get::<_, Option<String>>(1).unwrap_or_default()
                    )
                }
                Ok(_) => "not encrypted".to_owned(),
                Err(_) => "encryption unknown".to_owned(),
            };
            report(Ok(format!(
                "connected to {}, {encryption} (sslmode={})",
                crate::config::redact_url(config.database.url.expose()),
                config.tls().mode
            )));
            c
        }
        Err(e) => {
            report(Err(format!("{e:#}")));
            return std::process::ExitCode::from(1);
        }
    };
    match client.query_one("SHOW wal_level", &[]).await {
        Ok(row) => report(wal_level_finding(&row.get::<_, String>(0))),
        Err(e) => report(Err(format!("reading wal_level: {e}"))),
    }
    let may_replicate = match client
        .query_one(
            "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(1) => {
            report(Ok("the database user may replicate".into()));
            true
        }
        Ok(row) => {
            let user: String = row.get(0);
            report(Err(format!(
                "the database user {user:?} lacks the REPLICATION attribute: run `ALTER ROLE {} WITH REPLICATION;` as a superuser",
                if crate::config::is_identifier(&user) { user.clone() } else { format!("\"{}\"", user.replace('"', "\"\"")) }
            )));
            false
        }
        Err(e) => {
            report(Err(format!("reading role attributes: {e}")));
            false
        }
    };
    // The replication connection itself (pg_hba.conf, TLS, privileges as the walsender
    // sees them); its error would repeat the one above when the attribute is missing.
    if may_replicate {
        let params = ConnectParams::from_config(&config.postgres()).with_tls(config.tls());
        match probe_connection(&params).await {
            Ok(probe) => report(Ok(format!(
                "replication connection accepted ({})",
                if probe.tls {
                    "over TLS"
                } else {
                    "not encrypted"
                }
            ))),
            Err(e) => report(Err(format!("replication connection refused: {e}"))),
        }
    }
    match StrapiModel::load_for(&client, &config.strapi).await {
        Ok(model) => {
            let uids: Vec<&str> = model
                .content_types
                .by_uid
                .keys()
                .map(String::as_str)
                .collect();
            report(Ok(format!(
                "strapi schema: {} content types {uids:?}",
                uids.len()
            )));
            let wanted = model.catalog.watched_tables();
            match (
                slot::existing_tables(&client, &wanted).await,
                slot::publication_tables(&client, &config.replication.publication).await,
            ) {
                (Ok(tables), Ok(Some(published))) => {
                    let missing: Vec<&String> =
                        tables.iter().filter(|t| !published.contains(t)).collect();
                    if missing.is_empty() {
                        report(Ok(format!(
                            "publication {} covers all {} watched tables",
                            config.replication.publication,
                            tables.len()
                        )));
                    } else {
                        report(Err(format!(
                            "publication {} misses {missing:?}; run `walcast setup`",
                            config.replication.publication
                        )));
                    }
                }
                (Ok(_), Ok(None)) => report(Err(format!(
                    "publication {} does not exist; run `walcast setup`",
                    config.replication.publication
                ))),
                (Err(e), _) | (_, Err(e)) => report(Err(error_chain(&e))),
            }
        }
        Err(e) => report(Err(error_chain(&e))),
    }
    if let Ok(model) = StrapiModel::load_for(&client, &config.strapi).await
        && let Ok(content) = slot::existing_tables(&client, &model.catalog.content_tables()).await
        && let Ok(identities) = slot::replica_identities(&client, &content).await
    {
        let not_full: Vec<&String> = identities
            .iter()
            .filter(|(_, i)| *i != 'f')
            .map(|(t, _)| t)
            .collect();
        if not_full.is_empty() {
            println!(
                "ok       REPLICA IDENTITY FULL on all {} content tables",
                identities.len()
            );
        } else {
            println!(
                "warning  content tables without REPLICA IDENTITY FULL: {not_full:?}; deletes there carry only the row id (run `walcast setup`)"
            );
        }
    }
    match slot::slot_lag(&client, &config.replication.slot).await {
        Ok(Some(lag)) => report(slot_lag_finding(
            &config.replication.slot,
            &lag,
            config.replication.lag_budget_bytes,
        )),
        Ok(None) => report(Err(format!(
            "slot {} does not exist; run `walcast setup`",
            config.replication.slot
        ))),
        Err(e) => report(Err(error_chain(&e))),
    }
    if let Some(url) = &config.redis.url {
        report(redis_finding(config, url).await);
    }
    for (name, secret) in [
        ("strapi.jwt_secret (JWT_SECRET)", &config.strapi.jwt_secret),
        (
            "strapi.api_token_salt (API_TOKEN_SALT)",
            &config.strapi.api_token_salt,
        ),
        (
            "strapi.admin_jwt_secret (ADMIN_JWT_SECRET)",
            &config.strapi.admin_jwt_secret,
        ),
    ] {
        if secret.is_set() {
            println!("ok       {name} is set");
        } else {
            println!("warning  {name} is not set: sockets using it will be refused");
        }
    }
    if blockers == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_level_findings_say_exactly_what_to_run() {
        assert_eq!(
            wal_level_finding("logical"),
            Ok("wal_level is logical".into())
        );
        let blocker = wal_level_finding("replica").unwrap_err();
        assert!(
            blocker.contains("ALTER SYSTEM SET wal_level = logical;")
                && blocker.contains("restart Postgres"),
            "{blocker}"
        );
        // `walcast run` stops with the same instruction.
        let run = crate::replication::ReplicationError::WalLevel("replica".into()).to_string();
        assert!(
            run.contains("ALTER SYSTEM SET wal_level = logical;") && run.contains("restart"),
            "{run}"
        );
    }

    #[test]
    fn a_slot_over_its_lag_budget_is_a_blocker() {
        let lag = slot::SlotLag {
            active: false,
            confirmed_bytes: 4000,
            retained_bytes: 5000,
        };
        let blocker = slot_lag_finding("walcast", &lag, 4096).unwrap_err();
        assert!(
            blocker.contains("retains 5000 bytes")
                && blocker.contains("lag_budget_bytes = 4096")
                && blocker.contains("pg_drop_replication_slot('walcast')"),
            "{blocker}"
        );
        let ok = slot_lag_finding("walcast", &lag, 5000).unwrap();
        assert!(ok.contains("4000 bytes behind"), "{ok}");
    }
}
