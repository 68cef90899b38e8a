//! The integration tests: one binary (the harness compiles once), one module per area, named
//! after the behaviour it pins. Every test talks to real PostgreSQL clusters that the harness
//! in `support` starts: one source/target pair for the whole binary, shared by all tests (each
//! takes a fresh database), and private clusters for the tests that stop, crash or reconfigure
//! a server.
//!
//! Run one area with a filter: `cargo test --test it deferred::`, one test by its name.

mod support;

mod auth;
mod backfill;
mod backfill_races;
mod backfill_random;
mod cli;
mod deferred;
mod demo;
mod deploy;
mod docs;
mod errors;
mod faults_connections;
mod faults_data;
mod faults_ddl;
mod faults_kill;
mod faults_memory;
mod faults_slot;
mod harness;
mod keys_and_partial_rows;
mod lifecycle;
mod mapping;
mod mapping_custom;
mod mapping_expressions;
mod mapping_keychange;
mod mapping_merge;
mod mapping_split;
mod privileges;
mod recording;
mod stream;
mod structure;
mod switch;
mod switch_custom;
mod switch_faults;
mod switch_keys;
mod switch_merge;
mod switch_split;
mod types;
mod verify;
