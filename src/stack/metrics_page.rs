//! Reading the servers' `/metrics` pages (Prometheus text format): what the stack's
//! callers check a server against (its `stompede_server_info` labels, the partitions its
//! fan-out consumer holds).
use std::net::SocketAddr;
use std::time::Duration;

/// GETs a server's metrics page (`http://HOST:PORT/metrics`).
pub async fn fetch(metrics_url: &str, timeout: Duration) -> Result<String, String> {
    let rest = metrics_url
        .strip_prefix("http://")
        .ok_or_else(|| format!("metrics URL {metrics_url} is not http://HOST:PORT/PATH"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = host
        .parse()
        .map_err(|_| format!("metrics URL {metrics_url}: {host} is not IP:PORT"))?;
    let (code, body) = super::process::http_get(addr, &format!("/{path}"), timeout)
        .await
        .map_err(|e| format!("GET {metrics_url}: {e}"))?;
    if code != 200 {
        return Err(format!("GET {metrics_url} answered {code}"));
    }
    Ok(body)
}

/// The label sets of every sample of metric `name` in `page`, in page order. A line
/// whose labels do not parse is skipped.
pub fn samples(page: &str, name: &str) -> Vec<Vec<(String, String)>> {
    let open = format!("{name}{{");
    page.lines()
        .filter_map(|l| l.strip_prefix(open.as_str()))
        .filter_map(|rest| labels(&rest[..rest.rfind('}')?]))
        .collect()
}

/// `a="x",b="y\"z"` → `[(a, x), (b, y"z)]`, undoing the format's `\\`, `\"` and `\n`.
fn labels(inner: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.trim().is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim().to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some(out)
}

/// The value of label `key` in a label set.
pub fn label<'a>(set: &'a [(String, String)], key: &str) -> Option<&'a str> {
    set.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_sample_of_a_metric() {
        let page = "# HELP x\nstompede_server_assigned_partition{instance=\"s1\",topic=\"t\",partition=\"0\"} 1\n\
                    stompede_server_assigned_partition{instance=\"s1\",topic=\"t\",partition=\"2\"} 1\n\
                    stompede_server_info{instance=\"s1\",topic=\"a\\\"b\"} 1\n";
        let parts = samples(page, "stompede_server_assigned_partition");
        assert_eq!(parts.len(), 2);
        assert_eq!(label(&parts[1], "partition"), Some("2"));
        let info = samples(page, "stompede_server_info");
        assert_eq!(label(&info[0], "topic"), Some("a\"b"));
        assert!(samples(page, "stompede_server").is_empty());
    }
}
