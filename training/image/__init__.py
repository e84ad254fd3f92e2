"""Image classification area: a CNN on Fashion-MNIST (see ``training.image.train``)."""
