"""The ground-truth benchmark: analytic objects with known geometry and colour, their renders, the
small shipped prior trained on them (--pretrained shapes), and scoring of a run against its true
object (python -m l2vsd_ext.shapes.bench)."""
from __future__ import annotations


def score_run(run_dir: str) -> dict:
    """Scores a finished run on the shapes prior against the object its prompt names (also written
    to RUN/shapes_eval.json). The sweep calls this after each such run."""
    import yaml

    from .bench import evaluate_run
    from .objects import get_object

    with open(f"{run_dir}/config.yaml") as fh:
        prompt = (yaml.safe_load(fh) or {}).get("prompt", "")
    return evaluate_run(run_dir, get_object(prompt).key)
