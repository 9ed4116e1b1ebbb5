"""One small registry per stage: backends register under a name the config uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownBackendError(ValueError):
    pass


class Registry(Generic[T]):
    """Maps backend names (as written in ``config.yaml``) to factories.

    Factories are registered lazily by module path so that a GPU-only dependency (vllm,
    transformers) is imported only when its backend is chosen.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self._factories: dict[str, Callable[..., T] | str] = {}

    def register(self, name: str, factory: Callable[..., T] | str) -> None:
        """``factory`` is a callable, or ``"module.path:attribute"`` imported on first use."""
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, **params: Any) -> T:
        if name not in self._factories:
            raise UnknownBackendError(
                f"unknown {self.stage} backend '{name}'; known backends: {', '.join(self.names())}"
            )
        factory = self._factories[name]
        if isinstance(factory, str):
            import importlib

            module_name, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
            self._factories[name] = factory
        try:
            return factory(**params)
        except TypeError as err:
            raise ValueError(f"{self.stage} backend '{name}': bad params {sorted(params)}: {err}") from err
