import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest


def run_import(extra_path=None):
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", "import arlm"],
        capture_output=True, text=True, env=env, check=True,
    )


def test_import_is_quiet_without_xlm_models():
    assert "xlm-models" not in run_import().stderr


def test_import_warns_when_xlm_models_is_installed(tmp_path):
    dist = tmp_path / "xlm_models-0.3.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xlm-models\nVersion: 0.3.1\n")
    stderr = run_import(tmp_path).stderr
    assert "'xlm-models' distribution (0.3.1) is installed" in stderr
    assert "pip uninstall -y xlm-models" in stderr


REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_git_tree_holds_no_symlink():
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=REPO_ROOT, capture_output=True, text=True)
    if listing.returncode != 0:
        pytest.skip(f"not a git checkout: {listing.stderr.strip()}")
    links = [line.split("\t", 1)[1] for line in listing.stdout.splitlines() if line.startswith("120000 ")]
    assert links == []


def test_pyproject_lists_every_package_of_arlm():
    listed = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {
        ".".join(init.parent.relative_to(REPO_ROOT).parts) for init in (REPO_ROOT / "arlm").rglob("__init__.py")
    }
    assert on_disk == {name for name in listed if name.split(".")[0] == "arlm"}


def test_editable_install_maps_the_data_packages_onto_the_checkout():
    pytest.importorskip("hydra")
    from arlm.jobs import xlm_models_dir
    from hydra_plugins.arlm_search_path import installed_configs_dir

    assert Path(installed_configs_dir()) == REPO_ROOT / "configs"
    assert xlm_models_dir() == REPO_ROOT / "xlm-models"
    # The one registration: the directory above xlm_models.json, whose configs/ lists the job types.
    registration = json.loads((xlm_models_dir() / "xlm_models.json").read_text())
    assert registration == {"arlm_jobs": ".."}
    assert (xlm_models_dir() / ".." / "configs" / "commands.yaml").is_file()


def _modules(package: Path):
    return sorted(path.stem for path in package.glob("*.py") if path.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("package", sorted(init.parent.name for init in (REPO_ROOT / "arlm").glob("*/__init__.py")))
def test_each_package_describes_every_one_of_its_modules(package):
    import ast

    directory = REPO_ROOT / "arlm" / package
    docstring = ast.get_docstring(ast.parse((directory / "__init__.py").read_text())) or ""
    missing = [name for name in _modules(directory) if f"arlm.{package}.{name}" not in docstring]
    assert missing == [], f"arlm/{package}/__init__.py does not describe {missing}"


def test_the_documents_the_configs_point_at_exist():
    import re

    pointers = []
    for config in (REPO_ROOT / "configs").rglob("*.yaml"):
        for line in config.read_text().splitlines():
            comment = line.partition("#")[2]
            pointers += [(config.name, *match) for match in re.findall(r"(README|docs/[\w-]+\.md)(?:#([\w-]+)|, \"([^\"]+)\")?", comment)]
    assert pointers
    for config, document, anchor, section in pointers:
        path = REPO_ROOT / ("README.md" if document == "README" else document)
        assert path.is_file(), f"{config} points at {document}, which does not exist"
        headings = [line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")]
        if section:
            assert section in headings, f"{config} points at {document}, section {section!r}, which it does not have"
        if anchor:
            slugs = {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
            assert anchor in slugs, f"{config} points at {document}#{anchor}, which it does not have"


MODULE_LINES_MAX = 350
"""Small modules with one job each: a module past this many lines is split, not grown."""


def test_no_module_of_arlm_is_over_the_size_limit():
    package = Path(__file__).resolve().parents[1] / "arlm"
    sizes = {str(path.relative_to(package)): len(path.read_text().splitlines()) for path in package.rglob("*.py")}
    assert len(sizes) > 50
    assert {name: lines for name, lines in sizes.items() if lines > MODULE_LINES_MAX} == {}
