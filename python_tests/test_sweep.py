"""python -m l2vsd_ext.sweep on a local Ray cluster (2 CPU workers, shared by the module's tests) with
the tiny pipeline: a 2x2 sweep and its report, a worker killed mid-run that resumes bit for bit, a
finished sweep that does no work on restart, a run that keeps failing; plus the grid, the report's
arithmetic and bad input (one line, exit 2, nothing started) without Ray."""
import json
import os
import signal
import sys
import threading
import time

import pytest
import torch
import yaml

from l2vsd_ext.checkpoint import load_checkpoint
from l2vsd_ext.sweep import cli, scheduler
from l2vsd_ext.sweep.cli import main
from l2vsd_ext.sweep.report import write_report
from l2vsd_ext.sweep.spec import expand_grid
from tiny_clip import build_tiny_clip
from tiny_run import SMALL_SCENE

PROMPTS = ["a red apple", "a small wooden boat"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    import logging

    # Ray's memory monitor kills workers when the whole machine nears its memory limit, whoever
    # holds the memory; the tiny runs need little, so a busy shared machine must not fail them.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_memory_monitor_refresh_ms", "0")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        yield ray
        ray.shutdown()  # stops the local cluster's processes with it


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_sd_path):
    root = tmp_path_factory.mktemp("sweep_inputs")
    (root / "small.yaml").write_text(yaml.safe_dump(SMALL_SCENE))
    (root / "prompts.txt").write_text("# two prompts\n" + "\n".join(PROMPTS) + "\n\n")
    # Issue 24 (7): only a line starting with # is a comment; a # inside a line belongs to the prompt.
    (root / "apple.txt").write_text("# the first prompt alone\n" + PROMPTS[0] + "\n")
    clip = build_tiny_clip(str(root / "tiny_clip"))
    return {"root": root, "tiny_sd": tiny_sd_path, "clip": clip}


def sweep_args(inputs, prompts_file, out, modes=("sds", "vsd"), *extra, evaluate=False):
    ev = (["--eval-args", f"--clip-model {inputs['clip']} --n-views 2 --resolution 8 --n-prior-samples 2 "
                          "--prior-steps 2 --fid-features clip"] if evaluate else ["--no-eval"])
    return [str(inputs["root"] / prompts_file), "--modes", *modes, "--seeds", "0", "--out", str(out),
            "--pretrained", inputs["tiny_sd"], "--config", str(inputs["root"] / "small.yaml"),
            "--steps", "4", "--ckpt-every", "2", "--no-export", *ev, *extra]


