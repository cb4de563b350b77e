"""Tests that need a real read-only or full file system mount one in a mount namespace of their own
(``unshare -rm``: a user namespace maps the caller to root there, so no privilege is needed where user
namespaces are allowed, and the mount vanishes with the child)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def require_mount_namespaces(why: str) -> None:
    """Return when ``unshare -rm`` works here; else skip on a developer's machine, and fail under CI (``.ci/run``
    sets ``CI``): there such a test runs or fails, never skips. ``why`` says what the test needs it for."""
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0:
        return
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)
