//! JUnit XML of a `tapeline test` run, the format CI systems read.

use super::Outcome;

/// One `<testsuite>` with a `<testcase>` per test; a failed test has a `<failure>` holding its
/// mismatches.
pub fn xml(outcomes: &[Outcome]) -> String {
    let failures = outcomes.iter().filter(|o| !o.diffs.is_empty()).count();
    let total: f64 = outcomes.iter().map(|o| o.seconds).sum();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"tapeline\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{total:.3}\">\n",
        outcomes.len()
    );
    for o in outcomes {
        s.push_str(&format!(
            "  <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&o.name),
            escape(&o.file.display().to_string()),
            o.seconds
        ));
        if o.diffs.is_empty() {
            s.push_str("/>\n");
            continue;
        }
        s.push_str(&format!(
            ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
            escape(&o.diffs[0]),
            escape(&o.diffs.join("\n"))
        ));
    }
    s.push_str("</testsuite>\n");
    s
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => format!("&#{};", c as u32),
            c => c.to_string(),
        })
        .collect()
}
