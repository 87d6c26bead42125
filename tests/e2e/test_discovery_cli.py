"""The ways xLM finds arlm, each exercised with the real ``xlm`` CLI in a subprocess.

The Hydra configs (top-level ``configs/``) reach Hydra through the plugin
``hydra_plugins/arlm_search_path.py`` wherever arlm is installed; the job types
(``configs/commands.yaml``) reach xLM through the one ``xlm-models/xlm_models.json``.
1. Repository root after ``pip install -e .``: both with no environment variable.
2. The editable install run from another directory: configs with no variable, job types with
   ``XLM_MODELS_PATH=$(python -m arlm.jobs)``.
3. A wheel installed into a clean virtual environment, run from an unrelated directory: the same,
   and with XLM_MODELS_PACKAGES=arlm.
4. Another project's ``xlm_models.json`` pointing at a checkout.
The clean environments reuse this venv's dependencies through a ``.pth`` file and get only the
wheel installed (offline), so that ``import arlm`` can only resolve to the wheel's copy.
"""

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, STAR_SIZES, TINY_MODEL, TINY_TRAIN, offline_env, run_xlm

pytestmark = pytest.mark.slow
NAME = ["job_type=name", "experiment=star_easy_arlm"]
# A generate_arlm call that fails fast with arlm's own message: proves the job type is registered.
GENERATE_PROBE = ["job_type=generate_arlm", "experiment=star_easy_arlm", "+generation.ckpt_path=/nonexistent.ckpt"]
DISCOVERY_TROUBLE = ("Failed to import arlm", "Duplicate model name", "ExternalModelConflictError")


def _xlm_script(venv: Path) -> Path:
    """The ``xlm`` console script pip would write (xlm-core is not installed into ``venv`` itself)."""
    script = venv / "bin" / "xlm"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom xlm.__main__ import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


def _clean_venv(path: Path) -> Path:
    """A venv without pip or packages whose only extra path is this venv's site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next((path / "lib").glob("python3*/site-packages"))
    (site / "main_venv_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _xlm_script(path)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The arlm wheel, built offline from a copy of the working tree."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    shutil.copytree(
        REPO_ROOT, src, symlinks=True,
        ignore=shutil.ignore_patterns(".venv", ".git", "data", "logs", "outputs", "build", "dist", "*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-w", str(root / "dist"), str(src)],
        check=True,
    )
    return next((root / "dist").glob("arlm-*.whl"))


@pytest.fixture(scope="module")
def wheel_venv(wheel, tmp_path_factory) -> Path:
    venv = _clean_venv(tmp_path_factory.mktemp("venv") / "wheel-venv")
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True
    )
    return venv


def _assert_clean_discovery(out: str) -> None:
    for trouble in DISCOVERY_TROUBLE:
        assert trouble not in out, f"discovery reported {trouble!r}:\n{out[:3000]}"


def _python_m_arlm_jobs(python: Path) -> str:
    return subprocess.run(
        [str(python), "-m", "arlm.jobs"], check=True, capture_output=True, text=True, cwd="/",
    ).stdout.strip()


def test_repo_root_after_editable_install(tmp_path):
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    out = run_xlm(NAME, cwd=REPO_ROOT, env=env).stdout
    _assert_clean_discovery(out)
    assert "Model: arlm_jobs at xlm-models/.." in out
    assert "star_easy__arlm_seq2seq__rotary_transformer_tiny_arlm" in out
    probe = run_xlm(GENERATE_PROBE, cwd=REPO_ROOT, env=env, check=False)
    assert "generation.ckpt_path=/nonexistent.ckpt does not exist" in probe.stdout


def test_editable_install_from_another_directory(tmp_path):
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    out = run_xlm(NAME, cwd=tmp_path, env=env).stdout
    _assert_clean_discovery(out)
    assert "star_easy__arlm_seq2seq__rotary_transformer_tiny_arlm" in out
    registration = _python_m_arlm_jobs(Path(sys.executable))
    assert registration == str(REPO_ROOT / "xlm-models")
    env["XLM_MODELS_PATH"] = registration
    probe = run_xlm(GENERATE_PROBE, cwd=tmp_path, env=env, check=False)
    _assert_clean_discovery(probe.stdout)
    assert "generation.ckpt_path=/nonexistent.ckpt does not exist" in probe.stdout


def test_wheel_carries_the_checkouts_configs_and_registration(wheel):
    """One copy of ``configs/`` (commands.yaml included) and of ``xlm-models/xlm_models.json``,
    under ``hydra_plugins/arlm`` in the checkout's layout; nothing under ``arlm/configs``, where
    xLM's package discovery would read ``commands.yaml`` twice; no ``hydra_plugins/__init__.py``,
    which would hide every other Hydra plugin."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped_configs = {
            name.removeprefix("hydra_plugins/arlm/configs/"): archive.read(name)
            for name in names if name.startswith("hydra_plugins/arlm/configs/")
        }
        shipped_registration = archive.read("hydra_plugins/arlm/xlm_models/xlm_models.json")
    checkout_configs = {
        path.relative_to(REPO_ROOT / "configs").as_posix(): path.read_bytes()
        for path in (REPO_ROOT / "configs").rglob("*.yaml")
    }
    assert "commands.yaml" in checkout_configs
    assert shipped_configs == checkout_configs
    assert shipped_registration == (REPO_ROOT / "xlm-models" / "xlm_models.json").read_bytes()
    assert "hydra_plugins/arlm_search_path.py" in names
    assert not [name for name in names if name.startswith("arlm/configs/")]
    assert "hydra_plugins/__init__.py" not in names


