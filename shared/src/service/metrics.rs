//! CloudWatch metrics in the embedded metric format: one JSON line on standard output, which
//! Lambda sends to the function's log group and CloudWatch turns into the metric the alarms
//! in `template.yaml` watch. No API call, no added latency; locally the line lands in the
//! runner's log.

/// The namespace every metric of ours is in (the alarms name it).
pub const NAMESPACE: &str = "VideoPlatform";

/// The line for one value of `name` (in `unit`: `Count`, `Milliseconds`) at `now_ms`, with
/// `dimensions`, and `extra` fields that help whoever reads the log.
pub fn line(
    now_ms: i64,
    name: &str,
    unit: &str,
    value: f64,
    dimensions: &[(&str, &str)],
    extra: serde_json::Value,
) -> String {
    let mut v = match extra {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    let dims: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    for (k, d) in dimensions {
        v.insert((*k).to_string(), serde_json::json!(d));
    }
    v.insert(name.to_string(), serde_json::json!(value));
    v.insert(
        "_aws".into(),
        serde_json::json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dims],
                "Metrics": [{"Name": name, "Unit": unit}],
            }],
        }),
    );
    serde_json::Value::Object(v).to_string()
}

/// Writes the line (see [`line`]).
pub fn emit(
    now_ms: i64,
    name: &str,
    unit: &str,
    value: f64,
    dimensions: &[(&str, &str)],
    extra: serde_json::Value,
) {
    println!("{}", line(now_ms, name, unit, value, dimensions, extra));
}

#[cfg(test)]
mod tests {
    use super::line;

    #[test]
    fn a_line_is_an_embedded_metric_format_document() {
        let l = line(
            1_000,
            "ProcessingTime",
            "Milliseconds",
            61_250.0,
            &[("Model", "sora-2")],
            serde_json::json!({"task_id": "t1"}),
        );
        let v: serde_json::Value = serde_json::from_str(&l).expect("json");
        // The specification's required shape: the metric and each dimension at the root,
        // named by the directive under `_aws`.
        let d = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(v["_aws"]["Timestamp"], 1_000);
        assert_eq!(d["Namespace"], "VideoPlatform");
        assert_eq!(d["Dimensions"], serde_json::json!([["Model"]]));
        assert_eq!(d["Metrics"][0]["Name"], "ProcessingTime");
        assert_eq!(d["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(v["ProcessingTime"], 61_250.0);
        assert_eq!(v["Model"], "sora-2");
        assert_eq!(v["task_id"], "t1");
    }
}
