"""``JSONAnswer``: the hot named routes' JSON answers, rendered by orjson.

Starlette's ``JSONResponse`` renders with ``json.dumps``: 112 µs for the fraud route's answer to
100 transactions on this project's 2-core machine, against 6 µs with orjson (which the V2 routes
already use). Same compact JSON; numpy scalars and arrays are written as numbers and lists, and a
non-finite number as ``null``, as on the V2 routes (``json.dumps`` refuses it: a 500).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class JSONAnswer(JSONResponse):
    """A ``JSONResponse`` whose body orjson renders."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
