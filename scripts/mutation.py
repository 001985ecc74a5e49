"""Mutation testing of the harness itself (reference/, fuzz/): do the tests that guard a module see a bug in it?

    python scripts/mutation.py --per-module 25 --seed 0 --out mutation-survivors.json

Why not mutmut: mutmut 3 runs the whole suite through its own trampolines and copies the tree into
`mutants/`; our tests need the repository root on PYTHONPATH, a --device option and Triton's interpreter, and
a map from module to the few test files that guard it is what keeps a run short on 2 cores. This runner:
  1. parses each module, lists every mutation point (in the functions named for it, if any): comparison
     flips, +-1 on int constants, float constants doubled and halved, `and`/`or` swaps, `not` removed,
     + and - swapped, `return X` -> `return None`, and a call statement (a `need(...)` check) dropped;
  2. samples up to --per-module of them (seeded), applies each alone to a copy of the repository in a temp
     folder and runs the module's tests there (pytest -x, per-mutant timeout);
  3. prints per module: tried, killed, survived, timeout, documented equivalents; writes survivors and their
     diffs to --out. Survivors listed in EQUIVALENT (with the reason) are not counted as survivors.
"""

from __future__ import annotations

import argparse
import ast
import copy
import difflib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (functions to mutate, or () for the whole module; pytest arguments: fastest tests first)
MODULES = {
    "reference/fp64.py": ((), ["tests/test_hand_computed.py", "tests/test_references.py"]),
    "reference/naive.py": ((), ["tests/test_hand_computed.py", "tests/test_references.py"]),
    "fuzz/judgement/oracle.py": ((), ["tests/test_bound.py", "tests/test_oracle_paths.py"]),
    "fuzz/judgement/compare.py": ((), ["tests/test_bound.py", "tests/test_oracle_paths.py"]),
    "fuzz/judgement/verdict.py": ((), ["tests/test_bound.py", "tests/test_oracle_paths.py"]),
    "fuzz/space/coverage.py": ((), ["tests/test_bookkeeping.py"]),
    "fuzz/triage/minimize.py": ((), ["tests/test_bookkeeping.py"]),
    "fuzz/space/case.py": (("validate",), ["tests/test_repro_fields.py"]),
}

# (module, mutant description, original source line) -> why it is equivalent (no test can tell it from
# the original) or accepted
EQUIVALENT: dict[tuple[str, str, str], str] = {
    (
        "reference/naive.py",
        "Gt -> GtE in `k > 1`",
        "per_routed = xs.shape[0] == m_count * k and k > 1",
    ): "k >= 1 always; with k = 1 the per-routed row m*k + j is row m: both layouts read the same row",
    (
        "reference/naive.py",
        "int -1 in `1`",
        "per_routed = xs.shape[0] == m_count * k and k > 1",
    ): "`k > 0` in the layout test: k >= 1 always, so it is `k > 1` or always true; both equivalent (see above)",
    (
        "reference/naive.py",
        "int -1 in `0`",
        "n = b_all[0].shape[2]",
    ): "N read from lora_b[-1] instead of lora_b[0]: every slice has the same N (the op's contract)",
    (
        "reference/fp64.py",
        "int +1 in `0`",
        "num_slots, num_experts, _rank, _kd = lora_a[0].shape",
    ): "the shapes of lora_a[1] instead of lora_a[0]: every slice has the same shape (the op's contract)",
    (
        "reference/fp64.py",
        "int -1 in `0`",
        "num_slots, num_experts, _rank, _kd = lora_a[0].shape",
    ): "the shapes of lora_a[-1] instead of lora_a[0]: every slice has the same shape",
    (
        "fuzz/judgement/oracle.py",
        "int +1 in `24301`",
        "perm = torch.randperm(case.m, generator=torch.Generator().manual_seed(case.seed ^ 0x5EED)).to(t.out.device)",
    ): "another fixed seed for the token permutation: equally a permutation, equally deterministic",
    (
        "fuzz/judgement/compare.py",
        "int +1 in `8`",
        "return a.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()])",
    ): "the 8-byte entry of the bit-view table: outputs are fp16/bf16/fp32 (2 or 4 bytes), never 8",
    (
        "fuzz/judgement/oracle.py",
        "int -1 in `0`",
        'if kind == "pass" and metamorphic and case.m > 0:',
    ): "twins of an empty batch: every output is empty, so comparing them cannot fail either way",
    (
        "fuzz/triage/minimize.py",
        "int -1 in `0`",
        "if c.seed != 0:",
    ): "also yields seed = 0 when the seed is already 0: that candidate is the current case, skipped as seen",
    (
        "fuzz/triage/minimize.py",
        "LtE -> Lt in `d < c.num_slots`",
        "disabled=tuple(d for d in c.disabled if d < c.num_slots),",
    ): "keeps a disabled id equal to the new num_slots: that candidate fails validate() and is skipped; the walk "
    "drops the id first and reaches the same 1-minimal case",
    (
        "reference/fp64.py",
        "int +1 in `1`",
        "CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk: 32 MiB of fp64",
    ): "chunks twice as large: the same numbers (tests/test_references.py checks chunked == whole)",
    (
        "reference/fp64.py",
        "int +1 in `22`",
        "CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk: 32 MiB of fp64",
    ): "chunks twice as large: the same numbers (tests/test_references.py checks chunked == whole)",
    (
        "reference/fp64.py",
        "int -1 in `22`",
        "CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk: 32 MiB of fp64",
    ): "chunks half as large: the same numbers",
    (
        "reference/fp64.py",
        "int +1 in `1`",
        "chunk = max(1, CHUNK_ELEMENTS // (_rank * (_kd + n)))",
    ): "at least two pairs a chunk instead of one: the same numbers, chunking only bounds memory",
    (
        "reference/fp64.py",
        "int -1 in `0`",
        "n = lora_b[0].shape[2]",
    ): "N read from lora_b[-1] instead of lora_b[0]: every slice has the same N",
    (
        "reference/fp64.py",
        "int -1 in `0`",
        "active = (slot >= 0) & enabled[slot.clamp(min=0)]",
    ): "clamp(min=-1) reads enabled[-1] for base tokens, but `slot >= 0` already masks them out",
    (
        "reference/fp64.py",
        "int -1 in `1`",
        "CHUNK_ELEMENTS = 1 << 22  # gathered weight elements (A and B) per chunk: 32 MiB of fp64",
    ): "CHUNK_ELEMENTS = 0 << 22: chunks of one pair (max(1, ...)); the same numbers, only slower",
}


