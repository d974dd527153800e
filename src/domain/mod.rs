//! Pure types and rules: student ids, workspace states and stop reasons. No IO lives here.

mod student_id;
mod workspace;

pub use student_id::{InstanceId, InvalidId, StudentId};
pub use workspace::{EventKind, Status, StopReason, UnknownVariant};
