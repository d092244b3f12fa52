//! Acknowledged writes survive a crash of the server process.
