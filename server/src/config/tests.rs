use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn shipped_file_equals_the_default_constants() {
    let shipped = FileConfig::load(None, []).unwrap().validate().unwrap();
    let defaults = FileConfig::default().validate().unwrap();
    assert_eq!(shipped, defaults);
}

#[test]
fn environment_overrides_the_file() {
    let c = FileConfig::load(
        None,
        env(&[
            ("WSEDGE_SERVER_SHARDS", "3"),
            ("WSEDGE_SERVER_LISTEN", "127.0.0.1:0"),
            ("WSEDGE_CONNECTION_MAX_MESSAGE_SIZE", "65536"),
            ("WSEDGE_SERVER_ALLOWED_ORIGINS", r#"["https://a.example"]"#),
            ("WSEDGE_LOG", "x"),
            // Not config keys: a wrapper's own variables are ignored, not fatal.
            ("WSEDGE_BIN", "/usr/bin/wsedge"),
            ("WSEDGE_SHARDS", "9"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(c.shards, 3);
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.max_message_size, 65536);
    assert_eq!(c.allowed_origins, ["https://a.example"]);
}

#[test]
fn errors_name_the_key() {
    let err = |toml: &str| {
        FileConfig::from_toml(toml, "")
            .and_then(FileConfig::validate)
            .unwrap_err()
            .to_string()
    };
    assert!(err("[server]\nlisten = \"nope\"").contains("server.listen"));
    assert!(err("[connection]\nmax_message_size = 0").contains("connection.max_message_size"));
    assert!(
        err("[connection]\nmax_message_size = 100\noutbox_max_bytes = 100")
            .contains("connection.outbox_max_bytes")
    );
    assert!(
        err("[connection]\nidle_timeout_ms = 10\nping_interval_ms = 20")
            .contains("connection.idle_timeout_ms")
    );
    assert!(
        err("[connection]\nwrite_coalesce_us = 10000001").contains("connection.write_coalesce_us")
    );
    assert!(err("[server]\nshards = -1").contains("shards"));
    assert!(err("[protocol]\nmax_json_depth = 0").contains("protocol.max_json_depth"));
    assert!(err("[protocol]\nmax_json_depth = 5000").contains("protocol.max_json_depth"));
    assert!(err("[server]\nshard_queue_max_bytes = 1000").contains("server.shard_queue_max_bytes"));
    assert!(err("[server]\nmax_request_bytes = 100").contains("server.max_request_bytes"));
    assert!(
        err("[server]\nhandshake_budget_bytes = 9000").contains("server.handshake_budget_bytes")
    );
    assert!(err("[connection]\nmax_fragments = 0").contains("connection.max_fragments"));
    assert!(err("[limits]\nmessages_per_s = 0").contains("limits.messages_per_s"));
    assert!(err("[limits]\npublish_burst_bytes = 10").contains("limits.publish_burst_bytes"));
    assert!(err("[limits]\nviolations_before_close = 0").contains("limits.violations_before_close"));
    assert!(err("[tls]\ncert_file = \"c.pem\"").contains("tls.key_file"));
    assert!(err("[tls]\nkey_file = \"k.pem\"").contains("tls.cert_file"));
    for origin in ["example.com", "https://", "https://a.com/path", "*"] {
        let e = err(&format!("[server]\nallowed_origins = [\"{origin}\"]"));
        assert!(e.contains("server.allowed_origins"), "{origin}: {e}");
    }
    assert!(err("[server]\nbogus = 1").contains("bogus"));
}

#[test]
fn environment_errors_name_the_variable() {
    let err = |name: &str, value: &str| {
        FileConfig::load(None, env(&[(name, value)]))
            .and_then(FileConfig::validate)
            .unwrap_err()
            .to_string()
    };
    // A key that does not exist under a known section is a typo: refused.
    let e = err("WSEDGE_SERVER_SHRADS", "2");
    assert!(
        e.contains("WSEDGE_SERVER_SHRADS") && e.contains("shrads"),
        "{e}"
    );
    // A value of the wrong type, and a value the validation refuses.
    let e = err("WSEDGE_SERVER_SHARDS", "many");
    assert!(e.contains("WSEDGE_SERVER_SHARDS"), "{e}");
    let e = err("WSEDGE_SERVER_LISTEN", "nowhere");
    assert!(
        e.contains("WSEDGE_SERVER_LISTEN") && e.contains("server.listen"),
        "{e}"
    );
    let e = err("WSEDGE_LIMITS_MESSAGES_BURST", "0");
    assert!(e.contains("WSEDGE_LIMITS_MESSAGES_BURST"), "{e}");
}

#[test]
fn the_socket_budget_follows_the_open_file_limit() {
    let auto = FileConfig::default().validate().unwrap();
    let budget = auto.socket_budget(20_000);
    assert_eq!(
        (budget.max_connections, budget.max_sockets),
        (19_936, 19_936)
    );
    let fixed = FileConfig::from_toml("[server]\nmax_connections = 100", "")
        .and_then(FileConfig::validate)
        .unwrap();
    assert_eq!(fixed.socket_budget(20_000).max_connections, 100);
    // More than the descriptors allow is lowered to what they allow.
    assert_eq!(fixed.socket_budget(100).max_connections, 36);
}
