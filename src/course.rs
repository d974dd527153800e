//! Course profiles: what a course sets for its workspaces (image, command, limits, culling, starter files), checked
//! against the operator's rules (allowed images, maxima, the templates folder) so that an LMS key is never a way into
//! the host. The profile is stored as the body it came in; [`CourseProfile::parse`] checks it when it is put and again
//! at every start (the operator may have tightened the rules since).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{CourseSettings, WorkspaceSettings};
use crate::domain::{Overrides, MAX_DURATION};

/// Longest a course title may be, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Most elements of a course's command, and the longest one in bytes.
pub const MAX_COMMAND_ARGS: usize = 64;
pub const MAX_COMMAND_ARG_BYTES: usize = 4096;
/// Longest template name, in bytes.
pub const MAX_TEMPLATE_NAME: usize = 100;

/// The body of `PUT /api/courses/{course}`, as sent and as stored: every field optional, `null` or absent follows the
/// service's setting. Replaces the whole profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseBody {
    /// Shown to students on the launcher and in the dashboard; default: the course id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub title: Option<String>,
    /// One of the operator's `allowed_images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Replaces the image's command (its entrypoint stays); `{student_id}` and `{base_url}` are substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 64)]
    pub command: Option<Vec<String>>,
    /// CPU limit in cores, at most the operator's `course_max_cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory limit, e.g. `"512m"` or `"2g"`, at most the operator's `course_max_memory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Process limit, at most the operator's `course_max_pids_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub pids_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub warning_lead_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 31536000)]
    pub max_age_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cull_enabled: Option<bool>,
    /// A folder under the operator's `templates_path`, copied into a student's folder at the first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 100)]
    pub template: Option<String>,
    // What the course's image needs (another IDE than the service's, e.g. JupyterLab): each as the setting of the
    // same name.
    /// The port the IDE listens on in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub container_port: Option<u16>,
    /// Path that answers 2xx once the IDE is ready (under `/w/<id>` in full-path mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_path: Option<String>,
    /// Where the student's folder is mounted in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_target: Option<String>,
    /// Where the IDE keeps its state in the container (kept per student across stops); `""`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ide_state_path: Option<String>,
    /// `strip` (the IDE is served at its own `/`) or `full` (`/w/<id>/...` forwarded whole, for an IDE told its
    /// base URL, e.g. Jupyter with `--ServerApp.base_url={base_url}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_path: Option<String>,
    /// How the IDE gets its per-start secret: `code-server`, `header:<Name>[:<prefix>]` or `query:<param>`; never
    /// `none` (a course cannot switch the secret off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ide_auth: Option<String>,
    /// The environment variable that carries the secret (Jupyter: `JUPYTER_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ide_secret_env: Option<String>,
}

/// A profile that passed the operator's rules, in typed form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CourseProfile {
    pub title: Option<String>,
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub cpus: Option<f64>,
    pub memory_bytes: Option<i64>,
    pub pids_limit: Option<i64>,
    pub cull: Overrides,
    pub template: Option<String>,
    pub container_port: Option<u16>,
    pub readiness_path: Option<String>,
    pub mount_target: Option<String>,
    /// `Some(None)`: the course keeps no IDE state.
    pub ide_state_path: Option<Option<String>>,
    pub proxy_path: Option<crate::domain::ProxyPath>,
    pub ide_auth: Option<crate::domain::IdeAuth>,
    pub ide_secret_env: Option<String>,
}

/// Why a profile is refused: a stable code and a sentence for the LMS developer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProfileError {
    /// `invalid_profile` (malformed value), `image_not_allowed`, `over_operator_limit`, `templates_disabled`.
    pub code: &'static str,
    pub message: String,
}

fn invalid(message: String) -> ProfileError {
    ProfileError { code: "invalid_profile", message }
}

fn over(message: String) -> ProfileError {
    ProfileError { code: "over_operator_limit", message }
}

