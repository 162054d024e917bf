from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from graphrec.data.validation import validate_events
from graphrec.embed.artifact import ModelArtifactError, is_model, load_model, read_model_info, save_model
from graphrec.embed.config import ModelConfig
from graphrec.embed.model import MultiBehaviourGCN
from graphrec.graph.snapshot import build_snapshot
from graphrec.graph.tasks import task_from_snapshot

FORBIDDEN = ("lightning", "pytorch_lightning", "training")


@pytest.fixture(scope="module")
def snapshot(small_shop):
    events = validate_events(small_shop.events).frame
    return build_snapshot(events, "2026-01-12", small_shop.items, small_shop.content)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, snapshot):
    task = task_from_snapshot(snapshot)
    torch.manual_seed(0)
    model = MultiBehaviourGCN(
        task.num_users, task.num_items, task.behaviours, task.target, ModelConfig(dim=8), task.feature_sizes()
    )
    out = tmp_path_factory.mktemp("artifact") / "model"
    metadata = save_model(
        model, out, snapshot, "snap/dir", "purchase", "item", {"epochs": 1}, {"epochs_run": 1}, metrics={"x": 1}
    )
    return model, out, metadata


def test_round_trip_restores_weights_and_metadata(saved, snapshot):
    model, out, metadata = saved
    loaded, read = load_model(out)
    assert read == metadata == json.loads((out / "model.json").read_text())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert read["snapshot"] == {
        "path": "snap/dir",
        "cutoff": snapshot.manifest["cutoff"],
        "input_fingerprint": snapshot.manifest.get("input_fingerprint", {}),
    }
    assert read["metrics"] == {"x": 1} and read["kind"] == "embedding_model" and "code_version" in read


def test_an_artifact_from_before_content_inputs_loads_with_content_for_every_item(saved, tmp_path):
    _, out, _ = saved
    assert load_model(out)[0].config.content_inputs == "cold"  # as saved
    old = tmp_path / "old"
    shutil.copytree(out, old)
    metadata = json.loads((old / "model.json").read_text())
    del metadata["hyperparameters"]["config"]["content_inputs"]
    (old / "model.json").write_text(json.dumps(metadata))
    assert load_model(old)[0].config.content_inputs == "all"  # what such a model was trained with


def test_an_artifact_from_before_the_cooccurrence_term_loads_without_it(snapshot, tmp_path):
    from safetensors.torch import load_file, save_file

    from graphrec.embed.artifact import WEIGHTS_FILE

    task = task_from_snapshot(snapshot)
    model = MultiBehaviourGCN(
        task.num_users, task.num_items, task.behaviours, task.target, ModelConfig(dim=8, cooccurrence=True)
    )
    out = tmp_path / "model"
    save_model(model, out, snapshot, "snap/dir", "purchase", "item", {"epochs": 1}, {"epochs_run": 1})
    assert load_model(out)[0].use_cooccurrence  # as saved
    old = tmp_path / "old"
    shutil.copytree(out, old)
    metadata = json.loads((old / "model.json").read_text())
    for key in ("cooccurrence", "cooccurrence_neighbours"):
        del metadata["hyperparameters"]["config"][key]
    (old / "model.json").write_text(json.dumps(metadata))
    weights = load_file(old / WEIGHTS_FILE)
    del weights["cooccurrence_weight"]
    save_file(weights, old / WEIGHTS_FILE)
    loaded, _ = load_model(old)
    assert not loaded.use_cooccurrence and not hasattr(loaded, "cooccurrence_weight")


def test_ids_name_every_embedding_row(saved, snapshot):
    model, out, _ = saved
    info = read_model_info(out)
    assert info.dim == 8 and (info.target_event, info.target_node) == ("purchase", "item")
    users = info.ids("user")
    assert len(users) == model.num_users
    assert users.to_list() == snapshot.ids_of("user", np.arange(model.num_users)).to_list()
    assert len(info.ids("item")) == model.num_items


def test_not_a_model_is_a_clear_error(tmp_path):
    assert not is_model(tmp_path)
    with pytest.raises(ModelArtifactError, match="not a model artifact"):
        load_model(tmp_path)
    (tmp_path / "model.json").write_text('{"kind": "embedding_version"}')
    with pytest.raises(ModelArtifactError, match="not an embedding model"):
        read_model_info(tmp_path)
    (tmp_path / "model.json").write_text('{"kind": "embedding_model", "format": 99}')
    with pytest.raises(ModelArtifactError, match="newer than this graphrec reads"):
        read_model_info(tmp_path)
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(ModelArtifactError, match="unreadable"):
        read_model_info(tmp_path)


def test_loading_a_model_imports_neither_lightning_nor_the_jobs(saved):
    _, out, _ = saved
    code = textwrap.dedent(
        f"""
        import sys
        from graphrec.embed.artifact import load_model
        model, _ = load_model({str(out)!r})
        assert model.num_users > 0
        print(sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r}))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
