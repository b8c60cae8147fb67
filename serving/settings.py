"""How the served process learns its settings: ``bentoml serve`` imports serving/service.py in a
fresh process, so ``tuneops serve`` (or a container's environment) passes them as variables.

- ``TUNEOPS_SERVING_CONFIG``: the ``serving`` config section as JSON (unset = its defaults);
- ``TUNEOPS_SERVE_MODEL``: a model tag to serve, pinned (unset = follow the champion pointer);
- ``TUNEOPS_HOME`` / ``BENTOML_HOME``: where the pointer, the model store and the log live.
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from components.config import ServingConfig
from components.errors import ConfigError

SERVING_CONFIG_ENV = "TUNEOPS_SERVING_CONFIG"
MODEL_TAG_ENV = "TUNEOPS_SERVE_MODEL"


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


def pinned_model_from_env() -> str | None:
    """The tag named by ``TUNEOPS_SERVE_MODEL``, or None to serve (and follow) the champion."""
    return os.environ.get(MODEL_TAG_ENV, "").strip() or None


def serving_environment(config: ServingConfig, model_tag: str | None) -> dict[str, str]:
    """The variables a served process needs, to merge into its environment."""
    env = {SERVING_CONFIG_ENV: config.model_dump_json()}
    if model_tag:
        env[MODEL_TAG_ENV] = model_tag
    return env
