"""The completions route's names and bounds, written once: the route, the batch jobs and the
field descriptions read them from here."""

from __future__ import annotations

MODEL = "text-generator"
ROUTE = "/v1/completions"
MAX_TOKENS = 2048  # tokens one sequence may generate; past the context the window moves on
MAX_PROMPT_CHARACTERS = 4096  # far above any context length: the context check names the rule
MAX_STOP_STRINGS = 4
MAX_STOP_CHARACTERS = 64
MAX_PROMPTS = 64  # prompts in one request (a list); each is its own sequence(s)
MAX_N = 128  # OpenAI's maximum
MAX_BEST_OF = 20  # OpenAI's maximum
MAX_LOGPROBS = 5  # OpenAI's maximum for completions
MAX_LOGIT_BIAS = 1024  # entries of `logit_bias` (far above any character vocabulary)
MAX_USER_CHARACTERS = 256
