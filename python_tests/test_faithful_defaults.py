"""Issue 20's faithful defaults: the VSD family as threestudio's ProlificDreamer (the paper ran every
experiment under it), the lookahead options' validation, legacy values for runs saved before the
settings existed, and the run's Fig. 4c plot."""
import json

import pytest
import yaml

from l2vsd_ext.config import LEGACY_VALUES, ConfigError, RunConfig, from_saved, validate
from l2vsd_ext.run import main, resolve_config
from tiny_run import SMALL_SCENE


def test_defaults_are_threestudios_prolificdreamer():
    c = RunConfig()
    assert c.lora_lr == 1e-4
    assert (c.lora_beta1, c.lora_beta2, c.lora_eps, c.lora_weight_decay) == (0.9, 0.99, 1e-15, 0.01)
    assert c.lora_init == "gaussian" and c.camera_init == "default" and c.lora_text == "plain"
    # prolificdreamer.yaml: max_step_percent_annealed 0.98, i.e. no annealing
    assert c.max_step == 0.98 and c.max_step_after == 0.98 and c.min_step == 0.02
    assert c.lookahead_camera is True and c.lookahead_direction == "sgd"
    assert c.eta_relative is None and c.high_order_diagnostics is False
    assert c.guidance_scale == 7.5 and c.lora_rank == 4 and c.condition_dropout == 0.1


def test_shapes_prior_keeps_the_package_defaults_it_does_not_override():
    c = resolve_config(["--prompt", "a pumpkin", "--pretrained", "shapes"])
    assert c.lora_lr == 1e-4 and c.max_step_after == 0.98 and c.guidance_scale == 3.0


def test_runs_saved_before_the_settings_keep_their_values():
    old = {k: v for k, v in RunConfig(prompt="a boat", lora_lr=1e-3).to_dict().items() if k not in LEGACY_VALUES}
    config = from_saved(old)
    assert config.lora_init == "kaiming" and config.camera_init == "zero" and config.lora_text == "view"
    assert (config.lora_beta2, config.lora_eps, config.lora_weight_decay) == (0.999, 1e-8, 0.0)
    assert config.lookahead_camera is False and config.lora_lr == 1e-3
    # a saved value wins over the legacy one
    assert from_saved({**old, "lora_text": "plain"}).lora_text == "plain"


@pytest.mark.parametrize("overrides, message", [
    ({"mode": "vsd", "eta_relative": 0.1}, "--eta-relative: only used"),
    ({"mode": "l2vsd", "eta_relative": -1.0}, "--eta-relative: must be > 0"),
    ({"mode": "lvsd", "high_order_diagnostics": True}, "--high-order-diagnostics: only used"),
    ({"mode": "l2vsd", "lookahead_direction": "adam"}, "--lookahead-direction: must be one of"),
    ({"mode": "vsd", "lora_init": "xavier"}, "--lora-init: must be one of"),
    ({"mode": "vsd", "camera_init": "ones"}, "--camera-init: must be one of"),
    ({"mode": "vsd", "lora_text": "none"}, "--lora-text: must be one of"),
    ({"mode": "vsd", "lora_beta2": 1.0}, "--lora-beta2: must be in"),
    ({"mode": "vsd", "lora_eps": 0.0}, "--lora-eps: must be > 0"),
    ({"mode": "vsd", "lora_weight_decay": -0.1}, "--lora-weight-decay: must be >= 0"),
    ({"mode": "hlvsd", "esd_lambda": 0.5}, "--esd-lambda: only used"),
    ({"mode": "vsd", "last_layer": True}, "--last-layer: only used"),
])
def test_bad_lookahead_settings_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(RunConfig(prompt="a boat", **overrides))


def test_cli_refuses_a_bad_direction_in_one_line(capsys, tmp_path):
    code = main(["--prompt", "a boat", "--mode", "l2vsd", "--lookahead-direction", "adam",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--lookahead-direction" in err[0] and "adam" in err[0]
    assert not (tmp_path / "r").exists()


def test_hlvsd_run_writes_its_diagnostics_plot(tiny_sd_path, tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({**SMALL_SCENE, "turntable_views": 0}))
    out = tmp_path / "run"
    code = main(["--prompt", "a small wooden boat", "--pretrained", tiny_sd_path, "--config", str(config),
                 "--out", str(out), "--mode", "hlvsd", "--steps", "3", "--high-order-diagnostics", "true",
                 "--no-export"])
    assert code == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert r["kappa"] > 0 and r["eps_first_norm"] > 0 and r["eps_high_step_norm"] >= 0
        assert r["eps_high_taylor_norm"] >= 0 and r["vsd_signal_norm"] > 0
    png = out / "diagnostics.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
