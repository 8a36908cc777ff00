"""Turns a pytest-benchmark JSON file into the README's markdown tables: per case (group), the
median time of each impl and the speed-up of every impl over "reference" measured in that run.
With --peers, first the table against the peers (rows tagged role="peer" in extra_info: nerfstudio,
nerfacc, tiny-cuda-nn), with the own-reference ratio beside it as correctness context.

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


def peer_table(results: dict) -> str:
    """One row per case that has a peer: ours vs the peer (speed-up = peer median / ours median),
    and ours vs the pure-PyTorch reference of the same run. Rows tagged role="context" (such as
    the two compositing ops that the fused op replaces) follow ours, marked as context."""
    groups = defaultdict(dict)
    for bench in results["benchmarks"]:
        info = bench.get("extra_info", {})
        if "role" in info:
            entry = (info.get("impl", bench["name"]), bench["stats"]["median"])
            if info["role"] == "context":
                groups[bench["group"]].setdefault("context", []).append(entry)
            else:
                groups[bench["group"]][info["role"]] = entry
    lines = ["| case | ours | median (ms) | peer | peer median (ms) | speed-up vs peer | "
             "speed-up vs own reference |", "|---|---|---:|---|---:|---:|---:|"]
    for group in sorted(groups):
        roles = groups[group]
        if "ours" not in roles or "peer" not in roles:
            continue
        peer, t_peer = roles["peer"]
        rows = [(roles["ours"], True)] + [(entry, False) for entry in sorted(roles.get("context", []))]
        for (impl, t_impl), is_ours in rows:
            ref = f"{roles['reference'][1] / t_impl:.1f}x" if "reference" in roles else "n/a"
            speedup = f"**{t_peer / t_impl:.1f}x**" if is_ours else f"{t_peer / t_impl:.1f}x"
            name = impl if is_ours else f"{impl} (context)"
            lines.append(f"| {group} | {name} | {t_impl * 1e3:.1f} | {peer} | {t_peer * 1e3:.1f} | "
                         f"{speedup} | {ref} |")
    return "\n".join(lines)


def machine_line(results: dict) -> str:
    machine = results.get("machine_info", {})
    cpu = machine.get("cpu", {})
    def seen(key):
        values = {str(b.get("extra_info", {}).get(key)) for b in results["benchmarks"]
                  if key in b.get("extra_info", {})}
        return "/".join(sorted(values)) or "?"

    return (f"machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical CPUs, "
            f"torch threads {seen('torch_threads')}, OMP_NUM_THREADS {seen('omp_num_threads')}, "
            f"python {machine.get('python_version', '?')}, "
            f"{results.get('datetime', '?')[:19]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--baseline", default="reference")
    parser.add_argument("--time-ratio", action="store_true",
                        help="print impl/baseline time instead of the speed-up")
    parser.add_argument("--peers", action="store_true",
                        help="print the table against the peers first")
    args = parser.parse_args(argv)
    with open(args.json_file) as fh:
        results = json.load(fh)
    if args.peers:
        print(machine_line(results) + "\n")
        print(peer_table(results) + "\n")
    print(ratio_table(results, args.baseline, args.time_ratio))
    if not args.peers:
        print("\n(" + machine_line(results) + ")", file=sys.stderr)


if __name__ == "__main__":
    main()
