"""The same data gives the same figures (DIET's `random_seed` in nlu_data/config.yml, and a split seeded by the
data's hash), and the model `make run` ships is evaluated like any version."""

from __future__ import annotations

import asyncio
import shutil
import time

import httpx
from ruamel.yaml import YAML

from api.paths import NLU_DATA, RASA_BIN, RASA_ENV, RASA_REQUIREMENTS
from api.studio.nlu_files import NluFiles, plain_text
from api.studio.training import Trainer
from tests.studio.conftest import StudioClient, StudioStack

INTENTS = ("greet", "thanks", "goodbye", "report_loss")


def small_copy(dest):
    """Four intents of the real data, twelve examples each (annotations dropped), with the real (seeded) pipeline."""
    shutil.copy(NLU_DATA / "config.yml", dest / "config.yml")
    snap = NluFiles(NLU_DATA).snapshot()
    lines = ['version: "3.1"', "nlu:"]
    for intent in INTENTS:
        lines.append(f"- intent: {intent}\n  examples: |")
        texts = list(dict.fromkeys(plain_text(example.text) for example in snap.intents[intent]))[:12]
        lines += [f"    - {text}" for text in texts]
    (dest / "nlu").mkdir()
    (dest / "nlu" / "small.yml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    domain = ['version: "3.1"', "intents:", *(f"  - {intent}" for intent in INTENTS)]
    (dest / "domain.yml").write_text("\n".join(domain) + "\n", encoding="utf-8")


def test_the_shipped_pipeline_is_seeded():
    pipeline = YAML().load((NLU_DATA / "config.yml").read_text(encoding="utf-8"))["pipeline"]
    diet = next(c for c in pipeline if c["name"] == "DIETClassifier")
    assert isinstance(diet.get("random_seed"), int)


async def test_the_same_data_trained_twice_scores_the_same(tmp_path):
    results = []
    for run in range(2):
        job = tmp_path / f"job-{run}"
        (job / "data").mkdir(parents=True)
        small_copy(job / "data")
        trainer = Trainer(
            models_dir=tmp_path / f"models-{run}",
            rasa_bin=RASA_BIN,
            rasa_env={**RASA_ENV, "RASA_CACHE_DIRECTORY": str(tmp_path / f"cache-{run}")},
            requirements=RASA_REQUIREMENTS,
            min_examples=5,
            eval_fraction=0.25,
            epochs_override=30,
            scenario_intents=None,
        )

        async def report(**_) -> None:
            return None

        outcome = await trainer.run(job / "data", report)
        results.append(outcome)
    first, second = (r.evaluation for r in results)
    assert results[0].model_file == results[1].model_file
    assert first["split"] == second["split"]
    assert first["intents"] == second["intents"], (first["intents"], second["intents"])
    assert first["macro_f1"] == second["macro_f1"]


async def test_the_shipped_model_is_evaluated_like_any_version(tmp_path, settings_for, rasa_url, editor_name):
    served = httpx.get(rasa_url + "/status", timeout=10).json()["model_file"]
    stack = StudioStack(settings_for, tmp_path, rasa_url, studio_evaluate_shipped=True)
    try:
        editor = await StudioClient.login(stack.url, editor_name)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            versions = (await editor.http.get("/versions")).json()
            shipped = next((v for v in versions if v["model_file"] == served), None)
            if shipped and shipped["status"] == "ready":
                break
            await asyncio.sleep(3)
        else:
            raise AssertionError(f"the shipped model was not evaluated: {versions}")
        if stack.base_model != served or "nlu-" not in served:
            raise AssertionError("the test Rasa must serve the model of the current nlu_data/ (make train)")
        assert shipped["active"] and shipped["macro_f1"] is not None and shipped["source"] == "external"
        assert shipped["has_confusion_image"]
        jobs = (await editor.http.get("/jobs")).json()
        assert [j["kind"] for j in jobs] == ["train"]  # evaluated once, by one process
        await editor.aclose()
    finally:
        stack.stop()
