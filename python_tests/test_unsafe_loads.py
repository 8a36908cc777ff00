"""The CI check .ci/check_unsafe_loads.py: it flags every way a file read by the package could run
code (pickle, torch.load without weights_only=True, np.load(allow_pickle=True), yaml.load without
a safe loader, eval/exec) and nothing that is safe; and the package itself passes it."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location("check_unsafe_loads", os.path.join(ROOT, ".ci", "check_unsafe_loads.py"))
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


@pytest.mark.parametrize("code", [
    "torch.load(p, weights_only=False)",
    "torch.load(p)",
    "torch.load(p, map_location='cpu')",
    "x = safetensors_or(weights_only=False)",
    "pickle.load(fh)",
    "pickle.loads(data)",
    "import dill; dill.load(fh)",
    "np.load(p, allow_pickle=True)",
    "numpy.load(p, allow_pickle=True)",
    "yaml.load(text)",
    "yaml.load(text, Loader=yaml.Loader)",
    "yaml.load(text, yaml.UnsafeLoader)",
    "yaml.unsafe_load(text)",
    "yaml.full_load(text)",
    "eval(user_text)",
    "exec(code)",
    "compile(src, 'f', 'exec')",
    "marshal.loads(b)",
])
def test_unsafe_calls_are_flagged(code):
    assert len(check.problems_in(code, "x.py")) == 1, code


@pytest.mark.parametrize("code", [
    "torch.load(p, map_location='cpu', weights_only=True)",
    "np.load(p)",
    "np.load(p, allow_pickle=False)",
    "yaml.safe_load(text)",
    "yaml.load(text, Loader=yaml.SafeLoader)",
    "yaml.load(stream, Loader=_UniqueKeyLoader)",
    "model.eval()",
    "renderer.eval().to(device)",
    "# torch.load(p, weights_only=False) in a comment\n'pickle.load in a docstring'",
    "json.loads(text)",
])
def test_safe_calls_pass(code):
    assert check.problems_in(code, "x.py") == []


def test_the_package_reads_no_file_in_a_way_that_runs_code():
    found = []
    for folder, dirs, names in os.walk(os.path.join(ROOT, "l2vsd_ext")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    found += check.problems_in(fh.read(), os.path.relpath(path, ROOT))
    assert found == []