impl CourseProfile {
    /// Checks a body against the operator's rules. Changes nothing; the caller stores the body only when this passes.
    /// Long because it is one check per field, in the body's order, each with its code.
    pub fn parse(
        body: &CourseBody,
        rules: &CourseSettings,
        workspace: &WorkspaceSettings,
    ) -> Result<Self, ProfileError> {
        let title = match &body.title {
            Some(t)
                if t.trim().is_empty() || t.chars().count() > MAX_TITLE_CHARS || t.chars().any(char::is_control) =>
            {
                return Err(invalid(format!(
                    "title must be 1 to {MAX_TITLE_CHARS} characters without control characters"
                )))
            }
            t => t.clone(),
        };
        if let Some(image) = &body.image {
            let allowed = if rules.allowed_images.is_empty() {
                image == &workspace.image
            } else {
                rules.allowed_images.iter().any(|a| a == image)
            };
            if !allowed {
                return Err(ProfileError {
                    code: "image_not_allowed",
                    message: "image is not one the operator allows (allowed_images)".into(),
                });
            }
        }
        let command = match &body.command {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => {
                if c.len() > MAX_COMMAND_ARGS || c.iter().any(|a| a.len() > MAX_COMMAND_ARG_BYTES || a.contains('\0')) {
                    return Err(invalid(format!(
                        "command must have at most {MAX_COMMAND_ARGS} elements of at most {MAX_COMMAND_ARG_BYTES} \
                         bytes each, without NUL"
                    )));
                }
                Some(c.clone())
            }
        };
        if let Some(cpus) = body.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(invalid("cpus must be a number above 0".into()));
            }
            if cpus > rules.max_cpus {
                return Err(over(format!("cpus {cpus} is above the operator's maximum of {}", rules.max_cpus)));
            }
        }
        let memory_bytes = match &body.memory {
            None => None,
            Some(m) => {
                let bytes = crate::config::parse_bytes(m).map_err(|e| invalid(format!("memory: {e}")))?;
                if bytes < 6 * 1024 * 1024 {
                    return Err(invalid("memory must be at least 6m (Docker's minimum)".into()));
                }
                if bytes > rules.max_memory_bytes {
                    return Err(over(format!(
                        "memory {m} is above the operator's maximum of {} bytes",
                        rules.max_memory_bytes
                    )));
                }
                Some(bytes)
            }
        };
        if let Some(p) = body.pids_limit {
            if p < 1 {
                return Err(invalid("pids_limit must be at least 1".into()));
            }
            if p > rules.max_pids_limit {
                return Err(over(format!(
                    "pids_limit {p} is above the operator's maximum of {}",
                    rules.max_pids_limit
                )));
            }
        }
        let max = MAX_DURATION.as_secs();
        let secs = |name: &str, v: Option<u64>| -> Result<Option<Duration>, ProfileError> {
            match v {
                None => Ok(None),
                Some(s) if s == 0 || s > max => Err(invalid(format!("{name} must be 1 to {max} (one year)"))),
                Some(s) => Ok(Some(Duration::from_secs(s))),
            }
        };
        let cull = Overrides {
            idle_timeout: secs("idle_timeout_seconds", body.idle_timeout_seconds)?,
            warning_lead: secs("warning_lead_seconds", body.warning_lead_seconds)?,
            max_age: secs("max_age_seconds", body.max_age_seconds)?,
            enabled: body.cull_enabled,
        };
        if let Some(t) = &body.template {
            if rules.templates_path.is_none() {
                return Err(ProfileError {
                    code: "templates_disabled",
                    message: "the operator has set no templates_path, so a course cannot name a template".into(),
                });
            }
            check_template_name(t)?;
        }
        let image = image_facts(body)?;
        Ok(CourseProfile {
            container_port: image.container_port,
            readiness_path: image.readiness_path,
            mount_target: image.mount_target,
            ide_state_path: image.ide_state_path,
            proxy_path: image.proxy_path,
            ide_auth: image.ide_auth,
            ide_secret_env: image.ide_secret_env,
            title,
            image: body.image.clone(),
            command,
            cpus: body.cpus,
            memory_bytes,
            pids_limit: body.pids_limit,
            cull,
            template: body.template.clone(),
        })
    }

    /// The workspace settings a start of this course uses: the service's, with the course's values in their place.
    pub fn apply(&self, base: &WorkspaceSettings) -> WorkspaceSettings {
        let mut w = base.clone();
        if let Some(image) = &self.image {
            w.image = image.clone();
        }
        if let Some(command) = &self.command {
            w.command = command.clone();
        }
        if let Some(cpus) = self.cpus {
            w.cpus = cpus;
        }
        if let Some(memory) = self.memory_bytes {
            w.memory_bytes = memory;
        }
        if let Some(pids) = self.pids_limit {
            w.pids_limit = pids;
        }
        if let Some(port) = self.container_port {
            w.container_port = port;
        }
        if let Some(p) = &self.readiness_path {
            w.readiness_path = p.clone();
        }
        if let Some(p) = &self.mount_target {
            w.mount_target = p.clone();
        }
        if let Some(p) = &self.ide_state_path {
            w.ide_state_path = p.clone();
        }
        if let Some(p) = self.proxy_path {
            w.proxy_path = p;
        }
        if let Some(a) = &self.ide_auth {
            w.ide_auth = a.clone();
        }
        if let Some(e) = &self.ide_secret_env {
            w.ide_secret_env = Some(e.clone());
        }
        w
    }
}

