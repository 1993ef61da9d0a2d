//! loadtest: graded load tests for wsedge, on goose.
//!
//! - [`scenario`]: `config/scenarios.toml`, test plans and phases.
//! - [`grade`]: `config/grading.toml` and the A+..F grade.
//! - [`engine`]: goose scenarios per role, paced open-model senders, readers.
//! - [`reliable`]: persisted sends and acks on plain tasks that survive a server crash
//!   (`--fault kill9`).
//! - [`wsclient`]: the fastwebsockets client connection.
//! - [`stats`]: HdrHistograms, counters, per-second series, loss accounting.
//! - [`run`]: one run end to end; [`analysis`]: histograms to a graded result;
//!   [`proc`]: the server process (spawn, /proc sampling).
//! - [`saturation`]: which side (server, client, the shared machine) ran out in a phase.
//! - [`result`]: the `result.json` schema; [`report`]: Markdown and HTML; [`compare`]: the gate.
//! - [`workers`]: a run split over several processes (each under its open-file limit);
//!   [`peers`]: the folder they meet in.
//! - [`options`]: what a run was asked; [`clock`]: Unix milliseconds and UTC timestamps;
//!   [`timer`]: sub-millisecond wake-ups for the senders' schedules.

#![allow(clippy::disallowed_types)] // a load generator may lock; the server may not (clippy.toml)

pub mod analysis;
pub mod clock;
pub mod compare;
pub mod engine;
pub mod grade;
pub mod noise;
pub mod options;
pub mod peers;
pub mod proc;
pub mod reliable;
pub mod repeat;
pub mod report;
pub mod result;
pub mod run;
pub mod saturation;
pub mod scenario;
pub mod scrape;
pub mod stats;
pub mod summary;
pub mod timer;
pub mod workers;
pub mod wsclient;
