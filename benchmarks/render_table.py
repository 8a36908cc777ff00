"""Turns a pytest-benchmark JSON of bench_render.py into the markdown table in docs/rendering.md.

Usage: python benchmarks/render_table.py out.json"""
import json
import sys

PAIRS = [
    ("Compositing fwd+bwd, 2^20 samples / 4096 rays",
     "test_composite_forward_backward[reference]", "test_composite_forward_backward[kernel]",
     "pure-PyTorch reference", "compiled kernels"),
    ("64x64 render + backward, default field",
     "test_render_forward_backward[no skipping]", "test_render_forward_backward[skipping]",
     "no occupancy skipping", "occupancy grid 128^3"),
]


def main(path):
    data = json.load(open(path))
    by_name = {b["name"]: b for b in data["benchmarks"]}
    rows = ["| Benchmark | Baseline | Ours | Baseline median | Ours median | Speed-up |",
            "|---|---|---|---:|---:|---:|"]
    for title, base, ours, base_label, ours_label in PAIRS:
        b, o = by_name[base]["stats"]["median"], by_name[ours]["stats"]["median"]
        rows.append(f"| {title} | {base_label} | {ours_label} | {b * 1e3:.0f} ms | {o * 1e3:.0f} ms "
                    f"| {b / o:.1f}x |")
    spr = {k: by_name[k]["extra_info"].get("samples_per_ray") for k in
           ("test_render_forward_backward[no skipping]", "test_render_forward_backward[skipping]")}
    rows.append("")
    rows.append("| Samples per ray (64x64, default field at initialisation) | no skipping | "
                "occupancy grid |")
    rows.append("|---|---:|---:|")
    rows.append(f"| mean over rays | {spr['test_render_forward_backward[no skipping]']:.1f} | "
                f"{spr['test_render_forward_backward[skipping]']:.1f} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1])
