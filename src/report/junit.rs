//! JUnit XML of a gate, the format CI systems show as test results: one testcase per
//! metric, one for integrity and one per SLO. A failed check is a `<failure>` whose
//! message says baseline, current, ratio, interval and p-value; a metric nobody
//! measured is `<skipped>`. Written by hand (the format is small), every text escaped.

use std::fmt::Write;

use super::gate::{GateReport, MetricCheck, Verdict};

/// Class names of the testcases, so CI tools group them.
pub const METRIC_CLASS: &str = "stompede.gate.metric";
pub const INTEGRITY_CLASS: &str = "stompede.gate.integrity";
pub const SLO_CLASS: &str = "stompede.gate.slo";

/// The gate's JUnit XML.
pub fn junit(r: &GateReport) -> String {
    let mut cases = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for m in &r.metrics {
        tests += 1;
        let line = m.describe(r.alpha, r.confidence);
        let body = match m.verdict {
            v if v.fails() => {
                failures += 1;
                failure(
                    &line,
                    if v == Verdict::Missing {
                        "missing"
                    } else {
                        "regression"
                    },
                    &values(m),
                )
            }
            Verdict::NotMeasured => {
                skipped += 1;
                format!("      <skipped message=\"{}\"/>\n", escape(&line))
            }
            _ => system_out(&format!("{line}\n{}", values(m))),
        };
        cases += &case(METRIC_CLASS, m.metric.label(), &body);
    }
    tests += 1;
    let integrity = r.integrity.describe();
    let body = if r.integrity.passed {
        system_out(&integrity)
    } else {
        failures += 1;
        failure(&integrity, "integrity", "")
    };
    cases += &case(INTEGRITY_CLASS, "integrity", &body);
    for s in &r.slos {
        tests += 1;
        let line = s.describe();
        let body = if s.passed {
            system_out(&line)
        } else {
            failures += 1;
            failure(&line, "slo", "")
        };
        cases += &case(SLO_CLASS, &s.name, &body);
    }
    let suite = format!("stompede gate: {}", r.scenario);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        escape(&suite)
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        escape(&suite)
    );
    out += "    <properties>\n";
    let mut props = vec![
        ("baseline", r.baseline.file.clone().unwrap_or_default()),
        ("baseline.recorded_at", r.baseline.recorded_at.clone()),
        ("baseline.runs", r.baseline.runs.to_string()),
        ("baseline.tool_version", r.baseline.tool_version.clone()),
        ("runs", r.runs.to_string()),
        ("alpha", r.alpha.to_string()),
        ("confidence", r.confidence.to_string()),
    ];
    props.extend(r.flags.iter().map(|f| ("flag", f.clone())));
    props.extend(r.notes.iter().map(|n| ("note", n.clone())));
    for (name, value) in props {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            escape(name),
            escape(&value)
        );
    }
    out += "    </properties>\n";
    out += &cases;
    out += "  </testsuite>\n</testsuites>\n";
    out
}

/// JUnit XML for a gate that could not run: one testcase in error, so CI shows why.
pub fn junit_error(scenario: &str, message: &str) -> String {
    let suite = escape(&format!("stompede gate: {scenario}"));
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n\
         \x20 <testsuite name=\"{suite}\" tests=\"1\" failures=\"0\" errors=\"1\" skipped=\"0\">\n\
         \x20   <testcase classname=\"stompede.gate\" name=\"gate\">\n\
         \x20     <error message=\"{}\" type=\"could-not-run\"/>\n\
         \x20   </testcase>\n\
         \x20 </testsuite>\n\
         </testsuites>\n",
        escape(message)
    )
}

fn case(class: &str, name: &str, body: &str) -> String {
    format!(
        "    <testcase classname=\"{}\" name=\"{}\">\n{body}    </testcase>\n",
        escape(class),
        escape(name)
    )
}

fn failure(message: &str, kind: &str, detail: &str) -> String {
    format!(
        "      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n",
        escape(message),
        escape(&format!("{message}\n{detail}"))
    )
}

fn system_out(text: &str) -> String {
    format!("      <system-out>{}</system-out>\n", escape(text))
}

/// Per-run values of both sides, for the failure's body.
fn values(m: &MetricCheck) -> String {
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| m.metric.show(*x))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "baseline runs: {}\ncurrent runs: {}",
        show(&m.baseline),
        show(&m.current)
    )
}

/// Escapes text for XML content and attribute values; characters XML 1.0 cannot hold
/// (most control characters) become U+FFFD, tabs and newlines in attributes become
/// character references so they survive attribute normalisation.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::gate::tests_support::report;

    #[test]
    fn escapes_everything_xml_cares_about() {
        assert_eq!(
            escape("a<b>&\"c\"'d'\n\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;&#10;\u{FFFD}"
        );
    }

    #[test]
    fn parses_and_counts_match_the_verdicts() {
        let r = report();
        let xml = junit(&r);
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        let cases: Vec<_> = root
            .descendants()
            .filter(|n| n.has_tag_name("testcase"))
            .collect();
        let expected_tests = r.metrics.len() + 1 + r.slos.len();
        assert_eq!(cases.len(), expected_tests);
        let failed = cases
            .iter()
            .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
            .count();
        let expected_failures = r.metrics.iter().filter(|m| m.verdict.fails()).count()
            + usize::from(!r.integrity.passed)
            + r.slos.iter().filter(|s| !s.passed).count();
        assert_eq!(failed, expected_failures);
        assert!(expected_failures >= 3, "the fixture fails several checks");
        let skipped = cases
            .iter()
            .filter(|c| c.children().any(|n| n.has_tag_name("skipped")))
            .count();
        for el in [root, root.first_element_child().unwrap()] {
            assert_eq!(el.attribute("tests"), Some(&*expected_tests.to_string()));
            assert_eq!(
                el.attribute("failures"),
                Some(&*expected_failures.to_string())
            );
            assert_eq!(el.attribute("skipped"), Some(&*skipped.to_string()));
        }
        // The regressed metric's failure says every figure.
        let p50 = cases
            .iter()
            .find(|c| c.attribute("name") == Some("latency p50"))
            .unwrap();
        let msg = p50
            .children()
            .find(|n| n.has_tag_name("failure"))
            .and_then(|f| f.attribute("message"))
            .unwrap();
        for part in [
            "baseline 2 ms",
            "current 42 ms",
            "ratio 21.00×",
            "interval",
            "p = 0.008",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg:?}");
        }
        // Escaped text comes back as it was.
        let slo = cases
            .iter()
            .find(|c| {
                c.attribute("classname") == Some(SLO_CLASS)
                    && c.attribute("name") == Some("p99<&>\"ms\"")
            })
            .expect("the SLO with markup in its name");
        assert!(slo.children().any(|n| n.has_tag_name("failure")));
    }

    #[test]
    fn an_error_document_parses() {
        let xml = junit_error("smoke", "the stack did not come up: <kafka> & co");
        let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
        let err = doc.descendants().find(|n| n.has_tag_name("error")).unwrap();
        assert_eq!(
            err.attribute("message"),
            Some("the stack did not come up: <kafka> & co")
        );
    }
}
