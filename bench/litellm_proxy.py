"""LiteLLM's proxy, the reference for `/v1/responses`: installed from PyPI into its own venv
(bench/.litellm-venv, git-ignored, kept across runs) and run as one process with one worker
in front of the same OpenAI simulator as Parley, with a minimal config.

Nothing of LiteLLM's leaves the machine: the URLs it would fetch (model prices, beta headers,
presets, blog) point at a closed loopback port, and it reads its bundled price map instead.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bench.serve import Served, serve_process
from tests.servers import free_port

VENV = Path(__file__).with_name(".litellm-venv")
# A release that installs cleanly here. Pinned exactly: 1.107.0 was a compromised release
# (withdrawn from PyPI), so never a range that could reach a bad upload.
VERSION = "1.106.12"
MASTER_KEY = "sk-litellm-bench"
NOWHERE = "http://127.0.0.1:9/"  # the discard port, closed: a fetch fails at once, locally

ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_MODEL_COST_MAP_URL": NOWHERE,
    "LITELLM_ANTHROPIC_BETA_HEADERS_URL": NOWHERE,
    "LITELLM_AUTOROUTER_PRESETS_URL": NOWHERE,
    "LITELLM_BLOG_POSTS_URL": NOWHERE,
    "LITELLM_LOG": "ERROR",
    "LITELLM_MODE": "PRODUCTION",  # no .env loading, no dev banners
}


def ensure_installed() -> Path:
    """The venv's `litellm`, installing it on first use; exits with a clear message if it
    cannot be installed."""
    litellm, marker = VENV / "bin" / "litellm", VENV / ".bench-version"
    if litellm.exists() and marker.exists() and marker.read_text().strip() == VERSION:
        return litellm
    print(f"installing litellm[proxy]=={VERSION} into {VENV} (once) …", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1200, check=False)
        if done.returncode != 0:
            raise SystemExit(
                f"could not install LiteLLM ({' '.join(step)} exited {done.returncode}):\n"
                f"{done.stderr[-2000:]}\nRun with --no-litellm to benchmark Parley alone."
            )
    marker.write_text(VERSION + "\n")
    return litellm


def config(upstream_v1: str) -> str:
    """One model, `default`, routed to the simulator as an OpenAI model; a master key, so
    that LiteLLM checks a bearer token as Parley does."""
    return (
        "model_list:\n"
        "  - model_name: default\n"
        "    litellm_params:\n"
        "      model: openai/gpt-5-mini\n"
        f"      api_base: {upstream_v1}\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {MASTER_KEY}\n"
    )


@contextlib.asynccontextmanager
async def litellm_proxy(upstream_v1: str) -> AsyncIterator[Served]:
    litellm = ensure_installed()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(config(upstream_v1))
        port = free_port()
        argv = [str(litellm), "--config", str(path), "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--num_workers", "1"]
        async with serve_process(
            "litellm",
            argv,
            port=port,
            env=ENV,
            cwd=folder,
            ready_path="/health/readiness",
            timeout=180,
        ) as served:
            yield served