@pytest.fixture(scope="module")
def finished_sweep(ray_cluster, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "two_by_two"
    assert main(sweep_args(inputs, "prompts.txt", out, evaluate=True)) == 0
    return out


def run_folder(out, prompt_index, method, seed=0):
    matches = [d for d in (out / "runs").iterdir() if d.name.startswith(f"p{prompt_index:02d}-")]
    assert len(matches) == 1
    return matches[0] / f"{method}-seed{seed}"


def test_two_by_two_sweep_completes_and_its_report_lists_four_runs(finished_sweep):
    sweep = json.loads((finished_sweep / "sweep.json").read_text())
    assert sweep["counts"] == {"queued": 0, "running": 0, "done": 4, "failed": 0}
    assert {(r["prompt"], r["mode"]) for r in sweep["runs"]} == {(p, m) for p in PROMPTS for m in ("sds", "vsd")}
    for run in sweep["runs"]:
        folder = finished_sweep / run["folder"]
        assert load_checkpoint(str(folder / "checkpoints" / "last.pt"))["step"] == 4
        assert len((folder / "metrics.jsonl").read_text().splitlines()) == 4
        assert 0 <= run["result"]["eval"]["clip_angle_deg"] <= 180 and run["result"]["eval"]["fid"] >= 0
    report = finished_sweep / "report"
    runs = (report / "runs.csv").read_text().splitlines()
    assert len(runs) == 1 + 4 and all(",done," in line for line in runs[1:])
    table = (report / "table1.md").read_text()
    assert "| sds |" in table and "| vsd |" in table and "2/2" in table
    import imageio.v3 as iio

    sheet = iio.imread(report / "contact_sheet.png")
    assert sheet.shape[0] >= 2 * 16 and sheet.shape[1] >= 2 * 4 * 16  # 2 prompts x 2 modes of 4-frame strips


def test_a_killed_worker_resumes_its_run_bit_for_bit(finished_sweep, inputs, tmp_path):
    out = tmp_path / "killed"
    marker = out / "logs" / "p00-a-red-apple" / "vsd-seed0.log.paused"
    killed = []

    def kill_when_paused():  # the run pauses after its step-2 checkpoint and says which pid holds it
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not marker.exists():
            time.sleep(0.2)
        if marker.exists():
            pid = int(marker.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_when_paused)
    killer.start()
    code = main(sweep_args(inputs, "apple.txt", out, ("vsd",), "--test-pause-after", "2"))
    killer.join()
    assert killed, "the run never paused for the kill"
    assert code == 0
    run = json.loads((out / "sweep.json").read_text())["runs"][0]
    assert run["status"] == "done" and run["attempts"] == 2
    assert "WorkerCrashed" in run["errors"][0]["error"] or "died" in run["errors"][0]["error"].lower()
    resumed = load_checkpoint(str(run_folder(out, 0, "vsd") / "checkpoints" / "last.pt"))
    straight = load_checkpoint(str(run_folder(finished_sweep, 0, "vsd") / "checkpoints" / "last.pt"))
    assert resumed["step"] == straight["step"] == 4
    for key in straight["renderer"]:
        assert torch.equal(resumed["renderer"][key], straight["renderer"][key]), key
    for key in straight["score_model"]["params"]:
        assert torch.equal(resumed["score_model"]["params"][key], straight["score_model"]["params"][key]), key
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                          for line in path.read_text().splitlines()]
    assert strip(run_folder(out, 0, "vsd") / "metrics.jsonl") == strip(
        run_folder(finished_sweep, 0, "vsd") / "metrics.jsonl")


