import subprocess
import sys

import torch

import l2vsd_ext


def test_build_info_reports_the_build():
    info = l2vsd_ext.build_info()
    assert info["torch_version"] == torch.__version__ == info["torch_runtime"]
    assert info["cuda"] == (info["cuda_archs"] != "cpu")
    if torch.version.cuda is None:
        assert info["cuda"] is False
    assert info["openmp"] is True and info["omp_threads"] >= 1
    assert isinstance(info["compiler"], str) and info["compiler"]


def test_import_does_not_load_the_extension_until_needed():
    code = "import sys, l2vsd_ext; assert 'l2vsd_ext._C' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
