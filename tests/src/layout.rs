//! The check that no two modules of a crate import each other, as a
//! library the layout test runs over the workspace's crates (and its own
//! tests over small crates in memory).
//!
//! It reads sources as tokens, not as a full parse: a crate's modules are
//! followed from its root file through `mod` declarations (a binary's root
//! is a crate of its own), and every `use` leaf, every path written in
//! code and every capitalised name or call a glob import may have brought
//! is resolved, through `pub use` re-exports and glob imports, to the
//! module that defines the item it names.
//!
//! Layout:
//! - `tokens`: source as tokens, comments and literals dropped.
//! - `syntax`: a file's modules (inline ones too), items, `use` trees
//!   and paths.
//! - `resolve`: a crate's module tree and its imports, each resolved to
//!   the module that defines what it names.
//! - `cycles`: sibling cycles and parent cycles under each module.

mod cycles;
mod resolve;
mod syntax;
mod tokens;

pub use cycles::{CrateCycles, Cycle, CycleKind, Import, crate_cycles};
pub use resolve::Site;