def test_restarting_a_finished_sweep_does_no_work(finished_sweep, inputs, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished sweep scheduled work")

    monkeypatch.setattr(scheduler, "connect", must_not_run)
    monkeypatch.setattr(scheduler, "run_grid", must_not_run)
    files = [p for p in (finished_sweep / "runs").rglob("*") if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    assert main(sweep_args(inputs, "prompts.txt", finished_sweep, evaluate=True)) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert json.loads((finished_sweep / "sweep.json").read_text())["counts"]["done"] == 4


def test_a_run_that_keeps_failing_is_marked_failed_and_the_others_finish(ray_cluster, inputs, tmp_path):
    out = tmp_path / "failing"
    broken = out / "runs" / "p00-a-red-apple" / "sds-seed0" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "last.pt").write_bytes(b"not a checkpoint")  # every attempt resumes from garbage
    assert main(sweep_args(inputs, "apple.txt", out, ("sds", "vsd"), "--max-retries", "1")) == 1
    runs = {r["mode"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    assert runs["vsd"]["status"] == "done"
    assert runs["sds"]["status"] == "failed" and 1 <= runs["sds"]["attempts"] <= 2
    assert runs["sds"]["errors"] and runs["sds"]["errors"][-1]["error"]
    assert "failed: p00-a-red-apple/sds-seed0" in (out / "report" / "table1.md").read_text()


# -- without Ray --------------------------------------------------------------------------------

@pytest.mark.parametrize("content, args, words", [
    (None, [], "cannot read"),
    ("# only a comment\n\n", [], "holds no prompts"),
    ("a red apple\n", ["--modes", "sds", "dreamy"], "unknown mode 'dreamy'"),
    ("a red apple\n", ["--seed", "3"], "--seeds"),
    ("a red apple\n", ["--steps", "0"], "--steps"),
    ("a red apple\na red apple\n", [], "twice"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_starts(content, args, words, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(scheduler, "connect", lambda *a, **k: pytest.fail("Ray was started"))
    prompts = tmp_path / "prompts.txt"
    if content is not None:
        prompts.write_text(content)
    out = tmp_path / "sweep"
    assert main([str(prompts), "--out", str(out), "--pretrained", "tiny-random", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("l2vsd_ext.sweep: error:") and words in err[0]
    assert not out.exists()


def test_without_ray_it_says_how_to_install_it_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    (tmp_path / "p.txt").write_text("a red apple\n")
    assert main([str(tmp_path / "p.txt"), "--out", str(tmp_path / "s"), "--pretrained", "tiny-random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0] and "sweep" in err[0]


def test_variants_apply_only_to_the_modes_they_change():
    specs = expand_grid(["a red apple"], ["sds", "vsd", "l2vsd"], [0, 1],
                        {"eta": [0.01, 0.1], "last_layer": [False, True], "esd_lambda": [0.5]})
    methods = sorted({s.method for s in specs})
    assert methods == sorted(["sds", "vsd-esd0.5", "l2vsd-eta0.01-esd0.5", "l2vsd-eta0.01-last-layer-esd0.5",
                              "l2vsd-eta0.1-esd0.5", "l2vsd-eta0.1-last-layer-esd0.5"])
    assert len(specs) == len(methods) * 2 and len({s.name for s in specs}) == len(specs)
    argv = next(s for s in specs if s.method == "l2vsd-eta0.1-last-layer-esd0.5").run_argv("/o", [])
    assert argv[argv.index("--eta") + 1] == "0.1" and "--last-layer" in argv
    assert argv[argv.index("--esd-lambda") + 1] == "0.5"


def test_sweep_yaml_form_gives_the_same_plan_as_the_flags(tmp_path):
    (tmp_path / "p.txt").write_text("a red apple\na blue car\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "prompts_file": "p.txt", "modes": ["sds", "l2vsd"], "seeds": [0, 1], "eta": [0.1],
        "out": str(tmp_path / "s"), "run": {"steps": 5, "n_levels": 8}}))
    plan = cli.build_plan([str(tmp_path / "sweep.yaml"), "--pretrained", "tiny-random"])
    flags = cli.build_plan([str(tmp_path / "p.txt"), "--modes", "sds", "l2vsd", "--seeds", "0", "1",
                            "--eta", "0.1", "--out", str(tmp_path / "s"), "--pretrained", "tiny-random"])
    assert [s.name for s in plan["specs"]] == [s.name for s in flags["specs"]]
    assert plan["run_settings"] == {"steps": 5, "n_levels": 8}
    assert not (tmp_path / "s").exists()  # planning writes nothing


def test_report_averages_over_prompts_then_spreads_over_seeds(tmp_path):
    from l2vsd_ext.sweep.task import RESULT_FILE

    angles = {("a", 0): 80.0, ("b", 0): 84.0, ("a", 1): 86.0, ("b", 1): 90.0}  # per-seed means 82, 88
    runs = []
    for (prompt, seed), angle in angles.items():
        folder = f"runs/{prompt}/vsd-seed{seed}"
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / RESULT_FILE).write_text(json.dumps(
            {"complete": True, "eval": {"clip_angle_deg": angle, "fid": angle / 2}, "ground_truth": {}}))
        runs.append({"name": f"{prompt}/vsd-seed{seed}", "folder": folder, "prompt": prompt, "prompt_index": 0,
                     "mode": "vsd", "method": "vsd", "seed": seed, "status": "done", "attempts": 1, "errors": []})
    (tmp_path / "sweep.json").write_text(json.dumps({"runs": runs}))
    write_report(str(tmp_path))
    table = (tmp_path / "report" / "table1.md").read_text()
    std = (2 * 3.0 ** 2) ** 0.5  # sample std of (82, 88)
    assert f"| vsd | {85:.2f} ± {std:.2f} | {42.5:.2f} ± {std / 2:.2f} | 4/4 |" in table


def test_each_run_asks_for_one_gpu_where_the_cluster_has_gpus(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})
    assert scheduler.task_resources(cpus_per_run=4) == ({"num_gpus": 1, "num_cpus": 1}, 8)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0})
    assert scheduler.task_resources(cpus_per_run=4) == ({"num_cpus": 4}, 4)


def test_ground_truth_scores_come_from_the_shapes_benchmark_for_the_shapes_prior(tmp_path, monkeypatch):
    import types

    from l2vsd_ext.sweep.ground_truth import ground_truth_scores

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"pretrained": "tiny-random"}))
    assert "no ground truth" in ground_truth_scores(str(tmp_path))["skipped"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"pretrained": "shapes"}))
    monkeypatch.setitem(sys.modules, "l2vsd_ext.shapes", None)  # an install without the benchmark
    assert "no shapes benchmark" in ground_truth_scores(str(tmp_path))["skipped"]
    fake = types.ModuleType("l2vsd_ext.shapes")
    fake.score_run = lambda run_dir: {"silhouette_iou": 0.75, "psnr": 21.5, "views": [1, 2]}
    monkeypatch.setitem(sys.modules, "l2vsd_ext.shapes", fake)
    assert ground_truth_scores(str(tmp_path)) == {"silhouette_iou": 0.75, "psnr": 21.5}


