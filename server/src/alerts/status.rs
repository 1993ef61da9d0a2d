//! A rule's state as shown to people and posted to the webhook.

/// A rule's state, as `/api/alerts`, the dashboard and the webhook show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub name: String,
    pub severity: String,
    pub summary: String,
    /// `inactive`, `pending`, `firing` or `resolved`.
    pub state: &'static str,
    pub value: Option<f64>,
    pub op: &'static str,
    pub threshold: f64,
    pub for_s: u64,
    /// When it entered its state (Unix ms; 0 when inactive).
    pub since_ms: u64,
}

impl Status {
    /// As JSON.
    pub fn json(&self) -> String {
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"name\":");
        wsedge_core::protocol::reply::write_json_string(&mut out, &self.name);
        out.extend_from_slice(b",\"severity\":");
        wsedge_core::protocol::reply::write_json_string(&mut out, &self.severity);
        out.extend_from_slice(b",\"summary\":");
        wsedge_core::protocol::reply::write_json_string(&mut out, &self.summary);
        let value = self
            .value
            .filter(|v| v.is_finite())
            .map_or("null".to_string(), |v| format!("{v}"));
        out.extend_from_slice(
            format!(
                ",\"state\":\"{}\",\"value\":{value},\"op\":\"{}\",\"threshold\":{},\"for_s\":{},\"since_ms\":{}}}",
                self.state, self.op, self.threshold, self.for_s, self.since_ms
            )
            .as_bytes(),
        );
        String::from_utf8(out).unwrap_or_default()
    }
}
