"""docs/operations.md stays true: its alert rules and scrape config load in Prometheus' own tools."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool")


def yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_yaml_example_parses() -> None:
    blocks = yaml_blocks()
    assert len(blocks) >= 3
    for block in blocks:
        yaml.safe_load(block)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    [rules] = [block for block in yaml_blocks() if block.startswith("groups:")]
    path = tmp_path / "rules.yml"
    path.write_text(rules)
    result = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 13 rules found" in result.stdout
