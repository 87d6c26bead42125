import os
import subprocess
import sys


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
