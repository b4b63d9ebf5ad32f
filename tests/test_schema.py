"""client-config/schema.json and every file derived from it must match the settings object.

When this fails after a setting was added or changed: run `make schema` (or
`python client-config/generate.py`) and commit what it rewrites.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from logitls.settings import Settings, json_schema, merge_settings

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "client-config"


def _load_generator():
    spec = importlib.util.spec_from_file_location("client_config_generate", CLIENT / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


def test_every_derived_file_is_up_to_date():
    stale = generate.out_of_date()
    assert not stale, ("out of date with server/logitls/settings.py: "
                       + ", ".join(str(p.relative_to(ROOT)) for p in stale) + "; run `make schema`")


def test_schema_json_is_what_logitls_schema_prints():
    printed = subprocess.run([sys.executable, "-m", "logitls", "schema"], capture_output=True, text=True, check=True)
    assert (CLIENT / "schema.json").read_text(encoding="utf-8") == printed.stdout
    assert json.loads(printed.stdout) == json_schema()


def test_check_mode_exit_status():
    ok = subprocess.run([sys.executable, str(CLIENT / "generate.py"), "--check"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The generator pointed at copies of the derived files, so the tests can spoil them."""
    targets = {}
    for path, render in generate.TARGETS.items():
        copy_path = tmp_path / path.relative_to(ROOT)
        copy_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, copy_path)
        targets[copy_path] = render
    monkeypatch.setattr(generate, "TARGETS", targets)
    return tmp_path


def test_a_new_setting_makes_every_derived_file_stale(scratch, monkeypatch):
    real = json_schema()

    def with_new_setting():
        schema = copy.deepcopy(real)
        schema["properties"]["lens"] = {"type": "object", "description": "Code lens.", "additionalProperties": False,
                                        "properties": {"enabled": {"type": "boolean", "default": False,
                                                                   "description": "Show lenses."}}}
        return schema

    monkeypatch.setattr(generate, "json_schema", with_new_setting)
    stale = generate.out_of_date()
    assert {p.name for p in stale} == {"schema.json", "package.json", "languages.toml", "LSP-logitls.sublime-settings",
                                       "README.md"}
    assert generate.main([]) == 0  # regenerate the copies
    assert generate.out_of_date() == {}
    package = json.loads((scratch / "client-config/vscode/package.json").read_text())
    assert package["contributes"]["configuration"]["properties"]["logitls.lens.enabled"]["default"] is False
    assert "| `lens.enabled` | boolean | `false` | Show lenses. |" in (scratch / "README.md").read_text()
    helix = tomllib.loads((scratch / "client-config/helix/languages.toml").read_text())
    assert helix["language-server"]["logitls"]["config"]["logitls"]["lens"] == {"enabled": False}


def test_a_hand_edit_is_detected_and_only_the_generated_part_is_rewritten(scratch):
    readme = scratch / "README.md"
    text = readme.read_text()
    readme.write_text(text.replace("| `topN` |", "| `topn` |"))
    package = scratch / "client-config/vscode/package.json"
    data = json.loads(package.read_text())
    del data["contributes"]["configuration"]["properties"]["logitls.inline.enabled"]
    package.write_text(json.dumps(data, indent=2) + "\n")
    assert {p.name for p in generate.out_of_date()} == {"README.md", "package.json"}
    assert generate.main(["--check"]) == 1
    generate.main([])
    assert readme.read_text() == text
    assert json.loads(package.read_text())["contributes"]["commands"] == data["contributes"]["commands"]


def _leaves(props, prefix=""):
    for name, entry in props.items():
        if entry.get("type") == "object":
            yield from _leaves(entry["properties"], f"{prefix}{name}.")
        else:
            yield prefix + name, entry


def _flatten(obj, prefix=""):
    for name, value in obj.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield prefix + name, value


def _schema_defaults():
    return dict((name, entry["default"]) for name, entry in _leaves(json_schema()["properties"]))


def test_helix_languages_toml_parses_and_holds_every_setting():
    helix = tomllib.loads((CLIENT / "helix/languages.toml").read_text(encoding="utf-8"))
    server = helix["language-server"]["logitls"]
    assert [server["command"], *server["args"]] == ["logitls", "serve"]
    settings = server["config"]["logitls"]
    assert dict(_flatten(settings)) == _schema_defaults()
    assert merge_settings(Settings(), settings) == (Settings(), [])  # the server takes them as they are
    assert all("logitls" in language["language-servers"] for language in helix["language"])


def test_sublime_settings_parse_and_hold_every_setting():
    sublime = json.loads((CLIENT / "sublime/LSP-logitls.sublime-settings").read_text(encoding="utf-8"))
    assert sublime["command"] == ["logitls", "serve"]
    assert sublime["selector"]
    settings = sublime["settings"]["logitls"]
    at_start = sublime["initializationOptions"]["logitls"]
    assert {**dict(_flatten(settings)), **dict(_flatten(at_start))} == _schema_defaults()
    # the settings the server takes at start only are where Sublime sends them at start
    assert set(at_start) == MACHINE_ONLY and not set(settings) & MACHINE_ONLY
    assert merge_settings(Settings(), at_start) == (Settings(), [])
    assert merge_settings(Settings(), settings, at_start=False) == (Settings(), [])


