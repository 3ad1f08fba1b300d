"""The smaller LLM set: the real SmolLM2 behind the parser (schema-constrained decoding), marked `llm`."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.llm

GENRES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama", "Fantasy",
          "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
CASES = [
    ("I loved Fargo, more like that", {"like": [99]}),
    ("Je cherche une comédie des années 80", {"include_categories": ["Comedy"], "year_min": 1980, "year_max": 1989}),
    ("Ich möchte einen Kriegsfilm ohne Romantik", {"include_categories": ["War"], "exclude_categories": ["Romance"]}),
    ("Zwei Western zwischen 1960 und 1970", {"include_categories": ["Western"], "year_min": 1960, "year_max": 1970}),
    ("J'ai adoré Fargo, quelque chose de similaire", {"like": [99]}),
]


@pytest.mark.parametrize("message, want", CASES)
def test_smollm2_conversation(smollm2, message, want):
    from recsys.llm.conversation import ConversationParser

    p = ConversationParser(GENRES, backend=smollm2, titles={"fargo": 99}, max_new_tokens=80)
    t = p.turn("s", message)
    got = t.constraints.model_dump(exclude_defaults=True) if t.constraints is not None else None
    print(f"\nLLM set: {message!r} [{t.source}] -> {got} like={t.like_items} question={t.question!r}")  # -s: outcomes
    assert t.constraints is not None, t.question
    for key, value in want.items():
        got = t.like_items if key == "like" else getattr(t.constraints, key)
        assert got == value, (key, got, t.source)


def test_llm_output_is_schema_valid(smollm2):
    import json

    from recsys.llm.conversation import ConversationParser

    p = ConversationParser(GENRES, backend=smollm2)
    text = smollm2.generate([p.prompt("I want to cry tonight")], max_new_tokens=90, json_schema=p.schema)[0]
    obj = json.loads(text)  # constrained decoding: valid JSON of the schema
    assert set(obj) == set(p.schema["properties"]) and set(obj["include_categories"]) <= set(GENRES)
