"""The README's examples, run as written: each Python block that holds tests runs as a test
module (and every test in it must pass); the others run as a script."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
    return re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.M | re.S)


def test_the_readme_has_examples_of_the_fixture_a_complete_test_and_the_context_manager():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert sum("def test_" in block for block in blocks) == 2


@pytest.mark.parametrize(
    "block", [b for b in python_blocks() if "def test_" in b], ids=["fixture", "complete"]
)
def test_a_readme_test_module_passes_as_written(pytester, block):
    pytester.makepyfile(block)
    tests = len(re.findall(r"^def test_", block, re.M))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=tests)


def test_the_readme_script_runs_as_written(tmp_path):
    [script] = [b for b in python_blocks() if "def test_" not in b]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("served i-0b4f7d2c9a1e83f56 in us-east-1"), done.stdout


@pytest.mark.imds(config={"instance": {"placement": {"availability_zone": "eu-west-1b"}}})
def test_ec2_signs_for_the_region_imds_serves(imds):
    pytest.importorskip("boto3")
    assert imds.region == "eu-west-1"
    reservations = imds.ec2().describe_instances()["Reservations"]
    assert reservations[0]["Instances"][0]["Placement"]["AvailabilityZone"] == "eu-west-1b"
