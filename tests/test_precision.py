"""cai.precision: bf16 on a CPU only when it has bf16 instructions and a measured matmul says bf16 is faster;
the measurement cached per CPU model, torch version and thread count; explicit choices win."""

from __future__ import annotations

import json

import pytest

from cai import precision
from cai.precision import BF16_MARGIN, CACHE_NAME, cpu_prefers_bf16, matmul_rates, measured_rates, rates_key

BF16_CPU = "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx512f avx512_bf16\n"
OLD_CPU = "processor\t: 0\nmodel name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n"


@pytest.fixture
def cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(BF16_CPU)
    return str(path)


class Meter:
    """A stand-in for matmul_rates that counts its calls."""

    def __init__(self, bf16: float, fp32: float):
        self.rates, self.calls = {"bf16": bf16, "fp32": fp32}, 0

    def __call__(self):
        self.calls += 1
        return dict(self.rates)


def never():
    raise AssertionError("measured, but should not have been")


@pytest.mark.parametrize("bf16, fp32, want", [(842.0, 290.0, True), (149.0, 290.0, False),
                                               (1.05 * 290.0, 290.0, False), (1.2 * 290.0, 290.0, True)],
                         ids=["bf16-faster", "bf16-slower", "within-margin", "past-margin"])
def test_decision_follows_measured_rates(cpuinfo, bf16, fp32, want):
    assert cpu_prefers_bf16(None, measure=Meter(bf16, fp32), cpuinfo=cpuinfo) is want


def test_no_bf16_flags_is_fp32_without_measuring(tmp_path):
    old = tmp_path / "cpuinfo"
    old.write_text(OLD_CPU)
    cache = tmp_path / CACHE_NAME
    assert cpu_prefers_bf16(cache, measure=never, cpuinfo=str(old)) is False
    assert cpu_prefers_bf16(cache, measure=never, cpuinfo=str(tmp_path / "missing")) is False
    assert not cache.exists()


def test_cache_written_then_read_without_measuring(tmp_path, cpuinfo, capsys):
    cache = tmp_path / "home" / CACHE_NAME  # the home does not exist yet
    meter = Meter(149.0, 290.0)
    assert cpu_prefers_bf16(cache, measure=meter, cpuinfo=cpuinfo) is False
    assert meter.calls == 1
    assert "fp32 290 GFLOP/s" in capsys.readouterr().err
    stored = json.loads(cache.read_text())["matmul_gflops"]
    key = rates_key(cpuinfo)
    assert "Test CPU 9000" in key and stored == {key: {"bf16": 149.0, "fp32": 290.0}}
    assert cpu_prefers_bf16(cache, measure=never, cpuinfo=cpuinfo) is False
    assert capsys.readouterr().err == ""  # the note is printed once, when measuring


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"matmul_gflops": "fast"}', b"\xff\xfe\x00garbage",
                                     b'{"matmul_gflops": {"KEY": {"bf16": "fast", "fp32": 290}}}',
                                     b'{"matmul_gflops": {"KEY": {"bf16": 0, "fp32": 290}}}',
                                     b'{"matmul_gflops": {"KEY": {"bf16": Infinity, "fp32": 290}}}',
                                     b'{"matmul_gflops": {"KEY": {"bf16": true, "fp32": 290}}}'],
                         ids=["corrupt", "list", "foreign", "binary", "bad-rate", "zero-rate", "infinite-rate",
                              "bool-rate"])
def test_bad_cache_is_measured_again_and_rewritten(tmp_path, cpuinfo, content):
    cache = tmp_path / CACHE_NAME
    cache.write_bytes(content.replace(b"KEY", rates_key(cpuinfo).encode()))
    meter = Meter(842.0, 290.0)
    assert cpu_prefers_bf16(cache, measure=meter, cpuinfo=cpuinfo) is True
    assert meter.calls == 1
    assert json.loads(cache.read_text())["matmul_gflops"][rates_key(cpuinfo)] == {"bf16": 842.0, "fp32": 290.0}


def test_other_thread_count_is_measured_again(tmp_path, cpuinfo, monkeypatch):
    import torch

    cache = tmp_path / CACHE_NAME
    first = Meter(149.0, 290.0)
    assert cpu_prefers_bf16(cache, measure=first, cpuinfo=cpuinfo) is False
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads + 3)
    second = Meter(842.0, 290.0)
    assert cpu_prefers_bf16(cache, measure=second, cpuinfo=cpuinfo) is True
    assert second.calls == 1
    assert len(json.loads(cache.read_text())["matmul_gflops"]) == 2  # both kept: neither is measured again
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert cpu_prefers_bf16(cache, measure=never, cpuinfo=cpuinfo) is False


def test_same_cpu_name_with_amx_is_measured_again(tmp_path, cpuinfo):
    """Cloud VMs share a model name with and without AMX; a cache carried from one to the other (a disk
    image) must not carry its decision."""
    cache = tmp_path / CACHE_NAME
    assert cpu_prefers_bf16(cache, measure=Meter(149.0, 290.0), cpuinfo=cpuinfo) is False
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text(BF16_CPU.replace("avx512_bf16", "avx512_bf16 amx_bf16"))
    assert rates_key(str(amx)) != rates_key(cpuinfo)
    assert cpu_prefers_bf16(cache, measure=Meter(2700.0, 290.0), cpuinfo=str(amx)) is True
    assert cpu_prefers_bf16(cache, measure=never, cpuinfo=cpuinfo) is False


