//! The pull-request preview's building blocks, pure and testable on their own:
//! [`changes`] (what a branch changes in the migrations directory against a base git ref),
//! [`report`] (the typed preview, which `--format json` prints as it is) and [`markdown`]
//! (the one comment a workflow posts). The `preview` command wires `check`, `verify` and
//! `diff` into a [`report::PreviewReport`].

pub mod changes;
pub mod markdown;
pub mod report;
#[cfg(feature = "check")]
pub mod run;

pub use changes::{migration_changes, ChangesError, MigrationChanges};
pub use markdown::{render, RenderOptions, MARKER, MAX_CHARS};
pub use report::PreviewReport;
