//! Test fixtures shared by the integration tests in `tests/tests/`.
