//! Runs one approved command against its connection target.
