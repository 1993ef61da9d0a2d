//! A report as a list of blocks (headings, paragraphs, tables), rendered to Markdown or to HTML
//! from the same list, so the two reports never disagree. Inline markup in text is Markdown's
//! `**bold**` and `` `code` ``; the HTML rendering escapes everything else.

use std::fmt::Write;

/// One block of a report.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1 to 3.
    Heading(u8, String),
    Para(String),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

impl Block {
    pub fn table<const N: usize>(head: [&str; N], rows: Vec<Vec<String>>) -> Block {
        Block::Table {
            head: head.iter().map(|h| h.to_string()).collect(),
            rows,
        }
    }
}

/// The blocks as Markdown.
pub fn markdown(blocks: &[Block]) -> String {
    let mut s = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let _ = writeln!(s, "{} {text}\n", "#".repeat(usize::from(*level)));
            }
            Block::Para(text) => {
                let _ = writeln!(s, "{text}\n");
            }
            Block::Table { head, rows } => {
                let _ = writeln!(s, "| {} |", head.join(" | "));
                let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
                for row in rows {
                    let _ = writeln!(s, "| {} |", row.join(" | "));
                }
                s.push('\n');
            }
        }
    }
    s
}

/// The blocks as HTML elements (`<h2>`, `<p>`, `<table>`), a heading of level n becoming
/// `<h{n+1}>` under the page's own `<h1>`. A table's numeric cells are right-aligned.
pub fn html(blocks: &[Block]) -> String {
    let mut s = String::new();
    for block in blocks {
        match block {
            Block::Heading(level, text) => {
                let n = level + 1;
                let _ = write!(s, "<h{n}>{}</h{n}>", inline(text));
            }
            Block::Para(text) => {
                let _ = write!(s, "<p>{}</p>", inline(text));
            }
            Block::Table { head, rows } => {
                s.push_str("<table><thead><tr>");
                for h in head {
                    let _ = write!(s, "<th>{}</th>", inline(h));
                }
                s.push_str("</tr></thead><tbody>");
                for row in rows {
                    s.push_str("<tr>");
                    for cell in row {
                        let class = if numeric(cell) { " class=\"n\"" } else { "" };
                        let _ = write!(s, "<td{class}>{}</td>", inline(cell));
                    }
                    s.push_str("</tr>");
                }
                s.push_str("</tbody></table>");
            }
        }
    }
    s
}

fn numeric(cell: &str) -> bool {
    let t = cell.trim_matches('*').trim_start_matches("≤ ");
    t.split_whitespace()
        .next()
        .is_some_and(|w| w.parse::<f64>().is_ok() || w == "-" || w == "–")
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `text` and turns `**bold**` and `` `code` `` into `<strong>` and `<code>`. An
/// unpaired marker is kept as text.
pub fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let next = [("**", "strong"), ("`", "code")]
            .into_iter()
            .filter_map(|(mark, tag)| Some((rest.find(mark)?, mark, tag)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, mark, tag)) = next else {
            out.push_str(&escape(rest));
            break;
        };
        let after = &rest[at + mark.len()..];
        match after.find(mark) {
            Some(end) => {
                out.push_str(&escape(&rest[..at]));
                let inner = &after[..end];
                // Code is literal; bold may hold code.
                let inner = if tag == "code" {
                    escape(inner)
                } else {
                    inline(inner)
                };
                let _ = write!(out, "<{tag}>{inner}</{tag}>");
                rest = &after[end + mark.len()..];
            }
            None => {
                out.push_str(&escape(&rest[..at + mark.len()]));
                rest = after;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup_becomes_tags_and_the_rest_is_escaped() {
        assert_eq!(
            inline("a **b** `<c>` d & e"),
            "a <strong>b</strong> <code>&lt;c&gt;</code> d &amp; e"
        );
        assert_eq!(
            inline("**grade `A`**"),
            "<strong>grade <code>A</code></strong>"
        );
        assert_eq!(inline("2 ** 3 <"), "2 ** 3 &lt;");
        assert_eq!(inline("x`y"), "x`y");
    }

    #[test]
    fn one_list_renders_as_markdown_and_as_html_tables() {
        let blocks = vec![
            Block::Heading(2, "Phases".into()),
            Block::Para("p99 in **ms**".into()),
            Block::table(["phase", "p99"], vec![vec!["steady".into(), "1.25".into()]]),
        ];
        assert_eq!(
            markdown(&blocks),
            "## Phases\n\np99 in **ms**\n\n| phase | p99 |\n|---|---|\n| steady | 1.25 |\n\n"
        );
        assert_eq!(
            html(&blocks),
            "<h3>Phases</h3><p>p99 in <strong>ms</strong></p><table><thead><tr><th>phase</th>\
             <th>p99</th></tr></thead><tbody><tr><td>steady</td><td class=\"n\">1.25</td></tr>\
             </tbody></table>"
        );
    }
}
