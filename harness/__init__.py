"""What the tests and the benches share to drive a real dlserve: ``bentoml serve`` on a free
127.0.0.1 port (``local_server``), request payloads (``payloads``, ``images``), HTTP checks
(``http_checks``) and schema fuzzing (``schema_fuzz``). It imports neither ``tests`` nor
``bench`` (import-linter contract in pyproject.toml)."""
