"""benchmarks/gpu_check.sh, the one GPU script: valid bash, the four steps in order, CPU sizes given.

Fast: nothing is run. ``bash benchmarks/gpu_check.sh --cpu`` runs its steps at tiny sizes (by hand; a minute).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_check_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SCRIPT)], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_gpu_check_runs_the_four_steps_in_order():
    text = SCRIPT.read_text(encoding="utf-8")
    steps = re.findall(r"^step (\w+) (\d+) ", text, flags=re.MULTILINE)
    assert [name for name, _ in steps] == ["extract", "ap", "tolerance", "pipeline"]
    # The per-step limits add up to the script's promise: at most 8 minutes on one GPU.
    assert sum(int(limit) for _, limit in steps) <= 8 * 60
    for script in ("bench_extract.py", "bench_ap_device.py"):
        assert (SCRIPT.parent / script).is_file()
        assert f"benchmarks/{script}" in text
    assert "--cpu" in text and "MODE=cpu" in text
    # CPU mode shrinks the GPU-sized steps; nothing is downloaded in either mode.
    cpu_branch = text.split("else", 1)[1].split("fi", 1)[0]
    assert "--device cpu" in cpu_branch and "--units" in cpu_branch and "--contexts" in cpu_branch
    assert "HF_HUB_OFFLINE=1" in text
    assert "gpu_check.json" in text
