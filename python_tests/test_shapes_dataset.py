"""The prior's data set file holds plain arrays only: it round-trips, and a crafted file (a pickle,
a torch.save archive, an .npz smuggling an object array) is never executed: it is reported in one
line and rebuilt."""
import os
import pickle

import numpy as np
import pytest
import torch

import l2vsd_ext.shapes.dataset as dataset


def _small_dataset(views_per_object, resolution, seed, progress=None):
    """Stands in for the renders (this test is about the file, not the pictures)."""
    n = 8 * 16 * -(-views_per_object // 16)
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randint(0, 256, (n, 3, resolution, resolution), generator=g, dtype=torch.uint8),
            "alpha": torch.randint(0, 256, (n, 1, resolution, resolution), generator=g, dtype=torch.uint8),
            "text_index": torch.randint(0, 32, (n,), generator=g),
            "elevation": torch.rand(n, generator=g) * 100 - 10,
            "azimuth": torch.rand(n, generator=g) * 360 - 180,
            "texts": dataset.all_texts(), "resolution": resolution, "seed": seed}


@pytest.fixture
def fake_renders(monkeypatch):
    calls = []

    def build(*args, **kwargs):
        calls.append(args)
        return _small_dataset(*args)

    monkeypatch.setattr(dataset, "build_dataset", build)
    return calls


class _RunsCode:
    """Unpickling this creates a folder: proof that code in the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_round_trip_is_exact_and_cached(tmp_path, fake_renders):
    path = str(tmp_path / "dataset.npz")
    built = dataset.load_or_build_dataset(path, 16, 4, 3)
    again = dataset.load_or_build_dataset(path, 16, 4, 3)
    assert len(fake_renders) == 1  # the second call read the file
    for key, value in built.items():
        if torch.is_tensor(value):
            assert again[key].dtype == value.dtype and torch.equal(again[key], value), key
        else:
            assert again[key] == value, key
    with np.load(path, allow_pickle=False) as npz:  # plain arrays, readable without pickle
        assert all(npz[k].dtype != object for k in npz.files)
    dataset.load_or_build_dataset(path, 16, 4, 4)  # another seed: rebuilt, not reused
    assert len(fake_renders) == 2


def _pickle_file(path, marker):
    with open(path, "wb") as fh:
        pickle.dump({"images": _RunsCode(marker)}, fh)


def _torch_archive(path, marker):
    torch.save({"images": _RunsCode(marker)}, path)  # the old dataset.pt format


def _npz_with_object_array(path, marker):
    holder = np.empty(1, dtype=object)
    holder[0] = _RunsCode(marker)
    arrays = {k: v.numpy() if torch.is_tensor(v) else np.array(v)
              for k, v in _small_dataset(16, 4, 0).items() if k != "texts"}
    with open(path, "wb") as fh:
        np.savez(fh, texts=holder, **arrays)


@pytest.mark.parametrize("craft", [_pickle_file, _torch_archive, _npz_with_object_array])
def test_crafted_file_is_not_executed_but_rebuilt(tmp_path, capsys, fake_renders, craft):
    path, marker = str(tmp_path / "dataset.npz"), str(tmp_path / "code_ran")
    craft(path, marker)
    data = dataset.load_or_build_dataset(path, 16, 4, 0)
    assert not os.path.exists(marker), "code in the data set file was executed"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable data set" in err[0], err
    assert "nothing in it was executed" in err[0] and "rendering it again" in err[0]
    assert len(fake_renders) == 1 and data["images"].shape == (128, 3, 4, 4)
    assert torch.equal(dataset.read_dataset(path)["images"], data["images"])  # replaced by a clean file


def test_read_dataset_names_what_is_wrong(tmp_path):
    path = tmp_path / "dataset.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(dataset.UnreadableDataset):
        dataset.read_dataset(str(path))
    with open(path, "wb") as fh:
        np.savez(fh, images=np.zeros(3, np.uint8))
    with pytest.raises(dataset.UnreadableDataset, match="no alpha"):
        dataset.read_dataset(str(path))


def test_trainer_never_unpickles():
    """Static check of the prior's training code: checkpoints with weights_only=True (through
    checkpoint.load_checkpoint), the data set without pickle."""
    import inspect

    import l2vsd_ext.shapes.train as train

    for module in (dataset, train):
        source = inspect.getsource(module)
        assert "weights_only=False" not in source and "pickle.load" not in source
        assert "allow_pickle=True" not in source and "torch.load(" not in source
