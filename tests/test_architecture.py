"""The shape of the code: no import cycle in gan_core (imports inside functions count too), no
kind name compared outside the registry and the kinds' own modules, no sys.path edits."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "gan_core"
KIND_NAMES = {"dcgan", "cluster", "blobgan"}
# The registry and each kind's own module may name kinds.
KIND_HOMES = {PACKAGE / "kinds.py", *(PACKAGE / "models" / f"{k}.py" for k in KIND_NAMES)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The gan_core modules `path` imports, anywhere in the file (functions included)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub where one exists
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def _cycle(graph: dict[str, set[str]]):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_gan_core_has_no_import_cycle():
    known = _modules()
    # A package's __init__ runs before its submodules, so importing gan_core.x imports gan_core too;
    # gan_core/__init__ (the public API, at the top) is left out of the graph for that reason only.
    graph = {n: _imports(p, known) - {"gan_core"} for n, p in known.items() if n != "gan_core"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_checker_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# The layers of docs/architecture.md, lowest first: a module imports from its own layer or below.
LAYERS = [
    ["files", "config"],
    ["models.blob_layout"],
    ["runtime", "convgemm", "shapes", "data", "augment", "losses", "metrics", "evaluator", "scan"],
    ["checkpoint", "hub"],
    ["models", "models.base", "models.dcgan", "models.cluster", "models.blobgan"],
    ["viz"],
    ["inference", "inference.model", "inference.sampler", "inference.cluster", "inference.blobs"],
    ["kinds"],
    ["graphs"],
    ["inference.loading", "training", "jobs"],
]


def test_every_module_imports_only_from_its_layer_or_below():
    layer = {f"gan_core.{name}": i for i, names in enumerate(LAYERS) for name in names}
    known = _modules()
    assert sorted(set(known) - {"gan_core"}) == sorted(layer), "a module is missing from LAYERS (and the docs)"
    upward = [f"{n} -> {m}" for n, p in known.items() if n != "gan_core"
              for m in _imports(p, known) if m != "gan_core" and layer[m] > layer[n]]
    assert upward == []


def _kind_comparisons(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                values = [part] + (list(part.elts) if isinstance(part, (ast.Tuple, ast.List, ast.Set)) else [])
                if any(isinstance(v, ast.Constant) and v.value in KIND_NAMES for v in values):
                    out.append(f"{path.name}:{node.lineno}")
                    break
    return out


def test_kind_names_are_compared_only_in_the_registry_and_their_own_modules():
    files = [p for p in [*PACKAGE.rglob("*.py"), ROOT / "app.py", *(ROOT / "scripts").glob("*.py")]
             if p not in KIND_HOMES]
    found = [hit for p in files for hit in _kind_comparisons(p)]
    assert len(found) <= 4, found


def test_the_comparison_counter_sees_one(tmp_path):
    assert _kind_comparisons(ROOT / "tests" / "test_architecture.py") == []
    probe = tmp_path / "probe.py"
    probe.write_text('if cfg.model.kind == "cluster":\n    pass\nok = kind in ("blobgan", "x")\nname = "dcgan"\n')
    assert _kind_comparisons(probe) == ["probe.py:1", "probe.py:3"]


def test_no_file_edits_sys_path():
    files = [*ROOT.glob("*.py")]
    for folder in ("gan_core", "scripts", "tests"):
        files += (ROOT / folder).rglob("*.py")
    assert len(files) > 20
    edits = [str(p.relative_to(ROOT)) for p in files
             if p.name != "test_architecture.py" and "sys.path" in p.read_text()]
    assert edits == []
