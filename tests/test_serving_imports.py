"""Serving must not need torch: importing the service leaves torch unimported."""

import subprocess
import sys


def test_service_imports_without_torch() -> None:
    code = "import sys, service.service; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
