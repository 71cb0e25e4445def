"""The import rule between packages (ARCHITECTURE.md, "Dependency rule"), checked on the source tree.

An AST scan of every ``.py`` file of the packages lists what each module imports (``import x``,
``from x import y``, relative imports resolved, ``TYPE_CHECKING`` blocks included) and fails on any
import a rule forbids. The checker itself is tested on fake trees with planted violations, so a rule
that silently stopped matching would be caught too.

A storage module is any module that names its collection in a module-level ``COLLECTION`` constant
(the convention of every module that owns a collection); it must not import what sits above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("robert_common", "crypto_backend", "robert_server", "simulator")
HARNESSES = ("bench", "loadtests", "tests")  # may import anything; nothing of the product imports them


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. robert_server.api.status
    path: Path
    imports: tuple[tuple[int, str], ...]  # (line, dotted target)
    is_storage: bool


@dataclass(frozen=True)
class Rule:
    """Modules under ``sources`` (or storage modules, with ``storage``) must not import ``forbidden``,
    except targets under ``allowed`` and the source modules listed in ``exempt``."""

    name: str
    sources: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    exempt: tuple[str, ...] = ()
    storage: bool = False


STORAGE_ABOVE = (
    "robert_server.api",  # endpoints and their handlers
    "robert_server.matching",  # the worker and its algorithms
    "robert_server.codes.service",  # the code issuer gRPC service
    "robert_server.codes.server",
    "robert_server.codes.verifier",  # code checks at /report
    "robert_server.crypto_client",
    "robert_server.cli",
    "robert_server.up",
)

RULES = (
    Rule(
        "robert_common imports nothing of the project",
        ("robert_common",),
        ("crypto_backend", "robert_server", "simulator", *HARNESSES),
    ),
    Rule(
        "crypto_backend never imports robert_server (nor the simulator or harnesses)",
        ("crypto_backend",),
        ("robert_server", "simulator", *HARNESSES),
    ),
    Rule(
        # The API, the code issuer and the worker reach the crypto service over gRPC only, so no process
        # of robert_server loads key-handling code; not even `robert up`, which runs `robert keys init
        # --dev` as a process of its own.
        "robert_server reaches crypto_backend over gRPC only",
        ("robert_server",),
        ("crypto_backend",),
    ),
    Rule(
        "robert_server imports neither the simulator nor the harnesses",
        ("robert_server",),
        ("simulator", *HARNESSES),
    ),
    Rule(
        "the simulator uses only crypto_backend.protocol and robert_common",
        ("simulator",),
        ("robert_server", "crypto_backend", *HARNESSES),
        allowed=("crypto_backend.protocol",),
    ),
    Rule("a storage module imports nothing above it", (), STORAGE_ABOVE, storage=True),
)


def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, name: str, is_package: bool) -> list[tuple[int, str]]:
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from a import b` may import the module a.b: count it as a.b (a.b.c stays under a.b)
            found += [(node.lineno, module if a.name == "*" else f"{module}.{a.name}") for a in node.names]
    return found


def _is_storage(tree: ast.Module) -> bool:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        value = getattr(node, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "COLLECTION" for t in targets):
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return True
    return False


def scan(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = _module_name(root, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            imports = _imports(tree, name, path.name == "__init__.py")
            modules[name] = Module(name, path, tuple(imports), _is_storage(tree))
    return modules


def violations(modules: dict[str, Module], rules: Iterable[Rule] = RULES) -> list[str]:
    found = []
    for rule in rules:
        for module in modules.values():
            applies = module.is_storage if rule.storage else _under(module.name, rule.sources)
            if not applies or module.name in rule.exempt:
                continue
            for line, target in module.imports:
                if _under(target, rule.forbidden) and not _under(target, rule.allowed):
                    found.append(f"{module.path}:{line}: {module.name} imports {target} ({rule.name})")
    return found


# --- the real tree -------------------------------------------------------------------------------


def test_the_packages_follow_the_dependency_rule() -> None:
    modules = scan(ROOT)
    assert len(modules) > 50, "the scan found too few modules: is ROOT right?"
    found = violations(modules)
    if found:
        pytest.fail("forbidden imports (see ARCHITECTURE.md, Dependency rule):\n" + "\n".join(found))


def test_the_storage_modules_are_recognised() -> None:
    storage = {m.name for m in scan(ROOT).values() if m.is_storage}
    assert {
        "robert_server.registrations", "robert_server.contacts", "robert_server.kpis",
        "robert_server.client_config", "robert_server.captcha", "robert_server.codes.store",
        "robert_server.codes.issuers", "robert_server.codes.ratelimit", "crypto_backend.identities",
        "robert_server.matching.state",
    } <= storage  # fmt: skip


# --- the checker, on fake trees ------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for package in PACKAGES:
        (root / package).mkdir(exist_ok=True)
        (root / package / "__init__.py").touch()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if str(parent) != ".":
                (root / parent / "__init__.py").touch()
        path.write_text(text)
    return scan(root)


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("crypto_backend/service.py", "from robert_server import registrations\n", "crypto_backend never"),
        ("crypto_backend/x/deep.py", "import robert_server.api.app\n", "crypto_backend never"),
        (
            "crypto_backend/lazy.py",
            "def f():\n    from robert_server.kpis import increment\n",
            "crypto_backend",
        ),
        ("robert_common/clock.py", "from crypto_backend import protocol\n", "robert_common imports nothing"),
        ("robert_common/logs.py", "import simulator.phone\n", "robert_common imports nothing"),
        ("robert_server/api/status.py", "from crypto_backend.protocol import hello_mac\n", "over gRPC only"),
        (
            "robert_server/up.py",
            "from crypto_backend.keystore import ensure_dev_keystore\n",
            "over gRPC only",
        ),
        ("robert_server/matching/w.py", "from tests.fixtures import crypto\n", "nor the harnesses"),
        ("simulator/phone.py", "from robert_server.api import status\n", "the simulator uses only"),
        ("simulator/phone.py", "from crypto_backend.keystore import KeyStore\n", "the simulator uses only"),
        (
            "robert_server/contacts.py",
            'COLLECTION = "contacts"\nfrom robert_server.api.errors import BadRequest\n',
            "a storage module",
        ),
        (
            "robert_server/codes/store.py",
            'COLLECTION = "codes"\nfrom ..matching import risk\n',  # relative import, resolved
            "a storage module",
        ),
        (
            "robert_server/codes/store.py",
            'COLLECTION: str = "codes"\nfrom .verifier import StoredCodeVerifier\n',
            "a storage module",
        ),
    ],
)
def test_a_planted_violation_is_found(tmp_path: Path, path: str, source: str, rule: str) -> None:
    found = violations(_tree(tmp_path, {path: source}))
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / path}:") and rule in found[0], found


@pytest.mark.parametrize(
    ("path", "source"),
    [
        (
            "simulator/phone.py",
            "from crypto_backend import protocol\nfrom robert_common.clock import Clock\n",
        ),
        ("simulator/phone.py", "from crypto_backend.protocol.skinny import encrypt\n"),
        ("robert_server/api/status.py", "from robert_server import registrations\n"),
        ("robert_server/codes/ratelimit.py", 'COLLECTION = "code_attempts"\nfrom . import metrics\n'),
        ("robert_server/matching/worker.py", "from robert_server.matching import risk\n"),  # not storage
        (
            "crypto_backend/identities.py",
            'COLLECTION = "identities"\nfrom crypto_backend.keystore import K\n',
        ),
    ],
)
def test_an_allowed_import_is_not_flagged(tmp_path: Path, path: str, source: str) -> None:
    assert violations(_tree(tmp_path, {path: source})) == []


def test_relative_imports_resolve_from_the_package(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "robert_server/codes/__init__.py": "from .store import x\n",
            "robert_server/codes/store.py": "from . import metrics\nfrom ..api import app\n",
        },
    )
    assert [t for _, t in modules["robert_server.codes"].imports] == ["robert_server.codes.store.x"]
    assert [t for _, t in modules["robert_server.codes.store"].imports] == [
        "robert_server.codes.metrics",
        "robert_server.api.app",
    ]
