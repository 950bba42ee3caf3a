"""Reading /metrics as Prometheus does, and the metric names a PromQL expression uses."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

# PromQL words that look like metric names: functions, aggregations, keywords.
PROMQL_WORDS = frozenset(
    {
        "abs", "absent", "and", "avg", "avg_over_time", "bool", "by", "ceil", "changes",
        "clamp_max", "clamp_min", "count", "count_over_time", "delta", "deriv", "floor",
        "group_left", "group_right", "histogram_quantile", "ignoring", "increase", "irate",
        "label_replace", "max", "max_over_time", "min", "min_over_time", "offset", "on", "or",
        "quantile", "rate", "resets", "round", "scalar", "sort", "sort_desc", "sum",
        "sum_over_time", "time", "topk", "bottomk", "unless", "vector", "without",
    }
)  # fmt: skip
# Series Prometheus itself makes, not the app.
PROMETHEUS_OWN = frozenset({"up"})


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, $__rate_interval included
    tokens = set(re.findall(r"(?<![\w$.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    return tokens - PROMQL_WORDS - PROMETHEUS_OWN


def exported_names(text: str) -> set[str]:
    """Every series name a query may use against this exposition, even before any sample."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def sample_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in an exposition; 0 when it has not been written yet."""
    wanted = labels or {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                return sample.value
    return 0.0
