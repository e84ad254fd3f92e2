"""Benchmarks: HTTP throughput under wrk beside the in-process ONNX Runtime ceiling."""
