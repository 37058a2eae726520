"""mixed_precision: a precision the device cannot run fails before training, naming the fix."""

import pytest
import torch

from textransfer import ConfigError, run_transfer
from textransfer.training.accelerator import check_precision, has_accelerator_device, make_accelerator

CPU_ONLY = pytest.mark.skipif(has_accelerator_device(), reason="checks what a machine without a GPU does")


def test_fp16_on_the_cpu_is_refused_with_the_override_that_works():
    with pytest.raises(ConfigError) as err:
        check_precision("fp16", torch.device("cpu"))
    assert err.value.option == "mixed_precision"
    assert "mixed_precision=no" in str(err.value) and "mixed_precision=bf16" in str(err.value)
    # what the device can run passes: fp32 and bf16 anywhere on a CPU, fp16 on a GPU
    check_precision("no", torch.device("cpu"))
    check_precision("bf16", torch.device("cpu"))
    check_precision("fp16", torch.device("cuda", 0))


@CPU_ONLY
def test_make_accelerator_refuses_fp16_on_a_cpu():
    with pytest.raises(ConfigError, match="fp16` needs a GPU"):
        make_accelerator("fp16")
    assert make_accelerator("no").mixed_precision == "no"  # nothing was left half-changed


@CPU_ONLY
def test_a_run_asking_fp16_on_a_cpu_fails_before_training_and_writes_nothing(sample_run_config, tmp_path):
    """Before: Accelerate trained in fp32 without a word, and config.yaml recorded fp16."""
    sample_run_config.mixed_precision = "fp16"
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="mixed_precision=no"):
        run_transfer(sample_run_config, output_dir=out)
    assert not out.exists()


def test_bf16_on_a_cpu_without_bf16_instructions_warns_that_fp32_is_faster(monkeypatch, caplog):
    from textransfer.training import accelerator

    monkeypatch.setattr(accelerator, "cpu_bf16_is_fast", lambda: False)
    with caplog.at_level("WARNING", logger=accelerator.__name__):
        check_precision("bf16", torch.device("cpu"))
    assert "mixed_precision: no is faster here" in caplog.text
    with pytest.raises(ConfigError, match="slower than fp32 on this CPU"):
        check_precision("fp16", torch.device("cpu"))

    monkeypatch.setattr(accelerator, "cpu_bf16_is_fast", lambda: True)
    caplog.clear()
    with caplog.at_level("WARNING", logger=accelerator.__name__):
        check_precision("bf16", torch.device("cpu"))
    assert caplog.text == ""  # bf16 instructions: nothing to warn about
    with pytest.raises(ConfigError, match="faster than fp32 on this CPU"):
        check_precision("fp16", torch.device("cpu"))
