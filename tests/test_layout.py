"""The layout of fuzz/ follows the pipeline, one way (docs/design.md): every module belongs to one stage, and
no module imports a module of a later stage, at module level or inside a function. An import inside a
function is allowed (it keeps `import` cheap) but it is an import all the same: it may not close a circle.

The stages, earliest first, each a folder of fuzz/ (a module may import its own stage and every earlier one):

    runtime    the interpreter patch, process containment, phase timing
    space      the case, its knobs, drawing, coverage, capabilities
    data       the tensors of a case and the counter-based generator
    targets    implementations: ours, adapters, upstream releases and conventions
    judgement  the oracle, its bounds and the self-check of our own kernels
    records    the repro file and the output folder (formats on disk, read back by later stages)
    execution  what case i of a campaign is (its prelude too), and the worker process that judges it
    triage     minimise, explain, classify, group into root causes
    outputs    report.json's record and its views, export, JUnit
    campaign   the loop, compiling ahead, the corpus, steering, shards and merge
    cli        the command line and the pytest plugin (entry points)

Data flows left to right (a case is drawn, materialised, judged, recorded, triaged, reported); imports go
right to left only, so a newcomer can read the folder from the first stage on and never meet a name that is
defined further down the pipeline.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"

# The stages, earliest first: each is a folder of fuzz/ (its __init__.py says its job and what it may import),
# except the entry points at fuzz/'s top and two target modules kept at their documented paths.
STAGES = [
    "runtime",
    "space",
    "data",
    "targets",
    "judgement",
    "records",
    "execution",
    "triage",
    "outputs",
    "campaign",
    "cli",
]
TOP = {
    "adapters": "targets",  # moe_lora_fuzz.fuzz.adapters (docs/api.md)
    "upstream": "targets",  # moe_lora_fuzz.fuzz.upstream, a folder of its own (docs/upstream.md)
    "cli": "cli",  # the console script moe_lora_fuzz.fuzz.cli:main
    "commands": "cli",  # the subcommands fuzz/cli.py dispatches to
    "escape": "cli",
    "pytest_plugin": "cli",  # the pytest11 entry point
    "__main__": "cli",
    "__init__": "cli",
}
ORDER = STAGES
MAX_LINES = 600  # no module over this: a concern that grows gets a module (or a folder) of its own


def modules() -> dict[str, Path]:
    """Every module of fuzz/, by its dotted name below fuzz (a package by its folder's name)."""
    found = {}
    for path in sorted(FUZZ.rglob("*.py")):
        parts = list(path.relative_to(FUZZ).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def stage_of(name: str) -> str:
    """A module's stage: the folder it is in (fuzz/upstream/* is `targets`), or TOP's entry for fuzz/'s top."""
    first = name.split(".")[0]
    if first in TOP:
        return TOP[first]
    if first in STAGES and (FUZZ / first).is_dir():
        return first
    raise AssertionError(f"fuzz/{name}: in no stage; put it in a stage's folder (docs/design.md)")


def imports_of(name: str, path: Path, known: dict) -> set[str]:
    """The fuzz modules that `name` imports anywhere in its file (module level and inside functions)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if name == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
            elif node.module and node.module.split(".")[:2] == ["moe_lora_fuzz", "fuzz"]:
                base, node_module = [], ".".join(node.module.split(".")[2:])
                targets = [node_module] if node_module else []
                targets += [f"{node_module}.{a.name}".lstrip(".") for a in node.names]
                found.update(t for t in targets if t in known and t != name)
                continue
            else:
                continue
            module = ".".join(base + ([node.module] if node.module else []))
            targets = ([module] if node.module else []) + [f"{module}.{a.name}".lstrip(".") for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [
                a.name[len("moe_lora_fuzz.fuzz.") :] for a in node.names if a.name.startswith("moe_lora_fuzz.fuzz.")
            ]
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in g[v]:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_stage_and_every_stage_says_what_it_may_import():
    """Every module is in a stage; every stage's folder has a docstring naming exactly the earlier stages."""
    for name in modules():
        stage_of(name)  # raises, naming the module
    top = {p.stem for p in FUZZ.glob("*.py")} | {p.name for p in FUZZ.iterdir() if p.is_dir() and p.name in TOP}
    assert top <= set(TOP), f"modules at fuzz/'s top that belong in a stage's folder: {sorted(top - set(TOP))}"
    for i, stage in enumerate(STAGES[:-1]):
        doc = ast.get_docstring(ast.parse((FUZZ / stage / "__init__.py").read_text())) or ""
        may = doc.partition("May import:")[2]
        assert may, f"fuzz/{stage}/__init__.py: its docstring must say what the stage may import"
        named = [s for s in STAGES if re.search(rf"\b{s}\b", may)]
        assert named == STAGES[:i], f"fuzz/{stage}/__init__.py names {named}, not the earlier stages {STAGES[:i]}"


def test_no_module_imports_a_later_stage():
    g = graph()
    back = [
        f"fuzz/{name.replace('.', '/')} ({stage_of(name)}) imports fuzz/{dep.replace('.', '/')} ({stage_of(dep)})"
        for name, deps in sorted(g.items())
        for dep in sorted(deps)
        if ORDER.index(stage_of(dep)) > ORDER.index(stage_of(name))
    ]
    assert not back, "imports against the pipeline:\n" + "\n".join(back)


def test_no_import_circles():
    found = circles(graph())
    assert not found, "import circles (imports inside functions included): " + "; ".join(" -> ".join(c) for c in found)


def test_the_circle_finder_finds_circles_and_back_edges():
    """The checks above can fail: a circle through a function-level import and a back edge are both seen."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    g = graph()
    assert "runtime.interpreter" in g["space.case"]  # case imports it inside a method only
    assert "space.case" in g["judgement.oracle"] and "execution.worker" in g["triage.triager"]
    assert ORDER.index(stage_of("campaign.runner")) > ORDER.index(stage_of("space.case"))


def test_the_layers_below_fuzz_import_nothing_of_it():
    """contract, kernels and reference sit under the whole pipeline: none of them imports the fuzzer."""
    offenders = []
    for folder in ("contract", "kernels", "reference"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if any(n.startswith(("moe_lora_fuzz.fuzz", "fuzz")) for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_no_module_is_a_thousand_line_room():
    big = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: k for n, k in big.items() if k > MAX_LINES}, big


def test_every_folder_of_fuzz_is_in_the_wheel():
    """pyproject.toml lists the packages by hand (one namespace over the checkout's folders): a new stage's
    folder missing there is missing from the wheel, while the checkout still works."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p.parent.relative_to(FUZZ).as_posix() for p in FUZZ.rglob("__init__.py")} - {"."}
    for folder in sorted(folders):
        name = "moe_lora_fuzz.fuzz." + folder.replace("/", ".")
        assert name in setup["packages"], f"pyproject.toml: packages lacks {name}"
        assert setup["package-dir"].get(name) == f"fuzz/{folder}", f"pyproject.toml: package-dir lacks {name}"
