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

    def create(self, name: str, hints: dict[str, Any] | None = None, **params: Any) -> T:
        """Build backend ``name`` with ``params``.

        ``hints`` are run-time settings the workflow knows (e.g. ``threads`` = the rule's threads);
        each is passed only when the factory takes a keyword of that name and ``params`` does not set it.
        """
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
        for key, value in (hints or {}).items():
            if key not in params and _accepts(factory, key):
                params[key] = value
        try:
            return factory(**params)
        except TypeError as err:
            raise ValueError(f"{self.stage} backend '{name}': bad params {sorted(params)}: {err}") from err


def _accepts(factory: Callable[..., Any], keyword: str) -> bool:
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    return keyword in signature.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
