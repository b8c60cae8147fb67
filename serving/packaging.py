"""Building the serving bento: serving/bentofile.yaml with one model's tag filled in.

The bento serves exactly that model (its ``model_tag`` build argument and, in a container, the
``TUNEOPS_SERVE_MODEL`` variable name it), so a
container built from it is immutable; switching models in production is a new image and a
rolling update, while ``tuneops serve`` on a machine follows the champion pointer instead.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import yaml

from tuneops.components import registry
from tuneops.components.errors import StageError
from tuneops.components.paths import SOURCE_ROOT
from tuneops.serving.settings import BENTO_MODEL_ARGUMENT, MODEL_TAG_ENV

BENTOFILE = Path(__file__).resolve().parent / "bentofile.yaml"
# The service imports tuneops.*, so the bento's source must hold a ``tuneops/`` folder: the build
# context is a scratch folder with the package copied in under that name (the include list in the
# bentofile then picks the serving side of it).
PACKAGE_PARTS = ("__init__.py", "components", "serving")


def bento_build_options(model_tag: str) -> dict:
    """serving/bentofile.yaml with ``models`` and the pinned-model variable set to ``model_tag``."""
    options = yaml.safe_load(BENTOFILE.read_text())
    options["models"] = [model_tag]
    envs = [env for env in options.get("envs") or [] if env.get("name") != MODEL_TAG_ENV]
    options["envs"] = [*envs, {"name": MODEL_TAG_ENV, "value": model_tag}]
    return options


def build_bento(model_tag: str | None = None) -> str:
    """Build the serving bento for ``model_tag`` (default: the champion); returns the bento's tag.

    The model is verified first (complete files, checksums), like a promotion.
    """
    import bentoml

    if model_tag is None:
        current = registry.champion()
        if current is None:
            raise StageError("no champion to build a bento for: `tuneops promote TAG`, or pass --model TAG")
        model_tag = current.tag
    release = registry.verify_model(model_tag)
    options = bento_build_options(release.tag)
    options.setdefault("labels", {})["model_tag"] = release.tag.replace(":", "_")
    options["labels"]["run_id"] = str(release.run_id or "none")
    with tempfile.TemporaryDirectory(prefix="tuneops-bento-") as scratch:
        context = Path(scratch)
        _stage_package(context / "tuneops")
        bentofile = context / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(options, sort_keys=False))
        bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(context),
                                               args={BENTO_MODEL_ARGUMENT: release.tag})
    return str(bento.tag)


def _stage_package(target: Path) -> None:
    """Copy the tuneops package (without caches) to ``target``, the bento's ``tuneops/``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    target.mkdir(parents=True)
    for part in PACKAGE_PARTS:
        source = SOURCE_ROOT / part
        if source.is_dir():
            shutil.copytree(source, target / part, ignore=ignore)
        else:
            shutil.copy2(source, target / part)
