//! parley server.
