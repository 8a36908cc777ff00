"""Issue 24: run folders as safe as a database's. A user's own files in --out are never removed, one
process per folder (the others: one line naming the holder's pid, exit 2), stale temporaries
cleared, metrics.jsonl never truncated in place and a torn last line dropped, and the inputs that
used to end in a traceback are one line and exit 2."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from l2vsd_ext.run import main as run_main
from l2vsd_ext.run_folder import MANIFEST, RunFolder, read_metrics
from l2vsd_ext.run_lock import LOCK_FILE, lock_folder
from tiny_run import SMALL_SCENE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_config(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL_SCENE))
    return str(path)


def run_args(tiny, config, out, steps=2, *extra, prompt="a small wooden boat"):
    return ["--prompt", prompt, "--pretrained", tiny, "--config", config, "--out", str(out),
            "--mode", "sds", "--steps", str(steps), "--no-export", *extra]


def error_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def one_line(capsys, prefix, *words):
    lines = error_lines(capsys.readouterr().err)
    assert lines and lines[-1].startswith(prefix), lines
    assert all(w in lines[-1] for w in words), lines[-1]
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def snapshot(folder):
    """{relative path: bytes} of every file below `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


# -- 1: a user's files in --out survive a restart; only the run's own files are replaced
def test_restart_removes_only_the_files_the_run_wrote(tiny_sd_path, small_config, tmp_path, capsys):
    out = tmp_path / "proj"
    (out / "logs").mkdir(parents=True)
    (out / "export").mkdir()
    (out / "logs" / "lab_notebook.txt").write_text("day 1: tried a boat\n")
    (out / "export" / "final_for_paper.png").write_bytes(os.urandom(64))
    (out / "notes.md").write_text("# mine\n")
    mine = snapshot(out)
    assert run_main(run_args(tiny_sd_path, small_config, out, 2, "--val-every", "1")) == 0
    written = {e.get("file") for e in RunFolder(str(out)).written()}
    assert {"config.yaml", "metrics.jsonl", "checkpoints/last.pt", "validation/step_000001.png"} <= written
    assert not written & set(mine)
    # As if killed before its first checkpoint, then the same command again: a restart from step 0.
    os.unlink(out / "checkpoints" / "last.pt")
    assert run_main(run_args(tiny_sd_path, small_config, out, 2, "--val-every", "2")) == 0
    assert "starting it again from step 0" in capsys.readouterr().err
    after = snapshot(out)
    assert {k: after[k] for k in mine} == mine  # every file of the user's, byte for byte
    assert sorted(os.listdir(out / "validation")) == ["step_000002.png"]
    assert [r["step"] for r in read_metrics(str(out / "metrics.jsonl"))] == [1, 2]


def test_a_folder_whose_run_files_no_run_wrote_is_refused(tiny_sd_path, small_config, tmp_path, capsys):
    out = tmp_path / "proj"
    out.mkdir()
    user_config = out / "config.yaml"
    user_config.write_text("# my settings, with comments\nprompt: a pumpkin\n")
    before = snapshot(out)
    assert run_main(run_args(tiny_sd_path, small_config, out, 2)) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --out", "config.yaml", "no run wrote")
    assert snapshot(out) == before and not (out / MANIFEST).exists()


def test_clear_run_files_never_removes_folders_holding_other_files(tmp_path):
    folder = RunFolder(str(tmp_path / "run"))
    with open(folder.claim("validation", "step_000001.png"), "wb") as fh:
        fh.write(b"x")
    with open(folder.claim("checkpoints", "last.pt"), "wb") as fh:
        fh.write(b"y")
    (tmp_path / "run" / "validation" / "mine.png").write_bytes(b"z")
    # A torn last manifest line (killed mid-append) never names a file: it may be a prefix of one.
    with open(folder.manifest, "a") as fh:
        fh.write('{"file": "validation/mi')
    removed = folder.clear_run_files()
    assert (tmp_path / "run" / "validation" / "mine.png").read_bytes() == b"z"
    assert not (tmp_path / "run" / "checkpoints").exists()  # the run's own folder, now empty
    assert len(removed) == 3 and not os.path.exists(folder.manifest)


# -- 2: one process per folder; the others get one line naming the holder's pid and exit 2
HOLD = textwrap.dedent("""
    import sys, time
    from l2vsd_ext.run_lock import lock_folder
    lock_folder(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def held_folder(tmp_path):
    folder = tmp_path / "busy"
    (folder / "checkpoints").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.stdout.readline().strip() == "locked"
    yield folder, proc.pid
    proc.kill()
    proc.wait()


def test_a_second_process_on_a_locked_folder_is_refused_naming_the_holder(held_folder, tiny_sd_path,
                                                                         small_config, tmp_path, capsys):
    from l2vsd_ext.eval.cli import main as eval_main
    from l2vsd_ext.export.cli import main as export_main
    from l2vsd_ext.sweep.cli import main as sweep_main

    folder, pid = held_folder
    torch.save({"step": 1}, folder / "checkpoints" / "last.pt")  # a run folder, as export/eval want one
    before = snapshot(folder)
    assert run_main(run_args(tiny_sd_path, small_config, folder, 2)) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --out", f"in use by process {pid}")
    assert run_main(["--out", str(folder), "--resume"]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --out", f"in use by process {pid}")
    assert export_main([str(folder)]) == 2
    one_line(capsys, "l2vsd_ext.export: error:", f"in use by process {pid}")
    assert eval_main([str(folder), "--no-fid", "--n-views", "2"]) == 2
    one_line(capsys, "l2vsd_ext.eval: error:", f"in use by process {pid}")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    pytest.importorskip("ray")
    assert sweep_main([str(prompts), "--out", str(folder), "--pretrained", tiny_sd_path, "--modes", "sds"]) == 2
    one_line(capsys, "l2vsd_ext.sweep: error:", f"in use by process {pid}")
    assert snapshot(folder) == before


def test_the_lock_is_reentrant_in_one_process_and_freed_when_released(tmp_path):
    folder = str(tmp_path / "f")
    outer = lock_folder(folder)
    inner = lock_folder(folder)
    assert inner is outer and outer.count == 2
    inner.release()
    probe = [sys.executable, "-c", "import sys; from l2vsd_ext.run_lock import lock_folder; lock_folder(sys.argv[1])",
             folder]
    env = {**os.environ, "PYTHONPATH": ROOT}
    assert subprocess.run(probe, cwd=ROOT, env=env, capture_output=True).returncode != 0  # still held
    outer.release()
    assert subprocess.run(probe, cwd=ROOT, env=env, capture_output=True).returncode == 0
    assert os.path.exists(os.path.join(folder, LOCK_FILE))


def test_a_refused_new_run_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "new"
    assert run_main(["--prompt", "x", "--out", str(out), "--steps", "0"]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --steps")
    assert not out.exists()


# -- 8: stale temporaries are cleared under the lock
def test_stale_temporaries_are_removed_when_the_folder_is_locked(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "export" / ".partial-abc123").mkdir(parents=True)
    (run / "export" / ".partial-abc123" / "mesh.obj").write_text("v 0 0 0\n")
    (run / "checkpoints" / ".tmp-k2j3h4").write_bytes(os.urandom(1024))
    (run / ".tmp-zz9y8x").write_text("half a config")
    (run / "export" / "mine.tmp").write_text("kept")
    lock = lock_folder(str(run))
    lock.release()
    assert sorted(os.listdir(run / "checkpoints")) == []
    assert sorted(os.listdir(run / "export")) == ["mine.tmp"]
    assert sorted(os.listdir(run)) == sorted([LOCK_FILE, "checkpoints", "export"])


# -- 4, 5: metrics.jsonl is never truncated in place; a torn last line is dropped with one warning
def test_torn_metrics_line_is_dropped_with_one_warning(tmp_path, capsys):
    folder = RunFolder(str(tmp_path))
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 6, "lo')
    inode = os.stat(tmp_path / "metrics.jsonl").st_ino
    folder.truncate_metrics(3)
    err = capsys.readouterr().err
    assert err.count("torn last line") == 1
    assert [r["step"] for r in read_metrics(folder.metrics)] == [1, 2, 3]
    assert os.stat(tmp_path / "metrics.jsonl").st_ino != inode  # a new file renamed into place
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_a_bad_metrics_line_in_the_middle_is_one_line_not_a_traceback(tmp_path):
    from l2vsd_ext.config import ConfigError

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ConfigError, match="line 2"):
        read_metrics(str(tmp_path / "metrics.jsonl"))


def test_resume_after_a_torn_metrics_line_continues(tiny_sd_path, small_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(run_args(tiny_sd_path, small_config, out, 3, "--ckpt-every", "2", "--stop-after", "2")) == 0
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 3, "loss": 0.')  # power lost mid-line
    assert run_main(["--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().err.count("torn last line") == 1
    assert [r["step"] for r in read_metrics(str(out / "metrics.jsonl"))] == [1, 2, 3]


# -- 6, 9: what used to end in a traceback is one line and exit 2
@pytest.mark.parametrize("extra, words", [
    (["--seed", "99999999999999999999"], "--seed"),
    (["--set", "resolution=1e9"], "GiB"),
    (["--set", "encode_resolution=8000000"], "GiB"),
])
def test_out_of_range_numbers_are_one_line(extra, words, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["--prompt", "a boat", "--out", str(out), *extra]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error:", words)
    assert not out.exists()


def test_non_utf8_and_duplicate_key_configs_are_one_line(tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("prompt: un château\n".encode("latin-1"))
    assert run_main(["--config", str(bad), "--out", str(tmp_path / "a")]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --config", "UTF-8")
    twice = tmp_path / "twice.yaml"
    twice.write_text("prompt: a duck\nsteps: 10\nprompt: a pumpkin\n")
    assert run_main(["--config", str(twice), "--out", str(tmp_path / "b")]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error: --config", "'prompt' is given twice", "lines 1 and 3")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_checkpoint_with_a_bad_step_is_one_line(tmp_path, capsys):
    from l2vsd_ext.export.cli import main as export_main

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"step": "x", "config": {}}, run / "checkpoints" / "last.pt")
    assert run_main(["--out", str(run), "--resume"]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error:", "step", "'x'")
    assert export_main([str(run)]) == 2
    one_line(capsys, "l2vsd_ext.export: error:", "'x'")


@pytest.fixture(scope="module")
def finished_run(tiny_sd_path, tmp_path_factory):
    from tiny_run import make_tiny_run

    return make_tiny_run(tiny_sd_path, tmp_path_factory.mktemp("rf_run"), steps=2)


def test_export_threshold_nan_and_read_only_folder_are_one_line(finished_run, tmp_path, monkeypatch, capsys):
    from l2vsd_ext.export.cli import main as export_main

    assert export_main([finished_run, "--threshold", "nan"]) == 2
    one_line(capsys, "l2vsd_ext.export: error: --threshold", "finite")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == os.path.abspath(finished_run)
                        else real_access(p, mode))
    assert export_main([finished_run, "--video", "--n-views", "2", "--resolution", "8"]) == 2
    one_line(capsys, "l2vsd_ext.export: error: RUN_DIR", "not writable", "--out")
    elsewhere = tmp_path / "copy"
    assert export_main([finished_run, "--video", "--n-views", "2", "--resolution", "8", "--out", str(elsewhere)]) == 0
    assert {"turntable.mp4", "turntable.gif", "contact_sheet.png"} <= set(os.listdir(elsewhere))


def test_exporting_an_empty_field_writes_the_video_and_skips_the_mesh(finished_run, tmp_path, monkeypatch,
                                                                    capsys):
    import l2vsd_ext.export.mesh as mesh
    from l2vsd_ext.export.cli import main as export_main

    out = tmp_path / "e"
    monkeypatch.setattr(mesh, "density_grid", lambda field, resolution: torch.zeros(4, 4, 4))  # an empty field
    assert export_main([finished_run, "--n-views", "2", "--resolution", "8", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "mesh skipped" in err and "the field is empty" in err and "lower --threshold" not in err
    assert "turntable.mp4" in os.listdir(out) and "mesh.obj" not in os.listdir(out)
    assert export_main([finished_run, "--mesh", "--out", str(out)]) == 2  # asked for the mesh only
    one_line(capsys, "l2vsd_ext.export: error: --threshold", "the field is empty")


def test_eval_into_a_read_only_run_folder_is_refused_before_rendering(finished_run, monkeypatch, capsys):
    from l2vsd_ext.eval import cli

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == os.path.abspath(finished_run)
                        else real_access(p, mode))
    monkeypatch.setattr(cli, "evaluate", lambda args: pytest.fail("rendered before checking the folder"))
    assert cli.main([finished_run, "--no-fid", "--n-views", "2"]) == 2
    one_line(capsys, "l2vsd_ext.eval: error: RUN_DIR", "not writable")


def test_eval_with_no_metric_available_renders_nothing(finished_run, tmp_path, monkeypatch, capsys):
    import shutil

    from l2vsd_ext.eval import cli
    from l2vsd_ext.eval.clip_model import ModelUnavailable

    run = shutil.copytree(finished_run, tmp_path / "run")

    def no_clip(*a, **k):
        raise ModelUnavailable("no CLIP weights on this machine")

    monkeypatch.setattr(cli, "load_clip", no_clip, raising=False)
    import l2vsd_ext.eval.clip_model as clip_model

    monkeypatch.setattr(clip_model, "load_clip", no_clip)
    import l2vsd_ext.export.views as views

    monkeypatch.setattr(views, "render_orbit", lambda *a, **k: pytest.fail("rendered views no metric uses"))
    assert cli.main([str(run), "--no-fid", "--n-views", "2"]) == 0
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "nothing rendered" in err[0] and "no CLIP weights" in err[0]
    saved = json.loads((run / "eval.json").read_text())
    assert set(saved["skipped"]) == {"clip_similarity"} and not (run / "eval").exists()


def test_eval_renders_at_the_metrics_input_size():
    from l2vsd_ext.eval.cli import CLIP_INPUT_SIZE, metric_resolution
    from l2vsd_ext.eval.inception import INPUT_SIZE

    class Processor:
        class image_processor:
            crop_size = {"height": 96, "width": 96}

    assert metric_resolution(Processor(), None) == 96
    assert metric_resolution(None, object()) == INPUT_SIZE
    assert metric_resolution(Processor(), object()) == max(96, INPUT_SIZE)
    assert metric_resolution(None, None) == CLIP_INPUT_SIZE


# -- 7: '#' inside a prompt belongs to the prompt
def test_hash_inside_a_prompt_is_kept(tmp_path):
    from l2vsd_ext.sweep.spec import read_prompts

    path = tmp_path / "p.txt"
    path.write_text("# my prompts\na C# programmer's desk\n   # indented comment\n\na bowl of #1 noodles\n")
    notes = []
    assert read_prompts(str(path), notes) == ["a C# programmer's desk", "a bowl of #1 noodles"]
    assert len(notes) == 1 and "line(s) 5" in notes[0]  # '#1' after a space: kept, and said


@pytest.mark.parametrize("entry, words", [({"out": ["o"]}, "--out"), ({"out": 3}, "--out"),
                                          ({"prompts_file": ["a"]}, "prompts_file"),
                                          ({"num_cpus": "two"}, "--num-cpus"),
                                          ({"no_eval": "maybe"}, "--no-eval")])
def test_sweep_yaml_values_of_the_wrong_type_are_one_line(entry, words, tmp_path, capsys):
    from l2vsd_ext.sweep.cli import main as sweep_main

    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump({"prompts": ["a red apple"], "out": str(tmp_path / "o"), **entry}))
    assert sweep_main([str(spec)]) == 2
    one_line(capsys, "l2vsd_ext.sweep: error:", words)


def test_resume_with_no_export_reads_the_right_way_round(tiny_sd_path, small_config, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--prompt", "a boat", "--pretrained", tiny_sd_path, "--config", small_config, "--out", str(out),
            "--mode", "sds", "--steps", "3", "--ckpt-every", "1", "--stop-after", "1"]
    assert run_main(args) == 0
    capsys.readouterr()
    assert run_main(["--out", str(out), "--resume", "--no-export", "--stop-after", "2"]) == 0
    err = capsys.readouterr().err
    assert "export at the end: on -> off" in err and "True -> False" not in err


def test_wandb_hint_does_not_suggest_the_logging_extra(monkeypatch):
    from l2vsd_ext.config import ConfigError
    from l2vsd_ext.run_logging import make_logger

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError) as err:
        make_logger("wandb", "x", None)
    assert "pip install wandb" in str(err.value) and "[logging]" not in str(err.value)


# -- 10: the sweep's progress line shows the runs in their evaluation
def test_progress_line_counts_runs_in_evaluation(tmp_path):
    import io

    from l2vsd_ext.sweep.progress import ProgressLine
    from l2vsd_ext.sweep.task import _set_phase, read_phase

    log = str(tmp_path / "run.log")
    assert read_phase(log) is None
    _set_phase(log, "evaluating")
    assert read_phase(log) == "evaluating"
    _set_phase(log, None)
    assert read_phase(log) is None
    stream = io.StringIO()
    line = ProgressLine("s", 4, stream)
    line.update({"done": 1, "running": 2, "failed": 0, "queued": 1, "evaluating": 1}, None)
    assert "2 running (1 evaluating)" in stream.getvalue()


# -- 9: a failed --address join leaves nothing behind
def test_a_failed_cluster_join_leaves_no_sweep_json(tiny_sd_path, tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    from l2vsd_ext.config import ConfigError
    from l2vsd_ext.sweep import cli, scheduler

    def refuse(address, num_cpus):
        raise ConfigError(f"--address: cannot start or join the Ray cluster at '{address}': refused")

    monkeypatch.setattr(scheduler, "connect", refuse)
    monkeypatch.setattr(scheduler, "check_reachable", lambda address: None)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    out = tmp_path / "sweep"
    assert cli.main([str(prompts), "--out", str(out), "--address", "10.0.0.1:6379", "--modes", "sds",
                     "--pretrained", tiny_sd_path, "--no-eval"]) == 2
    one_line(capsys, "l2vsd_ext.sweep: error: --address")
    assert not out.exists()


@pytest.mark.parametrize("doc, words", [("pretrained: []\nprompt: x\n", "--pretrained"),
                                        ("pretrained: {a: 1}\nprompt: x\n", "--pretrained"),
                                        ("1: 2\n", "name must be text")])
def test_yaml_values_of_the_wrong_shape_are_one_line(doc, words, tmp_path, capsys):
    # Found by the fuzz (python_tests/chaos/test_fuzz_cli.py): a list as --pretrained was a TypeError.
    path = tmp_path / "c.yaml"
    path.write_text(doc)
    assert run_main(["--config", str(path), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "python -m l2vsd_ext.run: error:", words)