def _equivalent(module: str, what: str, code: str) -> str:
    """Why a surviving mutant is equivalent or accepted ("" if it is not documented)."""
    if (module, what, code) in EQUIVALENT:
        return EQUIVALENT[(module, what, code)]
    if module == "fuzz/judgement/oracle.py" and "manual_seed(case.seed ^ 0x5EED)" in code and what.startswith("int"):
        return "another fixed seed for the token permutation: equally a permutation, equally deterministic"
    if (
        module == "fuzz/judgement/oracle.py"
        and code.startswith("shrink=type(cfg.shrink)(block_n=16, block_k=16, split_k=1 if")
        and what.startswith("int +1")
    ):
        return (
            "accepted: picks another split-K for the configuration twin; the twin still differs from the case "
            "(block sizes, BLOCK_M), which is all the twin needs"
        )
    if module == "fuzz/triage/minimize.py" and code.startswith("def minimize(") and what.startswith("float"):
        return "accepted: the default budget; every caller (CLI, runner, tests) passes its own"
    if module == "fuzz/triage/minimize.py" and code.startswith("SIZE_FLOORS") and what.startswith("int -1"):
        return (
            "a floor below the field's valid minimum: that candidate fails validate() and is skipped; the "
            "halving and minus-one steps still reach the same 1-minimal case"
        )
    if (
        module == "fuzz/triage/minimize.py"
        and code == "out = [floor, (v + floor) // 2, v - 1]"
        and what in ("+ <-> - in `v + floor`", "int +1 in `2`", "int -1 in `2`")
    ):
        return (
            "accepted: moves the halfway candidate (by one, or to a third); the walk takes another path to "
            "the same 1-minimal case (only the number of tries changes)"
        )
    return ""


@dataclass
class Mutant:
    module: str
    index: int  # position in the module's list of mutation points
    line: int
    what: str  # e.g. "Lt -> LtE in `a < b`"
    code: str = ""  # the original source line, stripped: with `what`, the key of EQUIVALENT
    diff: str = ""
    status: str = ""  # killed | survived | timeout | equivalent
    seconds: float = 0.0


_CMP_FLIPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first))
    return ids


