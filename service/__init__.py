"""Serving: ONNX models behind BentoML, with ONNX Runtime on GPU or CPU. Never imports torch."""
