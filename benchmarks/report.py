"""Turns a pytest-benchmark JSON file into the README's markdown table: per case (group), the
median time of each impl and the speed-up of every impl over "reference" measured in that run.

    python -m pytest benchmarks --benchmark-json=bench.json && python benchmarks/report.py bench.json
"""
import argparse
import json
import sys
from collections import defaultdict


def ratio_table(results: dict, baseline: str = "reference", time_ratio: bool = False) -> str:
    """speed-up = baseline median / impl median; with time_ratio, impl median / baseline median."""
    groups = defaultdict(dict)
    for bench in results["benchmarks"]:
        impl = bench.get("extra_info", {}).get("impl", bench["name"])
        groups[bench["group"]][impl] = bench["stats"]["median"]
    column = f"time / {baseline}" if time_ratio else f"speed-up vs {baseline}"
    lines = [f"| case | impl | median (ms) | {column} |", "|---|---|---|---|"]
    for group in sorted(groups):
        timings = groups[group]
        base = timings.get(baseline)
        for impl, median in sorted(timings.items(), key=lambda kv: kv[0] != baseline):
            if not base:
                ratio = "n/a"
            else:
                ratio = f"{median / base:.2f}x" if time_ratio else f"{base / median:.1f}x"
            lines.append(f"| {group} | {impl} | {median * 1e3:.1f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--baseline", default="reference")
    parser.add_argument("--time-ratio", action="store_true",
                        help="print impl/baseline time instead of the speed-up")
    args = parser.parse_args(argv)
    with open(args.json_file) as fh:
        print(ratio_table(json.load(fh), args.baseline, args.time_ratio))
    machine = json.load(open(args.json_file)).get("machine_info", {})
    print(f"\n(machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
          f"{machine.get('cpu', {}).get('count', '?')} logical CPUs)", file=sys.stderr)


if __name__ == "__main__":
    main()
