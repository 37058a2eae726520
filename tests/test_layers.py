"""The package's shape: layers that import downward only, no import cycle, no private import
across modules, and a start-up (``import textransfer``, ``--help``, a config error) without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "textransfer"
HEAVY = ("torch", "transformers", "datasets", "accelerate", "evaluate")
# folder (or leaf module) -> layer; a module may import its own layer or lower ones
LAYERS = {"errors": 0, "formats": 0, "files": 0, "config": 1, "data": 2, "modeling": 3, "metrics": 4,
          "training": 5, "strategies": 6, "publish": 7, "inference": 8, "run": 9, "cli": 10}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def import_nodes(tree: ast.AST):
    """Every import statement, function-local ones included, except under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def package_of(path: Path, name: str) -> str:
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def imports_of(path: Path, modules: set):
    """``[(imported module, imported names)]`` of the package's own modules that ``path`` imports."""
    name = module_name(path)
    found = []
    for node in import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "textransfer"]
            continue
        if node.level:
            base = package_of(path, name).split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target.split(".")[0] != "textransfer":
            continue
        for alias in node.names:  # `from . import finetune` imports a module
            sub = f"{target}.{alias.name}"
            found.append((sub, []) if sub in modules else (target, [alias.name]))
    return found


def graph():
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else -1


def test_every_folder_and_leaf_module_has_a_layer():
    for path in PACKAGE.iterdir():
        if path.name.startswith(("_", ".")) or path.name == "sample_data":
            continue
        assert path.stem in LAYERS, f"{path.name} has no layer in LAYERS (and no docstring rule)"


def test_the_import_graph_has_no_cycle():
    edges = {m: sorted({t for t, _ in found if t != m}) for m, found in graph().items()}
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in edges.get(m, []):
            if state.get(t) == "open":
                cycle = path[path.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert len(edges) > 30  # the walk saw the whole package


def test_modules_import_only_their_own_layer_or_lower_ones():
    for module, found in graph().items():
        if module == "textransfer":
            continue  # the lazy top level names everything, only under TYPE_CHECKING
        for target, _ in found:
            assert layer(target) <= layer(module), f"{module} (layer {layer(module)}) imports {target} " \
                                                   f"(layer {layer(target)}): an upward import"


def test_no_private_name_is_imported_from_another_module():
    for module, found in graph().items():
        for target, names in found:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            assert not private, f"{module} imports private {private} from {target}"


def test_config_layer_imports_no_heavy_library():
    for path in (PACKAGE / "config").rglob("*.py"):
        for node in import_nodes(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in HEAVY, f"{path.name} imports {n}"


def run_python(code: str, cwd=REPO):
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_import_textransfer_loads_no_torch():
    out = run_python("import sys, textransfer; textransfer.RunConfig; textransfer.ConfigError; "
                     f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # the lazy names are the real objects
    out = run_python("import textransfer; from textransfer.training.trainer import StageTrainer; "
                     "assert textransfer.StageTrainer is StageTrainer; print(len(textransfer.__all__))")
    assert out.returncode == 0, out.stderr


def test_help_and_a_config_error_answer_without_torch(tmp_path):
    code = ("import sys\nfrom textransfer.cli import main\n"
            "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as stop:  # argparse after --help\n    rc = stop.code\n"
            f"print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\nsys.exit(rc)")
    recipe = str(REPO / "recipes" / "news_to_sentiment.yaml")
    bad = subprocess.run([sys.executable, "-c", code, "run", recipe, "--output-dir", str(tmp_path / "o"),
                          "target_training.num_epoch=2"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "Did you mean `target_training.num_epochs`?" in bad.stderr
    assert "HEAVY []" in bad.stdout
    assert not (tmp_path / "o").exists()
    for argv in (["--help"], ["run", "--help"]):
        shown = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert "HEAVY []" in shown.stdout, argv


def test_run_help_lists_every_config_option():
    from textransfer.config.reference import run_options

    shown = subprocess.run([sys.executable, "-m", "textransfer.cli", "run", "--help"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    names = [d.name.replace("source.`/`target.", "(source|target).").replace("*_training.", "(source|target)_training.")
             for d in run_options()]
    assert len(names) > 60
    for name in names:
        assert f"  {name} (" in shown.stdout, f"`textransfer run --help` does not list {name}"
    assert "Did you mean" not in shown.stdout
    assert "(int, default 3)" in shown.stdout  # num_epochs with its type and default


def test_every_layer_folder_says_what_it_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "May import" in doc, f"{init.relative_to(REPO)} has no layer docstring"
