"""Fail the build when compiled code in the SAM build output is not built for the functions' CPU.

`sam build` without `BuildArchitecture: arm64` on a layer quietly installs x86_64 wheels; they pass
every local test and then fail to import in Lambda. This walks `.aws-sam/build` and checks:

* every ELF shared object (``*.so``, ``*.so.N``) by its header's ``e_machine`` field;
* every ``*.pyd`` (a Windows DLL: never loadable by Lambda);
* every ``*.dist-info/WHEEL`` ``Tag:`` line, whose platform must be ``any`` or a Linux aarch64 one.

Usage: ``python -m local.check_arch .aws-sam/build [--arch arm64|x86_64]``. Exit 0 when clean,
1 listing the offenders, 2 when the directory does not exist.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
# e_machine values from the ELF specification (elf.h).
EM_386 = 0x03
EM_ARM = 0x28
EM_X86_64 = 0x3E
EM_AARCH64 = 0xB7
MACHINE_NAMES = {EM_386: "i386", EM_ARM: "arm", EM_X86_64: "x86_64", EM_AARCH64: "aarch64"}

# Lambda architecture name -> (e_machine, substrings a wheel platform tag of that CPU contains).
ARCHITECTURES: dict[str, tuple[int, tuple[str, ...]]] = {
    "arm64": (EM_AARCH64, ("aarch64",)),
    "x86_64": (EM_X86_64, ("x86_64",)),
}
ALIASES = {"aarch64": "arm64", "amd64": "x86_64"}


@dataclass
class Report:
    """What was checked and what failed."""

    compiled: int = 0
    wheels: int = 0
    offenders: list[str] = field(default_factory=list)


def elf_machine(path: Path) -> int | None:
    """The ELF header's e_machine, or None when the file is not ELF (or too short to be)."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != ELF_MAGIC:
        return None
    # EI_DATA (byte 5): 1 little-endian, 2 big-endian. e_machine is the u16 at offset 18.
    order = "<" if header[5] == 1 else ">"
    machine: int = struct.unpack_from(f"{order}H", header, 18)[0]
    return machine


def is_shared_object(path: Path) -> bool:
    """``foo.so``, ``foo.cpython-313-aarch64-linux-gnu.so`` and versioned ``libfoo.so.1.2``."""
    name = path.name
    return name.endswith(".so") or ".so." in name


def wheel_platform_tags(wheel_file: Path) -> Iterator[str]:
    """The platform part of every ``Tag: python-abi-platform`` line of a WHEEL metadata file."""
    for line in wheel_file.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() != "tag":
            continue
        parts = value.strip().split("-")
        if len(parts) == 3:
            # A compressed tag set ("manylinux_2_17_x86_64.manylinux2014_x86_64") names one CPU.
            yield parts[2]


def platform_ok(platform: str, cpu_markers: tuple[str, ...]) -> bool:
    """A pure-Python wheel, or one built for Linux on the wanted CPU."""
    if platform == "any":
        return True
    return "linux" in platform and any(marker in platform for marker in cpu_markers)


def check(root: Path, arch: str = "arm64") -> Report:
    """Walk ``root`` and report every compiled file or wheel that is not for ``arch``."""
    arch = ALIASES.get(arch, arch)
    machine_wanted, cpu_markers = ARCHITECTURES[arch]
    report = Report()
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root)
        if path.suffix == ".pyd":
            report.compiled += 1
            report.offenders.append(f"{relative}: Windows extension (.pyd), not loadable on Lambda")
        elif is_shared_object(path):
            report.compiled += 1
            machine = elf_machine(path)
            if machine is None:
                report.offenders.append(f"{relative}: not an ELF file")
            elif machine != machine_wanted:
                found = MACHINE_NAMES.get(machine, hex(machine))
                report.offenders.append(f"{relative}: built for {found}, functions run on {arch}")
        elif path.name == "WHEEL" and path.parent.name.endswith(".dist-info"):
            report.wheels += 1
            bad = [tag for tag in wheel_platform_tags(path) if not platform_ok(tag, cpu_markers)]
            if bad:
                report.offenders.append(f"{relative}: wheel tagged {', '.join(sorted(set(bad)))}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.check_arch", description=__doc__.split("\n")[0])
    parser.add_argument("build_dir", type=Path, help="SAM build output, e.g. .aws-sam/build")
    parser.add_argument(
        "--arch",
        default="arm64",
        choices=sorted([*ARCHITECTURES, *ALIASES]),
        help="Lambda architecture of the functions (default arm64)",
    )
    args = parser.parse_args(argv)
    root: Path = args.build_dir
    if not root.is_dir():
        print(f"check_arch: {root} is not a directory; run `sam build` first", file=sys.stderr)
        return 2
    report = check(root, args.arch)
    for offender in report.offenders:
        print(f"  {offender}", file=sys.stderr)
    arch = ALIASES.get(args.arch, args.arch)
    verdict = f"{len(report.offenders)} not built for {arch}" if report.offenders else f"all {arch}"
    print(f"check_arch: {report.compiled} compiled files and {report.wheels} wheels checked in {root}: {verdict}")
    return 1 if report.offenders else 0


if __name__ == "__main__":
    sys.exit(main())