def _points(tree: ast.AST, functions: tuple) -> list[tuple[ast.AST, str, object]]:
    """Every (node, kind, variant) mutation point, in a stable order."""
    scopes = (
        [tree]
        if not functions
        else [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in functions]
    )
    skip = _docstring_nodes(tree)
    annotations = set()
    for node in ast.walk(tree):
        for ann in ([node.annotation] if isinstance(node, (ast.arg, ast.AnnAssign)) and node.annotation else []) + (
            [node.returns] if isinstance(node, ast.FunctionDef) and node.returns else []
        ):
            annotations.update(id(n) for n in ast.walk(ann))
    out, seen = [], set()
    for scope in scopes:
        for node in ast.walk(scope):
            if id(node) in seen or id(node) in annotations:
                continue
            seen.add(id(node))
            if isinstance(node, ast.Compare):
                for i, op in enumerate(node.ops):
                    if type(op) in _CMP_FLIPS:
                        out.append((node, "compare", i))
            elif isinstance(node, ast.Constant) and type(node.value) is int:
                out += [(node, "int", +1), (node, "int", -1)]
            elif isinstance(node, ast.Constant) and type(node.value) is float and node.value not in (0.0,):
                out += [(node, "float", 2.0), (node, "float", 0.5)]
            elif isinstance(node, ast.BoolOp):
                out.append((node, "boolop", None))
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                out.append((node, "not", None))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
                out.append((node, "addsub", None))
            elif (
                isinstance(node, ast.Return)
                and node.value is not None
                and not (isinstance(node.value, ast.Constant) and node.value.value is None)
            ):
                out.append((node, "return", None))
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and id(node) not in skip:
                out.append((node, "drop", None))
    return out


class _Apply(ast.NodeTransformer):
    """Replace the one target node (matched by identity in a deep copy, via a position key)."""

    def __init__(self, key, kind, variant):
        self.key, self.kind, self.variant, self.desc = key, kind, variant, ""

    def generic_visit(self, node):
        node = super().generic_visit(node)
        if _key(node) != self.key:
            return node
        before = ast.unparse(node)
        k, v = self.kind, self.variant
        if k == "compare":
            old = node.ops[v]
            node.ops[v] = _CMP_FLIPS[type(old)]()
            self.desc = f"{type(old).__name__} -> {type(node.ops[v]).__name__}"
        elif k == "int":
            node.value += v
            self.desc = f"int {v:+d}"
        elif k == "float":
            node.value *= v
            self.desc = f"float x{v}"
        elif k == "boolop":
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
            self.desc = "and <-> or"
        elif k == "not":
            node = node.operand
            self.desc = "not removed"
        elif k == "addsub":
            node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
            self.desc = "+ <-> -"
        elif k == "return":
            node.value = ast.Constant(None)
            self.desc = "return None"
        elif k == "drop":
            node = ast.Pass()
            self.desc = "statement dropped"
        self.desc += f" in `{before[:90]}`"
        return node


def _key(node) -> tuple | None:
    if not hasattr(node, "lineno"):
        return None
    return (
        type(node).__name__,
        node.lineno,
        node.col_offset,
        getattr(node, "end_lineno", 0),
        getattr(node, "end_col_offset", 0),
    )


def mutants_of(module: str, functions: tuple) -> tuple[str, list[tuple]]:
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    return source, [(_key(n), kind, variant) for n, kind, variant in _points(tree, functions)]


def apply(source: str, point: tuple) -> tuple[str, str, int]:
    """(mutated source, description, line) for one mutation point."""
    key, kind, variant = point
    tree = ast.parse(source)
    t = _Apply(key, kind, variant)
    mutated = ast.fix_missing_locations(t.visit(copy.deepcopy(tree)))
    return ast.unparse(mutated), t.desc, key[1]


