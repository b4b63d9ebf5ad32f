"""The editors start `logitls` from the venv, which may be an editable install of another checkout:
editor_env puts this checkout's server/ first, so the editor tests exercise this checkout's code."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .conftest import ROOT, editor_env


def test_the_editors_logitls_imports_this_checkouts_server(tmp_path):
    env = editor_env(tmp_path)
    program = shutil.which("logitls", path=env["PATH"])
    assert program, "logitls is not on the editors' PATH"
    interpreter = Path(program).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    found = subprocess.run([*interpreter, "-c", "import logitls; print(logitls.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).resolve().is_relative_to((ROOT / "server").resolve()), found
