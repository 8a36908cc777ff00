"""Guards around CUDA that a CPU machine can still test, through monkeypatching: the JVP engine's
check of the card's architecture against the compiled list (T4 / sm_75 and friends), and the
test suite's own rule that CUDA cases skip, not error, on a GPU machine with a CPU-only build."""
import importlib
import types

import pytest
import torch

import cuda_skip
from l2vsd_ext.ops import jvp_support

DEFAULT = ["7.5", "8.0", "8.6", "8.9", "9.0+PTX"]
OLD_DEFAULT = ["8.0", "8.6", "8.9", "9.0+PTX"]


@pytest.mark.parametrize("capability,archs,runs", [
    ((7, 5), DEFAULT, True),        # T4, RTX 20xx: SASS sm_75
    ((7, 5), OLD_DEFAULT, False),   # ... refused by a build without 7.5 (the old default)
    ((8, 6), ["8.0"], True),        # sm_80 SASS runs on 8.6 (same major, newer minor)
    ((8, 0), ["8.6"], False),       # ... not the other way round
    ((8, 7), DEFAULT, True),
    ((12, 0), DEFAULT, True),       # Blackwell consumer cards: JIT from the sm_90 PTX
    ((12, 0), ["8.0", "9.0"], False),  # no PTX, no SASS for major 12
    ((7, 0), DEFAULT, False),       # V100: older than every entry
    ((9, 0), ["9.0a"], True),
])
def test_arch_list_runs_on(capability, archs, runs):
    assert jvp_support.arch_list_runs_on(capability, archs) is runs


@pytest.fixture
def fake_cuda_build(monkeypatch):
    """jvp_support sees a CUDA build with `state["archs"]` and a card of `state["capability"]`."""
    state = {"archs": DEFAULT, "capability": (7, 5), "cuda": True}
    fake = types.SimpleNamespace(
        build_info=lambda: {"cuda": state["cuda"], "cuda_arch_list": state["archs"]},
        attention_jvp=object(), lora_linear_jvp=object())
    monkeypatch.setattr(jvp_support, "load_extension", lambda: fake)
    monkeypatch.setattr(jvp_support, "_is_functorch_wrapped", lambda x: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: state["capability"])
    for cached in (jvp_support._has, jvp_support.cuda_device_supported):
        cached.cache_clear()
    yield state
    for cached in (jvp_support._has, jvp_support.cuda_device_supported):
        cached.cache_clear()


def _cuda_tensor(dtype):
    # Only .device and .dtype are read; a CPU machine cannot make a real CUDA tensor.
    return types.SimpleNamespace(device=torch.device("cuda", 0), dtype=dtype)


@pytest.mark.parametrize("capability,archs,want", [
    ((7, 5), DEFAULT, True), ((7, 5), OLD_DEFAULT, False), ((8, 9), OLD_DEFAULT, True)])
def test_kernels_support_checks_the_cards_architecture(fake_cuda_build, capability, archs, want):
    fake_cuda_build.update(capability=capability, archs=archs)
    x = _cuda_tensor(torch.float16)
    assert jvp_support.kernels_support(x, "attention_jvp") is want
    w = _cuda_tensor(torch.float16)
    assert jvp_support.lora_kernel_supports(x, w, torch.float32) is want


def test_kernels_support_refuses_cuda_tensors_for_a_cpu_build(fake_cuda_build):
    fake_cuda_build.update(cuda=False, archs=[])
    assert not jvp_support.kernels_support(_cuda_tensor(torch.float32), "attention_jvp")


def test_cpu_tensors_do_not_ask_for_a_capability(fake_cuda_build, monkeypatch):
    def no_gpu(index=None):
        raise AssertionError("asked a CPU tensor's card")
    monkeypatch.setattr(torch.cuda, "get_device_capability", no_gpu)
    assert jvp_support.kernels_support(torch.zeros(2, dtype=torch.float32), "attention_jvp")


def test_cuda_cases_skip_on_a_gpu_machine_with_a_cpu_only_build(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda_skip, "cuda_kernels_available", lambda: False)
    assert cuda_skip.cuda_ready() is False
    monkeypatch.setattr(cuda_skip, "cuda_kernels_available", lambda: True)
    assert cuda_skip.cuda_ready() is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cuda_skip.cuda_ready() is False


def test_device_params_carry_the_build_check(monkeypatch):
    """The DEVICES list the rendering tests parametrise over skips CUDA for a CPU-only build on a
    GPU machine (render_helpers.py re-exports it; it used to check torch.cuda.is_available only)."""
    import render_helpers
    assert render_helpers.DEVICES is cuda_skip.DEVICES
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("l2vsd_ext._ext.cuda_kernels_available", lambda: False)
    try:
        fresh = importlib.reload(cuda_skip)
        cuda_param = fresh.DEVICES[1]
        (mark,) = cuda_param.marks
        assert mark.name == "skipif" and mark.args[0] is True  # skipped, not run and failing
    finally:
        monkeypatch.undo()
        importlib.reload(cuda_skip)
