"""The object probe (shapes/object_probe.py): the shipped weights name the object of held-out true
renders of every view label, the report's summary reads its verdicts, a short training run learns,
and bad weight files fail naming the path (with the view probe's, test_view_probe.py)."""
import pytest
import torch

from l2vsd_ext.shapes.object_probe import (SEED, classify_objects, held_out_accuracy, load_object_probe,
                                           train_object_probe)
from l2vsd_ext.shapes.objects import OBJECTS


@pytest.fixture(scope="module")
def probe():
    return load_object_probe()


def test_shipped_probe_names_held_out_objects(probe):
    """Fresh cameras (a seed neither training nor the recorded accuracy used), clean and blurred."""
    torch.set_num_threads(1)
    accuracy = held_out_accuracy(probe, views_per_object=40, seed=SEED + 17, sigmas=(0.0, 1.0))
    print(accuracy)
    assert accuracy["accuracy_blur0"] >= 0.95 and accuracy["accuracy_blur1"] >= 0.9, accuracy
    assert min(accuracy["accuracy_per_object"].values()) >= 0.8, accuracy


def test_classify_resizes_other_resolutions(probe):
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    small = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", antialias=True,
                                            align_corners=False)
    keys = classify_objects(probe, images)
    assert len(keys) == 4 and set(keys) <= set(OBJECTS)
    assert keys == classify_objects(probe, small)


def test_summary_reads_the_object_verdicts():
    from l2vsd_ext.shapes.quality import summarize

    def row(recognised):
        return {"object": "duck", "view": "front", "nearest_object": "duck", "psnr_own": 15.0,
                "psnr_best_other": 12.0, "psnr_front_views": 14.0, "psnr_back_views": 13.0,
                "probe_object": recognised}

    s = summarize([row("duck"), row("duck"), row("duck"), row("bear")])
    assert s["own_object_classified"] == 0.75
    plain = {k: v for k, v in row("duck").items() if k != "probe_object"}
    assert "own_object_classified" not in summarize([plain])


def test_a_short_training_run_learns_two_objects(monkeypatch):
    """Two objects, a few epochs: the training loss falls and the classes separate (trained from
    scratch here, so the test does not lean on the shipped weights)."""
    import l2vsd_ext.shapes.object_probe as module

    torch.set_num_threads(1)
    keys = ["pumpkin", "mug"]
    original = module.probe_data
    monkeypatch.setattr(module, "probe_data", lambda *a, **kw: original(*a, keys=keys, **kw))
    losses = []
    probe = train_object_probe(views_per_object=24, epochs=6, resolution=32, seed=5,
                               progress=lambda epoch, loss: losses.append(loss))
    data = original(16, 32, seed=99, keys=keys, view_labels=("front", "side", "back", "overhead"))
    predicted = classify_objects(probe, data.rgb)
    truth = [list(OBJECTS)[i] for i in data.object_index.tolist()]
    accuracy = sum(p == t for p, t in zip(predicted, truth)) / len(truth)
    assert losses[-1] < losses[0] and accuracy >= 0.9, (losses, accuracy)

