"""Issue 14's run-safety cases on the tiny pipeline: no run is ever appended to another, resume
keeps the saved settings, Ctrl-C/SIGTERM checkpoint and exit 130/143, non-finite numbers stop
the run, overrides for every field, one-line errors, and the trainer no longer imports export."""
import ast
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from l2vsd_ext.checkpoint import load_checkpoint
from l2vsd_ext.config import RunConfig, coerce, validate
from l2vsd_ext.run import build_parser, main, resolve_config
from tiny_run import SMALL_SCENE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_SCENE))
    return str(path)


def run_args(tiny, config, out, steps=2, prompt="a small wooden boat", *extra):
    return ["--prompt", prompt, "--pretrained", tiny, "--config", config, "--out", str(out),
            "--mode", "sds", "--steps", str(steps), *extra]


def metric_steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def last_error(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return lines[-1]


# -- 1, 15: a run stopped before its first checkpoint; file modes, non-ASCII prompts, quiet libraries
def test_stopped_run_without_checkpoint_restarts_or_refuses(tiny_sd_path, small_config, tmp_path, capfd):
    out = tmp_path / "run"
    prompt = "un bateau en bois, château"
    assert main(run_args(tiny_sd_path, small_config, out, 2, prompt, "--no-export", "--val-every", "1")) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err  # library bars silenced
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.yaml", "checkpoints/last.pt", "metrics.jsonl"):
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name
    assert prompt in (out / "config.yaml").read_text(encoding="utf-8")  # not \\xE2-escaped

    # As if killed before its first checkpoint: the run's files, no checkpoint.
    os.unlink(out / "checkpoints" / "last.pt")
    before = (out / "metrics.jsonl").read_text()
    assert main(run_args(tiny_sd_path, small_config, out, 2, "another prompt", "--no-export")) == 2
    assert "--prompt" in capfd.readouterr().err.strip().splitlines()[-1]
    assert (out / "metrics.jsonl").read_text() == before
    # Same settings: starts again from step 0, replacing (not appending to) the old files.
    assert main(run_args(tiny_sd_path, small_config, out, 2, prompt, "--no-export", "--val-every", "2")) == 0
    assert metric_steps(out) == [1, 2]
    assert sorted(os.listdir(out / "validation")) == ["step_000002.png"]
    assert load_checkpoint(str(out / "checkpoints" / "last.pt"))["step"] == 2


# -- 2: resume keeps the saved settings; only changeable ones change, printed and recorded
def test_resume_keeps_saved_settings_and_records_changes(tiny_sd_path, small_config, tmp_path, capsys):
    out = tmp_path / "run"
    first = run_args(tiny_sd_path, small_config, out, 4, "a small wooden boat", "--no-export",
                     "--ckpt-every", "2", "--stop-after", "2")
    assert main(first) == 0
    assert load_checkpoint(str(out / "checkpoints" / "last.pt"))["step"] == 2
    config_before = (out / "config.yaml").read_text()
    resume = ["--out", str(out), "--resume", "--pretrained", tiny_sd_path, "--config", small_config]

    # Differing settings that would change the run are refused, naming each.
    assert main(resume + ["--prompt", "a red car", "--eta", "0.5", "--mode", "vsd"]) == 2
    line = last_error(capsys)
    assert "--prompt" in line and "--eta" in line and "--mode" in line
    assert main(resume + ["--steps", "1"]) == 2  # below the checkpoint
    line = last_error(capsys)
    assert "--steps" in line and "step 2" in line
    assert (out / "config.yaml").read_text() == config_before

    # No prompt, no --steps: the run goes on as configured (4 steps), not the 15000 default.
    assert main(resume + ["--ckpt-every", "1", "--stop-after", "3"]) == 0
    err = capsys.readouterr().err
    assert "--ckpt-every: 2 -> 1" in err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["steps"] == 4 and saved["ckpt_every"] == 1 and saved["prompt"] == "a small wooden boat"
    assert metric_steps(out) == [1, 2, 3]

    # --steps up: accepted, printed, recorded; the annealing step stays where it was (0.2 * 4 -> 1).
    assert main(resume + ["--steps", "6"]) == 0
    err = capsys.readouterr().err
    assert "--steps: 4 -> 6" in err and "anneals at step 1" in err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["steps"] == 6 and saved["anneal_step"] == 1
    changes = [json.loads(line) for line in (out / "changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 2, "changes": {"ckpt_every": [2, 1]}},
                       {"step": 3, "changes": {"steps": [4, 6], "anneal_step": [None, 1]}}]
    assert metric_steps(out) == [1, 2, 3, 4, 5, 6]


# -- 4: SIGINT / SIGTERM finish the step, checkpoint, say how to resume, exit 130 / 143
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_exits(signum, code, tiny_sd_path, small_config, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "l2vsd_ext.run", *run_args(
        tiny_sd_path, small_config, out, 10000, "a boat", "--no-export", "--ckpt-every", "10000",
        "--val-every", "10000")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 600
    while not (out / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "--resume" in err.strip().splitlines()[-1]
    step = load_checkpoint(str(out / "checkpoints" / "last.pt"))["step"]
    assert step >= 1 and metric_steps(out) == list(range(1, step + 1))


# -- 5: non-finite flags are refused; mostly non-finite gradients are reported and stop the run
def test_mostly_nonfinite_gradients_are_reported_and_stop_the_run(tiny_sd_path, tmp_path, capsys):
    from l2vsd_ext.trainer import TrainingDiverged, run_training

    config = RunConfig(prompt="a boat", mode="l2vsd", eta=float("nan"), steps=6, max_nonfinite_steps=2,
                       pretrained=tiny_sd_path, out=str(tmp_path / "run"), val_every=100, **SMALL_SCENE)
    with pytest.raises(TrainingDiverged, match="2 steps with mostly non-finite"):
        run_training(config, progress=False)
    assert capsys.readouterr().out.count("non-finite (zeroed)") == 2
    assert metric_steps(tmp_path / "run") == [1, 2]


@pytest.mark.parametrize("args, words", [
    (["--eta", "nan"], "--eta"),
    (["--guidance-scale", "inf"], "--guidance-scale"),
    (["--set", "lr=-inf"], "--lr"),
    (["--mode", "sds", "--last-layer"], "--last-layer"),  # 8
    (["--device", "tpu"], "--device"),  # 11
    (["--out", "/proc/x"], "--out"),
    (["--set", "steps=twenty"], "steps"),
    (["--set", "nonsense=1"], "nonsense"),
    (["--set", "lr"], "KEY=VALUE"),
    (["--steps", "5", "--set", "steps=6"], "steps"),
    (["--logger", "none", "--set", "logger=mlflow"], "--logger"),
])
def test_bad_settings_are_one_line_errors(args, words, tmp_path, capsys):
    full = ["--prompt", "x", *args] + ([] if "--out" in args else ["--out", str(tmp_path / "run")])
    assert main(full) == 2
    assert words in last_error(capsys)
    assert not (tmp_path / "run").exists()


# -- 11: YAML values are coerced by the field's type; unreadable checkpoints are one line
def test_yaml_numbers_are_coerced_by_field_type(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('lr: 1e-2\nsteps: "20"\nlast_layer: "true"\nmode: l2vsd\ndevice: null\n')
    config = resolve_config(["--prompt", "x", "--config", str(path)])
    assert config.lr == 0.01 and config.steps == 20 and config.last_layer is True
    assert isinstance(config.lr, float) and isinstance(config.steps, int)
    assert coerce("steps", "1e3", "int") == 1000
    for value, kind in (("2.5", "int"), (True, "int"), ("maybe", "bool"), ([1], "str")):
        with pytest.raises(ValueError):
            coerce("x", value, kind)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, "truncated"])
def test_resume_from_an_unreadable_checkpoint_is_one_line(content, tmp_path, capsys):
    import io

    if content == "truncated":
        buffer = io.BytesIO()
        torch.save({"step": 1, "config": {"prompt": "x"}, "w": torch.randn(1000)}, buffer)
        content = buffer.getvalue()[:500]
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(content)
    assert main(["--out", str(tmp_path / "run"), "--resume"]) == 2
    assert "checkpoint" in last_error(capsys)


# -- 17: a checkpoint that carries code is refused, executing nothing
class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (os.environ["L2VSD_TEST_MARKER"],))


def test_code_carrying_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "code_ran"
    monkeypatch.setenv("L2VSD_TEST_MARKER", str(marker))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"step": 1, "config": {"prompt": "x"}, "payload": _RunsCode()},
               tmp_path / "run" / "checkpoints" / "last.pt")
    assert main(["--out", str(tmp_path / "run"), "--resume"]) == 2
    line = last_error(capsys)
    assert "refused" in line and "nothing was executed" in line
    from l2vsd_ext.export.cli import main as export_main

    assert export_main([str(tmp_path / "run")]) == 2
    assert "refused" in last_error(capsys)
    assert not marker.exists()


