"""Many runs (prompts x modes x seeds x variants) as Ray tasks, and their aggregate report.

CLI: python -m l2vsd_ext.sweep PROMPTS.txt --modes sds vsd --seeds 0 1 --out sweeps/NAME;
report: python -m l2vsd_ext.sweep.report sweeps/NAME. Ray is the optional extra `sweep`; nothing
here imports it until a sweep has work to schedule."""
from .spec import RunSpec, expand_grid, read_prompts

__all__ = ["RunSpec", "expand_grid", "read_prompts"]
