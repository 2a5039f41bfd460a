"""The command line (jdtp.main): one-line errors, --help, exit codes (0 done, 1 error, 2 usage, 75 preempted)."""

import os
import signal
import subprocess
import sys

import pytest
from helpers import CONFIG_DIR

from jdtp import preemption

REPO = os.path.join(CONFIG_DIR, "..")


def _main(*args, timeout=300):
    env = {**os.environ, "XLA_FLAGS": ""}
    return subprocess.run(
        [sys.executable, "-m", "jdtp.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_overrides_variants_and_where_keys_live():
    out = _main("--help")
    assert out.returncode == 0
    for needle in ("--config.KEY=VALUE", "bp", "smoke", "--show_config", "jdtp/config_base.py", "75"):
        assert needle in out.stdout, needle


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (
            ["--config=configs/lenet_mnist.py", "--workdir=W", "--config.dtp.nonsense=1"],
            2,
            "unknown config key 'dtp.nonsense'",
        ),
        (["--config=configs/nope.py", "--workdir=W"], 2, "config file 'configs/nope.py' not found"),
        (
            ["--config=configs/lenet_mnist.py:bp", "--workdir=W", "--config.dtp.beta=1"],
            2,
            "unknown config key 'dtp'",
        ),
        (["--config=configs/lenet_mnist.py:fast", "--workdir=W"], 2, "unknown config variant(s) ['fast']"),
        (["--workdir=W"], 2, "--config is required"),
        (
            ["--config=configs/lenet_mnist.py:smoke", "--workdir=/proc/version"],
            1,
            "is a file, not a directory",
        ),
        (["--config=configs/lenet_mnist.py:smoke", "--workdir=/proc/nope/x"], 1, "cannot write to --workdir"),
        (
            ["--config=configs/lenet_mnist.py:smoke", "--workdir=W", "--config.dtp.num_fb_iters=(2,2)"],
            1,
            "num_fb_iters has 2 entries",
        ),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, code, needle):
    args = [a.replace("--workdir=W", f"--workdir={tmp_path / 'wd'}") for a in args]
    out = _main(*args)
    assert out.returncode == code, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "] error: " in line]  # absl's log prefix
    assert len(errors) == 1 and needle in errors[0], out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_show_config_prints_every_key():
    out = _main("--config=configs/lenet_mnist.py:bp", "--show_config")
    assert out.returncode == 0 and "optim:" in out.stdout and "dtp:" not in out.stdout


def test_sigterm_exits_with_the_preemption_code_and_a_rerun_finishes(tmp_path):
    wd = str(tmp_path / "wd")
    args = ["--config=configs/lenet_cifar10.py:smoke", f"--workdir={wd}", "--config.num_train_steps=100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "jdtp.main", *args],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": ""},
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stderr:  # wait until the loop runs (the handler is installed by then)
        if "step 2/100000" in line:
            break
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == preemption.EXIT_CODE
    out = _main(*args[:2], "--config.num_train_steps=4")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Done: DTP" in out.stderr or "Already complete" in out.stderr
