"""Commands outside the DVC graph: predict, check_metrics, demo, bench, model_summary."""
