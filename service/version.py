"""dlserve's version: the one place it is written. The package metadata reads it at build time
(pyproject.toml ``[tool.setuptools.dynamic]``); the server reads it here, so a copy of
``service/`` that was never pip-installed (the container image) knows its version too."""

VERSION = "0.1.0"
