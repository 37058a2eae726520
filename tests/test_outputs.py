"""What a finished run leaves on disk: readable by others as the umask says."""

import os
import stat

import pytest

from textransfer import run_transfer


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_outputs_follow_the_umask(sample_run_config, tmp_path, umask_022):
    out = tmp_path / "run"
    run_transfer(sample_run_config, output_dir=out)
    files = [p for p in out.rglob("*") if p.is_file()]
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert (out / "results.json") in files and (out / "model" / "model.safetensors") in files
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f"{f.relative_to(out)}: {oct(f.stat().st_mode)}"
    for d in folders:
        assert stat.S_IMODE(d.stat().st_mode) == 0o755, f"{d}: {oct(d.stat().st_mode)}"
