//! Pure types and rules: student ids, workspace states and stop reasons. No IO lives here.

mod course;
pub mod cull;
mod ide_auth;
mod proxy_path;
mod role;
mod student_id;
mod upstream_host;
mod workspace;

pub use course::CourseId;
pub use cull::{
    cull_input, deadlines, decide, effective_policy, CullInput, CullPolicy, Deadlines, Decision, Overrides,
    MAX_DURATION,
};
pub use ide_auth::{is_code_server_cookie, Credential, IdeAuth, IdeSecret, CODE_SERVER_COOKIE};
pub use proxy_path::{base_url, substitute, ProxyPath};
pub use role::Role;
pub use student_id::{InstanceId, InvalidId, StudentId, MAX_STUDENT_ID_LEN};
pub use upstream_host::{authority, parse_upstream_host, InvalidHost, LOOPBACK, MAX_HOST_LEN};
pub use workspace::{EventKind, EventReason, Status, StopReason, UnknownVariant};
