"""The front/back view probe (shapes/view_probe.py): the shipped weights tell held-out true fronts
from backs, the report's summary reads its verdicts, and bad weight files fail naming the path."""
import pytest
import torch

from l2vsd_ext.shapes.objects import OBJECTS
from l2vsd_ext.shapes.view_probe import (PROBE_SEED, ViewProbe, front_probability, held_out_accuracy,
                                         load_view_probe, probe_data, save_view_probe)


@pytest.fixture(scope="module")
def probe():
    return load_view_probe()


def test_shipped_probe_tells_held_out_fronts_from_backs(probe):
    """Fresh cameras (a seed neither training nor the recorded accuracy used), clean and blurred."""
    torch.set_num_threads(1)
    accuracy = held_out_accuracy(probe, views_per_object=120, seed=PROBE_SEED + 17, sigmas=(0.0, 1.0))
    print(accuracy)
    assert accuracy["accuracy_blur0"] >= 0.8 and accuracy["accuracy_blur1"] >= 0.75, accuracy


def test_probe_data_labels_follow_the_cameras():
    data = probe_data(40, 16, seed=3, keys=["pumpkin", "duck"])
    n = data.is_front.shape[0]
    assert data.rgb.shape == (n, 3, 16, 16) and data.alpha.shape == (n, 1, 16, 16)
    assert set(data.object_index.tolist()) == {list(OBJECTS).index("pumpkin"), list(OBJECTS).index("duck")}
    assert 0 < data.is_front.sum() < n  # both labels drawn


def test_front_probability_resizes_other_resolutions(probe):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    p = front_probability(probe, images, ["pumpkin", "duck", "bear"])
    small = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True,
                                            align_corners=False)
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    assert torch.allclose(p, front_probability(probe, small, ["pumpkin", "duck", "bear"]))


def test_summary_reads_the_probe_verdicts():
    from l2vsd_ext.shapes.quality import summarize

    row = lambda view, p: {"object": "duck", "view": view, "nearest_object": "duck", "psnr_own": 15.0,  # noqa: E731
                           "psnr_best_other": 12.0, "psnr_front_views": 14.0, "psnr_back_views": 13.0,
                           "p_front": p}
    s = summarize([row("front", 0.9), row("front", 0.2), row("back", 0.1), row("back", 0.3)])
    assert s["front_sample_classified_front"] == 0.5 and s["back_sample_classified_back"] == 1.0
    assert "front_sample_classified_front" not in summarize([{k: v for k, v in row("front", 0.9).items()
                                                               if k != "p_front"}])


@pytest.mark.parametrize("which", ["view probe", "object probe"])
def test_weight_files_round_trip_and_bad_ones_name_the_path(tmp_path, which):
    """Both probes' weight files (they share the format and the loader's checks)."""
    from l2vsd_ext.shapes.object_probe import ObjectProbe, load_object_probe

    cls, load = {"view probe": (ViewProbe, load_view_probe),
                 "object probe": (ObjectProbe, load_object_probe)}[which]
    torch.manual_seed(0)
    probe = cls().eval()
    path = str(tmp_path / "p.safetensors")
    save_view_probe(probe, path)
    again = load(path)
    x = torch.rand(2, 3, 32, 32)
    assert type(again) is cls and torch.equal(probe(x), again(x))
    with pytest.raises(ValueError, match=f"{which} .* does not exist"):
        load(str(tmp_path / "missing.safetensors"))
    from safetensors.torch import save_file

    save_file(dict(probe.state_dict()), str(tmp_path / "other.safetensors"), metadata={"objects": "cat,dog"})
    with pytest.raises(ValueError, match="trained for objects 'cat,dog'"):
        load(str(tmp_path / "other.safetensors"))
