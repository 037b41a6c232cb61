"""Model references: a bundle directory or an MLflow registry reference (``gnn@champion``, ``mf/3``).

:func:`resolve_ref` turns a reference into a bundle directory; :func:`check_reload_ref` is the rule for
references a client sends to ``POST /admin/reload``: a registry reference, or a directory inside one of
the configured bundle roots (``FEEDREC_BUNDLE_ROOTS``), after symlinks and ``..`` are resolved. The
references of ``FEEDREC_MODELS`` are the operator's own and are not confined.

Both ``serving.loading`` and ``serving.export`` use this module, which imports neither of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

#: ``name@alias`` or ``name/version``.
REGISTRY_REF = re.compile(r"^[A-Za-z0-9_\-.]+(@[A-Za-z0-9_\-.]+|/\d+)$")


class RefNotAllowed(ValueError):
    """A reload reference outside every configured bundle root (and not a registry reference)."""


def is_registry_ref(ref: str) -> bool:
    """Whether ``ref`` is resolved through the registry (registry-shaped, and no such path exists)."""
    return bool(REGISTRY_REF.match(ref)) and not Path(ref).exists()


def resolve_ref(ref: str) -> Path:
    """Bundle directory of ``ref`` (a path, or a registry reference resolved through MLflow)."""
    path = Path(ref)
    if path.exists():
        return path
    if REGISTRY_REF.match(ref):
        try:
            from recsys.tracking import resolve_model_ref
        except ImportError as exc:
            raise FileNotFoundError(f"model ref {ref!r}: registry support (recsys.tracking) missing: {exc}") from exc
        return Path(resolve_model_ref(ref))
    raise FileNotFoundError(f"model ref {ref!r}: no such bundle directory and not a registry reference (name@alias)")


def check_reload_ref(ref: str, roots: Iterable[Path]) -> None:
    """Refuse a client-given reference that is neither a registry reference nor inside ``roots``.

    Raises:
        RefNotAllowed: With a message that names the roots, not the resolved path.
    """
    if is_registry_ref(ref):
        return
    roots = list(roots)
    resolved = Path(ref).resolve()
    if any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        return
    raise RefNotAllowed(f"model ref {ref!r} is neither a registry reference (name@alias, name/version) nor a "
                        f"directory under the bundle roots (FEEDREC_BUNDLE_ROOTS: "
                        f"{', '.join(map(str, roots)) or 'none'})")  # fmt: skip
