"""The completions route's Prometheus series, with vLLM's names where the meaning is the same
(vLLM prefixes ``vllm:``; dlserve ``dlserve_``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

TIME_TO_FIRST_TOKEN = Histogram(
    "dlserve_time_to_first_token_seconds",
    "Seconds from a completion's arrival to its first generated token, by model.",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
TIME_PER_OUTPUT_TOKEN = Histogram(
    "dlserve_time_per_output_token_seconds",
    "Seconds per generated token after the first, per completion, by model.",
    ["model"],
    buckets=TOKEN_BUCKETS,
)
REQUEST_SECONDS = Histogram(
    "dlserve_e2e_request_latency_seconds",
    "Seconds from a completion's arrival to its last token, by model.",
    ["model"],
    buckets=REQUEST_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "dlserve_prompt_tokens", "Prompt tokens read (prefilled), by model.", ["model"]
)
GENERATION_TOKENS = Counter("dlserve_generation_tokens", "Tokens generated, by model.", ["model"])
