//! `walcast check`: pre-flight checks of everything walcast needs from Postgres and Strapi.
//!
//! One line per finding (`ok`, `warning`, `BLOCKER`); exit code 1 when anything blocks
//! running. Reads only; changes nothing (that is `walcast setup`'s job).

use crate::config::Config;
use crate::replication::slot;
use crate::service::connect_sql;
use crate::strapi::StrapiModel;

/// `walcast check`: one line per finding; exit 1 when anything blocks running.
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
            report(Ok(format!(
                "connected to {}",
                crate::config::redact_url(config.database.url.expose())
            )));
            c
        }
        Err(e) => {
            report(Err(format!("{e:#}")));
            return std::process::ExitCode::from(1);
        }
    };
    match client.query_one("SHOW wal_level", &[]).await {
        Ok(row) if row.get::<_, String>(0) == "logical" => {
            report(Ok("wal_level is logical".into()))
        }
        Ok(row) => report(Err(format!(
            "wal_level is {:?}; run `ALTER SYSTEM SET wal_level = logical;` and restart postgres",
            row.get::<_, String>(0)
        ))),
        Err(e) => report(Err(format!("reading wal_level: {e}"))),
    }
    match client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(row) if row.get::<_, bool>(0) => report(Ok("the database user may replicate".into())),
        Ok(_) => report(Err(
            "the database user lacks the REPLICATION attribute: ALTER ROLE <user> REPLICATION;"
                .into(),
        )),
        Err(e) => report(Err(format!("reading role attributes: {e}"))),
    }
    match StrapiModel::load_with_app_dir(&client, config.strapi.app_dir.as_deref()).await {
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
                (Err(e), _) | (_, Err(e)) => report(Err(format!("{e:#}"))),
            }
        }
        Err(e) => report(Err(format!("{e}"))),
    }
    if let Ok(model) =
        StrapiModel::load_with_app_dir(&client, config.strapi.app_dir.as_deref()).await
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
    match client
        .query_opt(
            "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
            &[&config.replication.slot],
        )
        .await
    {
        Ok(Some(row)) => {
            let active: bool = row.get(0);
            let lag: Option<i64> = row.get(1);
            report(Ok(format!(
                "slot {} exists ({}; {} bytes behind)",
                config.replication.slot,
                if active { "in use" } else { "idle" },
                lag.unwrap_or(0)
            )));
        }
        Ok(None) => report(Err(format!(
            "slot {} does not exist; run `walcast setup`",
            config.replication.slot
        ))),
        Err(e) => report(Err(format!("reading pg_replication_slots: {e}"))),
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
