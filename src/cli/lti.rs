//! `lti add|list|remove|info`: LTI 1.3 platform registrations through a running server (admin key).

use std::path::PathBuf;

use clap::Subcommand;

use super::client::{server_base, ApiClient};
use super::ClientArgs;
use crate::config::Settings;
use crate::http::lti::{PlatformList, ToolInfo};
use crate::lti::{NewPlatform, Platform};

#[derive(Debug, Subcommand)]
pub enum LtiCommand {
    /// Register an LMS (LTI 1.3 platform) with the values its developer key or tool registration shows.
    Add {
        /// The platform's issuer, e.g. https://canvas.instructure.com.
        #[arg(long)]
        issuer: String,
        /// The client id the LMS gave this tool.
        #[arg(long)]
        client_id: String,
        /// A deployment id that may launch; repeat for several.
        #[arg(long = "deployment-id", required = true)]
        deployment_ids: Vec<String>,
        /// The platform's OIDC authorization endpoint.
        #[arg(long)]
        auth_url: String,
        /// The platform's OAuth 2 token endpoint.
        #[arg(long)]
        token_url: String,
        /// The platform's public key set URL.
        #[arg(long, required_unless_present = "jwks_file", conflicts_with = "jwks_file")]
        jwks_url: Option<String>,
        /// The platform's public keys as a JWK set file, for closed networks.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the registered platforms.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a platform's registration (by the id `lti list` shows); its courses and workspaces stay.
    Remove {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The URLs to paste into the LMS: login, launch (redirect), key set and deep linking.
    Info {
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub async fn lti(settings: &Settings, command: LtiCommand) -> anyhow::Result<()> {
    let client_of = |c: &ClientArgs| ApiClient::new(server_base(settings, c.server.as_deref()));
    match command {
        LtiCommand::Add { issuer, client_id, deployment_ids, auth_url, token_url, jwks_url, jwks_file, client } => {
            let jwks = match jwks_file {
                Some(f) => {
                    let text =
                        std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                    Some(serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?)
                }
                None => None,
            };
            let new = NewPlatform { issuer, client_id, deployment_ids, auth_url, token_url, jwks_url, jwks };
            // Checked here too, so a typo is named before anything is sent.
            new.check().map_err(|e| anyhow::anyhow!("invalid_platform: {e}"))?;
            let resp = client_of(&client)?.post_json("/api/lti/platforms", &new).await?;
            let p: Platform = resp.json().await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&p)?);
            } else {
                println!("{}: registered {} (client id {})", p.id, p.issuer, p.client_id);
            }
            Ok(())
        }
        LtiCommand::List { client } => {
            let list: PlatformList = client_of(&client)?.get("/api/lti/platforms", &[]).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<10} {:<40} {:<24} DEPLOYMENTS", "ID", "ISSUER", "CLIENT ID");
            for p in &list.platforms {
                println!("{:<10} {:<40} {:<24} {}", p.id, p.issuer, p.client_id, p.deployment_ids.join(","));
            }
            Ok(())
        }
        LtiCommand::Remove { id, client } => {
            client_of(&client)?.delete(&format!("/api/lti/platforms/{id}"), &[]).await?;
            println!("{id}: removed (launches from it are refused; courses and workspaces stay)");
            Ok(())
        }
        LtiCommand::Info { client } => {
            let info: ToolInfo = client_of(&client)?.get("/api/lti/info", &[]).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&info)?);
                return Ok(());
            }
            println!("Login (OIDC initiation) URL:  {}", info.login_url);
            println!("Launch / redirect URL:        {}", info.launch_url);
            println!("Public key set (JWKS) URL:    {}", info.jwks_url);
            println!("Deep linking URL:             {}", info.deep_linking_url);
            println!("Embedding in LMS frames:      {}", if info.embed { "on (lti_embed)" } else { "off: new window" });
            println!("Registered platforms:         {}", info.platforms);
            Ok(())
        }
    }
}
