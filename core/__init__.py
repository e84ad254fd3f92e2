"""What training and serving share, free of torch and of the BentoML service.

Contracts (feature specs, label lists, the stored-model format) and the runtime pieces both
sides use: ONNX Runtime sessions, loading a verified model from the store, text encoding and
progress bars. ``core`` imports neither ``service``, ``training``, ``models`` nor torch.
"""
