//! `key` and `session` commands: they work on the database directly, so they need no running server.

use anyhow::{bail, Context};

use super::KeyCommand;
use crate::config::Settings;
use crate::domain::StudentId;
use crate::store::{RevokeScope, Store};

async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::connect(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", crate::store::redacted_url(&settings.database_url)))
}

pub async fn key(settings: &Settings, command: KeyCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let now = chrono::Utc::now();
    match command {
        KeyCommand::Create { role, label } => {
            let role: crate::auth::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let k = crate::auth::create_key(&store, role, &label, now).await?;
            eprintln!("created {} key {} (shown once; store it now)", role.as_str(), k.id);
            println!("{}", k.key);
        }
        KeyCommand::List { json } => {
            let keys = store.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<10} {:<6} {:<26} {:<26} LABEL", "ID", "ROLE", "CREATED", "REVOKED");
                for k in keys {
                    let revoked = k.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<10} {:<6} {:<26} {:<26} {}",
                        k.id,
                        k.role,
                        k.created_at.to_rfc3339(),
                        revoked,
                        k.label
                    );
                }
            }
        }
        KeyCommand::Revoke { id } => {
            if !store.revoke_api_key(&id, now).await? {
                bail!("no active key with id {id:?} (see `workspaced key list`)");
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}

/// Ends one student's sessions, or (with `None`, from `--all`) everybody's.
pub async fn revoke_sessions(settings: &Settings, student: Option<StudentId>) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    let scope = match &student {
        Some(s) => RevokeScope::Student(s.clone()),
        None => RevokeScope::All,
    };
    store.revoke_sessions(&scope, chrono::Utc::now()).await?;
    match student {
        Some(s) => eprintln!("revoked every session of {s}"),
        None => eprintln!("revoked every session of every student"),
    }
    Ok(())
}
