"""The consistency audit: candidate features, judge-bias and consistency metrics, flags per pair,
gates, and the report. `stage` audits the store; `dataset` measures any preference dataset."""
