//! Which op a request is, as an index into [`crate::metrics`]' op labels (`OPS`).

use wsedge_core::protocol::envelope::{Op, SettleOp};

/// The op's index in [`crate::metrics`]' `OPS` (in its order).
pub(super) fn op_index(op: &Op<'_>) -> usize {
    match op {
        Op::Subscribe { .. } => 0,
        Op::Unsubscribe { .. } => 1,
        Op::Publish { .. } => 2,
        Op::Send { .. } => 3,
        Op::Settle {
            how: SettleOp::Ack, ..
        } => 4,
        Op::Settle {
            how: SettleOp::Nak { .. },
            ..
        } => 5,
        Op::Settle {
            how: SettleOp::Term { .. },
            ..
        } => 6,
        Op::Cancel { .. } => 7,
        Op::Presence { .. } => 8,
        Op::History { .. } => 9,
        Op::Ping => 10,
        Op::Echo { .. } => 11,
        Op::Refresh { .. } => 12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;
    use wsedge_core::protocol::envelope;

    #[test]
    fn each_op_counts_under_its_own_name() {
        let requests = [
            (r#"{"op":"subscribe","channel":"c"}"#, "subscribe"),
            (r#"{"op":"unsubscribe","channel":"c"}"#, "unsubscribe"),
            (r#"{"op":"publish","channel":"c","data":1}"#, "publish"),
            (r#"{"op":"send","user":"u","data":1}"#, "send"),
            (r#"{"op":"ack","id":"m"}"#, "ack"),
            (r#"{"op":"nak","id":"m"}"#, "nak"),
            (r#"{"op":"term","id":"m"}"#, "term"),
            (r#"{"op":"cancel","id":"m"}"#, "cancel"),
            (r#"{"op":"presence","channel":"c"}"#, "presence"),
            (r#"{"op":"history","channel":"c"}"#, "history"),
            (r#"{"op":"ping"}"#, "ping"),
            (r#"{"op":"echo","data":1}"#, "echo"),
            (r#"{"op":"refresh","token":"t"}"#, "refresh"),
        ];
        let mut buffers = simd_json::Buffers::new(64);
        for (text, name) in requests {
            let mut bytes = text.as_bytes().to_vec();
            let request = envelope::parse(&mut bytes, &mut buffers, 16).unwrap();
            assert_eq!(metrics::OPS[op_index(&request.op)], name, "{text}");
        }
    }
}
