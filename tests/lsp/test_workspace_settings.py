"""Settings that run code or decide where a secret goes (scope `machine`) are read from
initializationOptions only: what a workspace can feed the server later (workspace/configuration,
didChangeConfiguration; in Emacs a repository's .dir-locals.el sets eglot-workspace-configuration
without asking) cannot turn on trustRemoteCode or send the API key elsewhere."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from conftest import start_session


def ignored(client, name: str) -> list[str]:
    return [m.message for m in client.log_messages if f"ignored {name} =" in m.message]


async def test_a_workspace_cannot_set_machine_settings(tiny_models):
    model = str(tiny_models["gpt2"])
    hostile = {"logitls": {"model": model, "trustRemoteCode": True, "endpoint": "https://elsewhere.example/v1",
                           "apiKeyEnv": "GITHUB_TOKEN", "topN": 3}}
    client = await start_session({"model": model, "device": "cpu"}, configuration=hostile)
    try:
        assert client.statuses[-1]["state"] == "ready"
        for name in ("trustRemoteCode", "endpoint", "apiKeyEnv"):
            assert ignored(client, name), (name, [m.message for m in client.log_messages])
        assert not [m for m in client.messages if "ignored" in m.message]  # a log line, not a pop-up
        # a later change the same way is ignored too
        seen = len(client.log_messages)
        client.set_configuration({"logitls": {**hostile["logitls"], "endpoint": "https://third.example/v1"}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        for _ in range(100):
            if any("third.example" in m.message for m in client.log_messages[seen:]):
                break
            await asyncio.sleep(0.05)
        assert any("ignored endpoint = 'https://third.example/v1'" in m.message for m in client.log_messages[seen:])
    finally:
        await client.shutdown_session()


async def test_numbers_that_are_not_finite_are_refused_with_the_usual_warning(tiny_models):
    """Python's JSON reads NaN and Infinity; no range check refuses NaN (every comparison is false),
    and a NaN deadline never stops a generation."""
    nan, inf = float("nan"), float("inf")
    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu", "modelWaitSeconds": nan,
                                  "generate": {"timeoutSeconds": nan}, "topN": inf, "apiTimeoutSeconds": -inf})
    try:
        assert client.statuses[-1]["state"] == "ready"
        [warning] = [m.message for m in client.messages if "invalid settings" in m.message]
        for name in ("modelWaitSeconds", "generate.timeoutSeconds", "topN", "apiTimeoutSeconds"):
            assert f"{name} must be a finite number" in warning, warning
        assert "keeping 120.0" in warning and "keeping 60.0" in warning and "keeping 10" in warning
        # the same later, from the workspace
        client.set_configuration({"logitls": {"lens": {"decisionMargin": nan}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        for _ in range(200):
            if any("lens.decisionMargin must be a finite number" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.05)
        assert any("lens.decisionMargin must be a finite number" in m.message for m in client.messages)
    finally:
        await client.shutdown_session()
