"""Reading and writing the Rasa YAML (on copies of nlu_data/), and our own validation checks."""

from __future__ import annotations

import shutil

import pytest

from api.errors import Conflict
from api.paths import NLU_DATA, RASA_REQUIREMENTS, nlu_data_hash
from api.studio import nlu_files
from api.studio.evaluation import metrics, stratified_split
from api.studio.nlu_files import NluFiles, annotated_entities, plain_text
from api.studio.training import data_hash
from api.studio.validation import check_data, normalized, within_edit_distance


@pytest.fixture
def files(tmp_path) -> NluFiles:
    shutil.copytree(NLU_DATA, tmp_path / "nlu_data")
    return NluFiles(tmp_path / "nlu_data")


def test_an_edit_touches_only_its_lines_and_keeps_comments_order_and_indentation(files):
    before = (files.root / "nlu/entities.yml").read_text()
    version = files.version("nlu/entities.yml")
    files.edit("nlu/entities.yml", version, nlu_files.set_resource("synonym", "credit", ["信用卡", "贷记卡", "信用咔"]))
    after = (files.root / "nlu/entities.yml").read_text()
    removed = [line for line in before.splitlines() if line not in after.splitlines()]
    assert removed and all(line.startswith("    - ") for line in removed)
    assert [line for line in after.splitlines() if line.startswith("#")] == [
        line for line in before.splitlines() if line.startswith("#")
    ]
    # An edit that changes nothing writes the same bytes: the round trip itself is lossless.
    for rel in files.data_files():
        original = (files.root / rel).read_bytes()
        files.edit(rel, files.version(rel), lambda _doc: None)
        assert (files.root / rel).read_bytes() == original, rel


def test_a_stale_version_is_refused_and_nothing_is_written(files):
    version = files.version("nlu/chitchat.yml")
    files.edit("nlu/chitchat.yml", version, nlu_files.add_example("greet", "您好呀云厅"))
    before = (files.root / "nlu/chitchat.yml").read_bytes()
    with pytest.raises(Conflict) as refused:
        files.edit("nlu/chitchat.yml", version, nlu_files.add_example("greet", "哈喽哈喽"))
    assert refused.value.code == "stale_version"
    assert (files.root / "nlu/chitchat.yml").read_bytes() == before


def test_paths_outside_the_data_files_are_refused(files):
    for rel in ("../pyproject.toml", "config.yml", "nlu/../../x.yml", "nlu/notes.txt", "domain.yml"):
        with pytest.raises(Exception) as refused:
            files.edit(rel, None, nlu_files.add_example("greet", "x"))
        assert getattr(refused.value, "code", None) == "bad_file", rel


def test_annotations_are_read_in_every_rasa_form():
    text = '[信用卡](card_type)尾号[1234](card_last4)，[储蓄卡]{"entity": "card_type", "value": "debit"}'
    assert annotated_entities(text) == ["card_type", "card_last4", "card_type"]
    assert plain_text(text) == "信用卡尾号1234，储蓄卡"
    assert normalized("Hello， [你好](x)!") == "hello你好"


def test_our_checks_find_duplicates_near_duplicates_thin_intents_and_undeclared_entities(files):
    files.edit("nlu/chitchat.yml", None, nlu_files.add_example("greet", "查一下本期账单"))  # also bill_inquiry's?
    files.edit("nlu/chitchat.yml", None, nlu_files.add_example("greet", "你好我的[小金卡](gold_card)"))
    files.edit("nlu/studio.yml", None, nlu_files.add_example("points", "积分怎么兑换"))
    snap = files.snapshot()
    snap.intents["bill_inquiry"].append(nlu_files.Example("bill_inquiry", "查一下本期帐单", "nlu/cards.yml"))
    issues = check_data(snap, min_examples=10, scenario_intents={"greet"})
    codes = {(i.code, i.intent) for i in issues}
    assert ("undeclared_entity", "greet") in codes
    assert ("too_few_examples", "points") in codes
    assert ("intent_not_in_domain", "points") in codes
    assert ("no_scenario", "points") in codes
    assert any(i.code == "near_duplicate" and {i.intent, i.other_intent} == {"greet", "bill_inquiry"} for i in issues)
    assert within_edit_distance("查一下本期账单", "查一下本期帐单", 1)
    assert not within_edit_distance("查一下本期账单", "查一下上期帐单", 1)


def test_the_model_key_matches_the_launchers_and_the_split_is_stratified(files):
    assert data_hash(NLU_DATA, RASA_REQUIREMENTS) == nlu_data_hash()
    snap = files.snapshot()
    train, test = stratified_split(snap, fraction=0.2, seed="x")
    for intent, examples in snap.intents.items():
        assert 1 <= len(test[intent]) < len(examples) and not set(test[intent]) & set(train[intent])
    assert stratified_split(snap, fraction=0.2, seed="x") == (train, test)  # deterministic


def test_metrics_per_intent_and_confusion_pairs():
    rows = [("a1", "a", "a"), ("a2", "a", "b"), ("b1", "b", "b"), ("b2", "b", "b"), ("c1", "c", "nlu_fallback")]
    result = metrics(rows)
    assert result["intents"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert result["intents"]["b"]["precision"] == 0.6667 and result["intents"]["c"]["f1"] == 0.0
    assert result["confusions"][0] == {"intent": "a", "predicted": "b", "count": 1, "examples": ["a2"]}
    assert result["labels"] == ["a", "b", "c", "nlu_fallback"] and result["matrix"][0] == [1, 1, 0, 0]