/// The image facts of a body, checked.
struct ImageFacts {
    container_port: Option<u16>,
    readiness_path: Option<String>,
    mount_target: Option<String>,
    ide_state_path: Option<Option<String>>,
    proxy_path: Option<crate::domain::ProxyPath>,
    ide_auth: Option<crate::domain::IdeAuth>,
    ide_secret_env: Option<String>,
}

fn image_facts(body: &CourseBody) -> Result<ImageFacts, ProfileError> {
    if body.container_port == Some(0) {
        return Err(invalid("container_port must be 1 to 65535".into()));
    }
    if let Some(p) = &body.readiness_path {
        if !p.starts_with('/') || p.len() > 256 || p.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("readiness_path must be a path starting with / (at most 256 characters)".into()));
        }
    }
    if let Some(p) = &body.mount_target {
        container_path("mount_target", p)?;
    }
    let ide_state_path = match body.ide_state_path.as_deref() {
        None => None,
        Some("") => Some(None),
        Some(p) => {
            container_path("ide_state_path", p)?;
            Some(Some(p.to_owned()))
        }
    };
    let proxy_path = match &body.proxy_path {
        None => None,
        Some(p) => Some(p.parse().map_err(|e: String| invalid(format!("proxy_path: {e}")))?),
    };
    let ide_auth = match &body.ide_auth {
        None => None,
        Some(a) => match crate::domain::IdeAuth::parse(a) {
            Ok(crate::domain::IdeAuth::None) => {
                return Err(invalid("ide_auth cannot be none: a course cannot switch the IDE's secret off".into()))
            }
            Ok(mode) => Some(mode),
            Err(e) => return Err(invalid(format!("ide_auth: {e}"))),
        },
    };
    if let Some(n) = &body.ide_secret_env {
        let ok = !n.is_empty()
            && n.len() <= 64
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok {
            return Err(invalid("ide_secret_env must be an environment variable name".into()));
        }
    }
    Ok(ImageFacts {
        container_port: body.container_port,
        readiness_path: body.readiness_path.clone(),
        mount_target: body.mount_target.clone(),
        ide_state_path,
        proxy_path,
        ide_auth,
        ide_secret_env: body.ide_secret_env.clone(),
    })
}

/// A path in the container: absolute, no `.` or `..` names, nothing a bind mount's syntax would read (`:` `,`), not
/// `/` itself, at most 256 bytes.
fn container_path(name: &str, p: &str) -> Result<(), ProfileError> {
    let ok = p.starts_with('/')
        && p != "/"
        && p.len() <= 256
        && !p.contains([':', ','])
        && !p.chars().any(|c| c.is_control())
        && p.split('/').skip(1).all(|n| !n.is_empty() && n != "." && n != "..");
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{name} must be an absolute path in the container without . or .. names, : or ,")))
    }
}

