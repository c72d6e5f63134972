"""The house's layering: each module imports only from the layers below it (imports
inside functions count too), and nothing imports in a circle. docs/DESIGN.md and the
README's "How it is built" draw the same order."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "glassformer"

# bottom first; a module may import from its own layer's package or from lower layers only
LAYERS = [
    {"config"},
    {"hardware", "hooks", "linear", "files", "json_text", "tokenizer"},
    {"attention"},
    {"model"},
    {"params", "sampling", "inputs", "cpu_decoder"},
    {"checkpoint", "lessons"},
    {"pretrained", "generate", "sentences"},
    {"train"},
    {"lab"},
    {"viz"},
    {"server"},
    {"cli", ""},  # "" is the package's own __init__: the public face, on top
    {"__main__"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every glassformer module `path` imports, at the top or inside a function."""
    own = module_name(path)
    package = own.split(".") if path.name == "__init__.py" else own.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if node.module is None:
                    found |= {".".join([*target, a.name]) for a in node.names}
                else:
                    found.add(".".join(target))
            elif node.module and node.module.split(".")[0] == "glassformer":
                found.add(node.module.removeprefix("glassformer").lstrip("."))
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("glassformer")]
            found |= {name.removeprefix("glassformer").lstrip(".") for name in names}
    return found


def top(name: str) -> str:
    return name.split(".")[0]


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    assert {top(m) for m in MODULES} <= set(LAYER_OF), {top(m) for m in MODULES} - set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    mine = LAYER_OF[top(module)]
    for target in imports_of(MODULES[module]):
        if top(target) == top(module):
            continue  # inside one package: checked for circles below
        assert LAYER_OF[top(target)] < mine, f"{module or 'glassformer'} imports {target}, which is not below it"


def test_model_imports_only_what_lies_below_it():
    # the tokenizer protocol types `model.tokenizer`; tokenizer.py imports only config
    assert {top(t) for t in imports_of(MODULES["model"])} <= {"config", "hooks", "linear", "attention", "tokenizer"}


def test_no_circles():
    graph = {}
    for m, p in MODULES.items():
        graph[m] = set()
        for t in imports_of(p):
            while t not in MODULES and "." in t:  # `from .pkg import name` names a module or a name in it
                t = t.rsplit(".", 1)[0]
            if t in MODULES and t != m:
                graph[m].add(t)
    # a package's __init__ may gather its own submodules; only loops through other edges count
    state: dict[str, int] = {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if m and t.startswith(m + "."):
                continue  # a package re-exporting its submodules
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail, m, t]))
            if t not in state:
                visit(t, [*trail, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
