//! Deploy and rollback integration tests (being written).
