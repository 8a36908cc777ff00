#!/usr/bin/env python3
"""Build-time rewrite of a .cu file for the CUDA emulator (the checked-in file is never changed).

Three mechanical edits, each keeping the line count so that diagnostics point at the original:
  kernel<<<grid, block[, smem[, stream]]>>>(args)
      -> ::emu::launch("kernel", kernel, ::emu::config(grid, block[, smem[, stream]]), args)
  extern __shared__ [__align__(n)] T name[];
      -> T* name = ::emu::dynamic_shared<T>();
  __shared__ T a[N], b[M];              (inside a function body)
      -> the same, followed by ::emu::shared_declared(&a, sizeof(a)); ... (poisoned per block)

Usage: emu_rewrite.py INPUT.cu OUTPUT.cpp
"""
import os
import re
import sys

IDENT = re.compile(r"[A-Za-z_0-9]")


def mask_comments_and_strings(text):
    """Same-length copy with comments, string and char literal contents replaced by spaces."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if text[k] != "\n":
                    out[k] = " "
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def match_forward(masked, i, open_ch, close_ch):
    """Index just past the bracket matching masked[i] == open_ch."""
    depth = 0
    for j in range(i, len(masked)):
        if masked[j] == open_ch:
            depth += 1
        elif masked[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j + 1
    raise SystemExit(f"emu_rewrite: unbalanced {open_ch} at offset {i}")


def kernel_start(masked, end):
    """Start of the kernel expression (name, template arguments, qualifiers) ending at `end`."""
    i = end
    while i > 0 and masked[i - 1].isspace():
        i -= 1
    if i > 0 and masked[i - 1] == ">":
        depth = 0
        while i > 0:
            i -= 1
            if masked[i] == ">":
                depth += 1
            elif masked[i] == "<":
                depth -= 1
                if depth == 0:
                    break
    while i > 0 and (IDENT.match(masked[i - 1]) or masked[i - 1] == ":"):
        i -= 1
    return i


def rewrite_launches(text, masked, edits):
    for m in re.finditer(r"<<<", masked):
        start = kernel_start(masked, m.start())
        kernel = text[start:m.start()].strip()
        close = masked.find(">>>", m.end())
        if close < 0 or not kernel:
            raise SystemExit(f"emu_rewrite: cannot parse the launch at offset {m.start()}")
        cfg = text[m.end():close]
        paren = close + 3
        while masked[paren].isspace():
            paren += 1
        if masked[paren] != "(":
            raise SystemExit(f"emu_rewrite: no argument list after the launch of {kernel}")
        end = match_forward(masked, paren, "(", ")")
        args = text[paren + 1:end - 1]
        name = " ".join(kernel.split())
        new = f'::emu::launch("{name}", {kernel}, ::emu::config({cfg})'
        new += (", " + args if args.strip() else "") + ")"
        edits.append((start, end, new))


def brace_kinds(masked):
    """For each '{' offset: True when it opens code (a function or statement body)."""
    kinds = {}
    for m in re.finditer(r"\{", masked):
        before = masked[max(0, m.start() - 200):m.start()]
        scope = re.search(r'(\bnamespace\b[\s\w:]*|\bextern\s*"\s*"|'
                          r"\b(struct|class|union|enum)\b[^;{}()]*)\s*$", before)
        kinds[m.start()] = scope is None
    return kinds


def inside_code(masked, pos, kinds):
    stack = []
    for m in re.finditer(r"[{}]", masked[:pos]):
        if m.group() == "{":
            stack.append(kinds[m.start()])
        elif stack:
            stack.pop()
    return any(stack)


def declarator_names(decl):
    """Variable names declared by `T a[N], b[M]` (brackets and template arguments ignored)."""
    flat = decl
    for opener, closer in (("[", "]"), ("(", ")")):
        while True:
            new = re.sub(re.escape(opener) + r"[^" + re.escape(opener + closer) + r"]*" +
                         re.escape(closer), "", flat)
            if new == flat:
                break
            flat = new
    while True:
        new = re.sub(r"<[^<>]*>", "", flat)
        if new == flat:
            break
        flat = new
    names = []
    for part in flat.split(","):
        part = part.split("=")[0]
        ids = re.findall(r"[A-Za-z_]\w*", part)
        if ids:
            names.append(ids[-1])
    return names


def rewrite_shared(text, masked, edits):
    kinds = brace_kinds(masked)
    for m in re.finditer(r"\b__shared__\b", masked):
        line_start = masked.rfind("\n", 0, m.start()) + 1
        if masked[line_start:m.start()].lstrip().startswith("#"):
            continue  # inside a macro definition: left alone
        semi = masked.find(";", m.end())
        ext = re.search(r"\bextern\s*$", masked[line_start:m.start()])
        if ext:
            decl = text[m.end():semi]
            decl = re.sub(r"__align__\s*\(\s*\d+\s*\)|alignas\s*\(\s*\d+\s*\)", "", decl)
            dm = re.fullmatch(r"\s*(.*?)\s*\b([A-Za-z_]\w*)\s*\[\s*\]\s*", decl, re.S)
            if not dm:
                raise SystemExit(f"emu_rewrite: cannot parse extern __shared__ `{decl.strip()}`")
            type_, name = dm.group(1), dm.group(2)
            edits.append((line_start + ext.start(), semi + 1,
                          f"{type_}* {name} = ::emu::dynamic_shared<{type_}>();"))
        elif inside_code(masked, m.start(), kinds):
            names = declarator_names(masked[m.end():semi])
            regs = " ".join(f"::emu::shared_declared(&{n}, sizeof({n}));" for n in names)
            edits.append((semi + 1, semi + 1, " " + regs))
        else:
            print(f"emu_rewrite: namespace-scope __shared__ at offset {m.start()} is not poisoned",
                  file=sys.stderr)


def rewrite(text, origin):
    masked = mask_comments_and_strings(text)
    edits = []
    rewrite_launches(text, masked, edits)
    rewrite_shared(text, masked, edits)
    out = text
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        out = out[:start] + new + out[end:]
    return f'#line 1 "{origin}"\n' + out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    result = rewrite(text, src)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        f.write(result)


if __name__ == "__main__":
    main()
