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
    pub fn parse(body: &CourseBody, rules: &CourseSettings, workspace: &WorkspaceSettings) -> Result<Self, ProfileError> {
        let title = match &body.title {
            Some(t) if t.trim().is_empty() || t.chars().count() > MAX_TITLE_CHARS || t.chars().any(char::is_control) => {
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
                if c.len() > MAX_COMMAND_ARGS
                    || c.iter().any(|a| a.len() > MAX_COMMAND_ARG_BYTES || a.contains('\0'))
                {
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
                return Err(over(format!("pids_limit {p} is above the operator's maximum of {}", rules.max_pids_limit)));
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
        Ok(CourseProfile {
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
        w
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
        assert_eq!(CourseProfile::parse(&body, &r, &WorkspaceSettings::default()).unwrap_err().code, "templates_disabled");
        let body = CourseBody { image: Some(WorkspaceSettings::default().image), ..Default::default() };
        assert!(CourseProfile::parse(&body, &r, &WorkspaceSettings::default()).is_ok());
        assert!(serde_json::from_str::<CourseBody>(r#"{"imagee":"x"}"#).is_err(), "unknown fields are refused");
    }
}
