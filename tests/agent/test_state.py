"""The state file: atomic, bounded, and what a restart reads back."""

from __future__ import annotations

import json
import os

import pytest

from spot_agent.state import FINISHED_LIMIT, AgentState


def test_executing_done_acknowledged_survive_a_reload(tmp_path):
    path = tmp_path / "s" / "state.json"
    state = AgentState.load(path)
    state.begin({"id": "c1", "command_type": "promote"}, "2030-01-01T00:00:00Z")
    assert AgentState.load(path)["current"]["command_id"] == "c1"  # on disk before anything runs
    state.finish("c1", {"success": True, "message": "ok"})
    again = AgentState.load(path)
    assert again["current"] is None and again.finished("c1")["success"] is True
    assert list(again["unacked"]) == ["c1"]
    again.acknowledge("c1")
    assert AgentState.load(path)["unacked"] == {} and AgentState.load(path).finished("c1")


def test_finished_ids_are_bounded_but_unacknowledged_results_are_kept(tmp_path):
    state = AgentState(tmp_path / "state.json")
    for i in range(FINISHED_LIMIT + 50):
        state.finish(f"c{i}", {"success": True})
        if i:
            state.acknowledge(f"c{i}")
    assert len(state["finished"]) == FINISHED_LIMIT
    assert state["finished"][0]["command_id"] == "c50"
    # c0 fell out of the bounded list but was never acknowledged: still reported, still known
    assert state.finished("c0") is not None and "c0" in AgentState.load(state.path)["unacked"]


def test_a_failed_write_leaves_the_previous_file_intact_and_no_temp_files(tmp_path, monkeypatch):
    state = AgentState(tmp_path / "state.json")
    state.update(agent_id="a-1")
    before = state.path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        state.update(agent_id="a-2")
    monkeypatch.undo()
    assert state.path.read_text() == before and json.loads(before)["agent_id"] == "a-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
