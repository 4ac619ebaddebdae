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

P = "gpt_batchprof"
# The layers, top to bottom: the CLI; the four packages that do the work; the analytic core; the
# specs; the base modules (errors, files, units, quantiles, ...) that everything may use. An arrow
# points to a lower layer, or sideways only where SIDEWAYS allows it.
LAYERS = {
    f"{P}.__main__": 5,
    f"{P}.cli": 4,
    f"{P}.measure": 3, f"{P}.report": 3, f"{P}.sweep": 3, f"{P}.simulate": 3,
    f"{P}.analytic": 2,
    f"{P}.profiles": 1,
}
BASE = 0  # every other module of the package: gpt_batchprof/*.py
SIDEWAYS = {(f"{P}.sweep", f"{P}.measure")}  # a live sweep times its points with measure's timers
# (from package, to package) arrows the issue names, kept as their own cases: measure must not
# render, report must not depend on simulate's engine, analytic must not reach up at all, the
# specs sit below everything.
UPPER = (f"{P}.measure", f"{P}.report", f"{P}.sweep", f"{P}.simulate", f"{P}.cli")
FORBIDDEN = [(f"{P}.measure", f"{P}.report"), (f"{P}.report", f"{P}.simulate")]
FORBIDDEN += [(f"{P}.analytic", up) for up in UPPER]
FORBIDDEN += [(f"{P}.profiles", up) for up in (f"{P}.analytic",) + UPPER]
# The CLI's command modules import cli/common.py and the layers below, never one another.
COMMANDS = tuple(f"{P}.cli.{m}" for m in ("analyze", "bench", "generate", "profiles_cmd", "simulate", "sweep",
                                          "streams"))


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


def arrows_into(graph: dict[str, set[str]], src: str, dst: str) -> set[tuple[str, str]]:
    """Every arrow from a module of package ``src`` to a module of package ``dst``."""
    def inside(m: str, pkg: str) -> bool:
        return m == pkg or m.startswith(pkg + ".")
    return {(m, t) for m, ts in graph.items() if inside(m, src) for t in ts if inside(t, dst)}


def layer_of(module: str) -> tuple[int, str]:
    """(layer, package) of a module: the longest LAYERS entry it falls in, else a base module."""
    for pkg in sorted(LAYERS, key=len, reverse=True):
        if module == pkg or module.startswith(pkg + "."):
            return LAYERS[pkg], pkg
    return BASE, module


def layering_violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    out = set()
    for m, ts in graph.items():
        (lm, pm) = layer_of(m)
        for t in ts:
            lt, pt = layer_of(t)
            if pm == pt or lt < lm or (pm, pt) in SIDEWAYS:
                continue
            if lm == lt == BASE and m != P and t != P:  # base modules may use one another (not the package)
                continue
            out.add((m, t))
    return out


def test_the_layer_check_finds_an_arrow_pointing_up_or_sideways():
    g = {f"{P}.analytic.gpt": {f"{P}.profiles.specs", f"{P}.report.units"},  # down; up
         f"{P}.report.tables": {f"{P}.simulate.engine", f"{P}.errors"},  # sideways; down
         f"{P}.sweep.live": {f"{P}.measure.bench"},  # sideways, allowed
         f"{P}.errors": {f"{P}.files"}, f"{P}.units": {f"{P}.profiles"}}  # base to base; up
    assert layering_violations(g) == {(f"{P}.analytic.gpt", f"{P}.report.units"),
                                      (f"{P}.report.tables", f"{P}.simulate.engine"),
                                      (f"{P}.units", f"{P}.profiles")}


def test_every_import_points_down_the_layers():
    # cli -> measure / report / sweep / simulate -> analytic -> profiles -> base modules
    assert layering_violations(import_graph()) == set()


@pytest.mark.parametrize("src, dst", FORBIDDEN)
def test_imports_point_one_way(src, dst):
    # the last of these went in issue 16: measure.generate -> report.units (the units moved below
    # every layer) and report.simulate_tables -> simulate (the results are now only data to it)
    assert arrows_into(import_graph(), src, dst) == set()


def test_no_arrow_between_cli_command_modules():
    # generate imported bench's options and bench analyze's scenario parsing: now in cli/common.py
    g = import_graph()
    assert all(c in g for c in COMMANDS)  # the walker sees every command module
    assert {(m, t) for m in COMMANDS for t in g[m] if t in COMMANDS} == set()
    assert {t for t in g[f"{P}.cli.common"] if t in COMMANDS} <= {f"{P}.cli.streams"}  # common sits below the commands


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


def test_quantiles_are_computed_in_one_place():
    # timers, generate, the calibration tables, simulate and the plots each had their own quantile
    # (nearest rank, statistics.quantiles rounded to 0.1 percent, numpy); now gpt_batchprof/stats.py
    stray = []
    for path in ROOT.rglob("*.py"):
        if module_name(path) == f"{P}.stats":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import) and any(a.name == "statistics" for a in node.names):
                stray.append((module_name(path), "import statistics"))
            elif isinstance(node, ast.ImportFrom) and node.module == "statistics":
                stray.append((module_name(path), "from statistics import"))
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in ("np", "numpy", "statistics")
                  and node.attr in ("percentile", "nanpercentile", "quantile", "nanquantile", "median", "nanmedian")):
                stray.append((module_name(path), f"{node.value.id}.{node.attr}"))
    assert stray == []


def test_progress_bars_are_built_in_one_place():
    # bench/generate, simulate and sweep each built a rich Progress of their own; now cli/common.py's
    # progress_bar is the only one
    users = {module_name(p) for p in ROOT.rglob("*.py") if "rich.progress" in p.read_text()}
    assert users == {f"{P}.cli.common"}


def test_the_mutation_configuration_names_files_that_exist():
    # [tool.mutmut] lists the mutated modules and the judging test files by path: a file renamed
    # (test_mutation_kills.py -> test_operator_costs.py, report/units.py -> units.py) must follow there
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    repo = ROOT.parent
    cfg = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["mutmut"]
    missing = [p for p in cfg["only_mutate"] + cfg["pytest_add_cli_args_test_selection"] if not (repo / p).is_file()]
    assert missing == []
