"""A stdout that cannot take a command's output is exit 7 naming it, tables as JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")

CLI = [sys.executable, "-c", "from parc_surgery.cli import main; main()"]


@pytest.mark.parametrize(
    "args",
    [
        ["rules", "list"],  # a table
        ["rules", "list", "--format", "json"],
        ["convert", "resnet18", "--input-size", "64", "--dry-run"],  # the plan table
        ["convert", "resnet18", "--input-size", "64", "--dry-run", "--format", "diff"],
        ["convert", "resnet18", "--input-size", "64", "--dry-run", "--format", "json"],
    ],
    ids=["table", "json", "plan", "diff", "plan-json"],
)
def test_output_to_a_full_disk_is_exit_7_with_the_path(args):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*CLI, *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=300
        )
    assert done.returncode == 7, done.stderr
    assert "/dev/full" in done.stderr and "No space left" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_a_reader_that_stopped_reading_ends_the_table_quietly():
    # `parc-surgery rules list | head -1`, with the reader gone before the first write: the
    # command still succeeds (the rest of the table is dropped), with no traceback.
    import os

    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*CLI, "rules", "list"], stdout=write, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
