"""How the served process learns its settings: ``bentoml serve`` imports serving/service.py in a
fresh process, so ``tuneops serve`` (or a container's environment) passes them as variables.

- ``TUNEOPS_SERVING_CONFIG``: the ``serving`` config section as JSON (unset = its defaults);
- ``TUNEOPS_SERVE_MODEL``: a model tag to serve, pinned (unset = follow the champion pointer);
  a bento carries its model's tag as the build argument ``model_tag`` as well, since
  ``bentoml serve BENTO`` on a machine does not apply a bento's environment (a container does);
- ``TUNEOPS_HOME`` / ``BENTOML_HOME``: where the pointer, the model store and the log live.
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from tuneops.components.config import ServingConfig
from tuneops.components.errors import ConfigError

SERVING_CONFIG_ENV = "TUNEOPS_SERVING_CONFIG"
MODEL_TAG_ENV = "TUNEOPS_SERVE_MODEL"
BENTO_MODEL_ARGUMENT = "model_tag"
# What ``bentoml serve`` is given to serve (``tuneops serve``, infrastructure validation).
SERVICE_IMPORT = "tuneops.serving.service:TuneopsClassifier"


def serving_config_from_env() -> ServingConfig:
    """The serving settings from ``TUNEOPS_SERVING_CONFIG``; ConfigError in one line if malformed."""
    raw = os.environ.get(SERVING_CONFIG_ENV, "").strip()
    if not raw:
        return ServingConfig()
    try:
        return ServingConfig.model_validate_json(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc']) or 'serving'}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"{SERVING_CONFIG_ENV}: {problems}") from None


def pinned_model() -> str | None:
    """The tag named by ``TUNEOPS_SERVE_MODEL`` or by the bento's ``model_tag`` argument, or None
    to serve (and follow) the champion. Call it in the serving process, where BentoML has set
    the bento's arguments."""
    tag = os.environ.get(MODEL_TAG_ENV, "").strip()
    if tag:
        return tag
    import bentoml

    return str(getattr(bentoml.use_arguments(), BENTO_MODEL_ARGUMENT, "") or "").strip() or None


def predictor_runtime(config: ServingConfig) -> str:
    """How the service loads its model (``Predictor.from_dir``'s ``runtime``): the int8 graph
    where packaging accepted it ("packaged"), or fp32 torch always."""
    return "packaged" if config.runtime == "auto" else "torch"


def serving_environment(config: ServingConfig, model_tag: str | None) -> dict[str, str]:
    """The variables a served process needs, to merge into its environment."""
    env = {SERVING_CONFIG_ENV: config.model_dump_json()}
    if model_tag:
        env[MODEL_TAG_ENV] = model_tag
    return env
