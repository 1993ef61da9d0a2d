//! `report.html` in a real browser: headless Chromium (Debian `chromium`) renders the report of
//! the committed example baseline, its DOM must hold the summary box, the ticked plots and the
//! tables, and the page is saved as a screenshot (`REPORT_SCREENSHOT` names where; by default a
//! temporary file).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> &'static str {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("no chromium: install Debian's `chromium` (scripts/test.sh does)")
}

fn headless(profile: &Path, args: &[&str], page: &Path) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1500,2600",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium")
}

/// The committed example baseline's result.json.
fn example_baseline() -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/example");
    std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-baseline"))
        .expect("an example baseline under results/example")
        .join("result.json")
}

#[test]
fn the_html_report_renders_in_chromium_with_summary_plots_and_tables() {
    let dir = support::temp_dir("report-html");
    std::fs::copy(example_baseline(), dir.join("result.json")).unwrap();
    let out = support::loadtest(&["report", dir.join("result.json").to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let page = dir.join("report.html");
    let source = std::fs::read_to_string(&page).unwrap();
    for fetch in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(
            !source.contains(fetch),
            "the report must be self-contained: {fetch}"
        );
    }

    // The DOM as Chromium parsed it: malformed markup would be moved or dropped here.
    let dom = headless(&dir.join("profile"), &["--dump-dom"], &page);
    assert!(dom.status.success(), "{dom:?}");
    let dom = String::from_utf8_lossy(&dom.stdout);
    let summary = dom
        .split("<section class=\"summary\">")
        .nth(1)
        .and_then(|s| s.split("</section>").next())
        .expect("a summary box");
    for needle in [
        "class=\"grade g-",
        ">verdict<",
        ">interference<",
        ">reproduce<",
        "loadtest run --scenario baseline",
    ] {
        assert!(
            summary.contains(needle),
            "summary lacks {needle}: {summary}"
        );
    }
    let figures = dom.matches("<figure class=\"chart\">").count();
    assert!(figures >= 5, "{figures} plots");
    assert_eq!(dom.matches("<svg").count(), figures);
    for needle in [
        ">99.9%<",
        ">time since start (s)<",
        ">p99 (ms)<",
        "class=\"phase\"",
        "class=\"legend\"",
        ">How the grade was set<",
        "<th>p99.9</th>",
    ] {
        assert!(dom.contains(needle), "the report lacks {needle}");
    }
    assert!(dom.matches("<table>").count() >= 3);
    assert!(
        !dom.contains("<pre>"),
        "tables are tables, not preformatted text"
    );

    let shot =
        std::env::var_os("REPORT_SCREENSHOT").map_or_else(|| dir.join("report.png"), PathBuf::from);
    let _ = std::fs::remove_file(&shot);
    let taken = headless(
        &dir.join("profile"),
        &[&format!("--screenshot={}", shot.display())],
        &page,
    );
    assert!(taken.status.success(), "{taken:?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    // A blank page of this size compresses to a few kB; plots and tables take far more.
    assert!(png.len() > 60_000, "screenshot only {} bytes", png.len());
    println!("screenshot: {}", shot.display());
}
