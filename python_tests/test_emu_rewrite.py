"""The CUDA emulator's build-time rewrite (csrc/emu/tools/emu_rewrite.py): launches, extern and
block-scope __shared__ declarations, with comments and strings left alone and line numbers kept."""
import importlib.util
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "emu" / "tools" / "emu_rewrite.py"


@pytest.fixture(scope="module")
def rw():
    spec = importlib.util.spec_from_file_location("emu_rewrite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def body(rw, text):
    out = rw.rewrite(text, "k.cu")
    first, rest = out.split("\n", 1)
    assert first == '#line 1 "k.cu"'
    assert rest.count("\n") == text.count("\n")  # diagnostics keep pointing at the original lines
    return rest


def test_launch_with_template_arguments_and_four_config_values(rw):
    out = body(rw, "void f() {\n  ns::kern<VPL, T><<<grid, 128, 0, stream>>>(\n      a, b);\n}\n")
    assert ('::emu::launch("ns::kern<VPL, T>", ns::kern<VPL, T>, '
            "::emu::config(grid, 128, 0, stream), \n      a, b);") in out
    assert "<<<" not in out


def test_launch_without_arguments_inside_a_macro_argument(rw):
    out = body(rw, "void f() { DISPATCH(t, (k<T><<<blocks(n), 256>>>())); }\n")
    assert 'DISPATCH(t, (::emu::launch("k<T>", k<T>, ::emu::config(blocks(n), 256))));' in out


def test_comments_and_strings_are_not_rewritten(rw):
    text = 'void f() {\n  // k<<<1, 1>>>(x);\n  const char* s = "k<<<1,1>>>()";\n}\n'
    assert body(rw, text) == text


def test_extern_shared_becomes_the_dynamic_buffer(rw):
    out = body(rw, "__global__ void k() {\n  extern __shared__ __align__(16) unsigned char smem[];\n}\n")
    assert "unsigned char* smem = ::emu::dynamic_shared<unsigned char>();" in out
    assert "__shared__" not in out


def test_block_scope_shared_declarations_are_registered(rw):
    out = body(rw, "namespace n {\ntemplate <typename A> __device__ void f() {\n"
                   "  __shared__ A sa[kThreads / 32], sb[Map<int, 2>::value];\n}\n}\n")
    assert ("::emu::shared_declared(&sa, sizeof(sa)); "
            "::emu::shared_declared(&sb, sizeof(sb));") in out


def test_namespace_scope_shared_is_left_alone(rw):
    text = "namespace n {\n__shared__ float table[32];\n}\n"
    assert body(rw, text) == text
