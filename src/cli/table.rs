//! Aligned text for people.

use std::fmt::Write;

use serde_json::Value;

/// Rows under a header, each column as wide as its widest cell.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn sessions(list: &Value) -> String {
    let rows: Vec<Vec<String>> = list["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["state"]),
                text(&s["created_at"]),
                text(&s["committed"]),
                text(&s["bytes_received"]),
                text(&s["last_seen_at"]),
                text(&s["recording"]["complete"]),
            ]
        })
        .collect();
    let mut out = aligned(
        &[
            "ID",
            "STATE",
            "CREATED",
            "CHUNKS",
            "BYTES",
            "LAST SEEN",
            "COMPLETE",
        ],
        &rows,
    );
    if let Some(cursor) = list["next_cursor"].as_str() {
        let _ = writeln!(out, "(more: --json shows next_cursor {cursor})");
    }
    out
}

pub fn session(session: &Value) -> String {
    let recording = &session["recording"];
    let missing = session["missing"]
        .as_array()
        .map(|ranges| {
            ranges
                .iter()
                .map(|r| format!("{}-{}", r[0], r[1]))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "none".into());
    let fields = [
        ("id", text(&session["id"])),
        ("state", text(&session["state"])),
        ("mime type", text(&session["mime_type"])),
        ("created", text(&session["created_at"])),
        ("last seen", text(&session["last_seen_at"])),
        ("committed", text(&session["committed"])),
        ("chunks received", text(&session["chunks_received"])),
        ("bytes received", text(&session["bytes_received"])),
        ("expected chunks", text(&session["expected_chunks"])),
        ("missing", missing),
        ("connections", text(&session["connections"])),
        ("client", text(&session["client"]["addr"])),
        ("user agent", text(&session["client"]["user_agent"])),
        ("metadata", session["metadata"].to_string()),
        ("recording", text(&recording["url"])),
        ("recording bytes", text(&recording["bytes"])),
        ("complete", text(&recording["complete"])),
        ("failure", text(&session["failure_reason"])),
    ];
    key_values(&fields)
}

pub fn stats(stats: &Value) -> String {
    let sessions = &stats["sessions"];
    let fields = [
        ("recording", text(&sessions["recording"])),
        ("finishing", text(&sessions["finishing"])),
        ("ready", text(&sessions["ready"])),
        ("failed", text(&sessions["failed"])),
        ("chunks stored", text(&stats["chunks_stored"])),
        ("chunk bytes stored", text(&stats["chunk_bytes_stored"])),
        ("recordings bytes", text(&stats["recordings_bytes"])),
        ("chunks/s (1 min)", text(&stats["chunks_per_second_1m"])),
    ];
    key_values(&fields)
}

fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    fields
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_line_up() {
        let out = aligned(&["A", "LONG"], &[vec!["wide cell".into(), "x".into()]]);
        assert_eq!(out, "A          LONG\nwide cell  x\n");
        let list = sessions(
            &json!({"sessions": [{"id": "ab", "state": "ready", "recording": null}], "next_cursor": null}),
        );
        assert!(
            list.lines().nth(1).unwrap().starts_with("ab  ready"),
            "{list}"
        );
    }
}
