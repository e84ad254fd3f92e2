from pathlib import Path

from training.precision import cpu_has_native_bf16, use_bf16

WITH_BF16 = "flags\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n"
WITH_AMX = "flags\t: fpu sse2 avx512f amx_bf16 amx_tile\n"
WITHOUT = "flags\t: fpu sse2 avx2 fma avx512f\n"


def cpuinfo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    assert cpu_has_native_bf16(cpuinfo(tmp_path, WITH_BF16)) is True
    assert cpu_has_native_bf16(cpuinfo(tmp_path, WITH_AMX)) is True
    assert cpu_has_native_bf16(cpuinfo(tmp_path, WITHOUT)) is False
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_auto_follows_the_cpu_and_explicit_choices_win(tmp_path: Path) -> None:
    native, plain = cpuinfo(tmp_path, WITH_BF16), tmp_path / "plain"
    plain.write_text(WITHOUT)
    assert use_bf16("auto", native) is True
    assert use_bf16("auto", plain) is False
    assert use_bf16("bf16", plain) is True
    assert use_bf16("fp32", native) is False