# -- 16: imports point one way
def test_trainer_does_not_import_export():
    tree = ast.parse(open(os.path.join(ROOT, "l2vsd_ext", "trainer.py")).read())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if "export" in m], imported
    code = "import sys, l2vsd_ext.trainer; print(any(m.startswith('l2vsd_ext.export') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "False", result.stderr


# -- 12: every field has a flag and help; --set; shipped configs validate
def test_help_lists_every_field_with_default_and_meaning():
    text = " ".join(build_parser().format_help().split())
    for name in RunConfig.field_names() - {"stop_after", "export_at_end"}:
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        assert RunConfig.help_of(name), name
    assert "--no-export" in text and "tiny-random" in text and "(default: 0.0001)" in text


def test_set_overrides_any_field_with_its_type():
    config = resolve_config(["--prompt", "x", "--set", "lr=1e-3", "lora_rank=8", "--set", "anneal-at=0.5",
                             "--max-step-after", "0.4"])
    assert (config.lr, config.lora_rank, config.anneal_at, config.max_step_after) == (1e-3, 8, 0.5, 0.4)
    assert type(config.lora_rank) is int


def test_shipped_configs_validate(tmp_path):
    folder = os.path.join(ROOT, "configs")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    assert len(names) >= 6
    for name in names:
        config = resolve_config(["--config", os.path.join(folder, name), "--out", str(tmp_path / "r"),
                                 "--device", "cpu", "--prompt", "x"])
        validate(config)


