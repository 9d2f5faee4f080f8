"""The Go build machinery shared by the control plane and the tools (controlplane.build):
one `go build` of several mains into a cache folder, built once, nothing left by a failure.
A two-file module of its own builds in seconds; skipped where there is no Go."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from controlplane.build import Binary, BuildError, GoBuild, build_cached, go_build

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="no go command here")

MAIN = """package main

import "fmt"

var greeting = "unset"

func main() { fmt.Println(greeting) }
"""


def module(tmp_path: Path, source: str = MAIN) -> GoBuild:
    root = tmp_path / "module"
    (root / "cmd" / "hello").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/hello\n\ngo 1.22\n")
    (root / "cmd" / "hello" / "main.go").write_text(source)
    binaries = (Binary("hello", "./cmd/hello"),)
    return GoBuild("test", root, binaries, ("-X main.greeting=built",))


def test_builds_once_into_the_cache_with_its_ldflags(tmp_path: Path) -> None:
    build, out = module(tmp_path), io.StringIO()
    key_dir = tmp_path / "cache" / "key"
    calls: list[Path] = []

    def run(staging: Path) -> None:
        calls.append(staging)
        go_build(build, "go", staging, out)

    bin_dir = build_cached(key_dir, run, "stamp\n")
    assert bin_dir == key_dir / "bin"
    hello = subprocess.run([str(bin_dir / "hello")], capture_output=True, text=True, check=True)
    assert hello.stdout == "built\n"
    assert "[test build" in out.getvalue() and "go build hello into" in out.getvalue()
    assert build_cached(key_dir, run, "stamp\n") == bin_dir
    assert len(calls) == 1  # the second call found the complete build
    assert (key_dir / "complete").read_text() == "stamp\n"


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    build, out = module(tmp_path, "package main\n\nfunc main() { undefined() }\n"), io.StringIO()
    key_dir = tmp_path / "cache" / "key"
    with pytest.raises(BuildError, match="go build failed"):
        build_cached(key_dir, lambda staging: go_build(build, "go", staging, out), "stamp\n")
    assert "undefined: undefined" in out.getvalue()  # the compiler's own words
    assert sorted(p.name for p in key_dir.iterdir()) == []
