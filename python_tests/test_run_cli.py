"""python -m l2vsd_ext.run end to end on the tiny pipeline: every mode, resume, bad arguments."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from l2vsd_ext.checkpoint import load_checkpoint, save_checkpoint
from l2vsd_ext.run import main

SMALL_SCENE = {"log2_hashmap_size": 12, "n_levels": 8, "occupancy_resolution": 16,
               "max_samples_per_ray": 64, "turntable_views": 4, "encode_resolution": 32,
               "resolution": 16}


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_SCENE))
    return str(path)


def run_args(tiny_sd_path, small_config, out, mode, steps, *extra):
    return ["--prompt", "a small wooden boat", "--pretrained", tiny_sd_path, "--config",
            small_config, "--out", str(out), "--mode", mode, "--steps", str(steps), *extra]


@pytest.mark.parametrize("mode", ["sds", "vsd", "lvsd", "l2vsd"])
def test_each_mode_runs_20_steps_and_writes_outputs(mode, tiny_sd_path, small_config, tmp_path):
    out = tmp_path / mode
    extra = ("--last-layer",) if mode == "l2vsd" else ()
    assert main(run_args(tiny_sd_path, small_config, out, mode, 20, "--val-every", "10", *extra)) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 21))
    for r in records:
        assert all(torch.isfinite(torch.tensor(float(r[k]))) for k in ("loss", "grad_norm", "eps_phi_norm"))
    if mode != "sds":
        assert all("lora_loss" in r for r in records)
    if mode == "l2vsd":
        assert all(r["eps_first_norm"] >= 0 and r["kappa"] >= 0 for r in records)
    assert sorted(os.listdir(out / "validation")) == ["step_000010.png", "step_000020.png"]
    assert len(os.listdir(out / "turntable")) == 4
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["mode"] == mode and saved["log2_hashmap_size"] == 12 and saved["steps"] == 20
    assert load_checkpoint(str(out / "checkpoints" / "last.pt"))["step"] == 20


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(tiny_sd_path, small_config, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = lambda out: run_args(tiny_sd_path, small_config, out, "l2vsd", 6, "--ckpt-every", "3")
    assert main(args(straight)) == 0
    assert main(args(resumed) + ["--stop-after", "3"]) == 0  # "killed" after step 3's checkpoint
    assert load_checkpoint(str(resumed / "checkpoints" / "last.pt"))["step"] == 3
    assert not (resumed / "turntable").exists()
    assert main(args(resumed) + ["--resume"]) == 0
    a = load_checkpoint(str(straight / "checkpoints" / "last.pt"))
    b = load_checkpoint(str(resumed / "checkpoints" / "last.pt"))
    assert a["step"] == b["step"] == 6
    for key in a["renderer"]:
        assert torch.equal(a["renderer"][key], b["renderer"][key]), key
    for key in a["score_model"]["params"]:
        assert torch.equal(a["score_model"]["params"][key], b["score_model"]["params"][key]), key
    lines_a = (straight / "metrics.jsonl").read_text().splitlines()
    lines_b = (resumed / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "seconds"}
    assert [strip(x) for x in lines_a] == [strip(x) for x in lines_b]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "ck.pt")
    save_checkpoint({"step": 1, "x": torch.arange(3)}, path)

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2, "x": torch.arange(5)}, path)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind


def _cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "l2vsd_ext.run", *args], capture_output=True,
                          text=True, env=env, cwd=cwd)


@pytest.mark.parametrize("args, words", [
    (["--prompt", ""], "--prompt"),
    (["--prompt", "x", "--mode", "dreamfusion"], "--mode"),
    (["--prompt", "x", "--steps", "-5"], "--steps"),
    (["--prompt", "x", "--encode-resolution", "60"], "multiple of 8"),
    (["--prompt", "x", "--resolution", "2"], "--resolution"),
    (["--prompt", "x", "--pretrained", "stabilityai/stable-diffusion-2-1-base"], "--pretrained"),
    (["--prompt", "x", "--out", "{file}/run"], "--out"),  # a regular file where a folder must be
    (["--prompt", "x", "--resume"], "--resume"),
    (["--prompt", "x", "--background", "grey"], "--background"),
    (["--prompt", "x", "--random-background", "1.5"], "--random-background"),
    (["--prompt", "x", "--sparsity-weight", "-1"], "--sparsity-weight"),
    (["--prompt", "x", "--entropy-weight", "nan"], "--entropy-weight"),
])
def test_bad_arguments_exit_2_with_one_line_and_write_nothing(args, words, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "file").write_text("not a folder")
    args = [a.replace("{file}", str(tmp_path / "file")) for a in args]
    full = args if "--out" in args else args + ["--out", str(out)]
    result = _cli(*full)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert words in lines[-1]
    if "--out" not in args:
        assert not out.exists()


def test_existing_run_is_not_overwritten_without_resume(tiny_sd_path, small_config, tmp_path):
    out = tmp_path / "run"
    assert main(run_args(tiny_sd_path, small_config, out, "sds", 2)) == 0
    before = (out / "checkpoints" / "last.pt").read_bytes()
    assert main(run_args(tiny_sd_path, small_config, out, "sds", 2)) == 2
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_no_export_skips_video_and_mesh(tiny_sd_path, small_config, tmp_path):
    exported, skipped = tmp_path / "exported", tmp_path / "skipped"
    assert main(run_args(tiny_sd_path, small_config, exported, "sds", 2)) == 0
    assert main(run_args(tiny_sd_path, small_config, skipped, "sds", 2, "--no-export")) == 0
    assert (exported / "export").is_dir() and any((exported / "export").iterdir())
    assert not (skipped / "export").exists()
    assert (skipped / "turntable").is_dir()


def test_reexport_with_fewer_views_leaves_no_stale_frames(tiny_sd_path, small_config, tmp_path):
    """A finished run resumed with fewer --turntable-views rewrites its turntable: the earlier
    frames it wrote go, a user's file in the folder stays."""
    out = tmp_path / "run"
    assert main(run_args(tiny_sd_path, small_config, out, "sds", 2, "--no-export")) == 0
    assert len(os.listdir(out / "turntable")) == 4
    (out / "turntable" / "frame_notes.png").write_bytes(b"mine")
    assert main(["--out", str(out), "--resume", "--turntable-views", "2", "--no-export"]) == 0
    assert sorted(os.listdir(out / "turntable")) == ["frame_000.png", "frame_001.png", "frame_notes.png"]