def _run_tests(workdir: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    """Run pytest on the copy in a forked child of this process (torch, numpy and pytest are imported once, here,
    not once per mutant: on a shared 2-core machine that import is most of a killed mutant's cost)."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child: the copy's modules, fresh (none of them is imported in the parent)
        try:
            os.chdir(workdir)
            sys.path.insert(0, str(workdir))
            os.environ.update(PYTHONPATH=str(workdir), HYPOTHESIS_PROFILE="premerge", TRITON_INTERPRET="1")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            rc = pytest.main(["-p", "no:cacheprovider", "--device", "cpu", "-x", "-q", "-W", "ignore", *tests])
        except BaseException:  # noqa: BLE001 - anything escaping pytest counts as a failed run
            rc = 99
        os._exit(int(rc))
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - start
        time.sleep(0.2)
    rc = os.waitstatus_to_exitcode(status)
    if rc == 5:
        raise SystemExit(f"error: no tests collected for {tests}")
    return ("survived" if rc == 0 else "killed"), time.monotonic() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-module", type=int, default=25, help="mutants sampled per module (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant's test run")
    p.add_argument("--modules", nargs="*", default=list(MODULES), help=f"default: {' '.join(MODULES)}")
    p.add_argument("--out", default="mutation-survivors.json")
    p.add_argument("--list", action="store_true", help="only count the mutation points per module")
    p.add_argument("--tmp-prefix", default="mutation-", help="prefix of the temporary copy of the repository")
    a = p.parse_args(argv)
    for m in a.modules:
        if m not in MODULES:
            print(f"error: --modules: unknown module {m!r} (known: {', '.join(MODULES)})", file=sys.stderr)
            return 2
    if a.per_module < 0 or a.timeout <= 0:
        print("error: --per-module must be >= 0 and --timeout > 0", file=sys.stderr)
        return 2
    os.nice(19)  # a background job on a shared machine
    os.environ["TRITON_INTERPRET"] = "1"
    import numpy  # noqa: F401 - imported once before forking, see _run_tests
    import pytest  # noqa: F401
    import torch  # noqa: F401

    results: list[Mutant] = []
    with tempfile.TemporaryDirectory(prefix=a.tmp_prefix) as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(
            ROOT, work, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".tox", "mutants", "nightly-out")
        )
        for module in a.modules:
            functions, tests = MODULES[module]
            source, points = mutants_of(module, functions)
            rng = random.Random(f"{a.seed}:{module}")  # per module: a module's sample does not depend on the others
            sample = sorted(rng.sample(range(len(points)), min(len(points), a.per_module or len(points))))
            if a.list:
                print(f"{module}: {len(points)} mutation points")
                continue
            status, secs = _run_tests(work, tests, a.timeout)
            if status != "survived":
                print(f"error: {module}: its tests fail ({status}) before any mutation", file=sys.stderr)
                return 1
            print(f"{module}: {len(points)} points, {len(sample)} sampled, unmutated tests {secs:.0f}s", flush=True)
            baseline = ast.unparse(ast.parse(source))
            target = work / module
            for i in sample:
                mutated, what, line = apply(source, points[i])
                if mutated == baseline:
                    continue
                diff = "".join(
                    difflib.unified_diff(
                        baseline.splitlines(True), mutated.splitlines(True), module, f"{module} (mutant {i})", n=1
                    )
                )
                mutant = Mutant(module, i, line, what, code=source.splitlines()[line - 1].strip(), diff=diff)
                target.write_text(mutated)
                try:
                    mutant.status, mutant.seconds = _run_tests(work, tests, a.timeout)
                finally:
                    target.write_text(source)
                if mutant.status == "survived" and _equivalent(module, what, mutant.code):
                    mutant.status = "equivalent"
                results.append(mutant)
                print(f"  {mutant.status:10s} {mutant.seconds:5.1f}s  L{line}: {what}", flush=True)
    if a.list:
        return 0
    print(table(results))
    survivors = [
        asdict(m) | ({"why": _equivalent(m.module, m.what, m.code)} if m.status == "equivalent" else {})
        for m in results
        if m.status in ("survived", "equivalent", "timeout")
    ]
    Path(a.out).write_text(json.dumps(survivors, indent=2) + "\n")
    print(f"survivors and their diffs: {a.out}")
    return 0


def table(results: list[Mutant]) -> str:
    rows = ["| module | tried | killed | survived | timeout | equivalent | survival |", "|---|---|---|---|---|---|---|"]
    total = {"tried": 0, "killed": 0, "survived": 0, "timeout": 0, "equivalent": 0}

    def row(name, c):
        counted = c["tried"] - c["equivalent"]
        rate = f"{100 * c['survived'] / counted:.0f}%" if counted else "-"
        return (
            f"| {name} | {c['tried']} | {c['killed']} | {c['survived']} | {c['timeout']} | {c['equivalent']} | {rate} |"
        )

    for module in dict.fromkeys(m.module for m in results):
        c = {"tried": 0, "killed": 0, "survived": 0, "timeout": 0, "equivalent": 0}
        for m in results:
            if m.module == module:
                c["tried"] += 1
                c[m.status] += 1
        rows.append(row(module, c))
        for k in total:
            total[k] += c[k]
    rows.append(row("all", total))
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
