"""Text generation area: OpenAI's completions API over the character-level GPT, streamed and
continuously batched.

``POST /v1/completions`` takes OpenAI's request (``model``, ``prompt``, ``max_tokens``,
``temperature``, ``top_p``, ``top_k`` as vLLM has it, ``seed``, ``stop``, ``stream``) and answers
OpenAI's completion object, or its chunks as server-sent events when ``stream`` is true, so the
official ``openai`` client works unchanged. Errors use OpenAI's error body
(``service.openai_errors``). One token is one character of the model's stored vocabulary.

The area is split by concern: ``limits`` (names and bounds), ``schemas`` (OpenAI's fields and
objects), ``model`` (the stored model's contract and companion), ``program`` (the decoding
program, ``Completions``), ``route`` (the handler), ``batch`` (batch jobs), ``metrics``.
"""

from __future__ import annotations

from service.area import Area, BatchAdapter, Endpoint, ModelSpec, SequenceEnd
from service.areas.text.batch import BATCH_DEFAULTS, complete_all, job_tokens, validate_prompts
from service.areas.text.limits import MODEL, ROUTE
from service.areas.text.model import GeneratorMetadata, prepare
from service.areas.text.program import Completions, rehearse, sequence_end
from service.areas.text.route import complete
from service.openai_errors import OPENAI_ERROR_SCHEMA, openai_error

AREA = Area(
    name="text",
    description="text generation (character-level GPT on Shakespeare), OpenAI-compatible",
    models=(
        ModelSpec(
            MODEL,
            contract=GeneratorMetadata,
            prepare=prepare,
            rehearse=rehearse,
            program=Completions,
            sequence_end=SequenceEnd(sequence_end),
        ),
    ),
    endpoints=(
        Endpoint(
            ROUTE,
            complete,
            models=(MODEL,),
            errors=openai_error,
            error_schema=OPENAI_ERROR_SCHEMA,
        ),
    ),
    batch=(
        BatchAdapter(
            model=MODEL,
            input_columns=("prompt", *BATCH_DEFAULTS),
            validate=validate_prompts,
            encode=lambda columns, ready: (dict(columns), {}),
            infer=complete_all,
            to_columns=lambda outputs, ready: outputs,
            batch_size=64,
            tokens=job_tokens,
        ),
    ),
)
