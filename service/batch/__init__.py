"""Batch scoring jobs: ``python -m service.batch --model NAME --input PATH --output PATH``.

Files in, scores out, with the HTTP service's preprocessing and ONNX Runtime code. A model
takes part by exposing a ``BatchAdapter`` named ``BATCH`` in its area module
(``service/<area>.py``); see ``service.batch.adapter``.
"""
