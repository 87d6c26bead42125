"""benchmarks/gpu_suite.py --dry-run: the GPU check's every step (training and decoding benchmarks,
the real CLI in bf16-mixed, generate_arlm and export_hf of its checkpoint) runs on the CPU with tiny
sizes and writes its JSON and table, so that the script is known to work before a GPU runs it."""

import json
import subprocess
import sys

import pytest

from tests.e2e.xlm_cli import REPO_ROOT, offline_env


@pytest.mark.slow
def test_gpu_suite_dry_run_writes_its_json_and_table(tmp_path):
    out = tmp_path / "out"
    env = offline_env(tmp_path / "data", tmp_path / "logs")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    report = json.loads((out / "results.json").read_text())
    assert report["dry_run"] and report["errors"] == {}
    assert set(report["train"]) == {"arlm", "HF LlamaForCausalLM", "HF GPTNeoXForCausalLM"}
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["attention"] for r in report["train"].values())
    assert report["decode"]["arlm vs HF"] > 0
    assert {level: r["steps"] for level, r in report["star_paper"].items()} == {"easy": 50_000, "medium": 100_000, "hard": 100_000}
    assert all(r["step_s"] > 0 and r["hours"] > 0 for r in report["star_paper"].values())
    cli = report["cli"]
    assert [cli[job]["exit"] for job in ("train", "generate_arlm", "export_hf")] == [0, 0, 0]
    assert cli["train"]["steps"] == 10 and cli["train"]["finite"]
    assert cli["export_hf"]["architecture"] == ["GPTNeoXForCausalLM"]
    table = (out / "results.md").read_text()
    assert "## Training" in table and "## Greedy decode" in table and "## STAR paper" in table and "## The real CLI" in table
