"""Ground-truth scores of a run whose prior is the shipped shapes prior (--pretrained shapes), from
the shapes benchmark (l2vsd_ext.shapes) when this install has it. Any other prior has no known
right answer, so there is nothing to score."""
from __future__ import annotations

import importlib
import os

from ..config import SHIPPED_SHAPES_FOLDERS

SHAPES_PRIOR = "shapes"
# The shapes benchmark's scoring entry point: score_run(run_dir) -> {score name: value}.
SCORER = ("l2vsd_ext.shapes", "score_run")


def ground_truth_scores(run_dir: str) -> dict:
    """{score: value}, or {"skipped": why}."""
    import yaml

    try:
        with open(os.path.join(run_dir, "config.yaml")) as fh:
            pretrained = (yaml.safe_load(fh) or {}).get("pretrained")
    except OSError:
        return {"skipped": "no config.yaml in the run folder"}
    if pretrained not in SHIPPED_SHAPES_FOLDERS:
        return {"skipped": f"prior '{pretrained}' has no ground truth (only --pretrained {SHAPES_PRIOR})"}
    module_name, function_name = SCORER
    try:
        score_run = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError):
        return {"skipped": f"this install has no shapes benchmark ({module_name}.{function_name})"}
    try:
        scores = score_run(run_dir)
    except KeyError as err:  # a prompt that names none of the shapes objects
        return {"skipped": str(err).strip("\"'")}
    return {k: v for k, v in dict(scores).items() if isinstance(v, (int, float, str, bool))}
