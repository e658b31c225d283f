"""The runtime dependency locks: `make lock` writes them, `make test` checks them against the code.

What `sam build` installs is a lock, not a wish list: every package of the closure pinned with
its hashes, compiled by uv from the `requirements.in` beside it, so two builds a month apart ship
the same bytes. Two locks exist, one per place code is packaged:

* ``layers/claude/requirements.txt``: claudekit's dependencies, shared by every function;
* ``functions/stream/requirements.txt``: what the stream function adds (its ASGI server), compiled
  against the layer's pins. It repeats the few packages both need (anyio): pip installs each lock's
  whole closure, and the constraint keeps the two copies the same version.

boto3 is shipped too, pinned: aws-xray-sdk needs botocore, a hash-checked install must lock the
whole closure, and a layer's botocore must match the boto3 beside it.

``check`` fails when code imports a module whose distribution is not in its lock, or when a
locked package requires one that is missing: the dev virtualenv hid exactly that once
(Powertools' Tracer needs aws-xray-sdk), and every function failed its cold start.

Usage: ``python -m local.deps lock`` / ``python -m local.deps check``.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "claude"
FUNCTIONS = ROOT / "functions"
FIRST_PARTY = frozenset({"claudekit", "app"})
# Lambda's Python runtime ships these (SnapStart's hook registry): nothing to lock.
RUNTIME_PROVIDED = frozenset({"snapshot_restore_py"})
# The environment the locks are for: Lambda's python3.13 on Linux (either architecture).
TARGET = {
    "python_version": "3.13",
    "python_full_version": "3.13.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "platform_machine": "aarch64",
}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")


@dataclass(frozen=True)
class Unit:
    """A place code is packaged: its sources, its lock, and the locks it can also rely on."""

    name: str
    sources: Path
    lock: Path
    inherits: tuple[Path, ...] = ()


def units() -> list[Unit]:
    layer = Unit("layer", LAYER / "claudekit", LAYER / "requirements.txt")
    found = [layer]
    for folder in sorted(p for p in FUNCTIONS.iterdir() if p.is_dir()):
        lock = folder / "requirements.txt"
        found.append(Unit(folder.name, folder, lock, (layer.lock,)))
    return found


def pins(lock: Path) -> dict[str, str]:
    """{canonical name: version} of a lock (a missing lock pins nothing)."""
    if not lock.exists():
        return {}
    found: dict[str, str] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line.strip())
        if match:
            found[canonicalize_name(match.group(1))] = match.group(3)
    return found


def imported_modules(sources: Path) -> set[str]:
    """Top-level names of every module imported anywhere in `sources` (lazy imports included)."""
    names: set[str] = set()
    for path in sources.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - FIRST_PARTY - RUNTIME_PROVIDED - {"__future__"}


def distributions_of(module: str) -> set[str]:
    """The distributions that provide `module`, as this (dev) environment has them installed."""
    return {canonicalize_name(d) for d in _module_owners().get(module, [])}


@cache
def _module_owners() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def requirements_of(name: str, extras: Iterable[str] = ()) -> set[str]:
    """What installed distribution `name` requires on the target, with `extras` selected."""
    try:
        declared = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return set()
    needed: set[str] = set()
    for spec in declared:
        req = Requirement(spec)
        marker = req.marker or Marker("python_version >= '0'")
        if any(marker.evaluate({**TARGET, "extra": extra}) for extra in ("", *extras)):
            needed.add(canonicalize_name(req.name))
    return needed


def extras_in(requirements_in: Path) -> dict[str, set[str]]:
    """{name: extras} named in a requirements.in."""
    found: dict[str, set[str]] = {}
    if requirements_in.exists():
        for line in requirements_in.read_text(encoding="utf-8").splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                req = Requirement(line)
                found[canonicalize_name(req.name)] = set(req.extras)
    return found


def problems() -> list[str]:
    """Every runtime import or requirement that no lock provides."""
    found: list[str] = []
    for unit in units():
        locked = pins(unit.lock)
        available = set(locked)
        for inherited in unit.inherits:
            available |= set(pins(inherited))
        for module in sorted(imported_modules(unit.sources)):
            dists = distributions_of(module)
            if not dists:
                found.append(f"{unit.name}: imports {module!r}, which no installed distribution provides")
            elif not dists & available:
                names = ", ".join(sorted(dists))
                found.append(f"{unit.name}: imports {module!r} ({names}) but {_rel(unit.lock)} lacks it")
        extras = extras_in(unit.lock.with_suffix(".in"))
        for name in sorted(locked):
            for needed in sorted(requirements_of(name, extras.get(name, ())) - available):
                found.append(f"{unit.name}: {name} requires {needed}, which {_rel(unit.lock)} lacks")
    return found


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def lock() -> None:
    """Compile every requirements.in into its hash-locked requirements.txt."""
    uv = [sys.executable, "-m", "uv", "pip", "compile", "--generate-hashes", "--universal"]
    uv += ["--python-version", "3.13", "--no-header", "--no-annotate"]
    for unit in units():
        source = unit.lock.with_suffix(".in")
        if not source.exists():
            continue
        constraints = [arg for lock in unit.inherits for arg in ("--constraint", str(lock))]
        body = subprocess.run(  # noqa: S603 - our own uv, our own files
            [*uv, *constraints, str(source)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        header = f"# Locked by `make lock` from {source.name} (uv, with hashes). Do not edit by hand.\n"
        unit.lock.write_text(header + body, encoding="utf-8")
        print(f"locked {_rel(unit.lock)}: {len(pins(unit.lock))} packages")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.deps", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["lock", "check"])
    args = parser.parse_args(argv)
    if args.command == "lock":
        lock()
        return 0
    found = problems()
    for problem in found:
        print(f"  {problem}", file=sys.stderr)
    print(f"deps: {len(units())} locks checked against the code's imports: {len(found) or 'no'} problems")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
