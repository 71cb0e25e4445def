"""``robert config set|get|list|delete`` edits the client config that /register and /status return."""

from __future__ import annotations

import uuid

from pymongo import MongoClient

from robert_server.cli import main


def test_config_commands(mongo_uri, monkeypatch, capsys) -> None:
    name = f"t_cfg_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ROBERT_MONGODB_URI", mongo_uri)
    monkeypatch.setenv("ROBERT_MONGODB_DATABASE", name)
    try:
        assert main(["config", "set", "app.checkStatusFrequency", "24"]) == 0
        assert main(["config", "set", "app.label", "hello", "--string"]) == 0
        assert main(["config", "set", "app.list", '[1, "a"]']) == 0
        capsys.readouterr()
        assert main(["config", "get", "app.checkStatusFrequency"]) == 0
        assert capsys.readouterr().out.strip() == "24"
        assert main(["config", "list"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out == ["app.checkStatusFrequency = 24", 'app.label = "hello"', 'app.list = [1, "a"]']
        assert main(["config", "delete", "app.label"]) == 0
        assert main(["config", "get", "app.label"]) == 1
        with MongoClient(mongo_uri) as client:
            docs = list(client[name]["config"].find({}, sort=[("_id", 1)]))
        assert [d["_id"] for d in docs] == ["app.checkStatusFrequency", "app.list"]
    finally:
        with MongoClient(mongo_uri) as client:
            client.drop_database(name)
