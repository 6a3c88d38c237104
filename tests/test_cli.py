import subprocess
import sys


def test_help_lists_group():
    out = subprocess.run([sys.executable, "-m", "rhythmhead", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "rhythmhead" in out.stdout


def test_unknown_command_fails():
    out = subprocess.run([sys.executable, "-m", "rhythmhead", "no-such-command"], capture_output=True, text=True)
    assert out.returncode != 0