@pytest.mark.parametrize("entry, words", [
    ({"seeds": ["a"]}, "--seeds"), ({"eta": "fast"}, "--eta"), ({"last_layer": 3}, "--last-layer"),
    ({"bogus": 1}, "unknown keys: bogus"), ({"run": {"stepz": 3}}, "stepz"), ({"run": 5}, "mapping"),
])
def test_bad_sweep_yaml_is_one_line_and_exit_2(entry, words, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("a red apple\n")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"prompts_file": "p.txt", "out": str(tmp_path / "o"), **entry}))
    assert main([str(tmp_path / "s.yaml"), "--pretrained", "tiny-random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
    assert not (tmp_path / "o").exists()


def test_a_cached_prior_that_served_another_run_gives_the_same_run_as_a_fresh_load(inputs, tmp_path):
    from l2vsd_ext.run import main as run_main
    from l2vsd_ext.sweep import prior_cache

    def args(out, mode):
        return ["--prompt", "a red apple", "--pretrained", inputs["tiny_sd"], "--config",
                str(inputs["root"] / "small.yaml"), "--out", str(tmp_path / out), "--mode", mode,
                "--steps", "2", "--no-export", "--device", "cpu", "--dtype", "float32"]

    prior_cache.clear()
    try:
        cached = lambda: prior_cache.prior_for(inputs["tiny_sd"], torch.float32, "cpu")
        assert run_main(args("first", "vsd"), prior=cached()) == 0  # adds LoRA to its UNet copy
        assert run_main(args("cached", "vsd"), prior=cached()) == 0
        assert len(prior_cache.cached_keys()) == 1
        pristine = prior_cache._COMPONENTS[prior_cache.cached_keys()[0]][0]
        assert pristine.class_embedding is None and not any("lora_" in n for n, _ in pristine.named_parameters())
        assert not any(p.requires_grad for p in pristine.parameters())
        shared = cached().unet  # a new module tree on the very same weight tensors
        assert shared is not pristine
        assert [p.data_ptr() for p in shared.parameters()] == [p.data_ptr() for p in pristine.parameters()]
    finally:
        prior_cache.clear()
    assert run_main(args("fresh", "vsd")) == 0
    a = load_checkpoint(str(tmp_path / "cached" / "checkpoints" / "last.pt"))
    b = load_checkpoint(str(tmp_path / "fresh" / "checkpoints" / "last.pt"))
    for key in b["renderer"]:
        assert torch.equal(a["renderer"][key], b["renderer"][key]), key
    for key in b["score_model"]["params"]:
        assert torch.equal(a["score_model"]["params"][key], b["score_model"]["params"][key]), key


def test_report_cli_rewrites_the_report_and_refuses_a_folder_without_a_sweep(finished_sweep, tmp_path, capsys):
    from l2vsd_ext.sweep.report import main as report_main

    (finished_sweep / "report" / "table1.md").unlink()
    assert report_main([str(finished_sweep)]) == 0
    assert "| vsd |" in (finished_sweep / "report" / "table1.md").read_text()
    capsys.readouterr()
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep.json" in err[0]


def test_the_shipped_dreamfusion_prompts_parse():
    from importlib.resources import files

    from l2vsd_ext.sweep.spec import read_prompts

    prompts = read_prompts(str(files("l2vsd_ext.sweep") / "prompts" / "dreamfusion.txt"))
    assert len(prompts) >= 20 and "a DSLR photo of a hamburger" in prompts
    assert not any(p.startswith("#") for p in prompts)
