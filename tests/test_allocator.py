"""cai.allocator: when the cai command starts itself again with TCMalloc preloaded, and when not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cai import allocator


ELF = b"\x7fELF\x02\x01\x01"


@pytest.fixture
def lib_dir(tmp_path):
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    return (str(tmp_path),)


def test_find_tcmalloc(lib_dir, tmp_path):
    assert allocator.find_tcmalloc(lib_dir) == str(tmp_path / "libtcmalloc_minimal.so.4")
    assert allocator.find_tcmalloc((str(tmp_path / "empty"),)) is None


def test_preload_env_puts_tcmalloc_first_and_keeps_the_rest(lib_dir, tmp_path):
    lib = str(tmp_path / "libtcmalloc_minimal.so.4")
    env = allocator.preload_env({"PATH": "/bin"}, platform="linux", dirs=lib_dir)
    assert env == {"PATH": "/bin", "LD_PRELOAD": lib}
    env = allocator.preload_env({"LD_PRELOAD": "/x/libiomp5.so"}, platform="linux", dirs=lib_dir)
    assert env["LD_PRELOAD"] == f"{lib}:/x/libiomp5.so"


@pytest.mark.parametrize("environ, platform", [
    ({"CAI_TCMALLOC": "0"}, "linux"),
    ({"CAI_TCMALLOC": "off"}, "linux"),
    ({}, "darwin"),
    ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "linux"),  # the user's own allocator
    ({"LD_PRELOAD": "/somewhere/libtcmalloc_minimal.so.4"}, "linux"),  # the restarted process itself
])
def test_preload_env_leaves_alone(lib_dir, environ, platform):
    assert allocator.preload_env(environ, platform=platform, dirs=lib_dir) is None


def test_preload_env_without_a_library(tmp_path):
    assert allocator.preload_env({}, platform="linux", dirs=(str(tmp_path),)) is None


def test_preload_env_takes_a_named_library(tmp_path):
    lib = tmp_path / "mine.so"
    lib.write_bytes(ELF)
    env = allocator.preload_env({"CAI_TCMALLOC": str(lib)}, platform="linux", dirs=())
    assert env["LD_PRELOAD"] == str(lib)
    with pytest.raises(ValueError, match="CAI_TCMALLOC=.*no such file"):
        allocator.preload_env({"CAI_TCMALLOC": str(tmp_path / "missing.so")}, platform="linux", dirs=())


def test_a_named_library_without_an_allocators_name_restarts_once(tmp_path):
    lib = tmp_path / "tc.so"
    lib.write_bytes(ELF)
    env = allocator.preload_env({"CAI_TCMALLOC": str(lib)}, platform="linux", dirs=())
    # The restarted process sees its own library preloaded: no second restart (it looped before).
    assert allocator.preload_env(env, platform="linux", dirs=()) is None
    assert "LD_PRELOAD" not in allocator.without_preload(env)


def test_a_named_relative_library_is_preloaded_by_its_full_path(tmp_path, monkeypatch):
    (tmp_path / "tc.so").write_bytes(ELF)
    monkeypatch.chdir(tmp_path)
    env = allocator.preload_env({"CAI_TCMALLOC": "tc.so"}, platform="linux", dirs=())
    assert env["LD_PRELOAD"] == str(tmp_path / "tc.so")
    assert allocator.preload_env(env, platform="linux", dirs=()) is None


@pytest.mark.parametrize("value, message", [
    ("maybe", "no such file; set CAI_TCMALLOC to a libtcmalloc.*'s path, or to 1 or 0"),
    ("/etc/hostname-like", "not a shared library"),
    ("1", "no TCMalloc found in"),
])
def test_preload_env_says_what_is_wrong_with_the_value(tmp_path, monkeypatch, value, message):
    monkeypatch.chdir(tmp_path)
    if value.startswith("/"):
        value = str(tmp_path / "notes.txt")
        (tmp_path / "notes.txt").write_text("not a library")
    with pytest.raises(ValueError, match=message):
        allocator.preload_env({"CAI_TCMALLOC": value}, platform="linux", dirs=(str(tmp_path),))


def test_restart_runs_the_same_command_again(monkeypatch, lib_dir, tmp_path):
    calls = []
    monkeypatch.setattr(allocator.os, "execve", lambda *a: calls.append(a))
    monkeypatch.setattr(allocator.sys, "orig_argv", ["/venv/bin/python", "/venv/bin/cai", "run", "--preset", "x"])
    monkeypatch.delenv("CAI_TCMALLOC", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator, "preload_env",
                        lambda environ, _real=allocator.preload_env: _real(environ, platform="linux", dirs=lib_dir))
    allocator.restart_with_tcmalloc()
    assert len(calls) == 1
    exe, argv, env = calls[0]
    assert exe == sys.executable and argv == ["/venv/bin/python", "/venv/bin/cai", "run", "--preset", "x"]
    assert env["LD_PRELOAD"] == str(tmp_path / "libtcmalloc_minimal.so.4")


def test_restart_warns_on_a_missing_named_library(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(allocator.os, "execve", lambda *a: pytest.fail("must not restart"))
    monkeypatch.setenv("CAI_TCMALLOC", str(tmp_path / "missing.so"))
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    allocator.restart_with_tcmalloc()
    assert "CAI_TCMALLOC=" in capsys.readouterr().err


def test_without_preload():
    env = allocator.without_preload({"LD_PRELOAD": "/a/libtcmalloc_minimal.so.4:/b/libiomp5.so", "X": "1"})
    assert env == {"LD_PRELOAD": "/b/libiomp5.so", "X": "1"}
    assert "LD_PRELOAD" not in allocator.without_preload({"LD_PRELOAD": "/a/libtcmalloc.so.4"})


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator.find_tcmalloc() is None,
                    reason="no TCMalloc installed here (make setup installs one where it may)")
def test_the_cai_command_runs_on_tcmalloc():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "CAI_TCMALLOC")}
    run = lambda extra: subprocess.run([sys.executable, "-m", "cai", "--version"], env={**env, **extra},  # noqa: E731
                                       capture_output=True, text=True, check=True).stdout
    assert "memory allocator: tcmalloc" in run({})
    assert "memory allocator: the C library's" in run({"CAI_TCMALLOC": "0"})


def test_version_names_the_allocator(capsys):
    from cai.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("cai ") and f"memory allocator: {allocator.active()}" in out
