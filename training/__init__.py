"""Training: PyTorch models trained on real or simulated data and exported to ONNX."""
