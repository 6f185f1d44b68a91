"""An explicit artifact format for the engagement estimators: no pickle, no code on load.

An artifact is a numpy ``.npz`` archive read with ``allow_pickle=False``: every fitted
attribute that is an array is stored as an array (sparse matrices as their CSR parts, ids as
fixed-width unicode), everything else (hyper-parameters, small fitted values) as one JSON
document. Loading builds the class named by the caller, checks the archive was written by that
class, and sets the attributes back: a tampered artifact can hold wrong numbers, never code.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, TypeVar

import numpy as np
from scipy import sparse

FORMAT = "omnicast-engagement/1"
FITTED_NAME = re.compile(r"[a-z][a-z0-9_]*_")
T = TypeVar("T", bound="ExplicitArtifact")


class ArtifactError(ValueError):
    """The bytes are not an artifact of the expected estimator."""


class ExplicitArtifact:
    """Mixin: ``to_bytes()`` / ``from_bytes(data)`` over the trailing-underscore attributes."""

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {}
        state: dict[str, Any] = {}
        sparse_names: list[str] = []
        for name, value in vars(self).items():
            if not name.endswith("_") or name.startswith("_"):
                continue
            if sparse.issparse(value):
                csr = sparse.csr_matrix(value)
                arrays[f"{name}.data"] = csr.data
                arrays[f"{name}.indices"] = csr.indices
                arrays[f"{name}.indptr"] = csr.indptr
                arrays[f"{name}.shape"] = np.asarray(csr.shape, dtype=np.int64)
                sparse_names.append(name)
            elif isinstance(value, np.ndarray):
                arrays[name] = value.astype(str) if value.dtype == object else value
            else:
                state[name] = _jsonable(value, name)
        meta = {
            "format": FORMAT,
            "class": type(self).__name__,
            "params": {k: _jsonable(v, k) for k, v in self.get_params(deep=False).items()},  # type: ignore[attr-defined]
            "state": state,
            "sparse": sparse_names,
        }
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls: type[T], data: bytes) -> T:
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            meta = json.loads(archive["__meta__"].tobytes().decode())
        except Exception as exc:  # noqa: BLE001 - anything unreadable is the same error to the caller
            raise ArtifactError(f"not an engagement artifact: {type(exc).__name__}") from None
        if meta.get("format") != FORMAT or meta.get("class") != cls.__name__:
            raise ArtifactError(f"artifact holds {meta.get('class')!r} ({meta.get('format')}), not {cls.__name__}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        allowed = set(cls().get_params(deep=False))  # type: ignore[call-arg, attr-defined]
        if not set(params) <= allowed:
            raise ArtifactError(f"unknown parameter(s) {sorted(set(params) - allowed)} for {cls.__name__}")
        obj = cls(**params)
        arrays = [k for k in archive.files if k != "__meta__" and "." not in k]
        for name in [*meta["state"], *meta["sparse"], *arrays]:
            if not FITTED_NAME.fullmatch(name):  # only learned attributes, never dunders or methods
                raise ArtifactError(f"{name!r} is not a fitted attribute name")
        try:
            for name, value in meta["state"].items():
                setattr(obj, name, value)
            for name in meta["sparse"]:
                shape = tuple(int(x) for x in archive[f"{name}.shape"])
                parts = (archive[f"{name}.data"], archive[f"{name}.indices"], archive[f"{name}.indptr"])
                setattr(obj, name, sparse.csr_matrix(parts, shape=shape))
            for key in arrays:
                setattr(obj, key, archive[key])
        except (KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"damaged artifact: {type(exc).__name__}") from None
        return obj


def _jsonable(value: Any, name: str) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return [_jsonable(v, name) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v, name) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ArtifactError(f"{name}: {type(value).__name__} has no explicit artifact form")
