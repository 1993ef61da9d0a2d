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
            ("WSEDGE_SHARDS", "3"),
            ("WSEDGE_LISTEN", "127.0.0.1:0"),
            ("WSEDGE_LOG", "x"),
        ]),
    )
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(c.shards, 3);
    assert_eq!(c.listen.port(), 0);
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
    assert!(err("[server]\nbogus = 1").contains("bogus"));
    let e = FileConfig::load(None, env(&[("WSEDGE_NOPE", "1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("WSEDGE_NOPE"), "{e}");
    let e = FileConfig::load(None, env(&[("WSEDGE_SHARDS", "many")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shards"), "{e}");
}
