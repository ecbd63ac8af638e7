//! The plan as people read it (`nbdroot plan`, and the boot's debug output).

use super::BootPlan;

/// The plan as text, one section per pipeline stage, warnings last.
pub fn render(plan: &BootPlan) -> String {
    format!("{plan:#?}\n")
}
