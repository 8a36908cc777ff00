"""benchmarks/jvp_matrix.py measures what it says: each tree's children import that tree's package,
carry the tree's environment settings, and every variant of every configuration gets a ratio. (No
timing is asserted: only that the numbers exist and are sane.)"""
import importlib.util
import math
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_matrix():
    spec = importlib.util.spec_from_file_location("jvp_matrix", os.path.join(ROOT, "benchmarks", "jvp_matrix.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_configuration_builds_a_unet_the_engine_accepts():
    matrix = _load_matrix()
    assert len(matrix.CONFIGS) >= 5 and "sd21-base-64" in matrix.CONFIGS
    assert "sd21-base-64" not in matrix.DEFAULT_CONFIGS  # minutes per round: asked for, not default
    threads = torch.get_num_threads()
    try:
        result = matrix._child("shapes-prior-8", rounds=1)  # sets one thread, as its children do
    finally:
        torch.set_num_threads(threads)
    assert set(result["times"]) == set(matrix.VARIANTS)
    assert all(len(ts) == 1 and ts[0] > 0 for ts in result["times"].values())
    assert 3.0e6 < result["params"] < 3.5e6  # the shipped prior's UNet size


def test_children_import_the_named_tree_with_its_settings(capsys):
    matrix = _load_matrix()
    if not any(f.startswith("_C") for f in os.listdir(os.path.join(ROOT, "l2vsd_ext"))):
        pytest.skip("the extension is not built in place in this checkout")
    matrix.main(["--tree", f"plain={ROOT}", "--tree", f"no-stacking={ROOT},STACK_MAX_PIXELS=0",
                 "--configs", "shapes-prior-8", "--rounds", "1", "--repeats", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "engine × forward (plain)" in lines[0] and "engine × forward (no-stacking)" in lines[0]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "shapes-prior-8"
    ratios = [float(c) for c in cells[3:]]
    assert len(ratios) == 4 and all(math.isfinite(r) and r > 0.5 for r in ratios)


def test_a_tree_without_the_package_is_reported(tmp_path):
    matrix = _load_matrix()
    with pytest.raises(RuntimeError, match="shapes-prior-8"):
        matrix.measure(str(tmp_path), "shapes-prior-8", 1)
