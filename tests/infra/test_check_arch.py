"""local.check_arch flags compiled files and wheels built for the wrong CPU."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from local.check_arch import EM_AARCH64, EM_X86_64, check, elf_machine, main


def fake_elf(path: Path, machine: int, *, big_endian: bool = False) -> Path:
    """The first 20 bytes of an ELF64 header, which is all the checker reads, plus padding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    order = ">" if big_endian else "<"
    ident = b"\x7fELF" + bytes([2, 2 if big_endian else 1, 1]) + bytes(9)
    path.write_bytes(ident + struct.pack(f"{order}HH", 3, machine) + bytes(44))
    return path


def fake_wheel(root: Path, dist: str, tag: str) -> Path:
    info = root / f"{dist}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    wheel = info / "WHEEL"
    wheel.write_text(f"Wheel-Version: 1.0\nGenerator: bdist_wheel\nRoot-Is-Purelib: false\nTag: {tag}\n")
    return wheel


def test_reads_e_machine_in_both_byte_orders(tmp_path: Path) -> None:
    assert elf_machine(fake_elf(tmp_path / "a.so", EM_AARCH64)) == EM_AARCH64
    assert elf_machine(fake_elf(tmp_path / "b.so", EM_AARCH64, big_endian=True)) == EM_AARCH64
    (tmp_path / "c.so").write_bytes(b"not an elf file at all")
    assert elf_machine(tmp_path / "c.so") is None


def test_accepts_an_aarch64_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layer = tmp_path / "ClaudeLayer" / "python"
    fake_elf(layer / "pydantic_core" / "_pydantic_core.cpython-313-aarch64-linux-gnu.so", EM_AARCH64)
    fake_elf(layer / "lib" / "libffi.so.8.1.0", EM_AARCH64)
    fake_wheel(layer, "pydantic_core-2.41.5", "cp313-cp313-manylinux_2_17_aarch64")
    fake_wheel(layer, "anthropic-2.14.0", "py3-none-any")
    (layer / "anthropic").mkdir()
    (layer / "anthropic" / "__init__.py").write_text("")

    report = check(tmp_path, "arm64")
    assert report.offenders == []
    assert (report.compiled, report.wheels) == (2, 2)
    assert main([str(tmp_path)]) == 0
    assert "2 compiled files and 2 wheels checked" in capsys.readouterr().out


def test_flags_x86_64_objects_and_wheels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layer = tmp_path / "ClaudeLayer" / "python"
    fake_elf(layer / "ok.cpython-313-aarch64-linux-gnu.so", EM_AARCH64)
    fake_elf(layer / "pydantic_core" / "_pydantic_core.cpython-313-x86_64-linux-gnu.so", EM_X86_64)
    fake_wheel(layer, "pydantic_core-2.41.5", "cp313-cp313-manylinux_2_17_x86_64")
    fake_wheel(layer, "jiter-0.12.0", "cp313-cp313-macosx_11_0_arm64")
    (layer / "legacy.pyd").write_bytes(b"MZ")

    report = check(tmp_path, "arm64")
    offenders = "\n".join(report.offenders)
    assert "_pydantic_core.cpython-313-x86_64-linux-gnu.so: built for x86_64" in offenders
    assert "manylinux_2_17_x86_64" in offenders
    assert "macosx_11_0_arm64" in offenders  # arm64, but not Linux: unusable on Lambda
    assert "legacy.pyd" in offenders
    assert "ok.cpython" not in offenders
    assert len(report.offenders) == 4

    assert main([str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "4 not built for arm64" in captured.out
    assert "x86_64" in captured.err


def test_arch_option_and_missing_directory(tmp_path: Path) -> None:
    fake_elf(tmp_path / "x.so", EM_X86_64)
    assert main([str(tmp_path), "--arch", "x86_64"]) == 0
    assert main([str(tmp_path), "--arch", "aarch64"]) == 1
    assert main([str(tmp_path / "nowhere")]) == 2
