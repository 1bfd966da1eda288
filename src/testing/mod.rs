//! Test support compiled into the library: the fuzz targets' entry points
//! (`fuzzing`), hidden from the docs.
//!
//! May import: every library folder. Nothing imports `testing`.

pub mod fuzzing;
