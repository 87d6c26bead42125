"""The code an Arlow export carries, so that it loads where arlm is not installed.

The Hub's convention for an architecture that transformers does not ship: ``config.json`` names
the classes in ``auto_map`` and the directory holds their code, which
``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` imports. transformers'
loader copies the file named in ``auto_map`` plus the files it imports relatively
(``from .x import y``, found in the same directory), and refuses to run when an absolute import
names a package that is not installed.

The bundle follows from a rule: every module of :mod:`arlm.hf` (which imports only
:mod:`arlm.network` and itself), and the :mod:`arlm.network` modules they import, directly or not
(:data:`BUNDLE`). arlm's own modules import each other absolutely (``from arlm.network.config
import ...``) and annotate shapes with jaxtyping. :func:`bundle_sources` gives each module of the
bundle with those imports rewritten: ``arlm`` modules to relative imports of their files in the
bundle, ``jaxtyping`` to :mod:`arlm.hf.shape_annotations` (plain ``typing.Annotated``), so that the
bundle needs only torch and transformers (and numpy, which transformers needs). An import of an
``arlm`` module outside the bundle is an error, so a bundle is never written incomplete.
"""

import ast
import importlib
import importlib.util
import json
import pkgutil
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Set, Tuple

FACE_PACKAGE = "arlm.hf"
BUNDLED_PACKAGES = (FACE_PACKAGE, "arlm.network")
FILE_NAMES = {"arlm.network.config": "decoder_config"}
"""Bundled files not named as their module: a ``config.py`` beside ``config.json`` would read as the model's configuration."""
SHAPE_ANNOTATIONS = "arlm.hf.shape_annotations"
AUTO_MAP = {
    "AutoConfig": "configuration_arlow.ArlowConfig",
    "AutoModel": "modeling_arlow.ArlowModel",
    "AutoModelForCausalLM": "modeling_arlow.ArlowForCausalLM",
}


def bundle_modules() -> Dict[str, str]:
    """arlm module -> its file name (without ``.py``) in the export directory: every module of
    :data:`FACE_PACKAGE` and the bundled packages' modules they import, directly or not."""
    face = importlib.import_module(FACE_PACKAGE)
    modules = _closure((f"{FACE_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(face.__path__)), _bundled_imports)
    return {module: FILE_NAMES.get(module, module.rsplit(".", 1)[1]) for module in sorted(modules)}


def _bundled_imports(module: str) -> List[str]:
    """The modules of :data:`BUNDLED_PACKAGES` that ``module`` imports."""
    tree = ast.parse(_module_file(module).read_text(encoding="utf-8"))
    return [
        node.module for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
        and node.module.startswith(tuple(f"{package}." for package in BUNDLED_PACKAGES))
    ]


def rewrite_imports(source: str, module: str) -> str:
    """``source`` of ``module`` with its ``arlm`` imports made relative to the bundle and its
    ``jaxtyping`` imports pointed at the shape stand-ins; nothing else changes.

    Raises:
        ValueError: ``source`` imports an ``arlm`` module that is not in :data:`BUNDLE`, or
            imports ``arlm`` / ``jaxtyping`` in a form that has no relative equivalent
            (``import arlm.x``).
    """
    lines = source.splitlines(keepends=True)
    edits: List[Tuple[ast.stmt, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _top(alias.name) in ("arlm", "jaxtyping"):
                    raise ValueError(f"{module}: `import {alias.name}` cannot be bundled; use `from ... import ...`")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _top(node.module) in ("arlm", "jaxtyping"):
            target = SHAPE_ANNOTATIONS if _top(node.module) == "jaxtyping" else node.module
            if target not in BUNDLE:
                raise ValueError(
                    f"{module} imports {node.module}, which is not in the Arlow bundle (arlm.hf and the "
                    f"arlm.network modules it imports): the code an export carries imports nothing else of arlm"
                )
            names = ", ".join(a.name if a.asname is None else f"{a.name} as {a.asname}" for a in node.names)
            edits.append((node, f"from .{BUNDLE[target]} import {names}"))
    for node, text in sorted(edits, key=lambda edit: (edit[0].lineno, edit[0].col_offset), reverse=True):
        first, last = node.lineno - 1, node.end_lineno - 1
        lines[first:last + 1] = [lines[first][: node.col_offset] + text + lines[last][node.end_col_offset:]]
    return "".join(lines)


def bundle_sources() -> Dict[str, str]:
    """``{file name: rewritten source}`` for every module of :data:`BUNDLE`.

    transformers 4 copies, from a local directory, only the files that the file named in
    ``auto_map`` imports itself, then fails on any file those import in turn; so each file named
    in ``auto_map`` also imports, at its end, one name of every other bundled file it needs.
    """
    sources = {name: rewrite_imports(_module_file(module).read_text(encoding="utf-8"), module) for module, name in BUNDLE.items()}
    for entry in {ref.split(".")[0] for ref in AUTO_MAP.values()}:
        direct = set(_relative_imports(sources[entry]))
        indirect = sorted(_closure([entry], lambda name: _relative_imports(sources[name])) - direct - {entry})
        if indirect:
            sources[entry] += (
                "\n\n# Bundled files this one needs through the others, named here too: transformers 4 copies\n"
                "# only the files that the module named in auto_map imports itself.\n"
                + "".join(f"from .{name} import {_first_public_name(sources[name])}  # noqa: F401\n" for name in indirect)
            )
    return {f"{name}.py": source for name, source in sources.items()}


def write_remote_code(directory: Path) -> None:
    """Write the bundle into the export ``directory`` and name its classes in ``config.json``'s
    ``auto_map`` (the directory already holds the ``config.json`` of an ``ArlowConfig``)."""
    for name, source in bundle_sources().items():
        (directory / name).write_text(source, encoding="utf-8")
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["auto_map"] = dict(AUTO_MAP)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _relative_imports(source: str) -> List[str]:
    """The sibling modules ``source`` imports as ``from .name import ...``."""
    return [
        node.module for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    ]


def _closure(start: Iterable[str], imports: Callable[[str], List[str]]) -> Set[str]:
    """``start`` and everything it imports (``imports(name)``), directly or not."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imports(name))
    return seen


def _first_public_name(source: str) -> str:
    """The first class, function or constant defined at the top of ``source`` whose name has no
    leading underscore."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
            return node.name
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and not target.id.startswith("_"):
                    return target.id
    raise ValueError("a bundled module defines no public name")


def _top(module: str) -> str:
    return (module or "").split(".")[0]


def _module_file(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot find the source of {module} to bundle it")
    return Path(spec.origin)


BUNDLE = bundle_modules()
"""arlm module -> its file name (without ``.py``) in the export directory."""
