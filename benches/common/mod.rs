//! Helpers shared by several benches of the suite.

pub(crate) mod paired;
