//! Security integration tests (being written).