def test_unwritable_home_measures_without_caching(tmp_path, cpuinfo, capsys):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the home folder should be")
    cache = blocker / CACHE_NAME
    meter = Meter(842.0, 290.0)
    assert cpu_prefers_bf16(cache, measure=meter, cpuinfo=cpuinfo) is True
    assert cpu_prefers_bf16(cache, measure=meter, cpuinfo=cpuinfo) is True
    assert meter.calls == 2
    assert "not cached" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpuinfo", "home"]  # no stray temporary file


def test_no_cache_path_always_measures(cpuinfo):
    meter = Meter(149.0, 290.0)
    measured_rates(None, measure=meter, cpuinfo=cpuinfo)
    measured_rates(None, measure=meter, cpuinfo=cpuinfo)
    assert meter.calls == 2


def test_real_measurement_gives_positive_rates():
    rates = matmul_rates(size=64, repeats=2)
    assert set(rates) == {"bf16", "fp32"}
    assert all(isinstance(v, float) and v > 0 for v in rates.values())


def test_margin_is_above_one():
    assert BF16_MARGIN > 1.0


@pytest.fixture
def cpu_only(monkeypatch, tmp_path):
    """No GPU, the home in tmp_path, and cpu_prefers_bf16 replaced by a recorder."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    calls = []

    def prefers(cache, **_):
        calls.append(cache)
        return prefers.answer

    prefers.answer = True
    monkeypatch.setattr(precision, "cpu_prefers_bf16", prefers)
    return prefers, calls


def test_use_bf16_default_on_cpu_is_measured(cpu_only, tmp_path):
    from cai.train.model_io import use_bf16

    prefers, calls = cpu_only
    assert use_bf16(None) is True
    prefers.answer = False
    assert use_bf16(None) is False
    assert calls == [tmp_path / "home" / CACHE_NAME] * 2


def test_explicit_bf16_flag_wins(cpu_only):
    from cai.train.model_io import use_bf16

    prefers, calls = cpu_only
    prefers.answer = False
    assert use_bf16(True) is True
    prefers.answer = True
    assert use_bf16(False) is False
    assert calls == []


def test_hf_auto_dtype_on_cpu_is_measured_and_explicit_dtype_wins(cpu_only, tmp_path):
    import torch

    from cai.backends.hf import pick_dtype

    prefers, calls = cpu_only
    assert pick_dtype("auto", "cpu") is torch.bfloat16
    prefers.answer = False
    assert pick_dtype("auto", "cpu") is torch.float32
    assert calls == [tmp_path / "home" / CACHE_NAME] * 2
    prefers.answer = True
    assert pick_dtype("float32", "cpu") is torch.float32
    prefers.answer = False
    assert pick_dtype("bfloat16", "cpu") is torch.bfloat16
    assert len(calls) == 2


def test_cpu_compute_dtype_follows_the_measured_choice(cpu_only, tmp_path):
    prefers, calls = cpu_only
    assert precision.cpu_compute_dtype() == "bfloat16"
    prefers.answer = False
    assert precision.cpu_compute_dtype() == "float32"
    assert calls == [tmp_path / "home" / CACHE_NAME] * 2


def test_vllm_auto_dtype_on_cpu_is_the_measured_choice(cpu_only, vllm_start_args, tmp_path):
    """vLLM's own "auto" keeps a bf16 model in bf16, which a CPU without bf16 instructions emulates
    (4.9x slower than fp32 on an AVX2 EPYC); on a GPU "auto" is left to vLLM; an explicit dtype wins."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4,
                                                            "hidden_size": 128, "torch_dtype": "bfloat16"}))
    prefers, _ = cpu_only
    sized = {"kv_cache_memory_bytes": 1 << 27}
    prefers.answer = False
    assert vllm_start_args(tmp_path / "m", True, engine_args=sized)["dtype"] == "float32"
    assert vllm_start_args(tmp_path / "m", True, dtype="bfloat16", engine_args=sized)["dtype"] == "bfloat16"
    prefers.answer = True
    assert vllm_start_args(tmp_path / "m", True, engine_args=sized)["dtype"] == "bfloat16"
    prefers.answer = False
    assert vllm_start_args(tmp_path / "m", False, engine_args=sized)["dtype"] == "auto"


def test_cai_serve_auto_dtype_on_cpu_is_the_measured_choice(cpu_only, tmp_path):
    from cai.serve import ServeConfig, vllm_command

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4,
                                                            "hidden_size": 128}))
    prefers, _ = cpu_only

    def dtype(cfg, cuda=False):
        argv, _ = vllm_command(cfg, cuda=cuda)
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--dtype"]

    prefers.answer = False
    assert dtype(ServeConfig(model=f"vllm:{tmp_path / 'm'}")) == ["float32"]
    prefers.answer = True
    assert dtype(ServeConfig(model=f"vllm:{tmp_path / 'm'}")) == ["bfloat16"]
    assert dtype(ServeConfig(model=f"vllm:{tmp_path / 'm'}", dtype="float16")) == ["float16"]
    assert dtype(ServeConfig(model=f"vllm:{tmp_path / 'm'}"), cuda=True) == []
