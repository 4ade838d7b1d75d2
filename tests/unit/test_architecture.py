"""The layout the README's Design section describes, checked from the imports:

- the centre (domain, errors, ports, policy, the vend path, the parent key, the read-only
  fallback, the rotation use case) imports no adapter, no config and no web code;
- wiring.py is the one module that names concrete adapter classes: elsewhere, an adapter
  class is named only inside its own folder.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import credbroker

ROOT = Path(credbroker.__file__).parent
ADAPTER_PACKAGES = (
    "objectstore",
    "secrets",
    "state",
    "callers",
    "audit",
    "confluence",
    "escrow",
    "notify",
)
CENTRE = (
    "domain",
    "errors",
    "ports",
    "policy",
    "vend",
    "breakglass",
    "parent_key",
    "fallback",
    "control",
    "leases",
    "rotation.model",
    "rotation.rotate",
    "rotation.status",
    "rotation.owned",
    "rotation.schedule",
    "compliance.model",
    "compliance.check",
    "compliance.trail",
    "compliance.access_report",
    "compliance.html",
    "compliance.job",
)
FORBIDDEN_IN_CENTRE = (*ADAPTER_PACKAGES, "config", "web", "wiring", "cli", "observability")


def _modules() -> list[str]:
    return [
        name.removeprefix("credbroker.")
        for _, name, _ in pkgutil.walk_packages([str(ROOT)], "credbroker.")
    ]


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported credbroker module, names) for every import of the module's source."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("credbroker")
        ):
            found.append(
                (
                    node.module.removeprefix("credbroker.").removeprefix("credbroker"),
                    [a.name for a in node.names],
                )
            )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("credbroker."):
                    found.append((alias.name.removeprefix("credbroker."), []))
    return found


def test_every_centre_module_exists() -> None:
    assert set(CENTRE) <= set(_modules())


def test_the_centre_imports_no_adapter_config_or_web_code() -> None:
    offences = [
        f"{module} imports credbroker.{imported}"
        for module in CENTRE
        for imported, _ in _imports(module)
        if imported.split(".")[0] in FORBIDDEN_IN_CENTRE
    ]
    assert offences == []


def test_only_wiring_names_concrete_adapter_classes() -> None:
    offences = []
    for module in _modules():
        if module == "wiring":
            continue
        for imported, names in _imports(module):
            package = imported.split(".")[0]
            if package not in ADAPTER_PACKAGES or module.split(".")[0] == package:
                continue  # not an adapter, or the adapter's own folder
            source = importlib.import_module(f"credbroker.{imported}")
            for name in names:
                value = getattr(source, name, None)
                if inspect.isclass(value) and not issubclass(value, Exception):
                    offences.append(f"{module} names {imported}.{name}")
    assert offences == []
