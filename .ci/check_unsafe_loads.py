#!/usr/bin/env python3
"""CI: fail on any way for a file to run code when the package reads it, or for text to run as code.

Parses every .py file under the given folders (default: l2vsd_ext) and reports, file:line, each
  torch.load(...) without weights_only=True (weights_only=False, or left to the default),
  pickle/cPickle/dill/joblib load or loads, marshal.loads, shelve.open,
  np.load / numpy.load(..., allow_pickle=True),
  yaml.load without a safe Loader, yaml.unsafe_load / full_load / load_all without one,
  eval(...) / exec(...) / compile(...) of text (the builtins; model.eval() is a method, not these).
The AST, not a grep: comments and docstrings that mention these never count, and method calls such
as module.eval() are told apart from the builtin. Exit 0 when clean, 1 with the list otherwise."""
from __future__ import annotations

import ast
import os
import sys

SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "_UniqueKeyLoader"}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle"}


def _dotted(node) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def problems_in(source: str, path: str) -> list[str]:
    found = []
    try:
        tree = ast.parse(source, path)
    except SyntaxError as err:
        return [f"{path}:{err.lineno}: does not parse"]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{path}:{node.lineno}"
        if any(_is_const(k.value, False) for k in node.keywords if k.arg == "weights_only"):
            found.append(f"{where}: weights_only=False (unpickles arbitrary objects)")
        elif last == "load" and name.split(".")[0] == "torch" and not _is_const(_keyword(node, "weights_only"), True):
            found.append(f"{where}: {name}() without weights_only=True")
        if last in ("load", "loads", "Unpickler") and name.split(".")[0] in PICKLE_MODULES:
            found.append(f"{where}: {name}() runs code from the file")
        if name in ("marshal.loads", "marshal.load", "shelve.open"):
            found.append(f"{where}: {name}() runs code from the file")
        if name in ("np.load", "numpy.load") and _is_const(_keyword(node, "allow_pickle"), True):
            found.append(f"{where}: {name}(allow_pickle=True) unpickles arbitrary objects")
        if name.split(".")[0] == "yaml" and last in ("load", "load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: {name}() without a safe Loader (use yaml.safe_load)")
        if name.split(".")[0] == "yaml" and last in ("unsafe_load", "full_load", "unsafe_load_all", "full_load_all"):
            found.append(f"{where}: {name}() builds arbitrary objects (use yaml.safe_load)")
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile"):
            found.append(f"{where}: {node.func.id}() runs text as code")
        if name in ("builtins.eval", "builtins.exec"):
            found.append(f"{where}: {name}() runs text as code")
    return found


def main(argv) -> int:
    roots = argv or [os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "l2vsd_ext")]
    found, files = [], 0
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as fh:
                        found += problems_in(fh.read(), os.path.relpath(path))
                    files += 1
    for line in found:
        print(line)
    print(f"check_unsafe_loads: {files} files, {len(found)} unsafe load(s) or eval/exec", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
