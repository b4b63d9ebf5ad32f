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
