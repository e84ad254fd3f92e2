"""PyTorch architectures served by dlserve, one module per application area."""
