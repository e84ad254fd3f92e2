"""The registry of serving areas: every ``AREA`` declared in ``service/areas/``, plus plug-ins.

An area module is a module of the ``service.areas`` package, or any importable module named
in ``DLSERVE_AREA_MODULES`` (comma-separated, e.g. an area kept in another package, or a test's
toy area), that defines ``AREA = Area(...)``. Area names, model names and routes must be
unique across all of them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable

from service import areas as areas_package
from service.area import Area, BatchAdapter, ModelSpec
from service.config import Settings, SettingsError, plugin_modules


class RegistryError(RuntimeError):
    """Two areas clash (same area, model or route), or a module declares no ``AREA``."""


def _package_modules() -> list[str]:
    return [
        f"{areas_package.__name__}.{info.name}"
        for info in pkgutil.iter_modules(areas_package.__path__)
        if not info.name.startswith("_")
    ]


@functools.cache
def _areas(plugins: tuple[str, ...]) -> dict[str, Area]:
    found: dict[str, Area] = {}
    for module_name in [*_package_modules(), *plugins]:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise RegistryError(f"area module {module_name!r} cannot be imported: {exc}") from exc
        area = getattr(module, "AREA", None)
        if not isinstance(area, Area):
            raise RegistryError(f"{module_name} defines no AREA = Area(...)")
        if area.name in found:
            raise RegistryError(f"area {area.name!r} is declared twice (again in {module_name})")
        found[area.name] = area
    _check_unique(found.values())
    return found


def _check_unique(declared: Iterable[Area]) -> None:
    owners: dict[str, str] = {}  # model name or route -> the area declaring it
    for area in declared:
        for name in [*area.spec_by_name, *(endpoint.route for endpoint in area.endpoints)]:
            if name in owners:
                raise RegistryError(f"{name!r} is declared by {owners[name]!r} and {area.name!r}")
            owners[name] = area.name


def all_areas(plugins: tuple[str, ...] | None = None) -> dict[str, Area]:
    """Every declared area by name: ``service/areas/`` first (by module name), then plug-ins."""
    return _areas(plugin_modules() if plugins is None else plugins)


def checked_settings(settings: Settings) -> Settings:
    """``settings`` checked against the declared areas, as the service runs it once at start:
    the plug-in modules import and declare areas, every area of ``DLSERVE_MODELS`` is known
    (``models`` defaults to every area), so is every area of ``DLSERVE_LEAN_AREAS``, and every
    pin names a served model; ``SettingsError`` naming the variable otherwise."""
    try:
        areas = all_areas(settings.area_modules)
    except RegistryError as exc:
        raise SettingsError(f"DLSERVE_AREA_MODULES: {exc}") from exc
    known = tuple(areas)
    models = known if settings.models is None else settings.models
    unknown = sorted(set(models) - set(known))
    if unknown:
        raise SettingsError(f"DLSERVE_MODELS names unknown areas {unknown}; known: {known}")
    unknown_lean = sorted(set(settings.lean_areas) - set(known))
    if unknown_lean:
        raise SettingsError(
            f"DLSERVE_LEAN_AREAS names unknown areas {unknown_lean}; known: {known}"
        )
    names = {spec.name for area in areas.values() for spec in area.models}
    for pin in settings.pinned_models:
        name, _, version = pin.partition(":")
        if name not in names or not version:
            raise SettingsError(
                f"DLSERVE_PINNED_MODELS: {pin!r} is not `name:version` of a served model "
                f"({sorted(names)})"
            )
    return settings.model_copy(update={"models": models})


def settings_from_env() -> Settings:
    """The service's settings: ``Settings.from_env()`` then ``checked_settings``."""
    return checked_settings(Settings.from_env())


def model_specs(area_names: Iterable[str] | None = None) -> list[ModelSpec]:
    """The model specs of the named areas (default: all), in declaration order."""
    declared = all_areas()
    names = declared if area_names is None else area_names
    return [spec for name in names for spec in declared[name].models]


def tensor_model_names() -> frozenset[str]:
    """Every declared model that the Open Inference Protocol serves (``ModelSpec.tensors``),
    enabled or not."""
    return frozenset(spec.name for spec in model_specs() if spec.tensors)


def batch_adapters() -> list[BatchAdapter]:
    """Every area's batch adapters, in area order then declaration order."""
    return [adapter for area in all_areas().values() for adapter in area.batch]


def area_of(model_name: str) -> Area:
    """The area serving the stored model ``model_name`` (KeyError when none does)."""
    for area in all_areas().values():
        if model_name in area.spec_by_name:
            return area
    raise KeyError(model_name)


def main() -> None:
    """``python -m service.registry``: the stored model names of every declared area, one per
    line (the export loop of docs/DEPLOY.md reads them)."""
    print("\n".join(spec.name for spec in model_specs()))


if __name__ == "__main__":
    main()
