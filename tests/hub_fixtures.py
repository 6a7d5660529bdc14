"""The `hub` fixture: the real Hub clients pointed at an in-memory `LoopbackHub`, with a fresh cache per test."""

import atexit
from functools import cache
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from .hub_server import LoopbackHub

TOKEN = "hf_loopback_token"


@cache
def session_server() -> LoopbackHub:
    """The one server of the test session, started on first use and stopped at exit.

    A cached function rather than a session fixture, so that importing `hub` alone is enough.
    """
    server = LoopbackHub().start()
    atexit.register(server.stop)
    return server


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Yields `.url`, `.api` (an `HfApi` on the loopback server) and `.server`; all downloads go to a fresh HF_HOME.

    huggingface_hub (and datasets) read the endpoint and the cache paths from the environment at import time,
    so the module constants derived from them are patched too, not only the environment variables.
    """
    from datasets import config as datasets_config
    from huggingface_hub import HfApi, constants

    server = session_server()
    url, home = server.url, tmp_path / "hf_home"
    hub_cache, assets_cache = str(home / "hub"), str(home / "assets")
    environment = {
        "HF_ENDPOINT": url,
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": assets_cache,
        "HF_HUB_DISABLE_XET": "1",  # hf_xet is installed: without this, uploads would need a Xet CAS server
    }
    hub_constants = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {urlsplit(url).hostname},
        "HF_HOME": str(home),
        "HF_HUB_CACHE": hub_cache,
        "HUGGINGFACE_HUB_CACHE": hub_cache,
        "HF_ASSETS_CACHE": assets_cache,
        "HUGGINGFACE_ASSETS_CACHE": assets_cache,
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
    }
    datasets_constants = {
        "HF_ENDPOINT": url,
        "HUB_DATASETS_URL": url + "/datasets/{repo_id}/resolve/{revision}/{path}",
        "HF_DATASETS_CACHE": home / "datasets",
        "DOWNLOADED_DATASETS_PATH": home / "datasets" / "downloads",
        "HF_HUB_OFFLINE": False,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for module, values in ((constants, hub_constants), (datasets_config, datasets_constants)):
        for name, value in values.items():
            monkeypatch.setattr(module, name, value)
    return SimpleNamespace(url=url, api=HfApi(endpoint=url, token=TOKEN), server=server)
