"""One module per application area, each declaring ``AREA = Area(...)`` (``service.area``).

``service.registry`` imports every module of this package, so a new area is served by adding
its module here; nothing else in ``service/`` changes.
"""
