//! OpenAPI documents (placeholder).
