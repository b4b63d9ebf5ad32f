"""client-config/emacs/logitls.el as a package: package-lint (Debian's elpa-package-lint) finds nothing,
and the MELPA-style recipe names the file."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .conftest import CLIENT, ROOT, require_program

# package-lint 0.16 (Debian 12) predates Emacs 28's release and still calls it unreleased
STALE = "This makes the package uninstallable in all released Emacs versions."


def test_package_lint_passes():
    emacs = require_program("emacs")
    probe = subprocess.run([emacs, "--batch", "-q", "--eval", "(require 'package-lint)"], capture_output=True)
    if probe.returncode != 0:
        if os.environ.get("LOGITLS_REQUIRE_EDITORS") == "1":
            pytest.fail("package-lint is missing: apt-get install elpa-package-lint (make editors-setup)")
        pytest.skip("package-lint is not installed (Debian: elpa-package-lint)")
    run = subprocess.run([emacs, "--batch", "-q", "-l", str(ROOT / "tests" / "editors" / "emacs_package_lint.el"),
                          "-f", "package-lint-batch-and-exit", "logitls.el"], cwd=CLIENT / "emacs",
                         capture_output=True, text=True, timeout=120)
    found = [line for line in (run.stdout + run.stderr).splitlines()
             if re.match(r"logitls\.el:\d+:\d+: (warning|error):", line) and STALE not in line]
    assert found == [], "\n".join(found)


def test_the_recipe_names_the_package_file():
    recipe = (CLIENT / "emacs" / "logitls.recipe").read_text()
    [files] = re.findall(r':files \("([^"]+)"\)', recipe)
    assert (ROOT / files).is_file()
    assert ";;;###autoload" in (ROOT / files).read_text()