/// A template is one folder name directly under `templates_path`: letters, digits, `.`, `_`, `-`, not starting with
/// a dot, so it can never name a path outside.
pub fn check_template_name(t: &str) -> Result<(), ProfileError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_TEMPLATE_NAME
        && !t.starts_with('.')
        && t.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "template must be a folder name of 1 to {MAX_TEMPLATE_NAME} characters from A-Z a-z 0-9 . _ - not \
             starting with a dot"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> CourseSettings {
        CourseSettings {
            templates_path: Some("/srv/templates".into()),
            allowed_images: vec!["img/a:1".into(), "img/b:2".into()],
            max_cpus: 2.0,
            max_memory_bytes: 2 << 30,
            max_pids_limit: 2048,
        }
    }

    fn parse(json: &str) -> Result<CourseProfile, ProfileError> {
        let body: CourseBody = serde_json::from_str(json).unwrap();
        CourseProfile::parse(&body, &rules(), &WorkspaceSettings::default())
    }

    #[test]
    fn a_full_profile_is_read_and_applied() {
        let p = parse(
            r#"{"title":"Intro to CS","image":"img/b:2","command":["jupyter","lab"],"cpus":0.5,"memory":"512m",
            "pids_limit":256,"idle_timeout_seconds":600,"warning_lead_seconds":60,"max_age_seconds":7200,
            "cull_enabled":true,"template":"cs101-starter"}"#,
        )
        .unwrap();
        assert_eq!(p.memory_bytes, Some(512 << 20));
        assert_eq!(p.cull.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(p.cull.warning_lead, Some(Duration::from_secs(60)));
        let w = p.apply(&WorkspaceSettings::default());
        assert_eq!((w.image.as_str(), w.cpus, w.memory_bytes, w.pids_limit), ("img/b:2", 0.5, 512 << 20, 256));
        assert_eq!(w.command, vec!["jupyter", "lab"]);
        // A Jupyter course: its image's facts in place of the service's.
        let j = parse(
            r#"{"container_port":8888,"readiness_path":"/api/status","mount_target":"/home/coder/project",
            "ide_state_path":"","proxy_path":"full","ide_auth":"header:Authorization:token ","ide_secret_env":"JUPYTER_TOKEN"}"#,
        )
        .unwrap()
        .apply(&WorkspaceSettings::default());
        assert_eq!(
            (j.container_port, j.readiness_path.as_str(), j.ide_state_path.as_deref()),
            (8888, "/api/status", None)
        );
        assert!(j.proxy_path.is_full());
        assert_eq!(j.secret_env(), Some("JUPYTER_TOKEN"));
        // An empty profile changes nothing.
        let w0 = parse("{}").unwrap().apply(&WorkspaceSettings::default());
        assert_eq!(w0.image, WorkspaceSettings::default().image);
    }

    #[test]
    fn each_bad_value_has_its_code() {
        let cases = [
            (r#"{"image":"evil/root:latest"}"#, "image_not_allowed"),
            (r#"{"cpus":2.5}"#, "over_operator_limit"),
            (r#"{"memory":"3g"}"#, "over_operator_limit"),
            (r#"{"pids_limit":4096}"#, "over_operator_limit"),
            (r#"{"cpus":0}"#, "invalid_profile"),
            (r#"{"cpus":-1}"#, "invalid_profile"),
            (r#"{"memory":"lots"}"#, "invalid_profile"),
            (r#"{"memory":"1m"}"#, "invalid_profile"),
            (r#"{"pids_limit":0}"#, "invalid_profile"),
            (r#"{"idle_timeout_seconds":0}"#, "invalid_profile"),
            (r#"{"max_age_seconds":99999999999}"#, "invalid_profile"),
            (r#"{"template":"../etc"}"#, "invalid_profile"),
            (r#"{"template":"a/b"}"#, "invalid_profile"),
            (r#"{"template":".hidden"}"#, "invalid_profile"),
            (r#"{"title":""}"#, "invalid_profile"),
            (r#"{"title":"a\nb"}"#, "invalid_profile"),
            (r#"{"container_port":0}"#, "invalid_profile"),
            (r#"{"readiness_path":"healthz"}"#, "invalid_profile"),
            (r#"{"mount_target":"/home/../etc"}"#, "invalid_profile"),
            (r#"{"mount_target":"/x:/y"}"#, "invalid_profile"),
            (r#"{"ide_state_path":"relative"}"#, "invalid_profile"),
            (r#"{"proxy_path":"prefix"}"#, "invalid_profile"),
            (r#"{"ide_auth":"none"}"#, "invalid_profile"),
            (r#"{"ide_auth":"password"}"#, "invalid_profile"),
            (r#"{"ide_secret_env":"1X"}"#, "invalid_profile"),
        ];
        for (json, code) in cases {
            assert_eq!(parse(json).unwrap_err().code, code, "{json}");
        }
        let long = format!(r#"{{"command":[{}]}}"#, vec!["\"x\""; 65].join(","));
        assert_eq!(parse(&long).unwrap_err().code, "invalid_profile");
        // Without a templates path no template can be named; without an allow-list only the configured image is.
        let mut r = rules();
        r.templates_path = None;
        r.allowed_images.clear();
        let body: CourseBody = serde_json::from_str(r#"{"template":"t"}"#).unwrap();
        assert_eq!(
            CourseProfile::parse(&body, &r, &WorkspaceSettings::default()).unwrap_err().code,
            "templates_disabled"
        );
        let body = CourseBody { image: Some(WorkspaceSettings::default().image), ..Default::default() };
        assert!(CourseProfile::parse(&body, &r, &WorkspaceSettings::default()).is_ok());
        assert!(serde_json::from_str::<CourseBody>(r#"{"imagee":"x"}"#).is_err(), "unknown fields are refused");
    }
}