def test_vscode_contributes_every_setting_with_the_schema_default():
    package = json.loads((CLIENT / "vscode/package.json").read_text(encoding="utf-8"))
    properties = package["contributes"]["configuration"]["properties"]
    for name, entry in _leaves(json_schema()["properties"]):
        prop = properties[f"logitls.{name}"]
        assert (prop["type"], prop["default"]) == (entry["type"], entry["default"]), name
        assert prop.get("enum") == entry.get("enum"), name
    assert properties["logitls.server.command"]["default"] == "logitls serve"


# Settings that run code or decide where a secret goes: never from a repository's workspace settings.
MACHINE_ONLY = {"trustRemoteCode", "endpoint", "apiKeyEnv"}


def test_settings_that_run_code_or_send_secrets_are_scoped_to_the_machine():
    schema = dict(_leaves(json_schema()["properties"]))
    assert {name for name, entry in schema.items() if entry.get("scope") == "machine"} == MACHINE_ONLY
    assert schema["model"]["scope"] == "machine-overridable"  # a trusted workspace may pick its model
    on_disk = dict(_leaves(json.loads((CLIENT / "schema.json").read_text(encoding="utf-8"))["properties"]))
    assert {name: entry.get("scope") for name, entry in on_disk.items()} == \
        {name: entry.get("scope") for name, entry in schema.items()}


def test_vscode_takes_the_scopes_and_restricts_them_in_untrusted_workspaces():
    package = json.loads((CLIENT / "vscode/package.json").read_text(encoding="utf-8"))
    properties = package["contributes"]["configuration"]["properties"]
    for name, entry in _leaves(json_schema()["properties"]):
        assert properties[f"logitls.{name}"].get("scope") == entry.get("scope"), name
    # what starts the server is the extension's own: the user's settings only
    assert properties["logitls.server.command"]["scope"] == properties["logitls.server.venv"]["scope"] == "machine"
    trust = package["capabilities"]["untrustedWorkspaces"]
    assert trust["supported"] == "limited"
    assert set(trust["restrictedConfigurations"]) == {
        key for key, prop in properties.items() if prop.get("scope") in ("machine", "machine-overridable")}
    assert {"logitls.trustRemoteCode", "logitls.endpoint", "logitls.apiKeyEnv", "logitls.model",
            "logitls.server.command", "logitls.server.venv"} <= set(trust["restrictedConfigurations"])


def test_a_scope_set_in_settings_py_reaches_every_file_that_carries_it(scratch, monkeypatch):
    real = json_schema()

    def topn_machine():
        schema = copy.deepcopy(real)
        schema["properties"]["topN"]["scope"] = "machine"
        return schema

    monkeypatch.setattr(generate, "json_schema", topn_machine)
    assert {p.name for p in generate.out_of_date()} == {"schema.json", "package.json", "README.md",
                                                        "LSP-logitls.sublime-settings"}
    generate.main([])
    package = json.loads((scratch / "client-config/vscode/package.json").read_text())
    assert package["contributes"]["configuration"]["properties"]["logitls.topN"]["scope"] == "machine"
    assert "logitls.topN" in package["capabilities"]["untrustedWorkspaces"]["restrictedConfigurations"]
    assert "User settings only" in next(line for line in (scratch / "README.md").read_text().splitlines()
                                        if line.startswith("| `topN` |"))


def test_an_unknown_scope_is_refused():
    from logitls.settings import setting

    with pytest.raises(ValueError, match="scope"):
        setting(1, "x", scope="workspace")


def test_machine_settings_are_taken_at_start_only():
    # At initialize (what the editor starts the server with, from the user's own configuration): applied.
    started, problems = merge_settings(Settings(), {"trustRemoteCode": True, "endpoint": "https://team.example/v1",
                                                    "topN": 3})
    assert (started.trust_remote_code, started.endpoint, started.top_n, problems) == \
        (True, "https://team.example/v1", 3, [])
    # Later (workspace/configuration, didChangeConfiguration: in Emacs, a repository's .dir-locals.el):
    # a change to a machine-scoped setting is ignored and said so; the others apply.
    wire = {"trustRemoteCode": False, "endpoint": "https://elsewhere.example", "apiKeyEnv": "GITHUB_TOKEN",
            "model": "someone/model", "topN": 4}
    later, problems = merge_settings(Settings(), wire, at_start=False)
    assert (later.trust_remote_code, later.endpoint, later.api_key_env) == (False, Settings().endpoint,
                                                                          Settings().api_key_env)
    assert (later.model, later.top_n) == ("someone/model", 4)  # model: machine-overridable, a workspace may
    assert sorted(p.split(" =")[0] for p in problems) == ["ignored apiKeyEnv", "ignored endpoint"]
    assert merge_settings(Settings(), {"trustRemoteCode": True}, at_start=False)[0].trust_remote_code is False
    # the same value again (an editor that sends at start and answers the pull alike) is no problem
    assert merge_settings(started, {"trustRemoteCode": True, "endpoint": "https://team.example/v1"},
                          at_start=False) == (started, [])
