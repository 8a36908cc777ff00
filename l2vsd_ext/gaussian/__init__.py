"""The paper's 2D Gaussian example (Appendix F): SDS, ideal VSD, practical VSD, L-VSD and L²-VSD on
closed-form Gaussian scores. Run it with `python -m l2vsd_ext.gaussian`; see docs/gaussian.md."""
from .experiment import Config, History, Problem, make_problem, run_method
from .guidance import METHODS

__all__ = ["Config", "History", "METHODS", "Problem", "make_problem", "run_method"]
