//! Typed configuration: defaults, then an optional `workspaced.toml`, then environment variables (env wins).
//! Each setting is declared once, in [`SETTINGS`] (`table.rs`): TOML key, variable, default, doc line, parser and
//! limits. The file and the environment go through the same row, and docs/configuration.md is rendered from it.

mod check;
mod parse;
mod settings;
mod table;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use parse::{parse_bytes, parse_duration, parse_optional_bytes, parse_optional_duration};
pub use settings::{
    AuthSettings, CourseSettings, CullSettings, NotifySettings, ProxySettings, Settings, WorkspaceSettings,
    DEFAULT_IMAGE,
};
pub use table::{docs_table, Setting, SETTINGS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name}={value:?}: {message}")]
    Env { name: &'static str, value: String, message: String },
    /// `name` gives both the TOML key and the variable (see [`Setting::name`]).
    #[error("invalid setting {name}: {message}")]
    Invalid { name: String, message: String },
}

impl Settings {
    /// Loads settings: defaults, then `config_file` (or `./workspaced.toml` when it exists and none is given),
    /// then the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut s = Settings::default();
        let path = match config_file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("workspaced.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = path {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            s.apply_file(&text).map_err(|message| ConfigError::Parse { path, message })?;
        }
        s.apply_env(|name| std::env::var(name).ok())?;
        s.check()?;
        Ok(s)
    }

    /// Applies a `workspaced.toml`. Each value becomes the text its variable would hold and goes through the same
    /// row, so a value means the same in the file and in the environment. A key no row has is an error: a typo must
    /// not silently leave a default in place.
    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let file: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        for (key, value) in &file {
            let setting = SETTINGS
                .iter()
                .find(|s| s.key == Some(key.as_str()))
                .ok_or_else(|| format!("unknown key `{key}`; the keys are listed in docs/configuration.md"))?;
            let text = parse::toml_text(value).map_err(|message| format!("{key}: {message}"))?;
            (setting.apply)(self, &text).map_err(|message| format!("{key} = {value}: {message}"))?;
        }
        Ok(())
    }

    /// Applies environment variables, read through `get` so tests need not touch the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            if let Some(value) = get(setting.env) {
                (setting.apply)(self, &value).map_err(|message| ConfigError::Env {
                    name: setting.env,
                    value,
                    message,
                })?;
            }
        }
        Ok(())
    }

    /// Rejects values that cannot work, naming the setting by its TOML key and variable: first each row's own
    /// limits, then the limits between settings.
    pub fn check(&self) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            (setting.check)(self).map_err(|message| ConfigError::Invalid { name: setting.name(), message })?;
        }
        let invalid = |env: &str, message: &str| {
            let name = SETTINGS.iter().find(|s| s.env == env).map_or_else(|| env.to_owned(), Setting::name);
            Err(ConfigError::Invalid { name, message: message.to_owned() })
        };
        if self.cull.warning_lead >= self.cull.idle_timeout {
            return invalid("WORKSPACED_WARNING_LEAD", "must be shorter than idle_timeout");
        }
        if self.runtime == crate::runtime::RuntimeKind::Swarm && self.workspace.secret_env().is_none() {
            return invalid(
                "WORKSPACED_IDE_AUTH",
                "must give each workspace a secret (not `none`) with runtime = swarm: Swarm publishes the IDE's port \
                 on every interface of the node, so anyone who reaches the node would reach the IDE",
            );
        }
        if self.notify.webhook_url.is_some() && self.notify.webhook_secret.is_none() {
            return invalid(
                "WORKSPACED_WEBHOOK_SECRET",
                "is required when webhook_url is set (the LMS verifies the signature)",
            );
        }
        if let (Some(admin), Some(suffix)) = (&self.admin_host, &self.proxy.host_suffix) {
            let name = admin
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(admin.as_str(), |(h, _)| h);
            if name.ends_with(&format!(".{suffix}")) {
                return invalid(
                    "WORKSPACED_ADMIN_HOST",
                    "must not be under proxy_host_suffix: that host would be a student's IDE in host mode",
                );
            }
        }
        Ok(())
    }

    /// Whether the session cookie gets `Secure`.
    pub fn cookie_secure(&self) -> bool {
        self.auth.cookie_secure.unwrap_or_else(|| self.public_url().starts_with("https://"))
    }

    /// Where the signing key lives when it is not given directly: `workspaced.key` beside an SQLite database.
    pub fn secret_key_file(&self) -> PathBuf {
        if let Some(p) = &self.auth.secret_key_file {
            return p.clone();
        }
        let db = self.database_url.strip_prefix("sqlite://").unwrap_or("workspaced.db");
        let db = db.split('?').next().unwrap_or(db);
        Path::new(db).parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("workspaced.key")
    }

    /// Base URL for links to this service.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_owned()
    }
}
