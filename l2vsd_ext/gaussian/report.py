"""Final-W2 results: rows per (method, seed), CSV, JSON and a printed summary table."""
import csv
import dataclasses
import json
import statistics


def final_rows(histories, problem, config):
    return [
        {"method": h.method, "seed": int(seed), "n_render": config.n_render, "final_w2": float(h.w2[-1, i])}
        for h in histories
        for i, seed in enumerate(problem.seeds)
    ]


def summary(rows):
    """Per method: median, mean, min and max of the final W2 over seeds (methods in run order)."""
    by_method = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row["final_w2"])
    return {
        m: {"median": statistics.median(v), "mean": statistics.fmean(v), "min": min(v), "max": max(v)}
        for m, v in by_method.items()
    }


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["method", "seed", "n_render", "final_w2"])
        writer.writeheader()
        writer.writerows(rows)


def write_json(rows, config, seconds, path):
    payload = {
        "config": dataclasses.asdict(config),
        "seconds": seconds,
        "summary": summary(rows),
        "final_w2": rows,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def format_table(rows):
    lines = ["| method | median W2 | mean W2 | min | max |", "|---|---|---|---|---|"]
    for method, s in summary(rows).items():
        lines.append(f"| {method} | {s['median']:.4f} | {s['mean']:.4f} | {s['min']:.4f} | {s['max']:.4f} |")
    return "\n".join(lines)
