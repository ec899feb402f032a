//! Patch formats beyond RFC 7386/6902: strategic merge patch, field
//! ownership and server-side apply.

pub mod apply;
pub mod fieldset;
pub mod strategic;
