"""The on/off words every CAI_* switch takes, and that each switch reads them the same way."""

import pytest

from cai.env_flags import env_switch


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_on_words(value):
    assert env_switch("CAI_X", {"CAI_X": value}) is True


@pytest.mark.parametrize("value", ["0", "False", "no", "OFF "])
def test_off_words(value):
    assert env_switch("CAI_X", {"CAI_X": value}) is False


@pytest.mark.parametrize("environ", [{}, {"CAI_X": ""}, {"CAI_X": "/usr/lib/libtcmalloc.so"}, {"CAI_X": "2"}])
def test_anything_else_leaves_the_default(environ):
    assert env_switch("CAI_X", environ) is None


def test_reads_the_process_environment_by_default(monkeypatch):
    monkeypatch.setenv("CAI_X", "off")
    assert env_switch("CAI_X") is False


@pytest.mark.parametrize("word", ["no", "Off"])
def test_every_switch_takes_the_same_off_words(monkeypatch, word):
    from cai.allocator import preload_env
    from cai.progress import bars_wanted
    from cai.quiet import verbose_requested
    from cai.run.step_server import wanted

    for name in ("CAI_PROGRESS", "CAI_VERBOSE", "CAI_STEP_SERVER"):
        monkeypatch.setenv(name, word)
    assert bars_wanted() is False
    assert verbose_requested() is False
    assert wanted([{"model": "hf:a"}, {"model": "hf:b"}]) is False
    assert preload_env({"CAI_TCMALLOC": word}, platform="linux") is None


def test_an_off_word_turns_a_set_on_switch_off(monkeypatch, capsys):
    from cai.cli import main
    from cai.env_flags import set_on

    assert set_on("CAI_X", {"CAI_X": "anything"}) is True
    assert set_on("CAI_X", {"CAI_X": " 0 "}) is False and set_on("CAI_X", {}) is False
    monkeypatch.setenv("CAI_TRACEBACK", "0")  # read as set, and so as on, before
    assert main(["run", "/no/such/run.yaml"]) == 2
    assert capsys.readouterr().err.strip() == "cai: error: /no/such/run.yaml: file not found; check the path"


def test_a_value_that_is_no_switch_word_is_named(monkeypatch, capsys):
    from cai.cli import main
    from cai.env_flags import odd_switches

    assert odd_switches({"CAI_PROGRESS": "2", "CAI_VERBOSE": "on", "CAI_STEP_SERVER": "", "CAI_TCMALLOC": "/x"}) == [
        "CAI_PROGRESS=2 is not one of 1/true/yes/on or 0/false/no/off; ignored"]
    # A variable that picks one of a few words names them.
    assert odd_switches({"CAI_VLLM_ATTENTION": "Auto"}) == []
    assert odd_switches({"CAI_VLLM_ATTENTION": "cia"}) == ["CAI_VLLM_ATTENTION=cia is not one of cai, vllm, auto; ignored"]
    monkeypatch.setenv("CAI_STEP_SERVER", "nope")
    assert main(["run", "/no/such/run.yaml"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "cai: warning: CAI_STEP_SERVER=nope is not one of 1/true/yes/on or 0/false/no/off; ignored"
    assert len(err) == 2
