"""A finished tiny training run folder (tiny prior, small scene, a few steps), for the export and
evaluation tests."""
from __future__ import annotations

import yaml

SMALL_SCENE = {"log2_hashmap_size": 12, "n_levels": 8, "occupancy_resolution": 16,
               "max_samples_per_ray": 64, "turntable_views": 4, "encode_resolution": 32,
               "resolution": 16}


def make_tiny_run(tiny_sd_path: str, folder, steps: int = 3, mode: str = "sds",
                  prompt: str = "a small wooden boat") -> str:
    from l2vsd_ext.run import main

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump(SMALL_SCENE))
    out = folder / "run"
    code = main(["--prompt", prompt, "--pretrained", tiny_sd_path, "--config", str(config),
                 "--out", str(out), "--mode", mode, "--steps", str(steps)])
    assert code == 0
    return str(out)
