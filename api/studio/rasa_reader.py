"""Rasa's own reader as a long-lived checker (run by the Rasa environment's Python, 3.10: no `api` imports).

One JSON request per stdin line, one JSON answer per stdout line:
  {"kind": "nlu", "text": "<file>"}    → {"ok": true, "intents": {name: [plain texts]}, "synonyms": {value: name},
                                          "regexes": {name: [patterns]}, "lookups": {name: [elements]}}
  {"kind": "domain", "text": "<file>"} → {"ok": true, "intents": [names], "entities": [names]}
  a file Rasa can't read               → {"ok": false, "error": "<Rasa's message>"}
The first line out is {"ready": true} once Rasa is imported (a few seconds), so each check costs only the parse.
"""

import json
import logging
import os
import sys

os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
logging.disable(logging.WARNING)


def check(kind, text, reader_cls, domain_cls):
    if kind == "domain":
        domain = domain_cls.from_yaml(text)
        return {"ok": True, "intents": list(domain.intents), "entities": list(domain.entities)}
    data = reader_cls().reads(text)
    intents = {}
    for message in data.training_examples:
        intent = message.get("intent")
        if intent is not None:
            intents.setdefault(intent, []).append(message.get("text"))
    regexes, lookups = {}, {}
    for regex in data.regex_features:
        regexes.setdefault(regex["name"], []).append(regex["pattern"])
    for table in data.lookup_tables:
        elements = table["elements"]
        lookups.setdefault(table["name"], []).extend(elements if isinstance(elements, list) else [elements])
    return {
        "ok": True,
        "intents": intents,
        "synonyms": dict(data.entity_synonyms),
        "regexes": regexes,
        "lookups": lookups,
    }


def main():
    from rasa.shared.core.domain import Domain
    from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            request = json.loads(line)
            answer = check(request.get("kind", "nlu"), request["text"], RasaYAMLReader, Domain)
        except Exception as exc:  # Rasa's many exception types all mean "can't read this"
            answer = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        out.write(json.dumps(answer, ensure_ascii=True) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
