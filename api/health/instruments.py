"""The counters and histograms this process keeps (no app imports: every domain may import this).

`api/health/metrics.py` says how they are exposed and why they are multi-worker safe.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NLU_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0)

BOT_TURNS = Counter("yunting_bot_turns_total", "Customer messages the bot answered, by outcome", ["outcome"])
NLU_SECONDS = Histogram(
    "yunting_nlu_request_seconds", "Time of one NLU parse, by Rasa replica", ["replica"], buckets=NLU_BUCKETS
)
NLU_ERRORS = Counter("yunting_nlu_errors_total", "NLU parses that failed or timed out, by Rasa replica", ["replica"])
# For the parse cache (issue 17's branch): `NLU_CACHE.labels("hit").inc()` / `("miss")`; the hit rate is
# rate(yunting_nlu_cache_total{result="hit"}) / rate(yunting_nlu_cache_total).
NLU_CACHE = Counter("yunting_nlu_cache_total", "NLU parse-cache look-ups, by result", ["result"])
OPEN_SOCKETS = Gauge(
    "yunting_open_sockets", "WebSockets open on this host, by kind", ["kind"], multiprocess_mode="livesum"
)
DELIVERIES = Counter(
    "yunting_deliveries_total", "Outbound messages handed to a channel, by channel and outcome", ["channel", "outcome"]
)
WECHAT_ERRORS = Counter(
    "yunting_wechat_api_errors_total", "WeChat API calls that failed, by errcode", ["api", "errcode"]
)
QUEUE_WAIT = Histogram(
    "yunting_queue_wait_seconds",
    "How long a customer waited in the queue before an agent got them, by skill group",
    ["group"],
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)


def replica_label(url: str | None) -> str:
    """`host:port` of a Rasa URL (never a path or credentials)."""
    if not url:
        return "unknown"
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].rsplit("@", 1)[-1]
