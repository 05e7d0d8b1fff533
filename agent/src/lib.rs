//! golive-agent library.
