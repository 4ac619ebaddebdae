"""The package's shape: no import circle, imports pointing one way, one list of dense operators.

The import graph is read from the source (every ``import`` statement, those inside functions and
under ``if TYPE_CHECKING:`` included: an import hidden in a function is still an arrow). Importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so those count as arrows too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gpt_batchprof

ROOT = Path(gpt_batchprof.__file__).resolve().parent

# Arrows that exist today and are owned by other work (each entry names one; the test fails when a
# new one appears, and when a listed one is gone, so the list cannot go stale).
# (from package, to package) arrows the layering forbids: measure must not render, report must not
# depend on simulate's engine, analytic must not reach up at all.
FORBIDDEN = [("gpt_batchprof.measure", "gpt_batchprof.report"), ("gpt_batchprof.report", "gpt_batchprof.simulate")]
UPPER = ("gpt_batchprof.measure", "gpt_batchprof.report", "gpt_batchprof.sweep", "gpt_batchprof.simulate",
         "gpt_batchprof.cli")
FORBIDDEN += [("gpt_batchprof.analytic", up) for up in UPPER]
# the specs sit below everything: nothing under profiles/ reaches into analytic or above
FORBIDDEN += [("gpt_batchprof.profiles", up) for up in ("gpt_batchprof.analytic",) + UPPER]
KNOWN_ARROWS = {
    ("gpt_batchprof.report.simulate_tables", "gpt_batchprof.simulate"),
    ("gpt_batchprof.report.simulate_tables", "gpt_batchprof.simulate.metrics"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                # importing a.b.c runs a/__init__ and a/b/__init__ first (except the importer's own
                # packages: they are initialised before the importer itself runs)
                parts = t.split(".")
                for i in range(1, len(parts) + 1):
                    name = ".".join(parts[:i])
                    if name in mods and name != mod and not mod.startswith(name + "."):
                        graph[mod].add(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_circle_it_is_shown():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(g) == [frozenset({"a", "b", "c"})]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_imports_inside_functions():
    # serving imports parallel at the top; roofline imports parallel's collective formulas
    g = import_graph()
    assert "gpt_batchprof.analytic.parallel" in g["gpt_batchprof.analytic.serving"]
    assert "gpt_batchprof.analytic.parallel" in g["gpt_batchprof.analytic.roofline"]
    # cli/__init__ imports `from gpt_batchprof.cli.common import err_console` inside a function
    assert "gpt_batchprof.cli.common" in g["gpt_batchprof.cli"]


def test_no_import_circle_anywhere_in_the_package():
    # the last three: measure.calibrate <-> measure.tables (the launch overhead, now in timing),
    # measure.generate <-> measure.hf (torch_dtype_of, now in kernels), simulate.engine <->
    # simulate.pools (simulate now dispatches in pools, above the one-server engine)
    assert circles(import_graph()) == []


def test_profiles_import_nothing_above_them():
    # the measured tables used to live in analytic/efficiency.py, so profiles imported analytic
    g = import_graph()
    assert "gpt_batchprof.profiles.measured" in g  # the walker sees the package's modules
    reached = {t for m, ts in g.items() if m == "gpt_batchprof.profiles" or m.startswith("gpt_batchprof.profiles.")
               for t in ts}
    assert {t for t in reached if not t.startswith("gpt_batchprof.profiles")} <= {
        "gpt_batchprof.errors", "gpt_batchprof.files", "gpt_batchprof.hf_keys"}
    assert "gpt_batchprof.profiles.measured" in g["gpt_batchprof.analytic.efficiency"]  # the arrow points down


def test_the_analytic_core_without_its_package_init_has_no_circle():
    # gpt <-> parallel <-> roofline <-> serving used to import each other (inside functions)
    g = import_graph()
    core = {m: {t for t in ts if t.startswith("gpt_batchprof.analytic.")}
            for m, ts in g.items() if m.startswith("gpt_batchprof.analytic.")}
    assert circles(core) == []


@pytest.mark.parametrize("src, dst", FORBIDDEN)
def test_imports_point_one_way(src, dst):
    g = import_graph()
    arrows = {(m, t) for m, ts in g.items() if m.startswith(src) for t in ts if t == dst or t.startswith(dst + ".")}
    assert arrows - KNOWN_ARROWS == set()


def test_known_arrows_still_exist():
    g = import_graph()
    assert all(t in g[m] for m, t in KNOWN_ARROWS), "a known arrow is gone: remove it from KNOWN_ARROWS"


def test_dense_operator_list_is_one_list():
    # efficiency prices every dense operator with the matmul tables, shared experts included
    from gpt_batchprof.analytic import efficiency, ops

    assert set(ops.DENSE_OPS) <= set(efficiency._DENSE)
    assert set(ops.SHARED_EXPERT_OPS) <= set(efficiency._DENSE)


def test_shared_expert_is_priced_from_the_matmul_tables():
    # qwen2_moe's shared expert used to fall back to the roofline on a calibrated profile because
    # efficiency kept a hand copy of the dense operators without it.
    from gpt_batchprof.analytic import Dtypes, enumerate_ops, predict
    from gpt_batchprof.profiles import hardware_from_mapping, model_from_mapping

    hw = hardware_from_mapping({
        "name": "hand", "kind": "cpu", "memory_gb": 16, "memory_bandwidth_gb_s": 100, "peak_tflops": {"fp32": 1},
        "measured": {"device_name": "hand-made", "torch_version": "0", "threads": 1, "date": "2026-12-04",
                     "overhead_us": {"eager": 10},
                     "tables": {"matmul.fp32": {"unit": "GFLOP/s", "m": [1, 4], "n": [1000], "k": [1000],
                                                "values": [[[1]], [[2]]]},
                                "copy": {"unit": "GB/s", "bytes": [1000, 1e9], "values": [100, 100]}}},
    }, "test")
    model = model_from_mapping({"name": "moe", "n_layer": 2, "d_model": 1000, "n_head": 10, "d_ff": 1000,
                                "ffn": "swiglu", "vocab_size": 1000, "max_seq_len": 64, "n_expert": 4,
                                "n_expert_active": 2, "d_ff_shared": 1000}, "test")
    ops = {o.op: o for o in enumerate_ops(model, "decode", 4, kv_len=8, dtypes=Dtypes.of("fp32"))}
    for name in ("ffn_shared_gate", "ffn_shared_up", "ffn_shared_down"):
        p = predict(ops[name], hw)
        # 4 tokens x 1000 x 1000: 8e6 FLOP per layer at 2 GFLOP/s (m = 4) = 4 ms, + 10 us; 2 layers = 8.02 ms
        # (the copy floor, 4.032 MB at 100 GB/s = 40 us, is below it). The roofline would say 80.6 us.
        assert p.prediction == "calibrated"
        assert p.time_s == pytest.approx(8.02e-3, rel=1e-9)
