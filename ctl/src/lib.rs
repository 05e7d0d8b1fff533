//! golivectl library.
