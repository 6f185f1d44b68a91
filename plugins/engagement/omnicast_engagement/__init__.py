"""Omnicast engagement models: recommendations, send time, bandits, best channel.

The estimators live in their own modules (:mod:`.recommend`, :mod:`.send_time`,
:mod:`.bandit`, :mod:`.best_channel`) and import numpy, scipy and scikit-learn; this module
and the plugin glue (:mod:`.plugin`) import none of them, so loading the plugin on the HTTP
path stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable

from chalicelib.plugin_api import Model, hookimpl

from .plugin import MODELS


@hookimpl
def register_models(register: Callable[[type[Model]], None]) -> None:
    for model in MODELS:
        register(model)
