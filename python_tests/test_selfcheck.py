"""python -m l2vsd_ext.selfcheck in its CPU form: CPU kernels against the references, a short run
of every mode, the report files, the skipped GPU parts, and the exit codes."""
import json

import pytest
import torch

from l2vsd_ext.selfcheck import __main__ as selfcheck
from l2vsd_ext.selfcheck import parity
from l2vsd_ext.selfcheck.cases import all_cases


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("selfcheck")
    code = selfcheck.main(["--out", str(out), "--device", "cpu"])
    return code, json.loads((out / "selfcheck.json").read_text()), (out / "selfcheck.md").read_text()


def test_cpu_selfcheck_passes_and_covers_every_op_and_mode(cpu_report):
    code, report, markdown = cpu_report
    assert code == 0, [r for r in report["rows"] if r["status"] == "fail"]
    rows = report["rows"]
    parity_rows = [r for r in rows if r["section"] == "op parity" and r["status"] == "pass"]
    for case in all_cases():
        for dtype in ("float32", "float64"):
            assert any(r["name"] == f"{case.name} [{dtype}]" for r in parity_rows), case.name
    assert all(r["detail"]["vs_reference"] <= r["detail"]["tolerance"] for r in parity_rows)
    loop_rows = [r for r in rows if r["section"].startswith("loop:")]
    assert {r["name"] for r in loop_rows} == {label for label, _, _ in selfcheck.loop.MODES}
    assert all(r["status"] == "pass" for r in loop_rows)
    # What a CPU run leaves out is said, in the JSON and in the table.
    assert any("CUDA vs CPU" in s for s in report["skipped"])
    assert any("SD 2.1-base" in s for s in report["skipped"])
    assert "| op parity |" in markdown and "| skip |" in markdown
    assert report["environment"]["device"] == "cpu"


def test_a_parity_failure_gives_exit_code_1(tmp_path, monkeypatch):
    # No float32 kernel matches float64 to zero error: every float32 check must now fail.
    monkeypatch.setitem(parity.TOLERANCE, torch.float32, 0.0)
    monkeypatch.setattr(selfcheck.loop, "tiny_runs", lambda *a, **k: None)
    assert selfcheck.main(["--out", str(tmp_path), "--device", "cpu"]) == 1
    report = json.loads((tmp_path / "selfcheck.json").read_text())
    assert report["failures"] >= len(all_cases())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without GPU")
def test_cuda_requested_without_gpu_is_one_line_and_exit_2(tmp_path, capsys):
    assert selfcheck.main(["--out", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("selfcheck: --device cuda:") and "\n" not in err


def test_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        selfcheck.main(["--device", "tpu"])
    assert exc.value.code == 2