# -- 13: --logger tensorboard writes scalars, validation views labelled by step and view, turntable
def test_tensorboard_logger_writes_scalars_images_and_turntable(tiny_sd_path, small_config, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(run_args(tiny_sd_path, small_config, out, 2, "a boat", "--no-export", "--val-every", "1",
                         "--logger", "tensorboard", "--turntable-views", "2")) == 0
    events = EventAccumulator(str(out / "logs"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/grad_norm", "train/eps_phi_norm", "train/s_per_it"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert {f"validation/view{i}" for i in range(4)} <= set(tags["images"])
    assert [e.step for e in events.Images("validation/view0")] == [1, 2]
    assert "turntable" in tags["images"]


def test_missing_logger_package_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    assert main(["--prompt", "x", "--out", str(tmp_path / "run"), "--logger", "wandb"]) == 2
    assert "pip install wandb" in last_error(capsys)
    assert not (tmp_path / "run").exists()


# -- 7: a long prompt is cut before the view suffix, not through it
class _TokensAsEmbeddings:
    """A prior whose 'text encoder' returns the token ids it sees, cut at the tokenizer's limit as
    the real one is: identical ids mean identical embeddings."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def encode_text(self, texts):
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return ids.float()[..., None]


def test_long_prompt_keeps_its_view_suffix(tiny_sd_path):
    from transformers import CLIPTokenizer

    from l2vsd_ext.prior.prompts import PromptEmbeddings

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_path, subfolder="tokenizer", model_max_length=40)
    prior = _TokensAsEmbeddings(tokenizer)
    long_prompt = "a very detailed photo of a wooden boat on a lake at dawn, with mist"
    with pytest.warns(UserWarning, match="prompt:"):
        prompts = PromptEmbeddings(prior, long_prompt)
    views = [prompts.get([v])[0][0] for v in ("front", "side", "back", "overhead")]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(views[i], views[j])  # before the fix all four were identical
    short = PromptEmbeddings(prior, "a boat")  # fits: no cut
    assert not torch.equal(short.get(["front"])[0], short.get(["back"])[0])


# -- 9: offline is detected at once, with one line that names the right command
def test_offline_prior_is_one_line_naming_hf_download(monkeypatch):
    from l2vsd_ext import offline
    from l2vsd_ext.prior.loading import PriorWeightsUnavailable, load_components

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PriorWeightsUnavailable) as info:
        load_components("stabilityai/stable-diffusion-2-1-base", torch.float32)
    text = str(info.value)
    assert "\n" not in text and ".." not in text and "HF_HUB_OFFLINE" in text
    assert "hf download stabilityai/stable-diffusion-2-1-base" in text and "tiny-random" in text
    assert "huggingface-cli" not in text

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("L2VSD_OFFLINE", "1")
    assert "L2VSD_OFFLINE" in offline.why_offline()
    monkeypatch.delenv("L2VSD_OFFLINE")
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(offline, "_reachable", lambda host, port: False)  # no network, without asking it
    assert "not reachable" in offline.why_offline()