def test_wheel_in_clean_venv_resolves_arlm_to_the_wheel(wheel_venv):
    location = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-c", "import arlm; print(arlm.__file__)"],
        check=True, capture_output=True, text=True, cwd="/",
    ).stdout.strip()
    assert location.startswith(str(wheel_venv)), location
    site = Path(location).parents[1]
    assert (site / "hydra_plugins" / "arlm" / "configs" / "experiment" / "star_easy_arlm.yaml").is_file()


def test_wheel_from_unrelated_dir_trains_without_env_var(wheel_venv, tmp_path):
    xlm = [str(wheel_venv / "bin" / "xlm")]
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    out = run_xlm(NAME, cwd=tmp_path, env=env, xlm=xlm).stdout
    _assert_clean_discovery(out)
    assert "Package: arlm" in out
    run_xlm(["job_type=train", "experiment=star_easy_arlm", *STAR_SIZES, *TINY_MODEL, *TINY_TRAIN,
             "trainer.max_steps=2"], cwd=tmp_path, env=env, xlm=xlm)
    assert list((tmp_path / "logs").glob("*/checkpoints/last.ckpt"))


def test_wheel_with_xlm_models_packages(wheel_venv, tmp_path):
    env = offline_env(tmp_path / "data", tmp_path / "logs", {"XLM_MODELS_PACKAGES": "arlm"})
    out = run_xlm(NAME, cwd=tmp_path, env=env, xlm=[str(wheel_venv / "bin" / "xlm")]).stdout
    assert "Package: arlm" in out and "star_easy__arlm_seq2seq" in out


def test_wheel_job_types_through_xlm_models_path(wheel_venv, tmp_path):
    registration = _python_m_arlm_jobs(wheel_venv / "bin" / "python")
    assert registration.startswith(str(wheel_venv))
    env = offline_env(tmp_path / "data", tmp_path / "logs", {"XLM_MODELS_PATH": registration})
    probe = run_xlm(GENERATE_PROBE, cwd=tmp_path, env=env, xlm=[str(wheel_venv / "bin" / "xlm")], check=False)
    _assert_clean_discovery(probe.stdout)
    assert "generation.ckpt_path=/nonexistent.ckpt does not exist" in probe.stdout


def test_other_project_json_pointing_at_a_checkout(tmp_path):
    venv = _clean_venv(tmp_path / "plain-venv")  # arlm not installed: imported from the checkout
    project = tmp_path / "other_project"
    project.mkdir()
    (project / "xlm_models.json").write_text('{"arlm": "%s"}' % REPO_ROOT)
    env = offline_env(tmp_path / "data", tmp_path / "logs", {"PYTHONPATH": str(REPO_ROOT)})
    xlm = [str(venv / "bin" / "xlm")]
    out = run_xlm(NAME, cwd=project, env=env, xlm=xlm).stdout
    assert f"Model: arlm at {REPO_ROOT}" in out and "star_easy__arlm_seq2seq" in out
    probe = run_xlm(GENERATE_PROBE, cwd=project, env=env, xlm=xlm, check=False)
    assert "generation.ckpt_path=/nonexistent.ckpt does not exist" in probe.stdout


def test_other_project_json_naming_the_checkout_other_than_arlm_is_clean(tmp_path):
    """Any name but ``arlm`` (the package's) keeps xLM's discovery free of warnings."""
    venv = _clean_venv(tmp_path / "plain-venv")
    project = tmp_path / "other_project"
    project.mkdir()
    (project / "xlm_models.json").write_text('{"arlm_jobs": "%s"}' % REPO_ROOT)
    env = offline_env(tmp_path / "data", tmp_path / "logs", {"PYTHONPATH": str(REPO_ROOT)})
    probe = run_xlm(GENERATE_PROBE, cwd=project, env=env, xlm=[str(venv / "bin" / "xlm")], check=False)
    _assert_clean_discovery(probe.stdout)
    assert "generation.ckpt_path=/nonexistent.ckpt does not exist" in probe.stdout
