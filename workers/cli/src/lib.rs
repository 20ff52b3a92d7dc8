//! The command's building blocks that need no argument parsing and no output: the project
//! file ([`project`]) and the pull-request preview's pieces ([`preview`]). The `stepmigrate`
//! binary parses arguments, wires these and prints.

pub mod preview;
pub mod project;
