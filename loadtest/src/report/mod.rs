//! Markdown and HTML reports, rendered from a [`RunResult`](crate::result::RunResult) alone (so
//! `loadtest report` can redo them). Both come from one list of blocks (`doc`, written by
//! `text`); the HTML adds a summary box and SVG plots (`html`, `chart`).

mod chart;
mod doc;
mod html;
mod text;

pub use html::html;
pub use text::{command, markdown, saturation_line};
