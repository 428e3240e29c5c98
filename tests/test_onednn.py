"""Importing malaria_lib turns TensorFlow's oneDNN kernels on (x86 CPUs), before TensorFlow loads; a user's own
TF_ENABLE_ONEDNN_OPTS wins. Each case in a fresh interpreter: TensorFlow reads the setting once, when imported."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

X86 = platform.machine().lower() in ("x86_64", "amd64")
REPORT = ("import os, malaria_lib; from malaria_lib.runtime import machine; "
          "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), machine()['onednn'])")


def _report(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run([sys.executable, "-c", REPORT], env={**clean, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_library_turns_onednn_on_before_tensorflow_loads():
    # on an AVX2-only CPU (this project's CI machine) TensorFlow alone leaves it off; the library's setting turns it on
    setting, enabled = _report()
    if X86:
        assert (setting, enabled) == ("1", "True")
    else:  # elsewhere (ARM) TensorFlow's own default stands: the library sets nothing
        assert setting == "None"


def test_a_users_own_setting_wins():
    assert _report(TF_ENABLE_ONEDNN_OPTS="0") == ["0", "False"]
