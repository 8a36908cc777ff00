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
    # Every case again with strided inputs: handled (and right) or refused with a clear error.
    strided = [r for r in rows if r["section"] == "op parity: non-contiguous inputs"]
    assert {r["name"] for r in strided} == {f"{case.name} [float32]" for case in all_cases()}
    assert all(r["status"] == "pass" for r in strided)
    assert any(not r["detail"].get("refused") for r in strided)
    loop_rows = [r for r in rows if r["section"].startswith("loop:")]
    assert {r["name"] for r in loop_rows} == {label for label, _, _ in selfcheck.loop.MODES}
    assert all(r["status"] == "pass" for r in loop_rows)
    # ... and each run rendered samples and its last step lowered its own objective.
    for r in loop_rows:
        assert r["detail"]["min_samples_per_ray"] > 0
        assert r["detail"]["objective_after"] < r["detail"]["objective_before"]
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


def test_selfcheck_covers_the_kernel_paths_issue_23_listed():
    names = {case.name for case in all_cases()}
    assert "march_rays" in names
    assert {"hashgrid fwd+bwd (1D, F=4)", "hashgrid fwd+bwd (2D, F=16, clamp)",
            "hashgrid fwd+bwd (3D, F=12, clamp)", "hashgrid fwd+bwd (3D, F=2, deterministic)"} <= names
    assert {"lora_linear_jvp r=3", "attention_jvp d=40 (65537 heads)"} <= names
    deterministic = next(c for c in all_cases() if "deterministic" in c.name)
    assert torch.float64 in deterministic.cuda_dtypes  # the float64 table path on CUDA too
    by_name = {case.name: case for case in all_cases()}
    gen = torch.Generator().manual_seed(0)
    assert by_name["attention_jvp d=40"].inputs(gen, "small")["q"].shape[1] % 4 != 0
    assert by_name["attention_jvp d=40"].inputs(gen, "large")["q"].shape[1] % 4 != 0
    assert by_name["attention_jvp d=40 (65537 heads)"].inputs(gen, "small")["q"].shape[0] > 65535
    clamp = by_name["hashgrid fwd+bwd (2D, F=16, clamp)"].inputs(gen, "small")["x"]
    assert bool(((clamp < 0) | (clamp > 1)).any())  # the clamp does something


def test_second_gpu_is_checked_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parity.extra_devices("cuda") == ["cuda:1"]
    assert parity.extra_devices("cpu") == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert parity.extra_devices("cuda") == []


def test_noncontiguous_inputs_are_strided_views():
    from l2vsd_ext.selfcheck.cases import _to, noncontiguous_inputs
    t = torch.randn(5, 7, dtype=torch.float64)
    with noncontiguous_inputs():
        views = [_to(t, "cpu", torch.float32), _to(t[0], "cpu", torch.float32)]
    assert _to(t, "cpu", torch.float32).is_contiguous()
    for view, want in zip(views, (t.float(), t[0].float())):
        assert not view.is_contiguous() and torch.equal(view, want)


def test_march_rays_comparison_pairs_samples_and_fails_on_missing_ones():
    from l2vsd_ext.selfcheck.parity_compare import compare_packed_samples
    a = {"ray_indices": torch.tensor([0, 0, 2]), "lattice_step": torch.tensor([1, 2, 5]),
         "t_starts": torch.tensor([0.1, 0.2, 0.5]), "t_ends": torch.tensor([0.2, 0.3, 0.6])}
    assert compare_packed_samples(a, dict(a)) == (0.0, "")
    missing = {k: v[:2] for k, v in a.items()}
    err, where = compare_packed_samples(missing, a)
    assert err == 1 / 5 and "unpaired" in where
    shifted = dict(a, t_starts=a["t_starts"] + 1e-3)
    assert compare_packed_samples(shifted, a)[0] > 1e-3
    empty = {k: v[:0] for k, v in a.items()}
    assert compare_packed_samples(empty, empty)[0] == float("inf")


def test_loop_judge_needs_samples_and_a_lower_objective():
    ok = [{"loss": 1.0, "samples_per_ray": 3.0}, {"loss": 0.5, "samples_per_ray": 2.0}]
    assert selfcheck.loop.judge_run(ok, (1.0, 0.9)) == (True, "")
    passed, why = selfcheck.loop.judge_run(ok, (1.0, 1.0))
    assert not passed and "objective" in why
    empty = [{"loss": 1.0, "samples_per_ray": 0.0}, {"loss": 1.0, "samples_per_ray": 2.0}]
    passed, why = selfcheck.loop.judge_run(empty, (1.0, 0.5))
    assert not passed and "no samples" in why and "[0]" in why
    passed, why = selfcheck.loop.judge_run([{"loss": float("nan"), "samples_per_ray": 1.0}], (1.0, 0.5))
    assert not passed and "NON-FINITE" in why


def test_step_probe_replays_the_steps_draws(tmp_path):
    """Without an update (optimizer step disabled) the re-evaluated objective equals the step's:
    the probe re-renders with the very same cameras, sampling draws and VAE noise, so the descent
    the loop check reports is the update's doing, not a fresh random draw."""
    from l2vsd_ext.prior.tiny import tiny_random_path
    from l2vsd_ext.trainer import Trainer

    loop = selfcheck.loop
    trainer = Trainer(loop._config("sds", {}, "cpu", str(tmp_path), pretrained=tiny_random_path(),
                                   **loop.TINY_SCENE))
    trainer.optimizer.step = lambda *a, **k: None
    with loop.StepProbe(trainer) as probe:
        trainer.train_step()
    assert "render" not in trainer.__dict__ and "gradient" not in trainer.mode.__dict__
    before, after = probe.objective()
    assert before != 0 and after == pytest.approx(before, rel=1e-6)
