"""Per-step stats stay on the device and are read back in one batch (issue 11, host syncs)."""
import torch

from l2vsd_ext.step_stats import StatsBuffer, to_host


def test_to_host_turns_scalars_into_numbers_and_keeps_the_rest():
    records = [{"step": 1, "loss": torch.tensor(0.25), "nonfinite": torch.tensor(3),
                "note": "x", "seconds": 0.5}]
    (out,) = to_host(records)
    assert out == {"step": 1, "loss": 0.25, "nonfinite": 3, "note": "x", "seconds": 0.5}
    assert isinstance(out["nonfinite"], int) and isinstance(out["loss"], float)
    assert isinstance(records[0]["loss"], torch.Tensor)  # the input is left alone


def test_to_host_reads_each_device_once(monkeypatch):
    calls = []
    real_stack = torch.stack

    def counting_stack(tensors, *args, **kwargs):
        calls.append(len(tensors))
        return real_stack(tensors, *args, **kwargs)

    monkeypatch.setattr(torch, "stack", counting_stack)
    records = [{"a": torch.tensor(float(i)), "b": torch.tensor(i)} for i in range(5)]
    out = to_host(records)
    assert calls == [10]
    assert [r["a"] for r in out] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_buffer_flushes_and_empties():
    buf = StatsBuffer()
    buf.add({"loss": torch.tensor(1.5)})
    buf.add({"loss": torch.tensor(2.5)})
    assert len(buf) == 2
    assert [r["loss"] for r in buf.flush()] == [1.5, 2.5]
    assert len(buf) == 0 and buf.flush() == []


def test_train_step_returns_device_scalars(tiny_sd_path, tmp_path):
    """No float()/item() per step: the loop's stats are tensors until the logging interval."""
    from l2vsd_ext.config import RunConfig
    from l2vsd_ext.trainer import Trainer

    config = RunConfig(prompt="a boat", mode="vsd", steps=10, pretrained=tiny_sd_path,
                       out=str(tmp_path), log2_hashmap_size=12, n_levels=8,
                       occupancy_resolution=16, max_samples_per_ray=64, resolution=16,
                       encode_resolution=32)
    stats = Trainer(config).train_step()
    for key in ("loss", "t", "grad_norm", "eps_phi_norm", "nonfinite", "lora_loss",
                "nonfinite_param_grads"):
        assert isinstance(stats[key], torch.Tensor), key
    (host,) = to_host([stats])
    assert isinstance(host["loss"], float) and isinstance(host["nonfinite_param_grads"], int)
